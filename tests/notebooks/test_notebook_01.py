"""notebooks/01_pipeline_overview.ipynb runs on a small generated sample and records its key figures."""

import pytest

from helpers import ROOT, NotebookOutputChecks, execute_notebook_on_sample

NOTEBOOK = ROOT / "notebooks" / "01_pipeline_overview.ipynb"
HOSTILE_ORG = "Brightline <img src=x onerror=alert(1)> Studio"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    summary, notebook, _ = execute_notebook_on_sample(
        "01_pipeline_overview.ipynb", tmp_path_factory.mktemp("nb01"), seed=7, rename_org="Brightline Studio", new_name=HOSTILE_ORG)
    return summary, notebook


@pytest.mark.slow
def test_summary_records_row_accounting_and_month3_shares(executed):
    summary, _ = executed
    assert {"as_of", "orgs", "files", "rows_read", "rows_accepted", "rows_rejected", "top_reject_reasons",
            "complete_quarters", "month3_share", "month3_share_median", "funnel", "pipeline_month3_share"} <= set(summary)
    assert summary["rows_read"] == summary["rows_accepted"] + summary["rows_rejected"] > 0
    assert sorted(summary["orgs"]) == sorted([HOSTILE_ORG, "Globex Corporation", "Northwind Traders"])
    shares = summary["month3_share"]
    assert {row["org"] for row in shares} == set(summary["orgs"])
    for row in shares:
        assert row["quarter"] in summary["complete_quarters"][row["org"]]
        assert 0 <= row["ci_low"] <= row["estimate"] <= row["ci_high"] <= 1


@pytest.mark.slow
class TestOutputs(NotebookOutputChecks):
    min_images = 7
