from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import canonical_table as table
from quarterpanic.analysis import overview
from quarterpanic.calendar import FiscalCalendar
from quarterpanic.ingest import schemas
from quarterpanic.report.overview_report import (
    accounting_headline,
    coverage_headline,
    funnel_headline,
    month3_headline,
    month3_spread_headline,
    pipeline_headline,
)
from quarterpanic.report.plots import chart_text

CALENDARS = {"A": FiscalCalendar(), "B": FiscalCalendar(start_month=2)}


def opp(org, oid, created, close, *, won=False, closed=None, amount=100.0, stage=None):
    closed = won if closed is None else closed
    stage = stage or ("Closed Won" if won else "Closed Lost" if closed else "Proposal")
    return dict(org=org, opportunity_id=oid, size_class="mid", created_at=created, close_date=close, stage=stage,
                is_closed=closed, is_won=won, amount=amount)


@pytest.fixture
def opportunities():
    # Org A, FY2025-Q1 (Jan-Mar): 100 in week 1, 300 in week 13 (month 3), 100 in March week 10 (month 3).
    # FY2025-Q2: one 50 deal in week 2; a lost and an open deal that never count as bookings.
    return table("opportunities", [
        opp("A", "1", "2024-12-01", "2025-01-02", won=True, amount=100.0),
        opp("A", "2", "2025-01-05", "2025-03-28", won=True, amount=300.0),
        opp("A", "3", "2025-01-06", "2025-03-10", won=True, amount=100.0),
        opp("A", "4", "2025-03-01", "2025-04-09", won=True, amount=50.0),
        opp("A", "5", "2025-03-02", "2025-03-30", closed=True, amount=999.0),
        opp("A", "6", "2025-04-02", "2025-06-30", amount=999.0),
    ])


def test_bookings_by_week_puts_won_amount_in_the_close_week(opportunities):
    weekly = overview.bookings_by_week(opportunities, CALENDARS)
    q1 = weekly[weekly["quarter"] == "FY2025-Q1"].set_index("week_of_quarter")
    assert len(q1) == 13 and q1["won_amount"].sum() == 500.0
    assert q1.loc[1, "won_amount"] == 100.0 and q1.loc[13, "won_amount"] == 300.0 and q1.loc[10, "won_amount"] == 100.0
    assert q1.loc[5, "won_amount"] == 0.0 and q1.loc[5, "won_deals"] == 0
    assert q1.loc[13, "share"] == pytest.approx(0.6)
    assert set(weekly["quarter"]) == {"FY2025-Q1", "FY2025-Q2"}


def test_hockey_stick_cumulative_share_rises_to_one(opportunities):
    weekly = overview.bookings_by_week(opportunities, CALENDARS)
    for _, quarter in weekly.groupby(["org", "quarter"]):
        assert quarter["cumulative_share"].iloc[-1] == pytest.approx(1.0)
        assert (np.diff(quarter["cumulative_share"]) >= 0).all()
    q1 = weekly[weekly["quarter"] == "FY2025-Q1"].set_index("week_of_quarter")
    assert q1.loc[9, "cumulative_share"] == pytest.approx(0.2)


def test_month3_share_with_known_numbers(opportunities):
    shares = overview.month3_share(opportunities, CALENDARS, n_boot=200).set_index("quarter")
    q1 = shares.loc["FY2025-Q1"]
    assert q1["estimate"] == pytest.approx(400 / 500)
    assert (q1["won_deals"], q1["month3_deals"], q1["won_amount"]) == (3, 2, 500.0)
    assert q1["ci_low"] <= q1["estimate"] <= q1["ci_high"]
    assert 0 <= q1["ci_low"] and q1["ci_high"] <= 1
    assert q1["even_share"] == pytest.approx(31 / 90)
    assert shares.loc["FY2025-Q2", "estimate"] == 0.0
    by_deals = overview.month3_share(opportunities, CALENDARS, weight="deals", n_boot=50).set_index("quarter")
    assert by_deals.loc["FY2025-Q1", "estimate"] == pytest.approx(2 / 3)
    pooled = overview.month3_share(opportunities, CALENDARS, by=("org",), n_boot=50)
    assert pooled["estimate"].iloc[0] == pytest.approx(400 / 550)


def test_month3_share_follows_each_orgs_calendar():
    # For B (FY starting February), March is month 2 of FY2026-Q1 (Feb-Apr).
    opps = table("opportunities", [opp("B", "1", "2025-02-01", "2025-03-15", won=True),
                                   opp("B", "2", "2025-02-01", "2025-04-15", won=True)])
    shares = overview.month3_share(opps, CALENDARS, n_boot=50)
    assert shares["quarter"].tolist() == ["FY2026-Q1"] and shares["estimate"].iloc[0] == pytest.approx(0.5)


def test_month3_interval_narrows_with_more_deals():
    rng = np.random.default_rng(1)
    rows = []
    for n, org in ((20, "A"), (500, "B")):
        days = rng.integers(0, 89, n)
        for i, d in enumerate(days):
            rows.append(opp(org, f"{org}{i}", "2025-01-01", pd.Timestamp("2025-05-01") + pd.Timedelta(days=int(d)),
                            won=True, amount=float(rng.lognormal(8, 1))))
    shares = overview.month3_share(table("opportunities", rows), {"A": FiscalCalendar(), "B": FiscalCalendar()})
    width = (shares["ci_high"] - shares["ci_low"]).to_numpy()
    assert width[1] < width[0] / 2


def test_pipeline_created_by_week_counts_every_opportunity(opportunities):
    created = overview.pipeline_created_by_week(opportunities, CALENDARS)
    assert created["created"].sum() == 6
    q1 = created[created["quarter"] == "FY2025-Q1"].set_index("week_of_quarter")
    assert q1.loc[1, "created"] == 2 and q1.loc[9, "created"] == 2 and q1["cumulative_share"].iloc[-1] == 1.0


def test_pipeline_month3_share_pools_quarters_per_org(opportunities):
    shares = overview.pipeline_month3_share(opportunities, CALENDARS, n_boot=50)
    a = shares.set_index("org").loc["A"]
    # Created in month 3 of their quarter: deals 5 (999) and 4 (50) in March, and deal 1 in December (100).
    assert (a["created"], a["month3_created"]) == (6, 3)
    assert a["estimate"] == pytest.approx((100 + 50 + 999) / (100 + 300 + 100 + 50 + 999 + 999))
    assert pipeline_headline(shares).startswith("New pipeline arrives at an even pace")
    late = table("opportunities", [opp("A", str(i), f"2025-03-{10 + i}", "2025-06-01") for i in range(15)])
    assert pipeline_headline(overview.pipeline_month3_share(late, CALENDARS)).startswith(
        "A creates 100% of its new pipeline in the quarter's last month (95% CI 100% to 100%; even pace: 34%)")


def test_funnel_counts_cohorts_by_creation_quarter(opportunities):
    history = table("history", [
        dict(org="A", opportunity_id="2", changed_at="2025-01-10", field="stage", old_value="Prospecting",
             new_value="Qualification"),
        dict(org="A", opportunity_id="2", changed_at="2025-02-10", field="stage", old_value="Qualification",
             new_value="Proposal"),
        dict(org="A", opportunity_id="2", changed_at="2025-03-28", field="stage", old_value="Proposal",
             new_value="Closed Won"),
        dict(org="A", opportunity_id="3", changed_at="2025-01-08", field="stage", old_value="Prospecting",
             new_value="Qualification"),
        dict(org="A", opportunity_id="3", changed_at="2025-03-10", field="stage", old_value="Qualification",
             new_value="Closed Won"),
    ])
    leads = table("leads", [
        dict(org="A", lead_id="L1", created_at="2025-01-02", status="Converted", converted_at="2025-01-05",
             converted_opportunity_id="2"),
        dict(org="A", lead_id="L2", created_at="2025-02-02", status="Open"),
        dict(org="A", lead_id="L3", created_at="2025-05-02", status="Open"),
    ])
    order = overview.stage_order(opportunities, history)
    assert order[["org", "stage", "position"]].values.tolist() == [
        ["A", "Prospecting", 0], ["A", "Qualification", 1], ["A", "Proposal", 2]]
    funnel = overview.funnel_counts(opportunities, leads, history, CALENDARS)
    wide = overview.funnel_table(funnel)
    q1 = wide.loc[("A", "FY2025-Q1")]
    assert q1["leads created"] == 2 and q1["leads converted"] == 1
    # Created in Q1: deals 2, 3, 4, 5. Deals 4 and 5 have no history: they sat in their current stage.
    assert q1["opportunities created"] == 4
    assert q1["reached Prospecting"] == 2 and q1["reached Qualification"] == 2 and q1["reached Proposal"] == 1
    assert (q1["won"], q1["lost"], q1["still open"]) == (3, 1, 0)
    q2 = wide.loc[("A", "FY2025-Q2")]
    assert (q2["leads created"], q2["opportunities created"], q2["still open"], q2["reached Proposal"]) == (1, 1, 1, 1)
    assert list(wide.columns)[:3] == ["leads created", "leads converted", "opportunities created"]
    assert list(wide.columns)[-3:] == ["won", "lost", "still open"]
    assert set(funnel.groupby(["org", "quarter"]).size()) == {len(wide.columns)}


def test_stage_order_is_per_org_and_leaves_out_stages_nobody_leaves(opportunities):
    # B's CRM spells stages its own way and writes "Closed" in the history of won deals.
    b = table("opportunities", [opp("B", "b1", "2025-02-03", "2025-03-01", won=True, stage="closedwon"),
                                opp("B", "b2", "2025-02-04", "2025-04-01", stage="demo")])
    history = table("history", [
        dict(org="B", opportunity_id="b1", changed_at="2025-02-10", field="stage", old_value="new", new_value="demo"),
        dict(org="B", opportunity_id="b1", changed_at="2025-03-01", field="stage", old_value="demo", new_value="Closed"),
        dict(org="B", opportunity_id="b2", changed_at="2025-02-10", field="stage", old_value="new", new_value="demo"),
    ])
    both = pd.concat([opportunities, b], ignore_index=True)
    order = overview.stage_order(both, history)
    assert order.loc[order["org"] == "B", "stage"].tolist() == ["new", "demo"]
    assert order.loc[order["org"] == "A", "stage"].tolist() == ["Proposal"]
    wide = overview.funnel_table(overview.funnel_counts(both, schemas.empty("leads"), history, CALENDARS))
    assert wide.loc[("B", "FY2026-Q1"), "reached demo"] == 2 and wide.loc[("B", "FY2026-Q1"), "won"] == 1
    assert pd.isna(wide.loc[("A", "FY2025-Q1"), "reached demo"])
    assert list(wide.columns)[-3:] == ["won", "lost", "still open"]


def test_coverage_by_source_and_quarter_status():
    opps = pd.concat([
        table("opportunities", [opp("A", "1", "2024-10-01", "2025-01-02"), opp("A", "2", "2025-02-01", "2025-03-01")],
              source_file="a.csv"),
        table("opportunities", [opp("B", "9", "2025-02-10", "2025-03-01")], source_file="b.csv"),
    ], ignore_index=True)
    requests = table("requests", [dict(org="A", request_id="R1", created_at="2025-04-03", request_type="Expedite",
                                       planned=False)], source_file="r.csv")
    tables = {"opportunities": opps, "requests": requests}
    by_source = overview.coverage_by_source(tables, CALENDARS)
    a = by_source[(by_source["org"] == "A") & (by_source["table"] == "opportunities")].iloc[0]
    assert (a["rows"], a["first_quarter"], a["last_quarter"], a["quarters"]) == (2, "FY2024-Q4", "FY2025-Q1", 2)
    assert a["first_date"] == pd.Timestamp("2024-10-01")

    coverage = overview.quarter_coverage(tables, CALENDARS, as_of="2025-04-03")
    status = overview.quarter_status(coverage).set_index(["org", "quarter"])["status"]
    assert status[("A", "FY2024-Q4")] == "complete" and status[("A", "FY2025-Q1")] == "complete"
    assert status[("A", "FY2025-Q2")] == "open"
    # B's export starts 10 days into its quarter (Feb-Apr), which is also still open.
    assert status[("B", "FY2026-Q1")] == "open"
    rows = coverage.set_index(["org", "quarter", "table"])["rows"]
    assert rows[("A", "FY2025-Q1", "opportunities")] == 1 and rows[("A", "FY2025-Q1", "leads")] == 0
    assert rows[("A", "FY2025-Q2", "requests")] == 1
    later = overview.quarter_coverage({"opportunities": opps}, CALENDARS, as_of="2025-06-01")
    later_status = overview.quarter_status(later).set_index(["org", "quarter"])["status"]
    assert later_status[("B", "FY2026-Q1")] == "partial"
    assert coverage_headline(coverage) == (
        "2 organisations, 0-2 complete quarters each, Oct 2024 to Mar 2025; the current quarter is still open")


def test_quarters_starting_within_a_sales_cycle_of_the_first_record_are_warm_up(opportunities):
    # First record 2024-12-01; won deals take 32, 82, 63 and 39 days: median 51, so FY2025-Q1
    # (from 2025-01-01) misses deals created before the export began.
    assert overview.won_cycle_days(opportunities)["A"] == pytest.approx(51)
    coverage = overview.quarter_coverage({"opportunities": opportunities}, CALENDARS, as_of="2025-07-15")
    status = overview.quarter_status(coverage).set_index("quarter")["status"]
    assert status.to_dict() == {"FY2024-Q4": "partial", "FY2025-Q1": "warm-up", "FY2025-Q2": "complete",
                                "FY2025-Q3": "open"}
    assert "FY2025-Q1 (warm-up)" in set(coverage["label"])
    longer = overview.quarter_coverage({"opportunities": opportunities}, CALENDARS, as_of="2025-07-15", warmup_days=130)
    assert overview.quarter_status(longer).set_index("quarter")["status"]["FY2025-Q2"] == "warm-up"


def test_select_quarters_keeps_complete_quarters_or_the_ones_asked_for(opportunities):
    coverage = overview.quarter_coverage({"opportunities": opportunities}, CALENDARS, as_of="2025-05-01", warmup_days=0)
    shares = overview.month3_share(opportunities, CALENDARS, n_boot=20)
    assert overview.select_quarters(shares, coverage)["quarter"].tolist() == ["FY2025-Q1"]
    assert overview.select_quarters(shares, coverage, ["FY2025-Q2"])["quarter"].tolist() == ["FY2025-Q2"]
    kept = overview.restrict_to_quarters(opportunities, "close_date", CALENDARS, coverage)
    assert kept["opportunity_id"].tolist() == ["1", "2", "3", "5"]
    assert len(overview.restrict_to_quarters(opportunities, "created_at", CALENDARS, coverage, ["FY2024-Q4"])) == 1


@pytest.fixture
def accounting():
    return pd.DataFrame({
        "file": ["a/opps.csv", "a/leads.csv", "b/opps.xlsx"], "org": ["A", "A", "B"],
        "table": ["opportunities", "leads", "opportunities"], "profile": ["salesforce_opportunities"] * 3,
        "read": [100, 50, 10], "accepted": [97, 50, 8], "rejected": [3, 0, 2],
    })


@pytest.fixture
def rejects():
    return pd.DataFrame({
        "table": ["opportunities"] * 5,
        "file": ["a/opps.csv", "a/opps.csv", "a/opps.csv", "a/opps.csv", "b/opps.xlsx"],
        "row": [5, 7, 9, 12, 3],
        "column": ["close_date", "amount", "close_date", "close_date", "amount"],
        "value": ["31/02/2025", "-5", "soon", "<script>", "-1"],
        "reason": ["close_date: not a date", "amount: must be at least 0", "close_date: not a date",
                   "close_date: not a date", "amount: must be at least 0"],
    })


def test_row_accounting_and_totals(accounting):
    per_org = overview.row_accounting(accounting, by=["org"]).set_index("org")
    assert per_org.loc["A", "read"] == 150 and per_org.loc["B", "rejected_share"] == pytest.approx(0.2)
    totals = overview.accounting_totals(accounting)
    assert totals == {"files": 3, "read": 160, "accepted": 155, "rejected": 5, "ignored": 0}
    assert totals["read"] == totals["accepted"] + totals["rejected"]
    assert overview.accounting_totals(accounting.iloc[:0]) == {"files": 0, "read": 0, "accepted": 0, "rejected": 0,
                                                               "ignored": 0}


def test_accounting_for_orgs_keeps_their_files_and_rejects(accounting, rejects):
    kept, kept_rejects = overview.accounting_for_orgs(accounting, rejects, ["B"])
    assert kept["file"].tolist() == ["b/opps.xlsx"] and kept_rejects["row"].tolist() == [3]
    assert overview.accounting_for_orgs(accounting, rejects, None)[0] is accounting


def test_top_reject_reasons_count_distinct_rows(rejects):
    top = overview.top_reject_reasons(rejects)
    assert top[["reason", "rows", "files"]].values.tolist() == [
        ["close_date: not a date", 3, 1], ["amount: must be at least 0", 2, 2]]
    assert top["example"].iloc[0] == "31/02/2025"
    assert overview.top_reject_reasons(rejects, n=1)["reason"].tolist() == ["close_date: not a date"]
    assert overview.top_reject_reasons(rejects.iloc[:0]).empty


def test_relative_paths_shorten_files_inside_the_data_folder(tmp_path):
    paths = pd.Series([str(tmp_path / "A" / "opps.csv"), "/elsewhere/x.csv", str(tmp_path / "A" / "opps.csv")])
    assert overview.relative_paths(paths, tmp_path).tolist() == [
        str(Path("A") / "opps.csv"), "/elsewhere/x.csv", str(Path("A") / "opps.csv")]


def test_headlines_state_the_numbers(opportunities, accounting, rejects):
    shares = overview.month3_share(opportunities, CALENDARS, n_boot=20)
    assert month3_headline("A", shares.iloc[:1]) == "A books 80% of FY2025-Q1 in its last month (even pace: 34%)"
    assert "A FY2025-Q1, 80% booked in month 3" in month3_spread_headline(shares)
    text = accounting_headline(accounting, overview.top_reject_reasons(rejects))
    assert text == "96.8% of 160 rows read were accepted; 5 rejected, most often close_date: not a date"
    nearly_all = accounting.assign(read=[100_000, 50, 10], accepted=[99_999, 50, 10], rejected=[1, 0, 0])
    assert accounting_headline(nearly_all).startswith("99.9% of 100,060 rows read were accepted; 1 rejected")
    coverage = overview.quarter_coverage({"opportunities": opportunities}, CALENDARS, as_of="2025-05-01", warmup_days=0)
    # The export starts in December: FY2024-Q4 is only partly covered.
    assert coverage_headline(coverage) == "A: 1 complete quarter (FY2025-Q1); FY2025-Q2 is still open"
    funnel = overview.funnel_counts(opportunities, schemas.empty("leads"), schemas.empty("history"), CALENDARS)
    assert funnel_headline(funnel) == "A wins 80% of the deals it closes"
    assert chart_text("$5 Deals $") == r"\$5 Deals \$"
    assert chart_text("one two three", width=8) == "one two\nthree"


def test_funnel_rates_are_shares_of_their_cohort(opportunities):
    leads = table("leads", [
        dict(org="A", lead_id="L1", created_at="2025-01-02", status="Converted", converted_at="2025-01-05"),
        dict(org="A", lead_id="L2", created_at="2025-02-02", status="Open"),
    ])
    funnel = overview.funnel_counts(opportunities, leads, schemas.empty("history"), CALENDARS)
    rates = overview.funnel_rates(funnel).set_index("step")
    assert rates.loc["leads converted", "rate"] == 0.5
    assert rates.loc["opportunities created", "rate"] == 1.0
    assert rates.loc["won", "rate"] == pytest.approx(4 / 6) and rates.loc["still open", "base"] == 6


def test_weekly_profile_summarises_quarters(opportunities):
    profile = overview.weekly_profile(overview.bookings_by_week(opportunities, CALENDARS), "cumulative_share")
    last = profile[profile["week_of_quarter"] == 13].iloc[0]
    assert (last["mean"], last["quarters"]) == (1.0, 2)
    week1 = profile[profile["week_of_quarter"] == 1].iloc[0]
    assert week1["mean"] == pytest.approx(0.1) and week1["low"] <= week1["mean"] <= week1["high"]


def test_back_loaded_needs_the_whole_interval_above_an_even_pace():
    rows = [opp("A", f"m{i}", "2025-01-01", "2025-03-20", won=True) for i in range(40)]
    rows += [opp("A", f"e{i}", "2025-01-01", "2025-01-20", won=True) for i in range(5)]
    rows += [opp("A", f"q{i}", "2025-04-01", f"2025-0{4 + i % 3}-15", won=True) for i in range(30)]
    shares = overview.month3_share(table("opportunities", rows), CALENDARS).set_index("quarter")
    assert shares.loc["FY2025-Q1", "back_loaded"] and not shares.loc["FY2025-Q2", "back_loaded"]


@pytest.mark.slow
def test_month3_share_is_higher_in_panic_quarters_on_a_generated_sample():
    from quarterpanic.dataset import Dataset
    from quarterpanic.sample import generate

    sample = generate(seed=11, scale="default")
    data = Dataset.from_tables(sample.tables, sample.orgs, as_of=sample.as_of)
    shares = overview.month3_share(data.opportunities, data.calendars)
    truth = sample.truth_frame()[["org", "quarter", "open", "panic", "month3_bookings_share"]]
    merged = shares.merge(truth[~truth["open"]], on=["org", "quarter"])
    assert len(merged) >= 25
    panic, calm = merged[merged["panic"]], merged[~merged["panic"]]
    assert panic["estimate"].mean() > calm["estimate"].mean() + 0.15
    for org, rows in merged.groupby("org"):
        if rows["panic"].any():
            assert rows.loc[rows["panic"], "estimate"].median() > rows.loc[~rows["panic"], "estimate"].median(), org
    inside = (merged["ci_low"] <= merged["month3_bookings_share"]) & (merged["month3_bookings_share"] <= merged["ci_high"])
    assert inside.mean() >= 0.75
