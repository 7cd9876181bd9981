"""notebooks/03_reactive_order_taking.ipynb runs on a small generated sample and records its key figures."""
import pytest

from helpers import ROOT, NotebookOutputChecks, execute_notebook_on_sample

NOTEBOOK = ROOT / "notebooks" / "03_reactive_order_taking.ipynb"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    return execute_notebook_on_sample("03_reactive_order_taking.ipynb", tmp_path_factory.mktemp("nb03"), seed=11)


@pytest.mark.slow
def test_summary_records_the_surge_verdicts(executed):
    summary, _, sample = executed
    assert {"as_of", "orgs", "quarters_judged", "quarters_flagged", "headline", "surge", "flagged_surges",
            "secondary_flagged", "findings", "focus_quarters", "turnaround", "wasted_effort"} <= set(summary)
    truth = {(q["org"], q["quarter"]): q for q in sample.truth["quarters"]}
    complete = {key for key, q in truth.items() if not q["open"]}
    judged = {(row["org"], row["quarter"]) for row in summary["surge"]}
    assert judged == complete  # every complete quarter, never the open one
    assert summary["quarters_judged"] == len(judged)
    for row in summary["surge"]:
        if row["status"] == "ok":
            assert 0 < row["ci_low"] <= row["estimate"] <= row["ci_high"]
            assert 0 <= row["p_value"] <= 1
    flagged = {(row["org"], row["quarter"]) for row in summary["flagged_surges"]}
    assert summary["quarters_flagged"] == len(flagged) > 0
    # This sample's mid-size and enterprise panics (rate x2) are found; the small studio's (0.8 requests a
    # day) need not be. Benjamini-Hochberg within each organisation lets a marginal calm quarter in beside
    # several strong panics (that is the false discovery rate it controls, held over many seeds by the
    # statistical tests); one seed may show one.
    panics = {key for key in complete if truth[key]["panic"]}
    larger = {key for key in panics if sample.orgs[key[0]]["size_class"] != "small"}
    assert len(flagged & larger) >= len(larger) - 1 and len(flagged - panics) <= 1


@pytest.mark.slow
class TestOutputs(NotebookOutputChecks):
    min_images = 7  # forest, volume, urgent, planned, turnaround, backlog, wasted effort
