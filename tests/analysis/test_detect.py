"""`detect` across the detectors: the confidence level of the intervals apart from the flags' false discovery rate,
and tidy, empty results (never an exception) on data with no or one row."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from helpers import bernoulli_dataset
from quarterpanic.analysis.detect import detect
from quarterpanic.analysis.early_warning import early_warning
from quarterpanic.analysis.findings import FINDING_COLUMNS, OK, apply_fdr
from quarterpanic.analysis.overview import month3_share, pipeline_month3_share
from quarterpanic.analysis.panic_index import (
    SCORE_COLUMNS, by_size_class, discount_cost, discount_cost_totals, index_from_findings,
)
from quarterpanic.analysis.reactive import analyse_reactive
from quarterpanic.dataset import Dataset
from quarterpanic.ingest import schemas
from quarterpanic.params import defaults
from quarterpanic.report.detect_output import report_document, report_table
from quarterpanic.report.index_report import discount_cost_markdown, effect_phrase
from quarterpanic.report.overview_report import month3_lines
from quarterpanic.report.words import describe
from quarterpanic.sample import generate

LEVELS = {"default": {}, "ci 90": {"ci_level": 0.9}, "ci 99": {"ci_level": 0.99}, "alpha 0.01": {"alpha": 0.01}}
KEYS = ["org", "quarter", "segment", "metric"]
CALM_ORG = "Brightline Studio"
# The default scenario with its small studio calm in every quarter (the others panic): these tests need a
# calm organisation beside panicking ones, whatever the default scenario's studio does.
SCENARIO = {"name": "calm studio", "orgs": {CALM_ORG: {"panic_quarters": {}}}}


@pytest.fixture(scope="module")
def small():
    sample = generate(SCENARIO, seed=3, scale="small")
    return Dataset.from_tables(sample.tables, sample.orgs, as_of=sample.as_of)


@pytest.fixture(scope="module")
def runs(small):
    return {name: detect(small, {**defaults(), **change}) for name, change in LEVELS.items()}


def with_interval(findings: pd.DataFrame) -> pd.DataFrame:
    return findings[np.isfinite(findings["ci_low"]) & np.isfinite(findings["ci_high"])]


def test_ci_level_sets_the_width_of_every_interval_and_nothing_else(runs):
    narrow, wide = runs["ci 90"], runs["ci 99"]
    assert narrow[KEYS].equals(wide[KEYS])
    for column in ("estimate", "p_value", "flagged", "onset_week", "n", "status"):
        pd.testing.assert_series_equal(narrow[column], wide[column])
    both = with_interval(narrow).index
    # Every metric of both detectors has intervals: each is tested, none is left at a fixed level.
    assert set(narrow.loc[both, "metric"]) >= {"qualification_decay", "win_rate_ratio", "discount_uplift",
                                               "reactive_order_taking", "turnaround_stretch", "after_hours_shift"}
    assert (wide.loc[both, "ci_low"] <= narrow.loc[both, "ci_low"]).all()
    assert (narrow.loc[both, "ci_high"] <= wide.loc[both, "ci_high"]).all()
    width = narrow.loc[both, "ci_high"] - narrow.loc[both, "ci_low"]
    wider = (wide.loc[both, "ci_high"] - wide.loc[both, "ci_low"]) > width
    assert wider[width > 0].all()
    assert (narrow["ci_level"] == 0.9).all() and (wide["ci_level"] == 0.99).all()


def test_alpha_sets_the_flags_and_leaves_the_intervals_at_95_percent(runs):
    usual, strict = runs["default"], runs["alpha 0.01"]
    columns = KEYS + ["estimate", "ci_low", "ci_high", "p_value", "ci_level"]
    pd.testing.assert_frame_equal(usual[columns], strict[columns])
    assert (strict["ci_level"] == 0.95).all()
    assert strict["flagged"].sum() < usual["flagged"].sum()
    assert not (strict["flagged"] & ~usual["flagged"]).any()


@pytest.mark.parametrize("run, label", [("ci 90", "90% CI"), ("ci 99", "99% CI"), ("alpha 0.01", "95% CI")])
def test_sentences_name_the_level_the_interval_was_computed_at(runs, small, run, label):
    findings = with_interval(runs[run])
    findings = findings[findings["status"] == OK]
    others = {"90% CI", "95% CI", "99% CI"} - {label}
    sentences = [describe(row) for row in findings.to_dict("records")]
    assert sentences and all(label in s and not any(o in s for o in others) for s in sentences)
    params = {**defaults(), **LEVELS[run]}
    scores, _ = index_from_findings(runs[run], params, small)
    phrases = [effect_phrase(row) for row in with_interval(scores).to_dict("records")]
    assert phrases and all(label in p and not any(o in p for o in others) for p in phrases)


def test_the_panic_index_does_not_move_with_the_interval_level(runs, small):
    """Standard errors are read back off the intervals with the quantile (normal, or t) they were built with."""
    index = {}
    for run in ("ci 90", "ci 99", "default"):
        _, index[run] = index_from_findings(runs[run], {**defaults(), **LEVELS[run]}, small)
    for run in ("ci 90", "ci 99"):
        pd.testing.assert_series_equal(index[run]["panic_index"], index["default"]["panic_index"], rtol=1e-9)
        assert index[run]["level"].equals(index["default"]["level"])


def test_discount_cost_and_size_classes_carry_the_level(runs, small):
    params = {**defaults(), **LEVELS["ci 90"]}
    scores, index = index_from_findings(runs["ci 90"], params, small)
    costs = discount_cost(small, scores, index, params)
    assert len(costs) and (costs["ci_level"] == 0.9).all()
    totals = discount_cost_totals(costs)
    assert (totals["ci_level"] == 0.9).all() and (totals["cost_low"] <= totals["cost"]).all()
    lines = discount_cost_markdown(totals).splitlines()
    assert lines and all("90% CI" in line for line in lines)
    sizes = {level: by_size_class(index, small.size_classes, ci_level=level) for level in (0.9, 0.99)}
    assert (sizes[0.99]["panic_share_low"] <= sizes[0.9]["panic_share_low"]).all()
    assert (sizes[0.9]["ci_level"] == 0.9).all()


def test_month3_shares_are_labelled_with_their_level(small):
    for level, label in ((0.9, "90% CI"), (0.99, "99% CI")):
        shares = month3_share(small.opportunities, small.calendars, n_boot=50, ci_level=level)
        lines = month3_lines(shares).splitlines()
        assert lines and all(label in line for line in lines)
    narrow, wide = (month3_share(small.opportunities, small.calendars, n_boot=200, ci_level=level)
                    for level in (0.9, 0.99))
    assert (wide["ci_low"] <= narrow["ci_low"]).all() and (narrow["ci_high"] <= wide["ci_high"]).all()


# -- no rows, one row -----------------------------------------------------------------------------------------------
def no_rows() -> Dataset:
    """Org A declared, every table empty (a header-only export)."""
    tables = {name: schemas.empty(name) for name in ("opportunities", "history", "leads", "requests")}
    return Dataset.from_tables(tables, {"A": {"size_class": "mid"}})


def one_row() -> Dataset:
    return bernoulli_dataset(per_quarter=1, quarters=1)


def one_org_without_rows() -> Dataset:
    """A real org beside a declared one with no rows."""
    real = bernoulli_dataset(per_quarter=60, quarters=3)
    return Dataset.from_tables(real.tables(), {"A": {"size_class": "mid"}, "B": {"size_class": "small"}},
                               as_of=real.as_of)


@pytest.mark.parametrize("make", [no_rows, one_row, one_org_without_rows])
def test_every_analysis_returns_tidy_frames_on_no_or_one_row(make):
    data, params = make(), defaults()
    findings = detect(data, params)
    assert list(findings.columns[: len(FINDING_COLUMNS)]) == FINDING_COLUMNS
    assert not findings["flagged"].any() or make is one_org_without_rows
    assert set(findings["org"]) <= {"A"}
    scores, index = index_from_findings(findings, params, data)
    assert set(SCORE_COLUMNS) <= set(scores.columns)
    costs = discount_cost(data, scores, index, params)
    discount_cost_totals(costs)
    status, charts = early_warning(data, params, findings=findings)
    assert set(status["org"]) <= {"A"}
    analysis = analyse_reactive(data, params)
    assert set(analysis.findings["org"]) <= {"A"} and not analysis.findings["flagged"].any()
    for share in (month3_share, pipeline_month3_share):
        assert {"estimate", "ci_low", "ci_high", "ci_level"} <= set(share(data.opportunities, data.calendars).columns)
    document = json.loads(report_document(data, findings, params))
    assert document["ci_level"] == 0.95 and document["alpha"] == 0.05
    assert document["false_discovery"]["family"] == "organisation"
    assert document["false_discovery"]["family_keys"] == ["org", "metric"]
    assert "open quarters" in report_table(data, findings, params)


@pytest.fixture(scope="module")
def calm_org_alone(small):
    return detect(small.filter(orgs=[CALM_ORG]))


def calm_rows(findings: pd.DataFrame) -> pd.DataFrame:
    rows = findings[findings["org"] == CALM_ORG].sort_values(KEYS).reset_index(drop=True)
    return rows[KEYS + ["p_value", "q_value", "flagged"]]


def test_an_organisations_flags_do_not_change_when_a_panicking_one_is_added(runs, calm_org_alone):
    alone, with_others = calm_rows(calm_org_alone), calm_rows(runs["default"])
    assert alone["p_value"].notna().sum() >= 10, "the calm organisation has tests of its own"
    pd.testing.assert_frame_equal(alone, with_others)


def test_under_the_run_family_a_panicking_organisation_moves_a_calm_ones_adjusted_p_values(runs, calm_org_alone):
    alone = calm_rows(apply_fdr(calm_org_alone, family="run"))
    with_others = calm_rows(apply_fdr(runs["default"], family="run"))
    pd.testing.assert_frame_equal(alone[KEYS + ["p_value"]], with_others[KEYS + ["p_value"]])
    tested = alone["q_value"].notna()
    # The other organisations' real panics bring tiny p-values that lower every q-value of the calm one.
    assert (with_others.loc[tested, "q_value"] < alone.loc[tested, "q_value"]).mean() > 0.5
    assert not np.allclose(with_others.loc[tested, "q_value"], alone.loc[tested, "q_value"])


def test_fdr_family_parameter_reaches_the_flags(small, runs):
    by_metric = detect(small, {"fdr_family": "metric"}, components=["qualification_decay"])
    usual = runs["default"]
    usual = usual[usual["component"] == "qualification_decay"].reset_index(drop=True)
    expected = apply_fdr(usual, family="metric")
    pd.testing.assert_series_equal(by_metric["q_value"], expected["q_value"])
    pd.testing.assert_series_equal(by_metric["flagged"], expected["flagged"])
