"""Invariants of every finding on exports that break the generator's habits.

Real exports are a won-deals report, an open pipeline, an extract cut by creation date, a single
seller's book, an export without amounts. Whatever the detectors make of them, a finding either has
a number computed from evidence (finite, inside a proper interval, a p-value in [0, 1]) or has none,
and nothing is printed to the user's screen as a warning or a traceback.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from quarterpanic.analysis.backloading import detect_bookings_backloading
from quarterpanic.analysis.detect import detect
from quarterpanic.analysis.findings import OK
from quarterpanic.analysis.inputs import supported_analyses
from quarterpanic.dataset import Dataset
from quarterpanic.sample import generate


@pytest.fixture(scope="module")
def sample():
    return generate(seed=3, scale="small")


def variant(sample, name: str) -> Dataset:
    tables = dict(sample.tables)
    opps = tables["opportunities"].copy()
    if name == "won deals and open pipeline only":
        opps["is_won"] = opps["is_closed"].astype(bool)
        opps["stage"] = np.where(opps["is_won"], "Closed Won", opps["stage"])
    elif name == "open pipeline only":
        opps = opps.assign(is_closed=False, is_won=False, stage="Prospecting")
    elif name == "cut by creation date":
        opps = opps[opps["created_at"] < opps["created_at"].quantile(0.5)]
    elif name == "no amounts":
        opps["amount"] = np.nan
    elif name == "one seller":
        opps["owner"] = "Solo"
    tables["opportunities"] = opps
    return Dataset.from_tables(tables, sample.orgs, as_of=sample.as_of)


def test_an_all_open_pipeline_has_no_back_loading_to_judge(sample):
    # It crashed in pandas (mapping through an empty Series of first closes).
    found = detect_bookings_backloading(variant(sample, "open pipeline only"))
    assert not (found["status"] == OK).any()


def test_a_won_deals_report_has_no_win_rate_and_says_so(sample):
    table = supported_analyses(variant(sample, "won deals and open pipeline only")).set_index("metric")
    for metric in ("win_rate_ratio", "last_week_win_rate_ratio", "wasted_effort_lost"):
        assert not table.loc[metric, "supported"].any()
        assert all("lost deals (closed, not won)" in needs for needs in table.loc[metric, "needs"])
    assert table.loc["bookings_backloading", "supported"].all()  # bookings need won deals only


@pytest.mark.sweep
@pytest.mark.parametrize("name", ["won deals and open pipeline only", "open pipeline only", "cut by creation date",
                                  "no amounts", "one seller"])
def test_every_finding_is_a_number_from_evidence_or_none(sample, name):
    data = variant(sample, name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        findings = detect(data, {})
    assert not caught, [f"{w.category.__name__}: {w.message}" for w in caught[:3]]
    ok = findings[findings["status"] == OK]
    numbers = ok[["estimate", "ci_low", "ci_high"]].astype(float)
    assert np.isfinite(numbers.to_numpy()).all()
    assert (numbers["ci_low"] < numbers["ci_high"]).all(), ok.loc[numbers["ci_low"] >= numbers["ci_high"], "metric"]
    tolerance = 1e-12  # statsmodels' Wilson bound for 0 of n events is 2.8e-17, not 0
    inside = (numbers["ci_low"] <= numbers["estimate"] + tolerance) & (numbers["estimate"] <= numbers["ci_high"] + tolerance)
    assert inside.all(), ok.loc[~inside, ["org", "quarter", "metric", "estimate", "ci_low", "ci_high"]]
    p = ok["p_value"].astype(float).dropna()
    assert ((p >= 0) & (p <= 1)).all()
    assert findings.loc[findings["status"] != OK, "estimate"].isna().all()
