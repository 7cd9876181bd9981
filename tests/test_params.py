import pytest

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
    with pytest.raises(ParameterError, match="'alpha' must be int or float"):
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
