"""Findings whose inputs are absent are ``not measured`` with what they need; the rule uses the signals that exist."""
from __future__ import annotations

import json
import re

import matplotlib
import numpy as np
import pandas as pd
import pytest

from helpers import bernoulli_dataset
from helpers import canonical_table as canonical
from quarterpanic import cli
from quarterpanic.analysis import inputs
from quarterpanic.analysis.backloading import METRIC_NAMES as BACKLOADING_METRICS
from quarterpanic.analysis.detect import detect
from quarterpanic.analysis.early_warning import early_warning
from quarterpanic.analysis.findings import (
    AWAY_FROM_PANIC, FINDING_COLUMNS, NEITHER, NOT_MEASURED, OK, PARTIAL, TOWARD_PANIC, apply_fdr, make_findings,
    to_records,
)
from quarterpanic.analysis.inputs import quarter_coverage
from quarterpanic.analysis.panic_index import NOT_ENOUGH_EVIDENCE, index_from_findings, panic_index, quarter_records
from quarterpanic.analysis.reactive import analyse_reactive
from quarterpanic.analysis.rule import SIGNALS, qualified_by_signals, rule_signals
from quarterpanic.analysis.workload import deal_links
from quarterpanic.dataset import Dataset
from quarterpanic.errors import ParameterError
from quarterpanic.params import defaults
from quarterpanic.report import index_report, qualification_report, reactive_report
from quarterpanic.report.detect_output import report_table
from quarterpanic.report.index_report import rests_on_sentence
from quarterpanic.report.overview_report import month3_headline, month3_quarter_sentence, month3_spread_headline
from quarterpanic.report.qualification_report import signals_text, summary_headline
from quarterpanic.report.words import describe, early_warning_sentences, supported_analyses_lines
from quarterpanic.sample import generate, write_sample

matplotlib.use("Agg")  # plot_index draws off-screen

DEFAULT_RULE = defaults()["qualification_rule"]


def deal(i, **fields):
    row = dict(org="A", opportunity_id=str(i), size_class="mid", created_at="2025-01-10", close_date="2025-03-01",
               stage="Prospecting", is_closed=False, is_won=False, owner="o1", amount=1000.0 + i)
    row.update(fields)
    return row


def dataset_of(rows, history=()):
    tables = {"opportunities": canonical("opportunities", rows)}
    if history:
        tables["history"] = canonical("history", list(history))
    return Dataset.from_tables(tables, {"A": {"size_class": "mid"}}, as_of=pd.Timestamp("2025-06-30"))


# -- what the data hold -----------------------------------------------------------------------------
def test_missing_all_null_and_constant_columns_are_absent():
    rows = [deal(i, lead_score=50.0, discount=None, next_step="Call" if i % 2 else None, bant_budget=True,
                 is_won=bool(i % 2), is_closed=True) for i in range(6)]
    present = inputs.input_presence(dataset_of(rows))["A"]
    assert "amount" in present and "next_step" in present and "won" in present
    assert "lead_score" not in present  # constant
    assert "discount" not in present  # all null
    assert "bant" not in present  # one flag, always true; the others missing
    assert not present & {"history.stage", "history.close_date", "history.amount", "requests"}


def test_history_fields_and_requests_count_per_org():
    rows = [deal(i) for i in range(3)]
    history = [dict(org="A", opportunity_id="0", changed_at="2025-01-11", field="stage", old_value="Prospecting",
                    new_value="Proposal")]
    present = inputs.input_presence(dataset_of(rows, history))["A"]
    assert "history.stage" in present and "history.close_date" not in present


# -- the rule's signals -----------------------------------------------------------------------------
def test_default_rule_keeps_bant_and_next_step_where_they_exist():
    full = {"bant", "next_step", "lead_score", "history.stage"}
    assert rule_signals(DEFAULT_RULE, full) == (["bant", "next_step"], [])
    assert rule_signals(DEFAULT_RULE, {"bant"}) == (["bant"], [])
    with_score = {**DEFAULT_RULE, "min_lead_score": 40}
    assert rule_signals(with_score, {"bant", "lead_score"}) == (["bant", "lead_score"], [])


def test_default_rule_falls_back_to_the_signals_that_exist():
    assert rule_signals(DEFAULT_RULE, {"lead_score", "history.close_date"}) == (["lead_score", "short_cycle"], [])
    assert rule_signals(DEFAULT_RULE, {"amount", "history.amount", "history.stage"}) == (
        ["amount_at_creation", "stage_at_creation"], [])
    assert rule_signals(DEFAULT_RULE, {"amount"}) == ([], list(SIGNALS))


def test_a_pinned_rule_is_not_measured_without_its_fields():
    pinned = {**DEFAULT_RULE, "signals": ["bant", "short_cycle"]}
    assert rule_signals(pinned, {"bant", "history.close_date"}) == (["bant", "short_cycle"], [])
    assert rule_signals(pinned, {"bant"}) == ([], ["short_cycle"])
    with pytest.raises(ParameterError):
        rule_signals({**DEFAULT_RULE, "signals": ["vibes"]}, {"bant"})


def test_fallback_signals_read_the_values_at_creation():
    rows = [
        deal(0, close_date="2025-01-15"),  # planned 5 days after creation, same quarter: short cycle
        deal(1, close_date="2025-03-20"),  # long enough
        deal(2, close_date="2025-03-20", stage="Proposal"),  # created in Proposal (no stage change)
        deal(3, close_date="2025-03-20", stage="Proposal"),  # created in Prospecting, moved on later
        deal(4, close_date="2025-04-20"),  # pushed: planned close at creation was 2025-01-12
    ]
    history = [
        dict(org="A", opportunity_id="3", changed_at="2025-02-01", field="stage", old_value="Prospecting",
             new_value="Proposal"),
        dict(org="A", opportunity_id="4", changed_at="2025-01-11", field="close_date", old_value="2025-01-12",
             new_value="2025-04-20"),
    ]
    data = dataset_of(rows, history)
    quarter_end = pd.Series(pd.Timestamp("2025-03-31"), index=data.opportunities.index)
    qualified = qualified_by_signals(data.opportunities, data.history, {"A": ["stage_at_creation", "short_cycle"]},
                                     quarter_end=quarter_end)
    assert qualified.tolist() == [False, True, False, True, False]
    none = qualified_by_signals(data.opportunities, data.history, {"A": []})
    assert none.isna().all()


def test_signals_need_names_history_fields_together():
    need = inputs.signals_need(SIGNALS)
    assert need.startswith("BANT flags or next_step or lead_score or field history (")
    assert "stage" in need and "close date" in need and "amount" in need


# -- findings ---------------------------------------------------------------------------------------
def test_not_measured_rows_lose_numbers_and_flags_and_say_what_they_need():
    data = bernoulli_dataset(seed=1, quarters=3)  # BANT varies; no history, no requests, constant lead score
    findings = make_findings([
        dict(org="A", quarter="2024Q1", component="qualification_decay", metric="qualification_decay", estimate=0.3,
             ci_low=0.1, ci_high=0.5, p_value=0.001, onset_week=9, n=500),
        dict(org="A", quarter="2024Q1", component="qualification_decay", metric="lead_score_drop", estimate=0.0,
             ci_low=0.0, ci_high=0.0, p_value=0.5, onset_week=9, n=500),
        dict(org="A", quarter="2024Q1", component="reactive_order_taking", metric="reactive_order_taking",
             estimate=1.0, ci_low=1.0, ci_high=1.0, p_value=0.001, onset_week=9, n=40),
    ])
    marked = apply_fdr(inputs.mark_not_measured(findings, data))
    by_metric = marked.set_index("metric")
    assert by_metric.loc["qualification_decay", "status"] == OK
    assert by_metric.loc["qualification_decay", "signals"] == ["bant"]
    assert bool(by_metric.loc["qualification_decay", "flagged"])
    for metric, need in (("lead_score_drop", "lead_score"), ("reactive_order_taking", "ticket export (requests)")):
        row = by_metric.loc[metric]
        assert row["status"] == NOT_MEASURED and row["needs"] == [need] and not row["flagged"]
        assert np.isnan(row[["estimate", "ci_low", "ci_high", "p_value"]].astype(float)).all()
        assert pd.isna(row["onset_week"])
    records = to_records(marked)
    assert list(records[0]) == FINDING_COLUMNS
    assert records[1]["estimate"] is None and records[1]["needs"] == ["lead_score"]
    assert "not measured" in describe(marked.iloc[1]) and "nan" not in describe(marked.iloc[1])


# -- the minimal export, end to end -----------------------------------------------------------------


@pytest.fixture(scope="module")
def minimal():
    sample = generate("minimal", seed=5, scale="small")
    data = Dataset.from_tables(sample.tables, sample.orgs, as_of=sample.as_of)
    return sample, data, detect(data)


# What a plain opportunity report (amount, close date, won, created date) can measure: the deal size and win
# rate in the last week, bookings back-loading, and sell-or-do (but its leads).
MEASURABLE_FROM_OPPORTUNITIES = {"last_week_deal_size_change", "last_week_win_rate_ratio", "sell_or_do",
                                 "sell_or_do_crunch", *BACKLOADING_METRICS}


def test_minimal_export_marks_every_unsupported_metric(minimal):
    _, data, findings = minimal
    supported = inputs.supported_analyses(data)
    assert set(supported.loc[supported["supported"], "metric"]) == MEASURABLE_FROM_OPPORTUNITIES
    measurable = findings["metric"].isin(MEASURABLE_FROM_OPPORTUNITIES)
    unsupported = findings[~measurable]
    assert not unsupported.empty and (unsupported["status"] == NOT_MEASURED).all()
    assert unsupported["needs"].map(len).gt(0).all()
    assert unsupported[["estimate", "ci_low", "ci_high", "p_value"]].isna().all().all()
    assert findings.loc[findings["flagged"], "metric"].isin(MEASURABLE_FROM_OPPORTUNITIES).all()
    # Back-loading is measured: a verdict in some quarters, no "not measured" anywhere.
    backloading = findings[findings["metric"] == "bookings_backloading"]
    assert (backloading["status"] == OK).any() and (backloading["status"] != NOT_MEASURED).all()
    qualification = findings[findings["metric"] == "qualification_decay"]
    assert qualification["needs"].map(lambda n: "BANT flags or next_step" in n[0]).all()
    assert (findings.loc[measurable, "status"] != NOT_MEASURED).all()
    # Every org x quarter has a reactive row saying what it lacks, though no ticket export exists.
    reactive = findings[findings["metric"] == "reactive_order_taking"]
    assert len(reactive) == len(findings[findings["metric"] == "qualification_decay"])


UNMEASURED_IN_MINIMAL = {"qualification_decay", "win_rate_ratio", "discount_uplift", "reactive_order_taking"}


def test_minimal_export_index_rests_on_backloading_alone(minimal):
    _, data, findings = minimal
    scores, index = index_from_findings(findings, None, data)
    measured = index["rests_on"].map(len).gt(0)
    assert measured.any() and index.loc[measured, "rests_on"].map(lambda r: r == ["bookings_backloading"]).all()
    assert index.loc[measured, "panic_index"].notna().all() and index.loc[measured, "index_low"].notna().all()
    # A quarter whose back-loading could not be judged (too few won deals) gets no index and no "calm".
    assert (index.loc[~measured, "level"] == "insufficient data").all() and index.loc[~measured, "panic_index"].isna().all()
    records = quarter_records(scores, index)
    for record in records:
        assert set(record["not_measured"]) == UNMEASURED_IN_MINIMAL
        assert all(record["components"][c]["status"] == NOT_MEASURED and record["components"][c]["needs"]
                   for c in UNMEASURED_IN_MINIMAL)
        assert record["components"]["bookings_backloading"]["status"] != NOT_MEASURED


def test_minimal_export_words_have_no_nan(minimal):
    _, data, findings = minimal
    text = report_table(data, findings)
    sentences = [describe(row) for row in findings.to_dict("records")]
    assert not re.search(r"\bnan\b", text, flags=re.IGNORECASE)
    assert not any(re.search(r"\bnan\b", s, flags=re.IGNORECASE) for s in sentences)
    assert "not measured" in text and "ticket export (requests)" in text
    json.dumps(to_records(findings))
    lines = "\n".join(supported_analyses_lines(inputs.supported_analyses(data)))
    assert f"Globex Corporation: {len(MEASURABLE_FROM_OPPORTUNITIES)} of" in lines
    assert "needs ticket export (requests)" in lines


def test_full_sample_signals_are_todays_rule():
    sample = generate(seed=5, scale="small")
    data = Dataset.from_tables(sample.tables, sample.orgs, as_of=sample.as_of)
    signals = inputs.qualification_signals(data)
    assert all(used == ["bant", "next_step"] for used in signals.values())
    supported = inputs.supported_analyses(data)
    # Only the mid-size organisation has a ticket changelog and department-owned deal fields: the silo metrics
    # need them.
    silos = supported["metric"].isin(["mid_size_silos", "silo_wait_stretch", "department_fields",
                                      "department_field_gap"])
    assert supported.loc[~silos, "supported"].all()
    mid = {org for org, info in sample.orgs.items() if info["size_class"] == "mid"}
    assert set(supported.loc[silos & supported["supported"], "org"]) == mid



def test_an_organisation_without_an_accepted_opportunity_has_nothing_measurable():
    # Every row of a day-first export read as ISO was rejected: validate said "1 of 24 analyses
    # measurable" (the weekly creation counts of no deal at all) before opportunities became an input.
    sample = generate(seed=5, scale="small")
    tables = dict(sample.tables)
    empty_org = next(org for org, info in sample.orgs.items() if info["size_class"] == "small")
    tables = {name: table[table["org"].astype(str) != empty_org] for name, table in tables.items()}
    data = Dataset.from_tables(tables, sample.orgs, as_of=sample.as_of)
    supported = inputs.supported_analyses(data).query("org == @empty_org")
    assert len(supported) and not supported["supported"].any()
    crunch = supported.set_index("metric").loc["sell_or_do_crunch", "needs"]
    assert crunch == ["accepted opportunity rows"]

# -- the pages' words ------------------------------------------------------------------------------
def test_headlines_never_count_unmeasured_quarters_as_judged(minimal):
    sample, data, findings = minimal
    summary = qualification_report.summary_headline(findings)
    assert summary.startswith("Qualification decay could not be judged in any quarter")
    assert "0 of" not in summary and "needs" not in summary and "BANT flags" in summary
    for org in sample.orgs:
        assert "not measured" in qualification_report.decay_headline(findings, org)
    assert "not measured" in qualification_report.forest_headline(findings)
    surge = reactive_report.forest_headline(analyse_reactive(data).findings)
    assert surge.startswith("Reactive order-taking not measured") and "ticket export" in surge


def test_index_words_say_what_the_index_rests_on(minimal):
    _, data, findings = minimal
    scores, index = index_from_findings(findings, None, data)
    text = index_report.headline(index, scores)
    assert "The index rests on bookings backloading only; not measured: qualification decay" in text
    assert "BANT flags" in text and "ticket export (requests)" in text
    phrase = index_report.effect_phrase(scores.iloc[0].to_dict())
    assert "not measured" in phrase and "nan" not in phrase
    backloading = scores[(scores["component"] == "bookings_backloading") & scores["z"].notna()]
    phrase = index_report.effect_phrase(backloading.iloc[0].to_dict())
    assert "of the quarter's bookings closed in its last month (95% CI" in phrase
    assert "in the organisation's other quarters" in phrase and "nan" not in phrase
    assert scores["contribution"].dtype == float and scores["z"].dtype == float
    # With nothing measured at all, no component: no level, and the card says so.
    nothing = scores.assign(z=np.nan, contribution=0.0, status=NOT_MEASURED)
    assert (panic_index(nothing)["level"] == NOT_ENOUGH_EVIDENCE).all()
    org = index["org"].iloc[0]
    assert index_report.plot_contributions(nothing, org).get_title() == (
        f"{org}: no component of the index could be measured")


def test_rests_on_names_the_measured_and_the_missing():
    index = pd.DataFrame({"segment": ["all"], "rests_on": [["reactive_order_taking"]],
                          "not_measured": [["qualification_decay", "win_rate_ratio"]]})
    scores = pd.DataFrame({"segment": ["all"] * 2, "status": [NOT_MEASURED] * 2,
                           "needs": [["BANT flags or next_step"], ["BANT flags or next_step"]]})
    assert rests_on_sentence(index, scores) == (
        "The index rests on reactive order taking only; not measured: qualification decay and win rate ratio "
        "(needs BANT flags or next_step).")
    assert rests_on_sentence(index.assign(not_measured=[[]]), scores) == ""


def test_month3_words_use_counts_when_there_are_no_amounts():
    shares = pd.DataFrame({
        "org": ["A", "A"], "quarter": ["Q1", "Q2"], "won_deals": [10, 20], "month3_deals": [5, 8],
        "won_amount": [0.0, 0.0], "month3_amount": [0.0, 0.0], "estimate": [np.nan, np.nan],
        "ci_low": [np.nan, np.nan], "ci_high": [np.nan, np.nan], "even_share": [0.34, 0.34],
    })
    head = month3_headline("A", shares)
    assert head == ("A closes 45% of each quarter's won deals in its last month "
                    "(by count: the export has no amounts; even pace: 34%)")
    spread = month3_spread_headline(shares)
    assert spread.startswith("The most back-loaded quarter: A Q1, 50% of won deals closed in month 3")
    assert spread.endswith("(by count of won deals: the export has no amounts)")
    sentence = month3_quarter_sentence(shares.iloc[1])
    assert sentence == "A Q2: 8 of 20 won deals (40%) closed in month 3 (by count: the export has no amounts)"
    for text in (head, spread, sentence):
        assert "nan" not in text and "no won deals" not in text
    assert month3_headline("A", shares.assign(won_deals=0, month3_deals=0)) == "A: no won deals in the quarters shown"


# -- direction --------------------------------------------------------------------------------------
def test_direction_and_sidedness_follow_the_metric():
    findings = make_findings([
        dict(org="A", quarter="Q1", component="qualification_decay", metric="win_rate_ratio", estimate=1.6,
             ci_low=1.2, ci_high=2.1, p_value=0.001, n=200),  # late deals won *more* often: away from panic
        dict(org="A", quarter="Q2", component="qualification_decay", metric="win_rate_ratio", estimate=0.5,
             ci_low=0.3, ci_high=0.8, p_value=0.001, n=200),
        dict(org="A", quarter="Q3", component="qualification_decay", metric="win_rate_ratio", estimate=0.9,
             ci_low=0.6, ci_high=1.3, p_value=0.6, n=200),
        dict(org="A", quarter="Q1", component="reactive_order_taking", metric="reactive_order_taking", estimate=2.0,
             ci_low=1.5, ci_high=2.7, p_value=0.001, n=80),
        dict(org="A", quarter="Q2", component="reactive_order_taking", metric="reactive_order_taking",
             status="insufficient data", n=3),
    ])
    out = apply_fdr(findings)
    assert out["direction"].tolist() == [AWAY_FROM_PANIC, TOWARD_PANIC, NEITHER, TOWARD_PANIC, None]
    assert out["p_sided"].tolist() == ["two-sided", "two-sided", "two-sided", "one-sided", None]
    assert out["flagged"].tolist() == [False, True, False, True, False]
    sentence = describe(out.iloc[0])
    assert "points away from panic" in sentence and "(two-sided)" in sentence and "not flagged" in sentence
    assert "(one-sided)" in describe(out.iloc[3])
    record = to_records(out)[0]
    assert record["direction"] == AWAY_FROM_PANIC and record["p_sided"] == "two-sided"


# -- as of ------------------------------------------------------------------------------------------
def test_as_of_defaults_to_the_latest_timestamp_of_any_kind():
    rows = [deal(0, created_at="2025-03-01 10:00", close_date="2025-05-20", is_closed=True, is_won=True),
            deal(1, created_at="2025-03-02 11:00", close_date="2025-09-30")]  # open: its close date is a plan
    opps = canonical("opportunities", rows)
    data = Dataset.from_tables({"opportunities": opps}, {"A": {"size_class": "mid"}})
    assert data.as_of == pd.Timestamp("2025-05-20")


def test_the_summary_names_the_signals_when_bant_and_next_step_are_missing():
    main = make_findings([
        dict(org="A", quarter="Q1", component="qualification_decay", metric="qualification_decay", estimate=0.1,
             ci_low=0.0, ci_high=0.2, p_value=0.2, n=300, signals=["lead_score", "short_cycle"]),
        dict(org="B", quarter="Q1", component="qualification_decay", metric="qualification_decay", estimate=0.1,
             ci_low=0.0, ci_high=0.2, p_value=0.2, n=300, signals=["bant", "next_step"]),
    ]).assign(quarter_complete=True)
    assert signals_text(main) == "Qualification was judged on lead score and a realistic planned close date for A"
    assert summary_headline(main).endswith(". Qualification was judged on lead score and a realistic planned "
                                           "close date for A")
    assert signals_text(main[main["org"] == "B"]) == ""


def test_wasted_effort_uses_the_signals_and_leaves_unmeasured_orgs_missing():
    rows = [deal(i, bant_budget=bool(i % 2), bant_authority=True, bant_need=True, bant_timeline=bool(i % 2),
                 next_step="Call" if i % 2 else None) for i in range(4)]
    rows += [deal(10 + i, org="B") for i in range(2)]
    opps = canonical("opportunities", rows)
    requests = pd.DataFrame({"org": ["A", "A", "B"], "opportunity_id": ["0", "1", "10"]})
    linked = deal_links(requests, opps, history=None, signals={"A": ["bant", "next_step"], "B": []})
    assert linked["deal_unqualified"].tolist()[:2] == [1.0, 0.0] and np.isnan(linked["deal_unqualified"].iloc[2])


# -- the command line on a written minimal export ---------------------------------------------------
@pytest.fixture(scope="module")
def minimal_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("minimal_export")
    write_sample(out, scenario="minimal", seed=5, scale="small")
    return out


def test_detect_json_marks_unsupported_metrics(minimal_folder, capsys):
    assert cli.main(["detect", str(minimal_folder), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    for finding in document["findings"]:
        if finding["metric"] in MEASURABLE_FROM_OPPORTUNITIES:
            assert finding["status"] != NOT_MEASURED
            continue
        assert finding["status"] == NOT_MEASURED and finding["needs"]
        assert finding["estimate"] is None and finding["ci_low"] is None and finding["p_value"] is None
        assert not finding["flagged"] and finding["direction"] is None
    assert document["quarters"] and all(set(q["rests_on"]) <= {"bookings_backloading"} for q in document["quarters"])
    assert all(set(q["not_measured"]) == UNMEASURED_IN_MINIMAL for q in document["quarters"])
    assert not re.search(r"\bnan\b", json.dumps(document), flags=re.IGNORECASE)


def test_validate_lists_what_each_org_supports(minimal_folder, tmp_path, capsys):
    assert cli.main(["validate", str(minimal_folder), "--rejects", str(tmp_path / "rejects.csv")]) == 0
    out = capsys.readouterr().out
    assert "analyses the data support, per organisation:" in out
    assert out.count(f"{len(MEASURABLE_FROM_OPPORTUNITIES)} of {len(inputs.METRIC_INPUTS)} analyses measurable") == 3
    assert "measured: " in out and all(metric in out for metric in MEASURABLE_FROM_OPPORTUNITIES)
    assert "needs ticket export (requests)" in out and "needs close-date history" in out


# -- partial quarters -------------------------------------------------------------------------------
def test_a_quarter_the_data_only_partly_cover_is_partial_and_never_judged():
    sample = generate({"export": {"data_start_week": 9}}, seed=2, scale="small")
    data = Dataset.from_tables(sample.tables, sample.orgs, as_of=sample.as_of)
    first = {}
    for record in sample.truth["quarters"]:
        first.setdefault(record["org"], record["quarter"])
    findings = detect(data)
    # Not measured (the silo metrics of organisations without a ticket changelog or department fields) stays so.
    silos_absent = (findings["component"].isin(["mid_size_silos", "department_fields"])
                    & (findings["status"] == NOT_MEASURED))
    findings = findings[~silos_absent].reset_index(drop=True)
    in_first = findings.apply(lambda r: first[r["org"]] == r["quarter"], axis=1)
    assert in_first.any()
    assert (findings.loc[in_first, "status"] == PARTIAL).all()
    assert findings.loc[in_first, ["estimate", "p_value"]].isna().all().all()
    assert not findings.loc[in_first, "flagged"].any()
    sentence = describe(findings[in_first].iloc[0])
    assert "cover only part of this quarter" in sentence and "n/a" not in sentence
    # Back-loading also waits until the export covers a quarter's closes (its own, stricter coverage).
    own_rule = findings["component"] == "bookings_backloading"
    assert (findings.loc[~in_first & ~own_rule, "status"] != PARTIAL).all()
    _, index = index_from_findings(findings, None, data)
    assert not index.apply(lambda r: first[r["org"]] == r["quarter"], axis=1).any()
    orgs = pd.Series(["A", "A", "A"])
    starts = pd.Series(pd.to_datetime(["2024-01-01", "2024-04-01", "2024-07-01"]))
    ends = pd.Series(pd.to_datetime(["2024-03-31", "2024-06-30", "2024-09-30"]))
    rows = [deal(0, created_at="2024-02-20"), deal(1, created_at="2024-08-01")]
    data = Dataset.from_tables({"opportunities": canonical("opportunities", rows)}, {"A": {"size_class": "mid"}},
                               as_of=pd.Timestamp("2024-08-15"))
    coverage = quarter_coverage(data, orgs, starts, ends)
    assert coverage["partial"].tolist() == [True, False, False]
    assert coverage["complete"].tolist() == [False, True, False]


def test_the_index_records_say_which_signals_qualification_rests_on():
    data = bernoulli_dataset(seed=2, quarters=4)
    findings = detect(data, {"min_n": 10})
    scores, index = index_from_findings(findings, None, data)
    records = quarter_records(scores, index)
    assert records
    for record in records:
        assert record["components"]["qualification_decay"]["signals"] == ["bant"]
        assert record["components"]["reactive_order_taking"]["needs"] == ["ticket export (requests)"]
        assert "reactive_order_taking" in record["not_measured"]


def test_the_early_warning_does_not_call_unwatched_charts_calm(minimal):
    _, data, findings = minimal
    status, charts = early_warning(data, findings=findings, n_simulations=200)
    assert (status["status"] == NOT_MEASURED).all() and charts.empty
    sentences = early_warning_sentences(status)["sentence"]
    assert all("cannot be measured" in s and "ticket export (requests)" in s for s in sentences)
    assert not any("no panic signals" in s or "no data for this quarter" in s for s in sentences)
