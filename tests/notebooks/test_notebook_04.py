"""notebooks/04_panic_index.ipynb runs on a small generated sample and records its key figures."""

import pytest

from helpers import ROOT, NotebookOutputChecks, execute_notebook_on_sample

NOTEBOOK = ROOT / "notebooks" / "04_panic_index.ipynb"
HOSTILE_ORG = "Northwind <img src=x onerror=alert(1)> Traders"
LEVELS = {"calm", "watch", "panic", "insufficient data"}


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    summary, notebook, _ = execute_notebook_on_sample(
        "04_panic_index.ipynb", tmp_path_factory.mktemp("nb04"), seed=7, rename_org="Northwind Traders", new_name=HOSTILE_ORG)
    return summary, notebook


@pytest.mark.slow
def test_summary_has_a_headline_and_valid_levels(executed):
    summary, _ = executed
    assert isinstance(summary["headline"], str) and len(summary["headline"]) > 20
    assert "panicked" in summary["headline"]
    index = summary["index"]
    assert index and {row["level"] for row in index} <= LEVELS
    assert {row["org"] for row in index} == {HOSTILE_ORG, "Globex Corporation", "Brightline Studio"}
    # The generated sample injects panic into Northwind and Globex, never into the studio.
    panic_orgs = {row["org"] for row in index if row["level"] == "panic"}
    assert panic_orgs == {HOSTILE_ORG, "Globex Corporation"}
    for org, counts in summary["levels"].items():
        assert set(counts) <= LEVELS and sum(counts.values()) == sum(1 for r in index if r["org"] == org)


@pytest.mark.slow
def test_summary_records_costs_sizes_and_the_open_quarter(executed):
    summary, _ = executed
    assert {"discount_cost", "discount_cost_totals", "size_classes", "top_findings", "components"} <= set(summary)
    for row in summary["discount_cost_totals"]:
        assert row["cost_low"] <= row["cost"] <= row["cost_high"]
    assert {row["size_class"] for row in summary["size_classes"]} == {"small", "mid", "enterprise"}
    warning = {row["org"]: row for row in summary["early_warning"]}
    assert set(warning) == {HOSTILE_ORG, "Globex Corporation", "Brightline Studio"}
    # Northwind's open quarter panics from week 9 and the sample ends in its week 11.
    assert warning[HOSTILE_ORG]["status"] == "panic signals"
    assert all(row["sentence"].startswith(row["org"]) for row in warning.values())


@pytest.mark.slow
class TestOutputs(NotebookOutputChecks):
    min_images = 7
