"""The in-quarter early warning: CUSUM arithmetic, calibration, status, and a check on generated truth."""
import numpy as np
import pandas as pd
import pytest

from quarterpanic.analysis import early_warning as ew
from quarterpanic.analysis.detect import detect
from quarterpanic.dataset import Dataset
from quarterpanic.report.words import early_warning_sentence
from quarterpanic.sample import generate

# An alarm before the injected onset week is a false alarm, not an early hit: the generator's
# weeks before the onset are calm by construction, so nothing in them can honestly announce panic.
EARLY_TOLERANCE = 0
LATE_TOLERANCE = 2  # the warning must fire by onset + 2
SEEDS = range(12)  # 12 × 24 complete org-quarters at scale "small"
# The backtest's own effects, whatever the default scenario's: decay 35 points and a 3x surge (the effect the
# early warning's goal was set for), with the small studio calm.
BACKTEST = {"name": "early-warning backtest", "panic": {"qualification_decay": 0.35, "reactive_order_taking": 3.0},
            "orgs": {"Brightline Studio": {"panic_quarters": {}}}}


def weeks(events, base, chart="reactive_order_taking", org="A", quarter="FY2025-Q1"):
    n = len(events)
    events_col, base_col = ew._columns(chart)
    other = [c for c in ("qualified", "created", "unplanned", "working_days") if c not in (events_col, base_col)]
    return pd.DataFrame(
        {"org": org, "quarter": quarter, "week_of_quarter": np.arange(1, n + 1), "weeks_in_quarter": n,
         events_col: events, base_col: base, **{c: 0 for c in other}}
    )


def test_cusum_accumulates_excess_over_k_and_holds_without_data():
    path = ew.cusum(np.array([1.0, 2.0, -5.0, 3.0, 9.9, 1.0]), k=0.5,
                    observed=np.array([True, True, True, True, False, True]))
    np.testing.assert_allclose(path, [0.5, 2.0, 0.0, 2.5, 2.5, 3.0])


def test_standardised_is_binomial_shortfall_and_poisson_excess():
    _, z = ew.standardised("qualification_decay", np.array([5.0, 0.0]), np.array([20.0, 0.0]), 0.5)
    assert z[0] == pytest.approx((10 - 5) / np.sqrt(20 * 0.25)) and z[1] == 0.0
    _, z = ew.standardised("reactive_order_taking", np.array([14.0]), np.array([5.0]), 2.0)
    assert z[0] == pytest.approx((14 - 10) / np.sqrt(10))


def test_baseline_rate_dispersion_and_between_quarter_variance():
    calm = pd.concat([weeks([10] * 13, [5] * 13, quarter=f"Q{i}") for i in range(4)])
    baseline = ew.baseline_for(calm, "reactive_order_taking")
    assert baseline.rate == pytest.approx(2.0) and baseline.dispersion == 1.0 and baseline.between == 0.0
    assert baseline.quarters == 4 and baseline.exposure == 4 * 65
    shifted = pd.concat([weeks([v] * 13, [5] * 13, quarter=f"Q{v}") for v in (5, 10, 20, 40)])
    assert ew.baseline_for(shifted, "reactive_order_taking").between > 0.3


def test_threshold_keeps_calm_quarters_under_the_promised_false_alarm_rate():
    rng = np.random.default_rng(1)
    calm = pd.concat([weeks(rng.poisson(10, 13), [5] * 13, quarter=f"Q{i}") for i in range(6)])
    baseline = ew.baseline_for(calm, "reactive_order_taking")
    h = ew.calibrate_h(baseline, false_alarm=0.05)
    assert h > ew.calibrate_h(baseline, false_alarm=0.2)
    # Fresh calm quarters at the true rate: the chart crosses h in at most ~5% of them.
    z = (rng.poisson(10, (20000, 13)) - 10) / np.sqrt(10)
    assert (ew.cusum(z, ew.DEFAULT_K).max(axis=1) > h).mean() <= 0.05


def test_chart_alarms_in_the_week_the_rate_jumps_and_estimates_the_start():
    calm = pd.concat([weeks([10] * 13, [5] * 13, quarter=f"Q{i}") for i in range(4)])
    baselines = {"reactive_order_taking": ew.baseline_for(calm, "reactive_order_taking")}
    surge = weeks([10] * 8 + [30] * 5, [5] * 13, quarter="FY2025-Q2")
    chart = ew.chart_quarter(surge, baselines)
    assert chart.loc[chart["alarm"], "week_of_quarter"].min() == 9
    assert chart["alarm_week"].dropna().unique().tolist() == [9]
    assert chart["start_week"].dropna().unique().tolist() == [9]
    assert not ew.chart_quarter(weeks([10] * 13, [5] * 13), baselines)["alarm"].any()


def test_status_sentence_names_signals_and_their_weeks():
    chart = pd.DataFrame(
        {"chart": ["qualification_decay", "reactive_order_taking"], "week_of_quarter": [9, 9],
         "cusum": [6.0, 7.0], "h": [4.0, 4.0], "alarm_week": pd.array([8, 9], dtype="Int64"),
         "start_week": pd.array([7, 9], dtype="Int64")}
    )
    status = ew._status("Globex", "FY2026-Q3", 9, 13, chart, 5)
    assert status["status"] == ew.WARNING
    assert early_warning_sentence(status) == (
        "Globex, as of week 9 of FY2026-Q3: panic signals emerging in qualification decay (since week 8) "
        "and reactive order-taking (since week 9)."
    )
    calm = chart.assign(cusum=[0.5, 2.5], alarm_week=pd.array([None, None], dtype="Int64"))
    assert ew._status("Globex", "FY2026-Q3", 9, 13, calm, 5)["status"] == ew.WATCH
    assert ew._status("Globex", "FY2026-Q3", 9, 13, pd.DataFrame(columns=ew.CHART_COLUMNS), 1)["status"] == (
        ew.NO_BASELINE
    )


@pytest.mark.slow
def test_a_run_cut_mid_quarter_sees_what_the_backtest_saw_that_week():
    sample = generate(seed=3, scale="small")
    data = Dataset.from_tables(sample.tables, sample.orgs, as_of=sample.as_of)
    findings = detect(data)
    # Northwind's last complete quarter, cut at the end of its week 10 as if it were still open.
    calendar = data.calendar("Northwind Traders")
    quarter = calendar.quarters("2025-07-01", "2025-09-30").iloc[0]
    cut_at = quarter["quarter_start"] + pd.Timedelta(days=70) - pd.Timedelta(seconds=1)
    baseline = ew.calm_quarters(data, findings=findings)["Northwind Traders"]
    params = {"baseline_quarters": [q for q in baseline if q != quarter["quarter"]], "as_of": cut_at,
              "orgs": ["Northwind Traders"]}
    status, charts = ew.early_warning(data, params, findings=findings)
    row = status.iloc[0]
    assert row["quarter"] == quarter["quarter"] and row["week"] == 10
    full = ew.weekly_series(data, {"orgs": ["Northwind Traders"]})
    quarter_weeks = full[full["quarter"] == quarter["quarter"]]
    baselines = ew._baselines(full, params["baseline_quarters"])
    whole = ew.chart_quarter(quarter_weeks, baselines)
    upto = whole[whole["week_of_quarter"] <= 10].reset_index(drop=True)
    pd.testing.assert_frame_equal(charts.reset_index(drop=True)[["chart", "week_of_quarter", "cusum", "h"]],
                                  upto[["chart", "week_of_quarter", "cusum", "h"]])


def backtest_against_truth(seeds=SEEDS) -> pd.DataFrame:
    rows = []
    for seed in seeds:
        sample = generate(BACKTEST, seed=seed, scale="small")
        data = Dataset.from_tables(sample.tables, sample.orgs, as_of=sample.as_of)
        result = ew.backtest(data, findings=detect(data))
        truth = sample.truth_frame()[["org", "quarter", "panic", "onset_week"]]
        rows.append(result.merge(truth, on=["org", "quarter"], how="inner").assign(seed=seed))
    return pd.concat(rows, ignore_index=True)


@pytest.mark.slow
@pytest.mark.stats
def test_warning_fires_within_two_weeks_of_onset_and_rarely_in_calm_quarters():
    results = backtest_against_truth()
    panic, calm = results[results["panic"]], results[~results["panic"]]
    assert len(results) >= 50 and len(panic) >= 25 and len(calm) >= 25
    delay = panic["alarm_week"].astype(float) - panic["onset_week"].astype(float)
    hit = delay.between(-EARLY_TOLERANCE, LATE_TOLERANCE)
    false_alarm = calm["alarm_week"].notna().mean()
    print(f"\n{len(panic)} panic quarters: hit {hit.mean():.1%}, early {(delay < -EARLY_TOLERANCE).mean():.1%}, "
          f"late or missed {(~hit & ~(delay < -EARLY_TOLERANCE)).mean():.1%}; "
          f"{len(calm)} calm quarters: false alarms {false_alarm:.1%}")
    assert hit.mean() >= 0.80
    assert false_alarm <= 0.05


def test_weekly_series_counts_the_organisations_holidays_and_shutdown_as_days_off():
    sample = generate(None, seed=7, scale="small")
    orgs = {org: {**info, "country": "US", "shutdown_days": ["12-24..01-01"]} for org, info in sample.orgs.items()}
    plain = Dataset.from_tables(sample.tables, sample.orgs, as_of=sample.as_of)
    worked = Dataset.from_tables(sample.tables, orgs, as_of=sample.as_of)
    params = {"orgs": ["Northwind Traders"]}
    series = {name: ew.weekly_series(data, params) for name, data in (("plain", plain), ("worked", worked))}
    days = pd.concat({name: frame[frame["quarter_complete"]].set_index(["quarter", "week_of_quarter"])["working_days"]
                      for name, frame in series.items()}, axis=1)
    # Calendar-year quarters: the last week of Q4 (24-31 December) is all shutdown; each quarter has a US holiday.
    last_q4 = days.loc[[(q, 13) for q in days.index.get_level_values(0).unique() if q.endswith("Q4")]]
    assert (last_q4["worked"] == 0).all() and (last_q4["plain"] >= 5).all()
    per_quarter = days.groupby(level=0).sum()
    assert (per_quarter["worked"] < per_quarter["plain"]).all()
