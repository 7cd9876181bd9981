"""Sell or do: new pipeline in the weeks after large wins and in the crunch, against the firm's own weeks."""
from __future__ import annotations

import numpy as np
import pandas as pd
from helpers import canonical_table, sell_or_do_dataset

from quarterpanic.analysis import detect, sell_or_do
from quarterpanic.analysis.findings import INSUFFICIENT, NOT_MEASURED, OK, TOWARD_PANIC
from quarterpanic.dataset import Dataset

LARGE = {"large_win_amount": 50_000.0}


def by_metric(findings):
    return findings.set_index("metric")


def test_a_stop_in_selling_after_large_wins_is_flagged_and_its_interval_covers_it():
    found = by_metric(sell_or_do.detect_sell_or_do(sell_or_do_dataset(1, drop=0.6), LARGE))
    main = found.loc[sell_or_do.COMPONENT]
    assert main["status"] == OK and main["flagged"] and main["direction"] == TOWARD_PANIC
    assert main["ci_low"] < -0.6 < main["ci_high"]
    assert main["quarter"] == "FY2024-Q4" and main["since_quarter"] == "FY2023-Q1"
    assert main["win_amount"] == 50_000.0 and main["weeks_after"] == 4
    assert main["post_weeks"] >= sell_or_do.MIN_POST_WEEKS


def test_a_firm_that_keeps_selling_is_not_flagged():
    found = by_metric(sell_or_do.detect_sell_or_do(sell_or_do_dataset(2, drop=0.0), LARGE))
    main = found.loc[sell_or_do.COMPONENT]
    assert main["status"] == OK and not main["flagged"]
    assert main["ci_low"] < 0 < main["ci_high"]


def test_the_crunch_is_measured_apart_from_the_weeks_after_wins():
    found = by_metric(sell_or_do.detect_sell_or_do(sell_or_do_dataset(3, drop=0.0, crunch_drop=0.6), LARGE))
    assert found.loc[sell_or_do.CRUNCH, "flagged"]
    assert found.loc[sell_or_do.CRUNCH, "ci_low"] < -0.6 < found.loc[sell_or_do.CRUNCH, "ci_high"]
    assert not found.loc[sell_or_do.COMPONENT, "flagged"]


def test_leads_are_measured_where_a_leads_table_exists_and_otherwise_said_to_be_missing():
    with_leads = by_metric(sell_or_do.detect_sell_or_do(sell_or_do_dataset(4, leads_drop=0.6), LARGE))
    assert with_leads.loc[sell_or_do.LEADS, "status"] == OK and with_leads.loc[sell_or_do.LEADS, "flagged"]
    without = by_metric(sell_or_do.detect_sell_or_do(sell_or_do_dataset(4), LARGE))
    assert without.loc[sell_or_do.LEADS, "status"] == NOT_MEASURED
    assert without.loc[sell_or_do.LEADS, "needs"] == ["leads export"]
    assert np.isnan(without.loc[sell_or_do.LEADS, "estimate"])


def test_without_amounts_no_win_is_large_and_the_finding_is_not_measured():
    data = sell_or_do_dataset(5)
    opps = data.opportunities.assign(amount=np.nan)
    data = Dataset.from_tables({"opportunities": opps}, {"A": {"size_class": "small"}}, as_of=data.as_of)
    found = by_metric(sell_or_do.detect_sell_or_do(data))
    assert found.loc[sell_or_do.COMPONENT, "status"] == NOT_MEASURED
    assert found.loc[sell_or_do.COMPONENT, "needs"] == ["amount"]
    assert found.loc[sell_or_do.CRUNCH, "status"] == OK


def test_the_default_threshold_is_the_organisations_90th_percentile_of_won_amounts():
    data = sell_or_do_dataset(6)
    opps = data.opportunities
    won = opps.loc[opps["is_won"].astype(bool), "amount"]
    found = sell_or_do.detect_sell_or_do(data)
    assert np.allclose(found["win_amount"], won.quantile(sell_or_do.LARGE_WIN_QUANTILE))


def test_a_single_complete_quarter_is_insufficient():
    data = sell_or_do_dataset(7, quarters=1)
    found = by_metric(sell_or_do.detect_sell_or_do(data, LARGE))
    assert found.loc[sell_or_do.COMPONENT, "status"] == INSUFFICIENT
    assert np.isnan(found.loc[sell_or_do.COMPONENT, "estimate"])



def test_an_export_cut_by_creation_date_judges_only_the_quarters_it_holds_creations_for(recwarn):
    # An extract of the deals created in one quarter still has closes in the next: that quarter is
    # complete by its records, but holds no creation. Its weeks once gave an estimate with a zero-width
    # interval and a statsmodels PerfectSeparationWarning; they say nothing about selling.
    data = sell_or_do_dataset(11, quarters=3)
    opps = data.opportunities
    kept = opps[opps["created_at"] < pd.Timestamp("2023-04-01")]
    cut = Dataset.from_tables({"opportunities": kept}, {"A": {"size_class": "small"}}, as_of=data.as_of)
    found = by_metric(sell_or_do.detect_sell_or_do(cut, LARGE))
    assert set(found.loc[[sell_or_do.COMPONENT, sell_or_do.CRUNCH], "status"]) == {INSUFFICIENT}
    assert found[["estimate", "ci_low", "ci_high"]].isna().all().all()
    assert not [w for w in recwarn if "separation" in str(w.message).lower()]
    # The same export with its creations is judged: the guard is about missing quarters, not all data.
    whole = by_metric(sell_or_do.detect_sell_or_do(data, LARGE))
    assert whole.loc[sell_or_do.COMPONENT, "status"] == OK

def test_post_win_days_run_from_the_close_date_and_split_the_weeks_they_touch():
    rows = [dict(org="A", opportunity_id=f"o{i}", size_class="small", created_at=day, close_date=day,
                 stage="Closed Lost", is_closed=True, is_won=False, amount=1000.0)
            for i, day in enumerate(pd.date_range("2024-01-01", "2024-06-30", freq="D"))]
    rows.append(dict(org="A", opportunity_id="big", size_class="small", created_at="2024-01-02",
                     close_date="2024-02-01", stage="Closed Won", is_closed=True, is_won=True, amount=90_000.0))
    data = Dataset.from_tables({"opportunities": canonical_table("opportunities", rows)},
                               {"A": {"size_class": "small"}}, as_of="2024-07-10")
    parts = sell_or_do.weekly_activity(data, "A", {**LARGE, "large_win_weeks": 3, "crunch_weeks": 2})
    post = parts[parts["post_win"]].set_index("week_of_quarter")["part_days"]
    # The 21 days from the win on 1 February: 1-4 February end week 5 of FY2024-Q1 (weeks start 1 January),
    # 19-21 begin week 8.
    assert post.to_dict() == {5: 4, 6: 7, 7: 7, 8: 3}
    assert (parts.loc[parts["post_win"], "created"] == post.to_numpy()).all()  # one deal a day
    complete = parts[parts["complete"]]
    assert complete["quarter"].unique().tolist() == ["FY2024-Q1", "FY2024-Q2"]  # Q3 runs on at as_of
    assert sorted(complete.loc[complete["crunch"], "week_of_quarter"].unique()) == [12, 13]
    assert complete["created"].sum() == len(rows)
    assert complete.groupby("quarter")["part_days"].sum().tolist() == [91, 91]
    # A deal every day of the week (and the large one on a Tuesday): every day weighs about the same.
    assert np.allclose(complete["exposure_created"], complete["part_days"], rtol=0.01)


def test_a_firm_that_never_logs_deals_at_weekends_gets_no_weekend_exposure():
    days = pd.date_range("2024-01-01", "2024-01-14")
    weights = sell_or_do.weekday_weights(days, (days.day_of_week < 5).astype(float))
    assert weights.tolist() == [1.4] * 5 + [0.0] * 2 + [1.4] * 5 + [0.0] * 2


def test_detect_runs_the_component_and_the_metrics_are_registered():
    assert "sell_or_do" in detect.COMPONENTS
    findings = detect.detect(sell_or_do_dataset(8), {**LARGE, "orgs": None}, components=["sell_or_do"])
    assert set(findings["metric"]) == set(sell_or_do.METRIC_NAMES)
