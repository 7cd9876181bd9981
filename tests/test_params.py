import ast

import nbformat
import papermill
import pytest
import yaml

from quarterpanic import params, paths
from quarterpanic.errors import ParameterError
from quarterpanic.params import DEFAULTS, load_params, parse_cli_value


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_when_nothing_is_given():
    assert load_params() == DEFAULTS
    assert load_params() is not DEFAULTS


def test_files_layer_and_overrides_win(tmp_path):
    base = write(tmp_path, "base.yaml", "alpha: 0.1\nqualification_rule:\n  min_bant: 2\n")
    weekly = write(tmp_path, "weekly.yaml", "alpha: 0.01\nas_of: '2026-05-01'\n")
    params = load_params([base, weekly], {"segment": "SMB"})
    assert params["alpha"] == 0.01 and params["as_of"] == "2026-05-01" and params["segment"] == "SMB"
    # Nested rule merges key by key, keeping the other defaults.
    assert params["qualification_rule"]["min_bant"] == 2
    assert params["qualification_rule"]["require_next_step"] is True


def test_unknown_key_is_refused_with_a_suggestion(tmp_path):
    path = write(tmp_path, "typo.yaml", "alhpa: 0.01\n")
    with pytest.raises(ParameterError) as err:
        load_params([path])
    assert "alhpa" in str(err.value) and "'alpha'" in str(err.value) and "typo.yaml" in str(err.value)


def test_unknown_nested_key_is_refused():
    with pytest.raises(ParameterError, match="min_bantt"):
        load_params(overrides={"qualification_rule": {"min_bantt": 2}})


def test_mistyped_value_is_refused():
    with pytest.raises(ParameterError, match="'alpha' must be int or float, got str 'low'"):
        load_params(overrides={"alpha": "low"})
    with pytest.raises(ParameterError, match="by_segment"):
        load_params(overrides={"by_segment": 1})


def test_org_overrides_accept_any_org_name():
    params = load_params(overrides={"qualification_overrides": {"Globex": {"min_bant": 2}}})
    assert params["qualification_overrides"] == {"Globex": {"min_bant": 2}}


def test_bad_yaml_and_missing_file_are_user_errors(tmp_path):
    with pytest.raises(ParameterError, match="line"):
        load_params([write(tmp_path, "bad.yaml", "alpha: [0.1\n")])
    with pytest.raises(ParameterError, match="not found"):
        load_params([tmp_path / "nope.yaml"])
    with pytest.raises(ParameterError, match="mapping"):
        load_params([write(tmp_path, "list.yaml", "- 1\n- 2\n")])


@pytest.mark.parametrize("text, value", [("0.01", 0.01), ("true", True), ("[a, b]", ["a", "b"]), ("Globex", "Globex")])
def test_cli_values_are_yaml_scalars(text, value):
    assert parse_cli_value(text) == value


# -- the model is the one declaration ----------------------------------------------------------------


def test_defaults_are_the_models_and_load_params_starts_from_them():
    assert DEFAULTS == params.Parameters().model_dump()
    assert load_params()["ci_level"] == 0.95 and load_params()["alpha"] == 0.05


def test_default_yaml_is_generated_from_the_model():
    shipped = (paths.PARAMETERS_DIR / "default.yaml").read_text(encoding="utf-8")
    assert shipped == params.default_yaml(), "regenerate: python -m quarterpanic.params > parameters/default.yaml"
    assert yaml.safe_load(shipped) == DEFAULTS
    for name in params.Parameters.model_fields:
        line = next(line for line in shipped.splitlines() if line.startswith(f"{name}:"))
        assert "# " in line, f"{name} has no help in default.yaml"


def test_every_parameter_has_help():
    for name, field in params.Parameters.model_fields.items():
        assert field.description, name
    for nested in params.NESTED.values():
        for name, field in nested.model_fields.items():
            assert field.description, name


# -- values are checked, one line naming the source and the key --------------------------------------


@pytest.mark.parametrize("key, value, words", [
    ("alpha", 5, "'alpha' must be between 0 and 1"),
    ("alpha", -1, "'alpha' must be between 0 and 1"),
    ("alpha", 0, "'alpha' must be between 0 and 1"),
    ("ci_level", 1.5, "'ci_level' must be between 0 and 1"),
    ("ci_level", "95%", "'ci_level' must be int or float, got str"),
    ("min_n", 0, "'min_n' must be greater than or equal to 1"),
    ("min_requests", 2.5, "'min_requests' must be int, got float"),
    ("as_of", "not a date", "'as_of' must be a date"),
    ("as_of", "", "'as_of' must be a date"),
    ("as_of", "12/31/9999", "'as_of' must be a date"),
    ("onset_weeks", [12, 5], "'onset_weeks' must be [first, last]"),
    ("onset_weeks", [0, 5], "'onset_weeks' must be [first, last]"),
    ("onset_weeks", [5, 15], "'onset_weeks' must be [first, last]"),
    ("onset_weeks", [5], "'onset_weeks' must be [first, last]"),
    ("quarters", ["2026 Q3"], "'quarters' must be quarter labels such as FY2026-Q3"),
    ("orgs", "Globex", "'orgs' must be list[str] or None, got str"),
    ("index_thresholds", {"watch": 3.0}, "watch (3.0) must be below panic (3.0)"),
    ("qualification_rule", {"min_bant": 5}, "'qualification_rule.min_bant' must be less than or equal to 4"),
    ("qualification_overrides", {"Globex": {"min_bnt": 2}}, "Globex: 'min_bnt' is not a rule key"),
    ("fiscal_calendar", {"start_month": 13}, "'fiscal_calendar': start_month must be 1..12"),
])
def test_values_out_of_range_are_refused_naming_source_and_key(tmp_path, key, value, words):
    path = write(tmp_path, "bad.yaml", yaml.safe_dump({key: value}))
    with pytest.raises(ParameterError) as err:
        load_params([path])
    assert words in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ParameterError, match="^-p: "):
        load_params(overrides={key: value})


def test_the_layer_that_set_the_bad_value_is_named(tmp_path):
    base = write(tmp_path, "base.yaml", "index_thresholds:\n  watch: 2.5\n")
    layer = write(tmp_path, "layer.yaml", "index_thresholds:\n  panic: 2.0\n")
    with pytest.raises(ParameterError, match="layer.yaml: parameter 'index_thresholds'"):
        load_params([base, layer])
    assert load_params([base])["index_thresholds"] == {"watch": 2.5, "panic": 3.0}


def test_yaml_dates_are_accepted_as_iso_text(tmp_path):
    assert load_params([write(tmp_path, "weekly.yaml", "as_of: 2025-11-14\n")])["as_of"] == "2025-11-14"


@pytest.mark.parametrize("content", [bytes(range(256)) * 4, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00"])
def test_a_binary_parameter_file_is_one_line(tmp_path, content):
    path = tmp_path / "params.yaml"
    path.write_bytes(content)
    with pytest.raises(ParameterError) as err:
        load_params([path])
    assert str(path) in str(err.value) and "\n" not in str(err.value)


# -- notebooks: one call reads the declared parameters -------------------------------------------------


def test_from_notebook_reads_the_annotated_parameters_at_call_time():
    namespace = {"__annotations__": {"alpha": float, "orgs": "Optional[list[str]]", "summary_path": "str"},
                 "alpha": 0.1, "orgs": ["Globex"], "summary_path": "x.json", "segment": "SMB"}
    read = params.from_notebook(namespace)
    assert read["alpha"] == 0.1 and read["orgs"] == ["Globex"]
    assert read["segment"] is None  # not declared: a later variable of that name is not a parameter
    assert "summary_path" not in read and read["ci_level"] == DEFAULTS["ci_level"]
    namespace["alpha"] = 0.2  # an analyst edits the literal and re-runs both cells
    assert params.from_notebook(namespace)["alpha"] == 0.2


def test_from_notebook_refuses_bad_values_and_an_unannotated_cell():
    with pytest.raises(ParameterError, match="notebook parameters: parameter 'alpha' must be between 0 and 1"):
        params.from_notebook({"__annotations__": {"alpha": float}, "alpha": 5})
    with pytest.raises(ParameterError, match="no annotated parameter"):
        params.from_notebook({"alpha": 0.05})


NOTEBOOKS = sorted(paths.NOTEBOOKS_DIR.glob("0*.ipynb"))


def parameters_cell(notebook):
    nb = nbformat.read(notebook, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{notebook.name}: one cell tagged 'parameters'"
    return nb, cells[0]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_parameters_cell_agrees_with_the_model(notebook):
    nb, cell = parameters_cell(notebook)
    inspected = papermill.inspect_notebook(str(notebook))
    assigned = [node.target.id for node in ast.parse(cell.source).body if isinstance(node, ast.AnnAssign)]
    assert list(inspected) == assigned and assigned, "every line of the parameters cell is `name: type = literal`"
    for name, info in inspected.items():
        assert name in params.Parameters.model_fields or name in params.RUN_KEYS, f"{name} is not a parameter"
        assert info["help"], f"{notebook.name}: {name} has no help comment"
        if name in params.RUN_KEYS:
            continue
        annotation = params.Parameters.model_fields[name].annotation
        assert info["inferred_type_name"] == params.type_name(annotation), name
        assert ast.literal_eval(info["default"]) == DEFAULTS[name], name
    assert "summary_path" in inspected


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_reads_its_parameters_with_one_call_and_declares_them_nowhere_else(notebook):
    nb, cell = parameters_cell(notebook)
    others = [c.source for c in nb.cells if c.cell_type == "code" and c is not cell]
    assert sum("params = from_notebook(globals())" in source for source in others) == 1
    for source in others:
        # Another annotated assignment would make that name a declared parameter for from_notebook.
        tree = ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith("%")))
        assert not [node for node in ast.walk(tree) if isinstance(node, ast.AnnAssign)]
        assert "defaults()" not in source
    assert not [c for c in nb.cells if c.get("outputs")], "committed notebooks carry no outputs"


def test_interval_notebooks_declare_ci_level():
    declaring = {p.stem for p in NOTEBOOKS if "ci_level" in papermill.inspect_notebook(str(p))}
    assert declaring == {"02_qualification_decay", "03_reactive_order_taking", "04_panic_index"}


def test_changes_are_checked_entry_by_entry_with_the_entry_and_key_named():
    good = params.load_params(overrides={"changes": params.parse_cli_value(
        "[{org: Globex Corporation, segment: SMB, date: 2024-10-01, label: deal desk}]")})
    assert good["changes"] == [{"org": "Globex Corporation", "segment": "SMB", "date": "2024-10-01",
                                "label": "deal desk", "pre_trend": False}]
    with pytest.raises(ParameterError, match=r"'changes\[0\].date' must be a date"):
        params.load_params(overrides={"changes": [{"org": "Globex", "date": "soon"}]})
    with pytest.raises(ParameterError, match=r"unknown key 'lable' in parameter 'changes' \(entry 1\)"):
        params.load_params(overrides={"changes": [{"org": "Globex", "date": "2024-10-01", "lable": "x"}]})
    with pytest.raises(ParameterError, match=r"'changes' \(entry 2\) lacks 'org'"):
        params.load_params(overrides={"changes": [{"org": "Globex", "date": "2024-10-01"}, {"date": "2024-10-01"}]})


def test_every_parameter_reaches_a_notebook_that_uses_it():
    # `quarterpanic run` passes a notebook only what it declares: a parameter no notebook declares would be
    # accepted and silently ignored (`-p fdr_family run` changed nothing before the notebooks declared it).
    declared = {p.stem: set(papermill.inspect_notebook(str(p))) for p in NOTEBOOKS}
    assert set(params.Parameters.model_fields) <= set().union(*declared.values())


def test_the_index_notebook_declares_every_parameter_of_the_detectors_it_runs():
    # The panic index runs every detector (`detect`): an analysis parameter set for the run but not declared
    # here would make the index disagree with the detector pages it summarises.
    what_to_show = {"orgs", "segment", "by_segment"}  # the index page always shows every organisation
    index_notebook = next(p for p in NOTEBOOKS if p.stem == "04_panic_index")
    missing = set(params.Parameters.model_fields) - what_to_show - set(papermill.inspect_notebook(str(index_notebook)))
    assert not missing, f"04_panic_index does not declare {sorted(missing)}"
