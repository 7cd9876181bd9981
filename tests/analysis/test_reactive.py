"""Unit tests of the reactive order-taking detector on hand-built frames."""
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

from helpers import canonical_table as table, opportunity_row as opportunity, request_row as request
from quarterpanic.analysis.findings import FINDING_COLUMNS, INSUFFICIENT, OK, PARTIAL
from quarterpanic.analysis.reactive import (
    COMPONENT,
    analyse_reactive,
    candidate_weeks,
    detect_reactive_order_taking,
    estimate_surge,
    plausible_onset_fractions,
    share_change,
    simultaneous_critical_value,
)
from quarterpanic.analysis.onset import max_t_adjusted
from quarterpanic.dataset import Dataset
from quarterpanic.report import words


# -- the surge model -----------------------------------------------------------------------------
def weekly_counts(counts_by_quarter, days=5, org="A"):
    rows = []
    for quarter, counts in counts_by_quarter.items():
        for week, count in enumerate(counts, start=1):
            rows.append({"org": org, "quarter": quarter, "week_of_quarter": week, "working_days": days,
                         "unplanned": count})
    return pd.DataFrame(rows)


def test_surge_estimate_is_the_ratio_of_daily_rates_with_poisson_errors_at_least():
    weekly = weekly_counts({"Q1": [10] * 8 + [30] * 5, "Q2": [10] * 13})
    out = estimate_surge(weekly, candidates=range(5, 13)).set_index("quarter")
    assert out.loc["Q1", "onset_week"] == 9
    assert out.loc["Q1", "estimate"] == pytest.approx(3.0)
    # Perfectly regular counts are underdispersed: the dispersion is floored at 1 (plain Poisson errors).
    se = np.sqrt(1 / 80 + 1 / 150)
    assert out.loc["Q1", "dispersion"] == 1.0
    # A step this sharp leaves no other onset plausible once confirmed: the interval is the plain one.
    z = np.log(out.loc["Q1", "ci_high"] / out.loc["Q1", "ci_low"]) / (2 * se)
    assert z == pytest.approx(stats.norm.isf(0.025), rel=1e-6)
    assert out.loc["Q1", "estimate"] == pytest.approx(np.sqrt(out.loc["Q1", "ci_low"] * out.loc["Q1", "ci_high"]))
    assert out.loc["Q1", "p_value"] < 1e-6 and out.loc["Q1", "n_candidates"] == 8
    # Corrected for the onset search: never below the p-value at the onset, never above Bonferroni's.
    assert out.loc["Q1", "p_unadjusted"] <= out.loc["Q1", "p_value"] <= min(1, 8 * out.loc["Q1", "p_unadjusted"])
    # A flat quarter has no step up; its best split is reported, on the calm side.
    assert out.loc["Q2", "estimate"] == pytest.approx(1.0) and out.loc["Q2", "p_value"] > 0.5


def test_interval_lies_above_no_change_exactly_when_the_search_adjusted_p_value_is_below_half_its_level():
    rng = np.random.default_rng(11)
    series = {f"Q{i}": list(rng.poisson(10 * np.where(np.arange(13) >= rng.integers(5, 12), rng.uniform(1, 1.6), 1)))
              for i in range(60)}
    out = estimate_surge(weekly_counts(series), ci_level=0.95)
    out = out[out["status"] == OK]
    assert ((out["ci_low"] > 1) == (out["p_value"] < 0.025)).all()
    assert ((out["p_value"] < 0.025) != (out["p_unadjusted"] < 0.025)).any()  # the search does change verdicts
    # Without the search (a fixed onset) the interval is the plain 95% one.
    fixed = estimate_surge(weekly_counts(series), onsets=out[["org", "quarter", "onset_week"]])
    se = np.log(fixed["ci_high"] / fixed["ci_low"]) / (2 * 1.959964)
    assert np.allclose(np.log(fixed["estimate"]) - 1.959964 * se, np.log(fixed["ci_low"]))


def test_a_confirmed_ramp_pays_for_the_onsets_it_leaves_plausible():
    # A ramp fits a step at weeks 9, 10 and 11 almost equally well: the interval pays for a search over them
    # (wider than the plain 1.96), not over all of weeks 5-12; a sharp step pays for none.
    weekly = weekly_counts({"ramp": [10] * 8 + [14, 18, 22, 26, 30], "step": [10] * 8 + [30] * 5})
    out = estimate_surge(weekly, candidates=range(5, 13)).set_index("quarter")
    assert (out["p_value"] < 0.025).all()
    plausible = plausible_onset_fractions(weekly, out.reset_index()[["quarter", "onset_week", "dispersion"]].assign(
        org="A"), ["org", "quarter"], "unplanned", "working_days", range(5, 13))
    ramp, step = plausible
    assert step == (8 / 13,) and len(ramp) >= 2 and out.loc["ramp", "onset_week"] / 13 - 1 / 13 in ramp
    assert out.loc["ramp", "critical_value"] == pytest.approx(simultaneous_critical_value(ramp))
    full = simultaneous_critical_value([(week - 1) / 13 for week in range(5, 13)])
    assert stats.norm.isf(0.025) == pytest.approx(out.loc["step", "critical_value"])
    assert stats.norm.isf(0.025) < out.loc["ramp", "critical_value"] < full


def test_simultaneous_critical_value_inverts_the_max_t_adjustment():
    fractions = tuple(np.linspace(0.3, 0.85, 8))
    z = simultaneous_critical_value(fractions, 0.95)
    assert max_t_adjusted(stats.norm.sf(z), fractions) == pytest.approx(0.025, abs=1e-4)
    assert stats.norm.isf(0.025) < z < stats.norm.isf(0.025 / 8)
    assert simultaneous_critical_value((), 0.95) == pytest.approx(stats.norm.isf(0.025))


def test_overdispersed_counts_widen_the_interval():
    rng = np.random.default_rng(0)
    noisy = {f"Q{i}": list(rng.poisson(rng.gamma(2, 5, 13))) for i in range(6)}
    noisy["Q0"] = [10] * 8 + [30] * 5
    searched = estimate_surge(weekly_counts(noisy))
    # At a fixed onset the interval is the plain 95% one, which shows the standard error directly.
    out = estimate_surge(weekly_counts(noisy), onsets=searched).set_index("quarter")
    assert out.loc["Q0", "dispersion"] > 2
    se = (np.log(out.loc["Q0", "ci_high"]) - np.log(out.loc["Q0", "ci_low"])) / (2 * 1.959964)
    assert se == pytest.approx(np.sqrt(out.loc["Q0", "dispersion"] * (1 / 80 + 1 / 150)), rel=1e-3)


def test_exposure_turns_counts_into_daily_rates():
    weekly = weekly_counts({"Q1": [10] * 8 + [6] * 5})
    weekly["working_days"] = [5] * 8 + [1] * 5  # same weekly counts, fewer days: a higher daily rate
    out = estimate_surge(weekly)
    assert out["estimate"].iloc[0] == pytest.approx(3.0)


def test_fixed_onsets_are_not_searched_and_not_adjusted():
    weekly = weekly_counts({"Q1": [10] * 8 + [4] * 5}).rename(columns={"unplanned": "planned"})
    onsets = pd.DataFrame({"org": ["A"], "quarter": ["Q1"], "onset_week": [9]})
    out = estimate_surge(weekly, events="planned", onsets=onsets, direction=-1)
    assert out["estimate"].iloc[0] == pytest.approx(0.4)
    assert out["p_value"].iloc[0] == out["p_unadjusted"].iloc[0] < 0.001


def test_too_few_requests_or_an_empty_side_is_insufficient_data():
    weekly = weekly_counts({"thin": [1] * 13, "empty_late": [3] * 8 + [0] * 5, "fine": [3] * 8 + [9] * 5})
    out = estimate_surge(weekly, min_events=20).set_index("quarter")
    assert out.loc["thin", "status"] == INSUFFICIENT and np.isnan(out.loc["thin", "estimate"])
    assert out.loc["empty_late", "status"] == INSUFFICIENT
    assert out.loc["fine", "status"] == OK


def test_candidates_leave_two_weeks_on_each_side():
    assert candidate_weeks([5, 12], 13) == list(range(5, 13))
    assert candidate_weeks([2, 13], pd.Series([13, 14])) == list(range(3, 13))


# -- shares --------------------------------------------------------------------------
def test_share_change_matches_statsmodels_cluster_robust_ols():
    rng = np.random.default_rng(5)
    n = 600
    items = pd.DataFrame(
        {
            "org": "A",
            "quarter": rng.choice(["Q1", "Q2", "Q3"], n),
            "window": rng.choice(["early", "late"], n, p=[0.6, 0.4]),
            "deal": rng.integers(0, 60, n).astype(str),
        }
    )
    items["lost"] = (rng.random(n) < np.where(items["window"] == "late", 0.5, 0.3)).astype(float)
    out = share_change(items, flag="lost", cluster="deal").set_index("quarter")
    codes, quarters = pd.factorize(items["quarter"])
    design = np.zeros((n, 6))
    design[np.arange(n), codes] = 1
    design[np.arange(n), 3 + codes] = (items["window"] == "late").to_numpy()
    fit = sm.OLS(items["lost"].to_numpy(), design).fit(cov_type="cluster", cov_kwds={"groups": pd.factorize(items["deal"])[0]})
    for i, quarter in enumerate(quarters):
        assert out.loc[quarter, "estimate"] == pytest.approx(fit.params[3 + i])
        half_width = (out.loc[quarter, "ci_high"] - out.loc[quarter, "ci_low"]) / 2
        assert half_width == pytest.approx(1.959964 * fit.bse[3 + i], rel=1e-5)
    # Without clusters: HC1.
    hc1 = sm.OLS(items["lost"].to_numpy(), design).fit(cov_type="HC1")
    plain = share_change(items, flag="lost").set_index("quarter")
    half_width = (plain.loc[quarters[0], "ci_high"] - plain.loc[quarters[0], "ci_low"]) / 2
    assert half_width == pytest.approx(1.959964 * hc1.bse[3], rel=1e-5)


# -- the detector --------------------------------------------------------------------------------
def busy_dataset(late_factor=3.0, rate=4, seed=0):
    """Two complete quarters and an open one of org A; Q2 surges from week 9."""
    rng = np.random.default_rng(seed)
    days = pd.bdate_range("2025-01-01", "2025-07-15")
    rows, opps = [], [opportunity("D1", "2024-12-20", won=False, close="2025-09-01")]
    for day in days:
        late = day >= pd.Timestamp("2025-05-27")  and day <= pd.Timestamp("2025-06-30")  # weeks 9.. of FY2025-Q2
        for k in range(rng.poisson(rate * (late_factor if late else 1.0))):
            created = day + pd.Timedelta(hours=9 + k % 8)
            rows.append(request(created, rid=f"R{len(rows)}", opp="D1", resolved=created + pd.Timedelta(hours=5)))
        if rng.random() < 0.5:
            rows.append(request(day + pd.Timedelta(hours=10), type_="Enablement", planned=True, rid=f"R{len(rows)}"))
    return Dataset.from_tables({"requests": table("requests", rows), "opportunities": table("opportunities", opps)},
                               {"A": {"size_class": "mid"}}, as_of="2025-07-15 18:00")


def test_detector_finds_the_injected_surge_and_judges_only_complete_quarters():
    findings = detect_reactive_order_taking(busy_dataset())
    assert list(findings.columns[: len(FINDING_COLUMNS)]) == FINDING_COLUMNS
    main = findings[findings["metric"] == COMPONENT].set_index("quarter")
    # FY2024-Q4 is over, but the data begin in its last weeks: shown as partial, never judged; FY2025-Q3 is open.
    assert main.loc["FY2024-Q4", "status"] == PARTIAL and not main.loc["FY2024-Q4", "flagged"]
    assert set(main.index[main["status"] != PARTIAL]) == {"FY2025-Q1", "FY2025-Q2"}
    assert main.loc["FY2025-Q2", "onset_week"] == 9 and main.loc["FY2025-Q2", "flagged"]
    assert main.loc["FY2025-Q2", "ci_low"] < 3.0 < main.loc["FY2025-Q2", "ci_high"]
    assert not main.loc["FY2025-Q1", "flagged"]
    assert set(findings["metric"]) >= {COMPONENT, "planned_work_deferral", "turnaround_stretch", "after_hours_shift",
                                       "wasted_effort_lost"}
    sentence = words.describe(main.reset_index().iloc[1].to_dict())
    assert "unplanned sales-ops requests per working day" in sentence and "from week 9 on" in sentence


def test_detector_reports_insufficient_data_for_thin_quarters():
    findings = detect_reactive_order_taking(busy_dataset(rate=0.2, late_factor=1.0))
    findings = findings[findings["status"] != PARTIAL]  # FY2024-Q4: the data begin in its last weeks
    main = findings[findings["metric"] == COMPONENT]
    assert (main["status"] == INSUFFICIENT).all() and not main["flagged"].any()
    assert findings.loc[findings["status"] == INSUFFICIENT, "estimate"].isna().all()
    assert "too little data" in words.describe(main.iloc[0].to_dict())


def test_analysis_keeps_the_tables_the_notebook_draws():
    analysis = analyse_reactive(busy_dataset())
    assert {"early", "late"} <= set(analysis.requests["window"].dropna())
    assert set(analysis.weekly["role"]) == {"shown", "open"}
    assert {"duration_hours", "resolved", "duration_std", "deal_outcome"} <= set(analysis.requests.columns)


def test_report_charts_state_the_numbers_in_their_titles():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from quarterpanic.report import reactive_report as report

    analysis = analyse_reactive(busy_dataset())
    focus = report.focus_quarters(analysis)
    assert focus[["org", "quarter"]].values.tolist() == [["A", "FY2025-Q2"]] and focus["flagged"].all()
    assert report.calm_baseline(analysis, "A") == ["FY2025-Q1"]
    ax = report.plot_volume_by_type(analysis, "A", "FY2025-Q2")
    estimate = analysis.surge.set_index("quarter").loc["FY2025-Q2", "estimate"]
    assert f"{estimate:.1f}×" in ax.get_title() and "week 9" in ax.get_title()
    for draw in (report.plot_share_vs_baseline, report.plot_turnaround_curves, report.plot_backlog):
        assert "FY2025-Q2" in draw(analysis, "A", "FY2025-Q2").get_title()
    assert report.plot_surge_forest(analysis).get_title().startswith("1 of 2 complete quarters")
    plt.close("all")
    words_table = report.findings_in_words(analysis.findings, flagged_only=True)
    assert words_table["finding"].str.contains("flagged").all()
    summary = report.summary_figures(analysis)
    assert summary["quarters_judged"] == 2 and summary["quarters_flagged"] == 1
    table = report.turnaround_table(analysis, focus)
    assert set(table["window"]) == {"early", "late"} and (table["median"] > 0).all()
