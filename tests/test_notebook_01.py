"""notebooks/01_pipeline_overview.ipynb runs on a small generated sample and records its key figures."""
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "01_pipeline_overview.ipynb"
HOSTILE_ORG = "Brightline <img src=x onerror=alert(1)> Studio"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    papermill = pytest.importorskip("papermill")
    from quarterpanic.sample import write_sample

    tmp_path = tmp_path_factory.mktemp("nb01")
    data_dir = tmp_path / "data"
    write_sample(data_dir, seed=7, scale="small")
    # An organisation name is CRM text: it must never reach the page as HTML.
    org_yaml = data_dir / "brightline_studio" / "org.yaml"
    org_yaml.write_text(org_yaml.read_text().replace("org: Brightline Studio", f"org: '{HOSTILE_ORG}'"))
    summary_path = tmp_path / "summary.json"
    out = tmp_path / "01_pipeline_overview.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK), str(out), parameters={"data_dir": str(data_dir), "summary_path": str(summary_path)},
        cwd=str(tmp_path), progress_bar=False,
    )
    return json.loads(summary_path.read_text()), json.loads(out.read_text())


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
def test_notebook_shows_charts_and_escapes_crm_text(executed):
    _, notebook = executed
    outputs = [o for cell in notebook["cells"] for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 7
    for output in outputs:
        data = output.get("data", {})
        for kind in ("text/html", "text/markdown"):
            assert "<img" not in "".join(data.get(kind, "")), f"raw CRM text in {kind} output"
