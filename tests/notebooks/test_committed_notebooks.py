"""Every committed notebook: outputs cleared, autoreload first, one literal parameters cell, a recorded summary."""
import json

import pytest

from helpers import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_notebooks_are_found():
    assert NOTEBOOKS, "no notebooks under notebooks/: the parametrized check below would check nothing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_committed_notebook_is_clean_and_parameterised(path):
    notebook = json.loads(path.read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert "".join(code[0]["source"]).split() == ["%load_ext", "autoreload", "%autoreload", "2"]
    assert all(not cell.get("outputs") and cell.get("execution_count") is None for cell in code)
    parameters = [cell for cell in code if "parameters" in cell["metadata"].get("tags", [])]
    assert len(parameters) == 1
    lines = [line for line in "".join(parameters[0]["source"]).splitlines() if line.strip()]
    assert all("=" in line and "  # " in line for line in lines), "every parameter is one literal with a help comment"
    assert "artifacts.save_summary" in "".join(code[-1]["source"])
