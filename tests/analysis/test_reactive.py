"""Unit tests of the reactive order-taking detector on hand-built frames."""
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from helpers import canonical_table as table
from quarterpanic.analysis.findings import FINDING_COLUMNS, INSUFFICIENT, OK
from quarterpanic.analysis.reactive import (
    COMPONENT,
    analyse_reactive,
    candidate_weeks,
    detect_reactive_order_taking,
    estimate_surge,
    share_change,
)
from quarterpanic.analysis.turnaround import km_summary, standardised_durations, turnaround_stretch, turnaround_times
from quarterpanic.analysis.workload import (
    backlog_at,
    classify_requests,
    deal_links,
    wasted_effort,
    week_grid,
    weekly_requests,
    working_days,
)
from quarterpanic.dataset import Dataset
from quarterpanic.report import words


def request(created, *, org="A", type_="Rush Quote", planned=False, resolved=None, priority="Medium", opp=None,
            requester="ann", hours=None, rid=None):
    return dict(org=org, request_id=rid or f"R{created}", created_at=created, resolved_at=resolved,
                request_type=type_, planned=planned, priority=priority, opportunity_id=opp, requester=requester,
                handling_hours=hours)


def opportunity(oid, created, *, org="A", won=False, closed=True, close="2025-03-01", segment="SMB"):
    return dict(org=org, opportunity_id=oid, size_class="mid", created_at=created, close_date=close,
                stage="Closed Won" if won else ("Closed Lost" if closed else "Proposal"), is_closed=closed,
                is_won=won, segment=segment)


# -- classification ------------------------------------------------------------------------------
def test_request_types_decide_and_the_planned_flag_fills_in_unknown_types():
    requests = pd.DataFrame(
        {
            "request_type": ["Rush Quote", "enablement ", "Something Else", "Something Else", "Discount Approval"],
            # The flag says planned for the rush quote and unplanned for enablement: the types win.
            "planned": [True, False, True, False, False],
            "priority": ["high", "Low", None, "Critical", "Medium"],
            "created_at": pd.to_datetime(
                ["2025-01-06 07:59", "2025-01-06 08:00", "2025-01-06 17:59", "2025-01-06 18:00", "2025-01-11 10:00"]
            ),
        }
    )
    out = classify_requests(requests)
    assert out["is_unplanned"].tolist() == [True, False, False, True, True]
    assert (out["is_planned"] == ~out["is_unplanned"]).all()
    assert out["is_urgent"].tolist() == [True, False, False, True, False]
    assert out["is_exception"].tolist() == [False, False, False, False, True]
    assert out["is_after_hours"].tolist() == [True, False, False, True, False]
    assert out["is_weekend"].tolist() == [False, False, False, False, True]


def test_custom_type_lists_come_from_params():
    requests = pd.DataFrame({"request_type": ["Fire Drill"], "planned": [True], "priority": ["P1"],
                             "created_at": pd.to_datetime(["2025-01-06 10:00"])})
    out = classify_requests(requests, {"reactive_types": ["Fire Drill"], "urgent_priorities": ["P1"]})
    assert out["is_unplanned"].iloc[0] and out["is_urgent"].iloc[0]


# -- exposure ------------------------------------------------------------------------------------
def test_working_days_count_weekdays_begun_by_as_of():
    start = pd.Series(pd.to_datetime(["2025-01-06", "2025-01-06", "2025-01-06", "2025-01-13"]))  # Mondays
    end = start + pd.Timedelta(days=6)
    assert working_days(start, end, "2025-02-01").tolist() == [5, 5, 5, 5]
    # As of Wednesday noon: Mon, Tue, Wed have begun; the next week has not.
    assert working_days(start, end, "2025-01-08 12:00").tolist() == [3, 3, 3, 0]
    # As of Wednesday midnight, Wednesday has not begun.
    assert working_days(start, end, "2025-01-08").tolist() == [2, 2, 2, 0]


def grid_dataset(as_of="2025-05-14 12:00", first="2025-01-02"):
    opps = table("opportunities", [opportunity("1", first)])
    requests = table("requests", [request(first)])
    return Dataset.from_tables({"opportunities": opps, "requests": requests}, {"A": {"size_class": "mid"}},
                               as_of=as_of)


def test_week_grid_covers_each_quarter_with_working_days_and_roles():
    grid = week_grid(grid_dataset())
    q1 = grid[grid["quarter"] == "FY2025-Q1"]
    assert len(q1) == 13 and q1["week_of_quarter"].tolist() == list(range(1, 14))
    # Month-based quarter: the 13th week takes the odd days (Mar 26 - Mar 31).
    assert q1["week_end"].iloc[-1] == pd.Timestamp("2025-03-31") and q1["week_start"].iloc[-1] == pd.Timestamp("2025-03-26")
    assert q1["working_days"].sum() == np.busday_count("2025-01-01", "2025-04-01")
    assert q1["quarter_complete"].all() and q1["judged"].all()
    q2 = grid[grid["quarter"] == "FY2025-Q2"]
    # Open quarter: working days only up to as_of (Wed 14 May counts), none after.
    assert q2["working_days"].sum() == np.busday_count("2025-04-01", "2025-05-15")
    assert not q2["quarter_complete"].any() and not q2["judged"].any()
    assert (q2.loc[q2["week_start"] > pd.Timestamp("2025-05-14"), "working_days"] == 0).all()


def test_a_quarter_the_data_start_in_the_middle_of_is_not_judged():
    grid = week_grid(grid_dataset(as_of="2025-07-02", first="2025-02-10"))
    judged = grid.groupby("quarter")["judged"].first()
    assert not judged["FY2025-Q1"] and judged["FY2025-Q2"]


def test_quarters_and_baseline_quarters_params_pick_roles():
    grid = week_grid(grid_dataset(as_of="2025-10-02"), {"quarters": ["FY2025-Q3"]})
    roles = grid.groupby("quarter")[["judged", "baseline"]].first()
    assert roles.loc["FY2025-Q3"].tolist() == [True, False]
    assert roles.loc["FY2025-Q1"].tolist() == [False, True]
    grid = week_grid(grid_dataset(as_of="2025-10-02"), {"quarters": ["FY2025-Q3"], "baseline_quarters": ["FY2025-Q2"]})
    assert grid.groupby("quarter")["baseline"].first().to_dict() == {
        "FY2025-Q1": False, "FY2025-Q2": True, "FY2025-Q3": False, "FY2025-Q4": False,
    }


# -- weekly series and backlog -------------------------------------------------------------------
def test_backlog_counts_requests_open_at_each_week_end():
    requests = pd.DataFrame(
        {
            "org": "A",
            "created_at": pd.to_datetime(["2025-01-06 09:00", "2025-01-07 09:00", "2025-01-14 09:00", "2025-01-20 09:00"]),
            "resolved_at": pd.to_datetime(["2025-01-08 09:00", "2025-01-16 09:00", None, None]),
        }
    )
    weeks = pd.DataFrame({"org": "A", "week_end": pd.to_datetime(["2025-01-12", "2025-01-19", "2025-01-26"])})
    assert backlog_at(requests, weeks, as_of="2025-02-01").tolist() == [1, 1, 2]
    # Counted at as_of when the week has not ended: Jan 20 is not created yet at Jan 19 noon.
    assert backlog_at(requests, weeks, as_of="2025-01-15 12:00").tolist() == [1, 2, 2]


def test_weekly_requests_fill_empty_weeks_and_compute_shares():
    rows = [
        request("2025-01-06 09:00", type_="Discount Approval", priority="High", rid="1"),
        request("2025-01-06 19:00", type_="Enablement", planned=True, rid="2"),
        request("2025-01-07 10:00", rid="3", resolved="2025-01-08 10:00"),
        request("2025-02-04 10:00", rid="4"),
    ]
    data = Dataset.from_tables({"requests": table("requests", rows), "opportunities": table("opportunities", [
        opportunity("9", "2025-01-02", won=True, close="2025-01-08")])}, {"A": {}}, as_of="2025-04-02")
    from quarterpanic.analysis.workload import request_features

    features = request_features(data)
    weekly = weekly_requests(features, week_grid(data), as_of=data.as_of, opportunities=data.opportunities,
                             calendars=data.calendars)
    week1 = weekly[(weekly["quarter"] == "FY2025-Q1") & (weekly["week_of_quarter"] == 1)].iloc[0]
    assert (week1["requests"], week1["unplanned"], week1["planned"], week1["urgent"], week1["exception"]) == (3, 2, 1, 1, 1)
    assert week1["after_hours_share"] == pytest.approx(1 / 3) and week1["working_days"] == 5  # Wed 1 Jan..Tue 7 Jan
    assert week1["unplanned_per_day"] == pytest.approx(2 / 5)
    assert week1["backlog"] == 3 and week1["won_deals"] == 0  # request 3 is resolved on 8 Jan
    week2 = weekly[(weekly["quarter"] == "FY2025-Q1") & (weekly["week_of_quarter"] == 2)].iloc[0]
    assert week2["requests"] == 0 and np.isnan(week2["unplanned_share"]) and week2["won_deals"] == 1
    assert weekly.groupby("quarter")["requests"].sum()["FY2025-Q1"] == 4
    by_type = weekly_requests(features, week_grid(data), by=["request_type"])
    assert set(by_type["request_type"]) == {"Discount Approval", "Enablement", "Rush Quote"}
    assert by_type["requests"].sum() == 4


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
    assert out.loc["Q1", "ci_low"] == pytest.approx(3 * np.exp(-1.959964 * se), rel=1e-4)
    assert out.loc["Q1", "p_value"] < 1e-6 and out.loc["Q1", "n_candidates"] == 8
    # Corrected for the onset search: never below the p-value at the onset, never above Bonferroni's.
    assert out.loc["Q1", "p_unadjusted"] <= out.loc["Q1", "p_value"] <= min(1, 8 * out.loc["Q1", "p_unadjusted"])
    # A flat quarter has no step up; its best split is reported, on the calm side.
    assert out.loc["Q2", "estimate"] == pytest.approx(1.0) and out.loc["Q2", "p_value"] > 0.5


def test_overdispersed_counts_widen_the_interval():
    rng = np.random.default_rng(0)
    noisy = {f"Q{i}": list(rng.poisson(rng.gamma(2, 5, 13))) for i in range(6)}
    noisy["Q0"] = [10] * 8 + [30] * 5
    out = estimate_surge(weekly_counts(noisy)).set_index("quarter")
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


# -- turnaround ----------------------------------------------------------------------------------
def test_kaplan_meier_median_is_unbiased_under_heavy_censoring_while_the_naive_one_is_not():
    rng = np.random.default_rng(7)
    n, mean_hours = 4000, 72.0
    created = pd.Timestamp("2025-01-01") + pd.to_timedelta(rng.uniform(0, 10 * 24, n), unit="h")
    durations = rng.exponential(mean_hours, n)
    resolved = created + pd.to_timedelta(durations, unit="h")
    as_of = pd.Timestamp("2025-01-11")  # a third of the requests are still open
    times = turnaround_times(pd.DataFrame({"org": "A", "created_at": created, "resolved_at": resolved}), as_of)
    assert 0.25 < (~times["resolved"]).mean() < 0.4
    summary = km_summary(times, ["org"]).iloc[0]
    true_median = mean_hours * np.log(2)
    assert summary["median"] == pytest.approx(true_median, rel=0.06)
    assert summary["median_low"] < true_median < summary["median_high"]
    assert summary["naive_median"] < 0.85 * true_median
    # Resolutions recorded after as_of were not known yet.
    assert not times.loc[resolved > as_of, "resolved"].any()


def test_stretch_is_measured_type_for_type_despite_a_shifting_mix():
    rng = np.random.default_rng(3)
    rows = []
    for window, n_quick, n_slow, stretch in (("early", 300, 300, 1.0), ("late", 550, 50, 2.0)):
        for type_, n, median in (("Rush Quote", n_quick, 4.0), ("Enablement", n_slow, 100.0)):
            hours = median * np.exp(rng.normal(0, 0.5, n)) * stretch
            rows.append(pd.DataFrame({"org": "A", "quarter": "Q1", "window": window, "request_type": type_,
                                      "duration_hours": hours, "resolved": True}))
    times = pd.concat(rows, ignore_index=True)
    raw = turnaround_stretch(times, duration="duration_hours").iloc[0]
    assert raw["estimate"] < 1  # the mix of quick requests hides the slow-down
    out = turnaround_stretch(standardised_durations(times, reference=times["window"] == "early")).iloc[0]
    assert out["status"] == OK and out["ci_low"] < 2.0 < out["ci_high"] and out["estimate"] == pytest.approx(2, rel=0.15)
    assert out["p_value"] < 0.001


# -- shares and wasted effort --------------------------------------------------------------------
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


def test_wasted_effort_counts_lost_deals_and_leaves_open_ones_out():
    opps = table("opportunities", [
        opportunity("won", "2025-01-02", won=True), opportunity("lost", "2025-01-02"),
        opportunity("open", "2025-01-02", closed=False),
    ])
    requests = pd.DataFrame([
        request("2025-01-06", opp="won", hours=1.0, rid="1"), request("2025-01-07", opp="lost", hours=3.0, rid="2"),
        request("2025-01-08", opp="lost", hours=None, rid="3"), request("2025-01-09", opp="open", hours=5.0, rid="4"),
        request("2025-01-10", opp=None, rid="5"),
    ])
    requests["window"] = "early"
    linked = deal_links(requests, opps)
    assert linked["deal_outcome"].tolist() == ["won", "lost", "lost", "open", "no deal"]
    assert linked["deal_lost"].tolist()[:3] == [0.0, 1.0, 1.0] and linked["deal_lost"].isna().tolist()[3:] == [True, True]
    row = wasted_effort(linked, by=["org"]).iloc[0]
    assert (row["requests"], row["deal_requests"], row["on_lost"], row["on_open"]) == (5, 4, 2, 1)
    assert row["lost_share"] == pytest.approx(2 / 3)
    assert row["lost_hours_share"] == pytest.approx(3 / 4)


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
    assert set(main.index) == {"FY2025-Q1", "FY2025-Q2"}  # FY2025-Q3 is open
    assert main.loc["FY2025-Q2", "onset_week"] == 9 and main.loc["FY2025-Q2", "flagged"]
    assert main.loc["FY2025-Q2", "ci_low"] < 3.0 < main.loc["FY2025-Q2", "ci_high"]
    assert not main.loc["FY2025-Q1", "flagged"]
    assert set(findings["metric"]) >= {COMPONENT, "planned_work_deferral", "turnaround_stretch", "after_hours_shift",
                                       "wasted_effort_lost"}
    sentence = words.describe(main.reset_index().iloc[1].to_dict())
    assert "unplanned sales-ops requests per working day" in sentence and "from week 9 on" in sentence


def test_detector_reports_insufficient_data_for_thin_quarters():
    findings = detect_reactive_order_taking(busy_dataset(rate=0.2, late_factor=1.0))
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
