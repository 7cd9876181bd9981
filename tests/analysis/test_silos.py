"""Mid-size silos: request paths through departments, the late-vs-early ratio, not measured without history."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quarterpanic import sample
from quarterpanic.analysis import silos
from quarterpanic.analysis.detect import COMPONENTS, detect
from quarterpanic.analysis.findings import INSUFFICIENT, NOT_MEASURED, OK
from quarterpanic.dataset import Dataset, load_dataset

from helpers import FIXTURES


def _changes(rows):
    frame = pd.DataFrame(rows, columns=["request_id", "changed_at", "department"])
    frame["changed_at"] = pd.to_datetime(frame["changed_at"])
    return frame.assign(org="A")


REQUESTS = pd.DataFrame({
    "org": "A", "request_id": ["R1", "R2", "R3"],
    "created_at": pd.to_datetime(["2025-03-01 09:00"] * 3),
    "resolved_at": pd.to_datetime(["2025-03-10 09:00", None, "2025-03-05 09:00"]),
})


def test_paths_count_moves_between_departments_and_time_away_from_sales():
    history = _changes([
        ("R1", "2025-03-01 10:00", "legal"),
        ("R1", "2025-03-01 12:00", None),        # names no department: stays with legal
        ("R1", "2025-03-02 10:00", "legal"),     # already there: no handoff
        ("R1", "2025-03-03 10:00", "sales"),
        ("R1", "2025-03-04 10:00", "finance"),   # resolved after as_of: waits until as_of (47 h)
        ("R2", "2025-03-05 09:00", "delivery"),  # still open: waits until as_of
        ("R3", "2025-03-01 10:00", "sales"),     # already with sales: nothing
    ])
    paths = silos.request_paths(REQUESTS, history, as_of="2025-03-06 09:00").set_index("request_id")
    assert paths["handoffs"].to_dict() == {"R1": 3, "R2": 1, "R3": 0}
    assert paths.loc["R1", "wait_hours"] == pytest.approx(48 + 47)
    assert paths.loc["R2", "wait_hours"] == pytest.approx(24)
    assert paths.loc["R3", "wait_hours"] == 0


def test_ratio_of_means_is_the_ratio_of_the_two_means_with_an_interval_around_it():
    rng = np.random.default_rng(1)
    values = pd.Series(np.r_[rng.poisson(1.0, 200), rng.poisson(2.0, 100)])
    late = pd.Series(np.r_[np.zeros(200, bool), np.ones(100, bool)])
    result = silos.ratio_of_means(values, late)
    assert result["estimate"] == pytest.approx(values[late].mean() / values[~late].mean())
    assert result["ci_low"] < result["estimate"] < result["ci_high"] and result["status"] == OK
    assert result["p_value"] < 0.01
    few = silos.ratio_of_means(values.iloc[:205], late.iloc[:205])
    assert few["status"] == INSUFFICIENT and np.isnan(few["estimate"])


def test_component_is_registered():
    assert COMPONENTS["mid_size_silos"] == (silos, "detect_mid_size_silos")


def test_fixture_changelog_gives_the_documented_path():
    data = load_dataset(FIXTURES / "jira_changelog", cache=False)
    paths = silos.request_paths(data.requests, data.request_history, data.as_of).set_index("request_id")
    # docs/DATA.md: sales -> legal -> sales -> finance, 4.2 days on legal, 2.25 on finance.
    assert paths.loc["SOPS-11", "handoffs"] == 3
    assert paths.loc["SOPS-11", "wait_hours"] == pytest.approx(101.5 + 54)


@pytest.fixture(scope="module")
def generated():
    return sample.generate(seed=5000, scale="small")


def test_without_request_history_silos_are_not_measured(generated):
    tables = {**generated.tables, "request_history": generated.tables["request_history"].iloc[:0]}
    data = Dataset.from_tables(tables, generated.orgs, as_of=generated.as_of)
    # detect gives the organisations another component saw rows saying what is missing.
    findings = detect(data, components=["reactive_order_taking", "mid_size_silos"])
    findings = findings[findings["component"] == "mid_size_silos"]
    assert len(findings) and (findings["status"] == NOT_MEASURED).all()
    assert set(findings["metric"]) == {"mid_size_silos", "silo_wait_stretch"}
    assert set(findings["org"]) == set(generated.orgs)
    assert all(needs == ["request history (ticket changelog)"] for needs in findings["needs"])


def test_only_the_organisation_with_history_is_measured(generated):
    data = Dataset.from_tables(generated.tables, generated.orgs, as_of=generated.as_of)
    findings = detect(data, components=["mid_size_silos"])
    mid = [org for org, info in generated.orgs.items() if info["size_class"] == "mid"]
    measured = findings[findings["status"] != NOT_MEASURED]
    assert set(measured["org"]) == set(mid)
    assert (measured["status"] == OK).mean() > 0.9


def test_a_wait_ends_at_resolution_when_it_is_known():
    history = _changes([("R3", "2025-03-02 09:00", "legal")])
    paths = silos.request_paths(REQUESTS, history, as_of="2025-03-20").set_index("request_id")
    assert paths.loc["R3", "wait_hours"] == pytest.approx(72)
