"""Department-owned deal fields missing at close: the rule, the late-minus-early share, not measured without them."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quarterpanic import sample
from quarterpanic.analysis import department_fields
from quarterpanic.analysis.change import quarter_series
from quarterpanic.analysis.detect import COMPONENTS, detect
from quarterpanic.analysis.findings import FINDING_COLUMNS, INSUFFICIENT, NOT_MEASURED, OK, make_findings, to_records
from quarterpanic.dataset import Dataset
from quarterpanic.report.words import describe
from quarterpanic.util import department_field_columns


def test_missing_at_close_is_empty_or_dated_after_the_close():
    values = pd.Series(["2025-03-28", "2025-04-02", None, "  ", "PO-1", "2025-03-31"])
    close = pd.to_datetime(pd.Series(["2025-03-31 15:00"] * 6))
    assert department_fields.missing_at_close(values, close).tolist() == [False, True, True, True, False, False]


def test_share_difference_is_late_minus_early_with_an_interval_and_a_one_sided_test():
    missing = pd.Series(np.r_[np.zeros(90, bool), np.ones(10, bool), np.zeros(30, bool), np.ones(20, bool)])
    late = pd.Series(np.r_[np.zeros(100, bool), np.ones(50, bool)])
    result = department_fields.share_difference(missing, late)
    assert result["estimate"] == pytest.approx(20 / 50 - 10 / 100)
    assert result["ci_low"] < result["estimate"] < result["ci_high"] and result["status"] == OK
    assert result["p_value"] < 0.01
    reverse = department_fields.share_difference(missing, ~late)
    assert reverse["estimate"] < 0 and reverse["p_value"] > 0.5


def test_share_difference_on_few_deals_is_insufficient_and_on_no_missing_is_calm():
    late = pd.Series(np.r_[np.zeros(30, bool), np.ones(9, bool)])
    few = department_fields.share_difference(pd.Series(np.ones(39, bool)), late)
    assert few["status"] == INSUFFICIENT and np.isnan(few["estimate"])
    late = pd.Series(np.r_[np.zeros(30, bool), np.ones(12, bool)])
    none = department_fields.share_difference(pd.Series(np.zeros(42, bool)), late)
    assert none["status"] == OK and none["estimate"] == 0 and none["p_value"] == 1.0
    assert none["ci_low"] < 0 < none["ci_high"]


def test_component_is_registered():
    assert COMPONENTS["department_fields"] == (department_fields, "detect_department_fields")


@pytest.fixture(scope="module")
def generated():
    return sample.generate(seed=5000, scale="small")


def test_only_the_mid_size_organisation_carries_department_fields(generated):
    opps = generated.tables["opportunities"]
    columns = department_field_columns(opps.columns)
    assert {department for department, _ in columns.values()} == {"legal", "finance", "delivery"}
    held = opps[list(columns)].notna().any(axis=1).groupby(opps["org"]).any()
    mid = {org for org, info in generated.orgs.items() if info["size_class"] == "mid"}
    assert set(held.index[held]) == mid


def test_one_main_and_one_row_per_department_per_complete_quarter(generated):
    data = Dataset.from_tables(generated.tables, generated.orgs, as_of=generated.as_of)
    findings = department_fields.detect_department_fields(data)
    truth = pd.DataFrame(generated.truth["department_fields"])
    complete = set(truth.loc[~truth["open"], "quarter"])
    main = findings[findings["metric"] == "department_fields"]
    assert set(main["quarter"]) == complete and (main["department"] == "any").all()
    gaps = findings[findings["metric"] == "department_field_gap"]
    per_quarter = gaps.groupby("quarter")["department"].apply(lambda names: tuple(sorted(names)))
    assert set(per_quarter) == {("delivery", "finance", "legal")} and set(per_quarter.index) == complete
    assert (findings["status"] == OK).any() and "q_value" in findings


def test_without_department_fields_they_are_not_measured_and_the_need_names_org_yaml(generated):
    opps = generated.tables["opportunities"]
    plain = opps.drop(columns=list(department_field_columns(opps.columns)))
    data = Dataset.from_tables({**generated.tables, "opportunities": plain}, generated.orgs, as_of=generated.as_of)
    findings = detect(data, components=["reactive_order_taking", "department_fields"])
    findings = findings[findings["component"] == "department_fields"]
    assert len(findings) and (findings["status"] == NOT_MEASURED).all()
    assert set(findings["org"]) == set(generated.orgs)
    assert all(any("department_fields:" in need for need in needs) for needs in findings["needs"])


def _finding(metric, department, quarter="FY2025-Q3", estimate=0.2):
    return dict(org="A", quarter=quarter, segment="all", component="department_fields", metric=metric,
                department=department, estimate=estimate, ci_low=estimate - 0.1, ci_high=estimate + 0.1,
                p_value=0.01, status=OK, n=100, ci_level=0.95)


def test_a_per_department_metric_is_no_one_series_for_before_and_after():
    rows = [_finding("department_fields", "any", q) for q in ("FY2025-Q2", "FY2025-Q3")]
    rows += [_finding("department_field_gap", d, q) for q in ("FY2025-Q2", "FY2025-Q3") for d in ("legal", "finance")]
    series = quarter_series(make_findings(rows))
    assert series["quantity"].tolist() == ["department_fields", "department_fields"]


def test_a_department_finding_names_its_department_in_words():
    assert describe(_finding("department_field_gap", "legal")).startswith("A, FY2025-Q3 (legal): the share of won")
    assert describe(_finding("department_fields", "any")).startswith("A, FY2025-Q3: the share of won deals")
    assert "rose by 20 points" in describe(_finding("department_fields", "any"))


def test_json_records_of_department_findings_name_their_department():
    findings = make_findings([_finding("department_field_gap", "legal"), _finding("department_fields", "any"),
                              dict(_finding("win_rate_ratio", None), component="qualification_decay")])
    records = to_records(findings)
    assert [record.get("department") for record in records] == ["legal", "any", None]
    assert "department" not in records[2] and list(records[2]) == FINDING_COLUMNS
