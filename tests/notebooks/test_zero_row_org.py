"""Every notebook runs on a data folder where one organisation's exports hold a header and no row."""
from __future__ import annotations

import json
import shutil

import pytest

from helpers import ROOT

EMPTY_ORG = "Empty Holdings"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from quarterpanic.sample import write_sample

    data = tmp_path_factory.mktemp("zero_rows") / "data"
    write_sample(data, seed=11, scale="small")
    real = next(p.parent for p in sorted(data.glob("*/org.yaml")) if "salesforce_opportunities" in p.read_text())
    empty = data / "empty_holdings"
    empty.mkdir()
    header = (real / "opportunities.csv").read_bytes().splitlines()[0]
    (empty / "opportunities.csv").write_bytes(header + b"\n")
    (empty / "org.yaml").write_text(f"org: {EMPTY_ORG}\nsize_class: small\nfiles:\n"
                                    "  opportunities.csv: salesforce_opportunities\n")
    return data


# Two more notebook executions (30 s): a sweep, so `make test` stays under 5 minutes; CI runs them.
@pytest.mark.slow
@pytest.mark.sweep
@pytest.mark.parametrize("notebook", ["01_pipeline_overview.ipynb", "04_panic_index.ipynb"])
def test_a_zero_row_organisation_beside_real_ones_does_not_fail_the_notebook(data_dir, tmp_path, notebook):
    import papermill

    summary_path = tmp_path / "summary.json"
    papermill.execute_notebook(
        str(ROOT / "notebooks" / notebook), str(tmp_path / notebook),
        parameters={"data_dir": str(data_dir), "summary_path": str(summary_path)}, cwd=str(tmp_path),
        progress_bar=False,
    )
    summary = json.loads(summary_path.read_text())
    if notebook.startswith("01"):
        # The empty export is read and counted (zero rows); the organisation has nothing to chart.
        assert summary["rows_read"] == summary["rows_accepted"] + summary["rows_rejected"] > 0
        assert EMPTY_ORG not in {row["org"] for row in summary["month3_share"]}
    else:
        assert summary["index"] and EMPTY_ORG not in {row["org"] for row in summary["index"]}


@pytest.mark.slow
def test_a_folder_with_no_opportunity_stops_the_notebook_at_its_first_cell_with_one_line(data_dir, tmp_path):
    import papermill

    alone = tmp_path / "data"
    shutil.copytree(data_dir / "empty_holdings", alone / "empty_holdings")
    with pytest.raises(papermill.PapermillExecutionError) as raised:
        papermill.execute_notebook(
            str(ROOT / "notebooks" / "02_qualification_decay.ipynb"), str(tmp_path / "out.ipynb"),
            parameters={"data_dir": str(alone)}, cwd=str(tmp_path), progress_bar=False,
        )
    assert raised.value.ename == "NoDataError"
    assert "no opportunity to analyse" in raised.value.evalue and f"quarterpanic validate {alone}" in raised.value.evalue
