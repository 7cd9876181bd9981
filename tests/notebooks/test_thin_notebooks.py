"""Every notebook is a page of calls and prose: charts, sentences and the quarter selection live in the library."""
import ast
import json

import pytest

from helpers import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def code_cells(path):
    cells = [cell for cell in json.loads(path.read_text())["cells"] if cell["cell_type"] == "code"]
    return [cell for cell in cells if "parameters" not in cell["metadata"].get("tags", [])]


def parsed(cell):
    source = "".join(cell["source"])
    return ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith("%")))


def test_there_are_four_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_carries_no_outputs(path):
    for cell in code_cells(path):
        assert not cell.get("outputs") and cell.get("execution_count") is None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_autoreload_first_one_literal_parameters_cell_and_the_summary_last(path):
    code = [cell for cell in json.loads(path.read_text())["cells"] if cell["cell_type"] == "code"]
    assert "".join(code[0]["source"]).split() == ["%load_ext", "autoreload", "%autoreload", "2"]
    parameters = [cell for cell in code if "parameters" in cell["metadata"].get("tags", [])]
    assert len(parameters) == 1 and not parameters[0].get("outputs")
    lines = [line for line in "".join(parameters[0]["source"]).splitlines() if line.strip()]
    assert all("=" in line and "  # " in line for line in lines), "every parameter is one literal with a help comment"
    assert "artifacts.save_summary" in "".join(code[-1]["source"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_functions_loops_or_sentence_assembly_in_cells(path):
    for cell in code_cells(path):
        source = "".join(cell["source"])
        for node in ast.walk(parsed(cell)):
            assert not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)), source
            assert not isinstance(node, (ast.For, ast.While)), source
            # Sentences are built in quarterpanic.report: no f-strings, no joins, no string concatenation.
            assert not isinstance(node, ast.JoinedStr), source
            if isinstance(node, ast.Attribute):
                assert node.attr != "join", source
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
                assert not any(isinstance(side, ast.Constant) and isinstance(side.value, str)
                               for side in (node.left, node.right)), source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_reads_its_data_through_the_one_view(path):
    calls = [node.func for cell in code_cells(path) for node in ast.walk(parsed(cell)) if isinstance(node, ast.Call)]
    names = [getattr(func, "id", getattr(func, "attr", "")) for func in calls]
    assert names.count("notebook_view") == 1
    # Nobody pseudonymises or picks quarters by hand.
    assert not {"pseudonymize_tables", "pseudonymize_names", "select_quarters", "restrict_to_quarters"} & set(names)
    assert "isin" not in names
