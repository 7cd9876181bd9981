"""notebooks/02_qualification_decay.ipynb runs on a small generated sample and records its key figures."""

import pytest

from helpers import ROOT, TODAYS_EFFECT, NotebookOutputChecks, execute_notebook_on_sample

NOTEBOOK = ROOT / "notebooks" / "02_qualification_decay.ipynb"
HOSTILE_ORG = "Northwind <img src=x onerror=alert(1)> Traders"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    summary, notebook, sample = execute_notebook_on_sample(
        "02_qualification_decay.ipynb", tmp_path_factory.mktemp("nb02"), seed=11, rename_org="Northwind Traders", new_name=HOSTILE_ORG,
        scenario=TODAYS_EFFECT)
    truth = sample.truth_frame().replace({"org": {"Northwind Traders": HOSTILE_ORG}})
    return summary, notebook, truth


@pytest.mark.slow
def test_summary_records_flagged_quarters_and_estimates(executed):
    summary, _, truth = executed
    assert {"as_of", "orgs", "opportunities", "headline", "quarters_judged", "quarters_flagged",
            "quarters_insufficient", "flagged_quarters", "decay", "outcome_means"} <= set(summary)
    assert sorted(summary["orgs"]) == sorted(["Brightline Studio", "Globex Corporation", HOSTILE_ORG])
    assert summary["opportunities"] > 1000
    assert 0 < summary["quarters_flagged"] <= summary["quarters_judged"]
    complete = truth[~truth["open"]]
    assert summary["quarters_judged"] + summary["quarters_insufficient"] == len(complete)
    panic = set(map(tuple, complete.loc[complete["panic"], ["org", "quarter"]].to_numpy()))
    flagged = {(org, quarter) for org, quarters in summary["flagged_quarters"].items() for quarter in quarters}
    assert len(flagged - panic) <= 1, f"calm quarters flagged: {flagged - panic}"
    assert len(flagged & panic) >= 0.75 * len([p for p in panic if p[0] != "Brightline Studio"])
    for row in summary["decay"]:
        if row["status"] == "ok":
            assert -1 <= row["ci_low"] <= row["estimate"] <= row["ci_high"] <= 1 and row["onset_week"] >= 5
        else:
            assert row["estimate"] is None and not row["flagged"]
    means = summary["outcome_means"]
    assert means["win_rate_ratio"]["flagged"] < means["win_rate_ratio"]["other"]
    assert means["stage_skip_rate"]["flagged"] > means["stage_skip_rate"]["other"]


@pytest.mark.slow
class TestOutputs(NotebookOutputChecks):
    min_images = 9
