"""quarterpanic.analysis.workload: request kinds, working-day exposure, weekly series and wasted effort."""
import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from helpers import canonical_table as table, opportunity_row as opportunity, request_row as request
from quarterpanic.analysis.workload import (
    backlog_at,
    classify_requests,
    deal_links,
    request_features,
    share_by_week,
    wasted_effort,
    week_grid,
    weekly_requests,
    won_deals_by_week,
    working_days,
)
from quarterpanic.dataset import Dataset


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


def test_week_grid_counts_the_organisations_holidays_and_shutdown_days_as_days_off():
    opps = table("opportunities", [opportunity("1", "2025-01-02")])
    requests = table("requests", [request("2025-01-02")])
    orgs = {"A": {"size_class": "mid", "country": "DE", "subdivision": "BY", "shutdown_days": ["12-24..01-01"]},
            "B": {"size_class": "mid"}}
    data = Dataset.from_tables({"opportunities": pd.concat([opps, opps.assign(org="B")]),
                                "requests": pd.concat([requests, requests.assign(org="B")])}, orgs, as_of="2026-01-10")
    grid = week_grid(data).set_index(["org", "quarter", "week_of_quarter"])["working_days"]
    # Q4 2025's last week (Wed 24 - Wed 31 December): all shut for A, six weekdays for B (weekends only).
    assert grid["A", "FY2025-Q4", 13] == 0 and grid["B", "FY2025-Q4", 13] == 6
    # Thu 1 - Wed 7 January: 1 January is in the shutdown, Epiphany (Tuesday 6th) a Bavarian holiday.
    assert grid["A", "FY2026-Q1", 1] == 3 and grid["B", "FY2026-Q1", 1] == 5
    # The next week as of Saturday 10 January: Thursday and Friday.
    assert grid["A", "FY2026-Q1", 2] == grid["B", "FY2026-Q1", 2] == 2


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


def test_won_deals_count_by_week_of_their_close_date_up_to_as_of():
    opps = table("opportunities", [
        opportunity("1", "2025-01-02", won=True, close="2025-01-03"),  # week 1 of FY2025-Q1
        opportunity("2", "2025-01-02", won=True, close="2025-01-07"),  # week 1 (1-7 Jan)
        opportunity("3", "2025-01-02", won=True, close="2025-01-08"),  # week 2
        opportunity("4", "2025-01-02", won=False, close="2025-01-08"),  # lost: not counted
        opportunity("5", "2025-01-02", won=True, close="2025-04-02"),  # after as_of
    ])
    data = Dataset.from_tables({"opportunities": opps}, {"A": {}}, as_of="2025-03-31")
    out = won_deals_by_week(data.opportunities, data.calendars, as_of=data.as_of)
    assert out.to_dict("records") == [
        {"org": "A", "quarter": "FY2025-Q1", "week_of_quarter": 1, "won_deals": 2},
        {"org": "A", "quarter": "FY2025-Q1", "week_of_quarter": 2, "won_deals": 1},
    ]
    assert list(won_deals_by_week(data.opportunities.iloc[:0], data.calendars).columns) == [
        "org", "quarter", "week_of_quarter", "won_deals"]


def test_share_by_week_pools_over_quarters_with_wilson_intervals():
    weekly = pd.DataFrame({
        "org": "A", "role": ["baseline", "baseline", "FY2025-Q2", "baseline"],
        "week_of_quarter": [1, 1, 1, 2], "after_hours": [2, 4, 5, 0], "requests": [10, 20, 5, 0],
    })
    out = share_by_week(weekly, events="after_hours").set_index(["role", "week_of_quarter"])
    assert len(out) == 2  # a week without requests has no share
    baseline = out.loc[("baseline", 1)]
    assert (baseline["events"], baseline["total"], baseline["share"]) == (6, 30, pytest.approx(0.2))
    low, high = proportion_confint(6, 30, alpha=0.05, method="wilson")
    assert (baseline["ci_low"], baseline["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert out.loc[("FY2025-Q2", 1), "share"] == 1.0 and out.loc[("FY2025-Q2", 1), "ci_high"] == pytest.approx(1.0)
