"""Parameter values are refused before anything runs: `quarterpanic run` and `detect` exit 2 with one line
naming the file (or -p) and the key, and organisations, segments or quarters the data lacks are listed."""
import contextlib
import io

import pytest

from quarterpanic import cli, paths
from quarterpanic.errors import ParameterError, ProfileError
from quarterpanic.run.parameters import DataScope, check_scope, resolve_parameters
from quarterpanic.run.runner import select_notebooks
from quarterpanic.sample import write_sample


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("params") / "data"
    write_sample(folder, seed=3, scale="small")
    return folder


def run_command(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return code, out.getvalue(), err.getvalue()


def assert_one_line(code: int, stderr: str, *words: str) -> None:
    assert code == 2 and stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    for word in words:
        assert word in stderr, (word, stderr)


BAD_VALUES = [
    (["-p", "alpha", "5"], ["-p: parameter 'alpha' must be between 0 and 1"]),
    (["-p", "alpha", "-1"], ["-p: parameter 'alpha' must be between 0 and 1"]),
    (["-p", "ci_level", "95"], ["-p: parameter 'ci_level' must be between 0 and 1"]),
    (["-p", "as_of", "not a date"], ["-p: parameter 'as_of' must be a date"]),
    (["-p", "onset_weeks", "[12, 5]"], ["-p: parameter 'onset_weeks' must be [first, last]"]),
    (["-p", "min_n", "0"], ["-p: parameter 'min_n' must be greater than or equal to 1"]),
    (["-p", "index_thresholds", "{watch: 3, panic: 2}"], ["-p: parameter 'index_thresholds'", "must be below panic"]),
]
UNKNOWN_IN_DATA = [
    (["-p", "orgs", "[Nope]"], ["-p: parameter 'orgs': 'Nope' not in the data folder",
                                "Brightline Studio, Globex Corporation, Northwind Traders"]),
    (["-p", "segment", "Nope"], ["-p: parameter 'segment': 'Nope' not among the segments", "SMB"]),
    (["-p", "orgs", "[Globex Corporation]", "-p", "quarters", "[FY2031-Q1]"],
     ["-p: parameter 'quarters': 'FY2031-Q1' not quarters of the data of Globex Corporation", "FY2025-Q1"]),
]


@pytest.mark.parametrize("args, words", BAD_VALUES + UNKNOWN_IN_DATA)
def test_run_refuses_bad_values_before_anything_runs(data_dir, tmp_path, args, words):
    out = tmp_path / "reports"
    code, _, stderr = run_command("run", "--notebooks", "02", "--out", str(out), "-p", "data_dir", str(data_dir), *args)
    assert_one_line(code, stderr, *words)
    assert not out.exists()


@pytest.mark.parametrize("args, words", BAD_VALUES + UNKNOWN_IN_DATA)
def test_detect_refuses_bad_values_before_detecting(data_dir, args, words):
    code, stdout, stderr = run_command("detect", str(data_dir), "--json", *args)
    assert_one_line(code, stderr, *words)
    assert stdout == ""


def test_detect_names_the_as_of_option(data_dir):
    code, _, stderr = run_command("detect", str(data_dir), "--as-of", "someday")
    assert_one_line(code, stderr, "--as-of: parameter 'as_of' must be a date")


@pytest.mark.parametrize("content", [bytes(range(256)) * 8, b"\xff\xfe\x00\x00binary\x00"])
def test_a_binary_parameter_file_is_one_line(data_dir, tmp_path, content):
    path = tmp_path / "weekly.yaml"
    path.write_bytes(content)
    for command in (["run", "--notebooks", "02", "--out", str(tmp_path / "reports")], ["detect", str(data_dir)]):
        code, _, stderr = run_command(*command, "-f", str(path))
        assert_one_line(code, stderr, str(path))


def test_a_bad_value_names_the_file_that_set_it(data_dir, tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("alpha: 0.1\n")
    weekly = tmp_path / "weekly.yaml"
    weekly.write_text("orgs: [Northwind Traders, Initech]\n")
    code, _, stderr = run_command("detect", str(data_dir), "-f", str(base), "-f", str(weekly))
    assert_one_line(code, stderr, f"{weekly}: parameter 'orgs': 'Initech' not in the data folder")


def test_ci_level_passes_to_the_notebooks_that_declare_it():
    notebooks = select_notebooks(["01", "02", "03", "04"])
    resolved = resolve_parameters(notebooks, [paths.PARAMETERS_DIR / "default.yaml"], {"ci_level": 0.9})
    assert resolved.for_notebook("02_qualification_decay")["ci_level"] == 0.9
    assert resolved.for_notebook("04_panic_index")["ci_level"] == 0.9
    assert "ci_level" not in resolved.for_notebook("01_pipeline_overview")


SCOPE = DataScope(orgs=["Acme", "Initech"], segments={"Acme": ["SMB"], "Initech": ["Enterprise"]},
                  quarters={"Acme": ["FY2025-Q1", "FY2025-Q2"], "Initech": ["FY2025-Q2"]})


def test_segments_and_quarters_are_those_of_the_chosen_orgs():
    check_scope({"orgs": ["Acme"], "segment": "SMB", "quarters": ["FY2025-Q1"]}, {}, SCOPE)
    with pytest.raises(ParameterError, match="'Enterprise' not among the segments of the opportunities of Acme"):
        check_scope({"orgs": ["Acme"], "segment": "Enterprise"}, {"segment": "-p"}, SCOPE)
    with pytest.raises(ParameterError, match="baseline_quarters': 'FY2025-Q1' not quarters of the data of Initech"):
        check_scope({"orgs": ["Initech"], "baseline_quarters": ["FY2025-Q1"]}, {"baseline_quarters": "w.yaml"}, SCOPE)


def test_a_change_must_name_an_organisation_and_a_segment_of_the_data():
    check_scope({"changes": [{"org": "Acme", "segment": "SMB", "date": "2025-01-01"}]}, {}, SCOPE)
    with pytest.raises(ParameterError, match=r"changes' \(entry 2\): organisation 'Acne' not in the data folder"):
        check_scope({"changes": [{"org": "Acme", "date": "2025-01-01"}, {"org": "Acne", "date": "2025-01-01"}]},
                    {"changes": "-p"}, SCOPE)
    with pytest.raises(ParameterError, match=r"changes' \(entry 1\): 'Enterprise' not among the segments of Acme"):
        check_scope({"changes": [{"org": "Acme", "segment": "Enterprise", "date": "2025-01-01"}]}, {}, SCOPE)


def test_a_change_org_yaml_declares_must_name_a_segment_of_that_organisation():
    declared = ({"org": "Acme", "segment": "Enterprise", "date": "2025-01-01", "label": "deal desk",
                 "source": "data/acme/org.yaml", "entry": 2},)
    scope = DataScope(orgs=SCOPE.orgs, segments=SCOPE.segments, declared_changes=declared)
    with pytest.raises(ProfileError, match=r"changes: entry 2: segment 'Enterprise' is not among the segments of "
                                           r"Acme's opportunities") as caught:
        check_scope({}, {}, scope)
    assert "data/acme/org.yaml" in str(caught.value) and "segments: SMB" in str(caught.value)
    # Parameters that name the organisation replace its own changes (dataset.changes_to_judge): not judged, not checked.
    check_scope({"changes": [{"org": "Acme", "segment": "SMB", "date": "2025-01-01"}]}, {}, scope)
    # Segments not looked at (no segment anywhere in the run): nothing to check against.
    check_scope({}, {}, DataScope(orgs=SCOPE.orgs, declared_changes=declared))


def test_what_was_not_looked_at_is_not_checked():
    check_scope({"orgs": ["Nope"], "segment": "Nope"}, {}, None)  # no data folder: the notebooks say so
    check_scope({"segment": "Nope", "quarters": ["FY1999-Q1"]}, {}, DataScope(orgs=["Acme"]))
