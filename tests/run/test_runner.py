"""quarterpanic run on tiny notebooks built here: execution, pages, index, manifest, latest, exit codes.

Kernel start-ups dominate the time, so one run (three notebooks: a report, a
broken one, the panic index) is shared by most assertions through module-scoped
fixtures; the parallel, Dask and all-failed runs are one more run each.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import threading
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from helpers import (
    FIXTURES,
    assert_same_entries,
    by_name,
    dying_notebook,
    make_suite,
    report_cards,
    run_cli,
    run_on_in_process_dask,
    sleeping_notebook,
    write_notebook,
)
from quarterpanic import cli, params, paths
from quarterpanic.errors import ParameterError
from quarterpanic.report.safe import escape_text, pseudonym_map, pseudonymize_names, pseudonymize_tables
from quarterpanic.run import executors, runner
from quarterpanic.run.manifest import count_rows
from quarterpanic.run.parameters import declared_parameters, format_parameters, resolve_parameters
from quarterpanic.run.publish import claim_run_folder, latest_run, new_run_id, switch_latest

# -- tiny notebooks --------------------------------------------------------------------------------


def suite_args(suite: dict[str, Path], out: Path, run_id: str, *extra: str) -> list[str]:
    return [
        "--notebooks", str(suite["report"]), str(suite["broken"]), str(suite["panic"]),
        "-f", str(suite["base"]), "-f", str(suite["layer"]),
        "-p", "label", "from -p", "-p", "data_dir", str(suite["data"]),
        "--out", str(out), "--run-id", run_id, *extra,
    ]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return make_suite(tmp_path_factory.mktemp("suite"))


@pytest.fixture(scope="module")
def first(suite):
    out = suite["root"] / "reports"
    code, stderr = run_cli(*suite_args(suite, out, "run-one"))
    run_dir = out / "run-one"
    return {
        "code": code,
        "stderr": stderr,
        "out": out,
        "dir": run_dir,
        "manifest": json.loads((run_dir / "manifest.json").read_text()),
        "latest": latest_run(out),
        "index": (run_dir / "index.html").read_text(),
        "pages": {p.stem: p.read_text() for p in run_dir.glob("*.html") if p.name != "index.html"},
    }


@pytest.fixture(scope="module")
def parallel(suite, first):
    code, stderr = run_cli(*suite_args(suite, first["out"], "run-two", "--jobs", "2"))
    run_dir = first["out"] / "run-two"
    return {
        "code": code,
        "stderr": stderr,
        "dir": run_dir,
        "manifest": json.loads((run_dir / "manifest.json").read_text()),
        "latest": latest_run(first["out"]),
    }


def body(page: str) -> str:
    """The page after its <head> (which holds the lab template's CSS with every class name)."""
    return page.split("</head>", 1)[1]


# -- one run ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_run_writes_executed_notebooks_pages_index_and_manifest(suite, first):
    names = ["01_alpha", "02_broken", "04_panic"]
    files = {p.name for p in first["dir"].iterdir()}
    for name in names:
        assert {f"{name}.ipynb", f"{name}.html"} <= files
    assert {"index.html", "manifest.json", "01_alpha.summary.json", "04_panic.summary.json"} <= files
    # Executed copies carry outputs; the sources are untouched.
    executed = nbformat.read(str(first["dir"] / "01_alpha.ipynb"), as_version=4)
    assert any(cell.get("outputs") for cell in executed.cells)
    source = nbformat.read(str(suite["report"]), as_version=4)
    assert not any(cell.get("outputs") for cell in source.cells if cell.cell_type == "code")
    assert sorted(p.name for p in suite["report"].parent.iterdir()) == [f"{n}.ipynb" for n in names]
    # No half-written folders or link temp files left behind.
    assert not [p for p in first["out"].iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_manifest_records_inputs_parameters_versions_and_outcomes(suite, first):
    manifest = first["manifest"]
    csv = suite["data"] / "acme" / "opportunities.csv"
    files = {f["path"]: f for f in manifest["inputs"]["files"]}
    assert files["acme/opportunities.csv"]["sha256"] == hashlib.sha256(csv.read_bytes()).hexdigest()
    assert files["acme/opportunities.csv"]["rows"] == 3
    assert files["acme/org.yaml"]["rows"] is None
    assert "header" in manifest["inputs"]["rows_note"]
    assert set(manifest["versions"]) == {"quarterpanic", "pandas", "numpy", "statsmodels", "papermill",
                                         "nbconvert", "python"}
    assert "git" in manifest and manifest["run_id"] == "run-one"
    notebooks = by_name(manifest)
    assert [n["status"] for n in manifest["notebooks"]] == ["ok", "failed", "ok"]
    assert manifest["status"] == "partial" and manifest["exit_code"] == 1
    assert notebooks["01_alpha"]["duration_s"] > 0
    assert notebooks["04_panic"]["summary"]["threshold"] == 2.0
    assert [f["path"] for f in manifest["parameter_files"]] == [str(suite["base"]), str(suite["layer"])]


@pytest.mark.slow
def test_parameters_layer_files_then_p_and_reach_only_declaring_notebooks(first):
    manifest = first["manifest"]
    notebooks = by_name(manifest)
    summary = notebooks["01_alpha"]["summary"]
    assert summary["alpha"] == 0.01  # layer.yaml beats base.yaml
    assert summary["label"] == "from -p"  # -p beats both files
    assert manifest["parameter_sources"]["alpha"].endswith("layer.yaml")
    assert manifest["parameter_sources"]["label"] == "-p"
    assert set(notebooks["01_alpha"]["parameters"]) == {"alpha", "label", "pseudonymize", "data_dir"}
    assert notebooks["04_panic"]["parameters"] == {}  # declares none of them
    assert notebooks["04_panic"]["summary"]["threshold"] == 2.0  # its own default stands


@pytest.mark.slow
def test_pages_have_no_code_prompts_stderr_or_scripts(first):
    for name, page in first["pages"].items():
        assert "jp-InputArea-editor" not in body(page) and 'class="highlight' not in body(page), name
        assert "jp-InputPrompt" not in body(page) and "jp-OutputPrompt" not in body(page), name
        assert "<script" not in page.lower(), name
        assert "Content-Security-Policy" in page, name
        assert 'href="index.html"' in page, name
    alpha = first["pages"]["01_alpha"]
    assert "import pandas" not in alpha and "save_summary(" not in alpha  # no code
    assert "label is from -p" in alpha  # stdout kept
    assert "stray warning" not in alpha and "noise on stderr" not in alpha  # stderr dropped
    assert re.search(r'<img alt="Chart" src="data:image/png;base64,', alpha)  # the chart, embedded
    toc = alpha[alpha.index('class="qp-toc"'):]
    assert 'href="#Section-one"' in toc and 'href="#Section-two"' in toc


@pytest.mark.slow
def test_crm_text_stays_text_in_every_page(first):
    for name, page in {**first["pages"], "index": first["index"]}.items():
        assert "<script" not in page, name
        assert not re.search(r"<[a-z][^>]*\son\w+\s*=", body(page), re.I), name  # no on* handler survives
        assert "<img src=x" not in page and "<svg" not in page and "href=\"javascript:" not in page, name
    alpha = first["pages"]["01_alpha"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in alpha  # DataFrame and raw Markdown: escaped
    assert "Escaped: &lt;img src=x onerror=alert(1)&gt;" in alpha
    assert "Northwind &lt;script&gt;alert(2)&lt;/script&gt; panicked" in first["index"]


@pytest.mark.slow
def test_pseudonymize_parameter_replaces_names_in_the_report(first):
    alpha = first["pages"]["01_alpha"]
    assert "Alice Archer" not in alpha and "Bob Baker" not in alpha
    assert "Owner 01" in alpha and "Owner 02" in alpha
    assert sorted(by_name(first["manifest"])["01_alpha"]["summary"]["owners"]) == ["Owner 01", "Owner 02"]


@pytest.mark.slow
def test_a_failing_notebook_is_named_and_the_others_are_published(first):
    assert first["code"] == 1
    broken = by_name(first["manifest"])["02_broken"]
    assert broken["status"] == "failed"
    assert broken["error"] == {"cell_index": 3, "execution_count": 4, "ename": "ValueError",
                               "evalue": "boom <b>bold</b>"}
    index = first["index"]
    for name in ["01_alpha", "02_broken", "04_panic"]:
        assert f'href="{name}.html"' in index
    assert "Failed at cell 4: ValueError: boom &lt;b&gt;bold&lt;/b&gt;" in index
    assert index.count('data-status="ok"') == 2 and index.count('data-status="failed"') == 1
    page = first["pages"]["02_broken"]
    assert "before the failure" in page and "never printed" not in page
    assert "This report is incomplete" in page and "Traceback" not in page
    assert "[02_broken] failed" in first["stderr"] and "[01_alpha] ok" in first["stderr"]


@pytest.mark.slow
def test_a_first_partial_run_is_kept_in_its_folder_and_creates_no_latest(first):
    assert first["latest"] is None and not os.path.lexists(first["out"] / "latest")
    assert first["code"] == 1  # a cell error; a dead kernel would make it 138
    assert "Incomplete run: 1 of 3 reports did not complete (02_broken)" in first["index"]
    last = first["stderr"].strip().splitlines()[-1]
    assert last.startswith(str(first["dir"] / "index.html")) and "partial run" in last
    assert "failed: 02_broken" in last and "no complete run yet" in last


@pytest.mark.slow
def test_a_partial_run_after_a_complete_one_leaves_latest_on_the_complete_one(suite, tmp_path):
    out = tmp_path / "reports"
    common = ["-p", "data_dir", str(suite["data"]), "--out", str(out)]
    code, stderr = run_cli("--notebooks", str(suite["panic"]), "--run-id", "good", *common)
    assert code == 0 and latest_run(out) == "good" and "latest updated" in stderr
    assert "Incomplete run" not in (out / "good" / "index.html").read_text()

    code, stderr = run_cli("--notebooks", str(suite["panic"]), str(suite["broken"]), "--run-id", "partial", *common)
    assert code == 1
    assert latest_run(out) == "good"
    assert json.loads((out / "latest" / "manifest.json").read_text())["status"] == "ok"
    manifest = json.loads((out / "partial" / "manifest.json").read_text())
    assert manifest["status"] == "partial" and manifest["exit_code"] == 1
    index = (out / "partial" / "index.html").read_text()
    assert "Incomplete run: 1 of 2 reports did not complete (02_broken)" in index
    assert 'href="02_broken.html"' in index and (out / "partial" / "02_broken.html").is_file()
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(str(out / "partial" / "index.html"))
    assert "partial run" in last and "failed: 02_broken" in last and "still good" in last


@pytest.mark.slow
def test_headline_comes_from_the_panic_index_summary(first):
    assert first["manifest"]["headline"].startswith("Northwind <script>")
    assert "<h1>Northwind &lt;script&gt;" in first["index"]


@pytest.mark.slow
def test_parallel_jobs_give_the_same_outputs(first, parallel):
    assert parallel["code"] == first["code"] == 1
    assert {p.name for p in parallel["dir"].iterdir()} == {p.name for p in first["dir"].iterdir()}
    one, two = by_name(first["manifest"]), by_name(parallel["manifest"])
    for name in one:
        for key in ["status", "error", "summary", "parameters", "html", "executed"]:
            assert one[name][key] == two[name][key], (name, key)
    assert parallel["manifest"]["executor"] == {"kind": "local", "jobs": 2}
    for page in ["index.html", "01_alpha.html", "02_broken.html"]:
        text_one = (first["dir"] / page).read_text().replace("run-one", "RUN")
        text_two = (parallel["dir"] / page).read_text().replace("run-two", "RUN")
        if page == "index.html":  # durations and start times differ
            text_one, text_two = (re.sub(r"[\d.]+ s<|started [^·]+·", "", t) for t in (text_one, text_two))
        assert text_one == text_two, page
    assert parallel["latest"] is None  # partial runs are never published


@pytest.mark.slow
def test_an_all_failed_run_does_not_move_latest_and_ranks_a_dead_kernel_first(suite, first, parallel):
    dying = dying_notebook(suite["root"] / "03_dies.ipynb")
    sleeping = sleeping_notebook(suite["root"] / "05_sleeps.ipynb")
    code, stderr = run_cli("--notebooks", str(dying), str(sleeping), "--cell-timeout", "2",
                           "--out", str(first["out"]), "--run-id", "run-failed")
    assert code == 138  # a dead kernel outranks a cell error
    assert latest_run(first["out"]) == parallel["latest"]
    manifest = json.loads((first["out"] / "run-failed" / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    died = by_name(manifest)["03_dies"]
    assert died["status"] == "kernel died" and died["error"]["ename"] == "DeadKernelError"
    assert died["error"]["cell_index"] == 1
    slept = by_name(manifest)["05_sleeps"]
    assert slept["status"] == "failed" and slept["error"]["ename"] == "CellTimeoutError"
    assert slept["error"]["cell_index"] == 1 and "time.sleep" not in slept["error"]["evalue"]
    assert "latest unchanged" in stderr


@pytest.mark.slow
def test_dask_executor_gives_the_same_manifest_and_index(suite, first):
    out = suite["root"] / "dask-reports"
    report = run_on_in_process_dask(
        out_dir=out,
        notebooks=[str(suite["broken"]), str(suite["panic"])],
        parameter_files=[suite["base"], suite["layer"]],
        overrides={"label": "from -p", "data_dir": str(suite["data"])},
        run_id="run-one",
    )
    assert report.exit_code == 1 and not report.published
    assert report.manifest["executor"]["kind"] == "dask"
    local, dask = by_name(first["manifest"]), by_name(report.manifest)
    assert_same_entries(local, dask, ["status", "error", "summary", "parameters", "html", "executed", "title"])
    for name in dask:
        page = f"{name}.html"
        assert (out / "run-one" / page).read_text() == (first["dir"] / page).read_text()
    local_cards = report_cards(first["index"])
    for page, card in report_cards((out / "run-one" / "index.html").read_text()).items():
        assert card == local_cards[page]
    assert report.manifest["headline"] == first["manifest"]["headline"]


# -- per-organisation runs ------------------------------------------------------------------------

ORGS = {"Acme": "acme", "Initech & <Sons>": "initech-sons"}  # org name -> folder; the second is hostile CRM text


def make_org_suite(root: Path) -> dict[str, Path]:
    """A notebook declaring ``orgs`` (fails for Initech after saving its summary), one without, two org folders."""
    nbs = root / "notebooks"
    nbs.mkdir(parents=True)
    for org, folder in ORGS.items():
        (root / "data" / folder).mkdir(parents=True)
        (root / "data" / folder / "org.yaml").write_text(f"org: {json.dumps(org)}\n")
    org_nb = write_notebook(nbs / "01_by_org.ipynb", [
        ("markdown", "# By organisation"),
        ("parameters", "orgs = None  # organisations\nsummary_path = None  # where the summary JSON goes"),
        ("code", "\n".join([
            "from quarterpanic.report.artifacts import save_summary",
            "save_summary({'orgs': orgs}, summary_path)",
            "if orgs and orgs[0].startswith('Initech'):",
            "    raise ValueError('no data for Initech')",
        ])),
    ])
    plain = write_notebook(nbs / "02_all.ipynb", [
        ("markdown", "# Every organisation"),
        ("parameters", "summary_path = None  # where the summary JSON goes"),
        ("code", "from quarterpanic.report.artifacts import save_summary\nsave_summary({'ran': True}, summary_path)"),
    ])
    return {"root": root, "data": root / "data", "org_nb": org_nb, "plain": plain}


@pytest.fixture(scope="module")
def per_org(tmp_path_factory):
    suite = make_org_suite(tmp_path_factory.mktemp("orgs"))
    out = suite["root"] / "reports"
    code, stderr = run_cli("--notebooks", str(suite["org_nb"]), str(suite["plain"]), "--per-org",
                           "-p", "data_dir", str(suite["data"]), "--jobs", "3", "--out", str(out),
                           "--run-id", "by-org")
    run_dir = out / "by-org"
    return {**suite, "code": code, "stderr": stderr, "out": out, "dir": run_dir,
            "manifest": json.loads((run_dir / "manifest.json").read_text()),
            "index": (run_dir / "index.html").read_text()}


@pytest.mark.slow
def test_per_org_runs_each_org_notebook_once_per_org_and_the_others_once(per_org):
    assert per_org["code"] == 1  # Initech's report failed; Acme's and the plain one are still written
    assert latest_run(per_org["out"]) is None  # but the run is partial, so not published
    run_dir = per_org["dir"]
    for folder in ORGS.values():
        assert {p.name for p in (run_dir / folder).iterdir()} == {
            "01_by_org.ipynb", "01_by_org.html", "01_by_org.summary.json"}
    assert {"02_all.ipynb", "02_all.html", "02_all.summary.json"} <= {p.name for p in run_dir.iterdir()}
    manifest = per_org["manifest"]
    assert manifest["per_org"] == ["Acme", "Initech & <Sons>"]
    entries = by_name(manifest)
    assert list(entries) == ["acme/01_by_org", "initech-sons/01_by_org", "02_all"]
    for org, folder in ORGS.items():
        entry = entries[f"{folder}/01_by_org"]
        assert entry["org"] == org
        assert entry["parameters"] == {"orgs": [org]}
        assert entry["summary"] == {"orgs": [org]}  # the parameter reached the notebook
        assert entry["executed"] == f"{folder}/01_by_org.ipynb" and entry["html"] == f"{folder}/01_by_org.html"
        assert entry["summary_file"] == f"{folder}/01_by_org.summary.json"
    assert entries["acme/01_by_org"]["status"] == "ok"
    assert entries["initech-sons/01_by_org"]["status"] == "failed"
    assert entries["02_all"]["org"] is None and entries["02_all"]["executed"] == "02_all.ipynb"
    assert entries["02_all"]["summary"] == {"ran": True}
    assert "[initech-sons/01_by_org] failed" in per_org["stderr"]
    page = (run_dir / "initech-sons" / "01_by_org.html").read_text()
    assert "By organisation — Initech &amp; &lt;Sons&gt;" in page


@pytest.mark.slow
def test_per_org_index_groups_the_reports_under_escaped_org_headings(per_org):
    index = per_org["index"]
    assert "<Sons>" not in index
    headings = re.findall(r'<h2 class="qp-org">(.*?)</h2>', index)
    assert headings == ["Acme", "Initech &amp; &lt;Sons&gt;", "All organisations"]
    sections = re.split(r'<h2 class="qp-org">', index)[1:]
    assert list(report_cards(sections[0])) == ["acme/01_by_org.html"]
    assert list(report_cards(sections[1])) == ["initech-sons/01_by_org.html"]
    assert list(report_cards(sections[2])) == ["02_all.html"]
    assert "2 of 3 reports complete" in index


# Dask once more: a sweep, so `make test` stays under 5 minutes; CI runs it.
@pytest.mark.slow
@pytest.mark.sweep
def test_per_org_on_dask_gives_the_same_manifest_entries(per_org):
    report = run_on_in_process_dask(
        out_dir=per_org["root"] / "dask-reports",
        notebooks=[str(per_org["org_nb"]), str(per_org["plain"])],
        overrides={"data_dir": str(per_org["data"])},
        run_id="by-org",
        per_org=[],
    )
    assert report.exit_code == per_org["code"]
    local, dask = by_name(per_org["manifest"]), by_name(report.manifest)
    assert list(dask) == list(local)
    assert_same_entries(local, dask, ["org", "status", "error", "summary", "parameters", "html", "executed",
                                      "summary_file", "title"])
    assert report.manifest["per_org"] == per_org["manifest"]["per_org"]


def test_per_org_names_must_be_organisations_of_the_data_folder(tmp_path):
    suite = make_org_suite(tmp_path)
    assert runner.select_orgs(["Acme"], suite["data"]) == ["Acme"]
    code, stderr = run_cli("--notebooks", str(suite["org_nb"]), "--per-org", "Acme", "Globex",
                           "-p", "data_dir", str(suite["data"]), "--out", str(tmp_path / "reports"))
    assert code == 2 and "'Globex' not in the data folder" in stderr and "Acme, Initech" in stderr
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").iterdir())
    code, stderr = run_cli("--notebooks", str(suite["org_nb"]), "--per-org", "-p", "data_dir", str(tmp_path),
                           "--out", str(tmp_path / "reports"))
    assert code == 2 and "no organisation folders" in stderr


def test_org_slugs_are_folder_names_and_unique():
    assert runner.org_slugs(["Globex Corporation", "globex  corporation", "<>"]) == {
        "Globex Corporation": "globex-corporation", "globex  corporation": "globex-corporation-2", "<>": "org"}


def test_a_run_without_per_org_records_no_orgs(first):
    assert "per_org" not in first["manifest"]
    assert all("org" not in entry for entry in first["manifest"]["notebooks"])
    assert 'class="qp-org"' not in first["index"]


# -- refused before anything runs ------------------------------------------------------------------


def test_unknown_key_is_refused_before_execution(suite, tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("alhpa: 0.01\n")
    out = tmp_path / "reports"
    code, stderr = run_cli("--notebooks", str(suite["report"]), "-f", str(typo), "--out", str(out))
    assert code == 2
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert "typo.yaml" in stderr and "'alhpa'" in stderr and "did you mean 'alpha'" in stderr
    assert not out.exists()


def test_mistyped_value_is_refused_before_execution(suite, tmp_path):
    out = tmp_path / "reports"
    code, stderr = run_cli("--notebooks", str(suite["report"]), "-p", "alpha", "low", "--out", str(out))
    assert code == 2 and stderr.count("\n") == 1
    assert "-p: parameter 'alpha' must be int or float, got str 'low'" in stderr
    assert not out.exists()
    code, stderr = run_cli("--notebooks", str(suite["panic"]), "-p", "threshold", "[1, 2]", "--out", str(out))
    assert code == 2 and "'threshold'" in stderr


def test_summary_path_belongs_to_the_runner(suite, tmp_path):
    code, stderr = run_cli("--notebooks", str(suite["panic"]), "-p", "summary_path", "x.json",
                           "--out", str(tmp_path))
    assert code == 2 and "summary_path is set by" in stderr


def test_suite_keys_other_notebooks_use_are_accepted_but_not_passed(suite):
    resolved = resolve_parameters(
        [suite["panic"]], [paths.PARAMETERS_DIR / "default.yaml"], {"threshold": 3},
        suite_notebooks=[suite["report"], suite["panic"]],
    )
    assert resolved.for_notebook("04_panic") == {"threshold": 3}
    assert "alpha" in resolved.unused and "reactive_types" in resolved.unused
    with pytest.raises(ParameterError, match="'label' must be str"):
        resolve_parameters([suite["panic"]], [], {"label": 3}, suite_notebooks=[suite["report"]])


def test_declared_parameters_come_from_papermill_inspection(suite):
    declared = declared_parameters(suite["report"])
    assert list(declared) == ["data_dir", "alpha", "label", "pseudonymize", "summary_path"]
    assert declared["alpha"].default == 0.05 and declared["alpha"].help == "false discovery rate"
    listing = format_parameters([suite["report"], suite["panic"]])
    assert "01_alpha" in listing and "alpha: float = 0.05" in listing and "panic level" in listing


def test_list_parameters_prints_every_notebook(suite, capsys):
    assert cli.main(["run", "--list-parameters", "--notebooks", str(suite["report"]), str(suite["panic"])]) == 0
    printed = capsys.readouterr().out
    assert "threshold: float = 2.0" in printed and "false discovery rate" in printed


def test_an_empty_notebooks_folder_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "NOTEBOOKS_DIR", tmp_path / "notebooks")
    (tmp_path / "notebooks").mkdir()
    code, stderr = run_cli("--out", str(tmp_path / "reports"))
    assert code == 2 and "no notebooks to run" in stderr and stderr.count("\n") == 1


def test_notebooks_are_selected_by_name_or_prefix(suite):
    folder = suite["report"].parent
    assert runner.select_notebooks(None, folder) == [suite["report"], suite["broken"], suite["panic"]]
    assert runner.select_notebooks(["04", "01_alpha"], folder) == [suite["panic"], suite["report"]]
    with pytest.raises(runner.RunError, match="'05' is not a notebook"):
        runner.select_notebooks(["05"], folder)


def test_run_ids_are_time_and_input_hash_and_must_be_folder_names(tmp_path):
    import datetime as dt

    when = dt.datetime(2026, 11, 27, 5, 30, tzinfo=dt.timezone.utc)
    assert new_run_id("abcdef0123456789", when) == "20261127T053000Z-abcdef01"
    for bad in ["../x", ".hidden", "latest", "a b"]:
        with pytest.raises(runner.RunError):
            claim_run_folder(tmp_path, bad)


# -- latest ----------------------------------------------------------------------------------------


def test_latest_switches_atomically_under_a_reader(tmp_path):
    for run_id in ["run-a", "run-b"]:
        (tmp_path / run_id).mkdir()
        (tmp_path / run_id / "manifest.json").write_text(json.dumps({"run_id": run_id}))
    switch_latest(tmp_path, "run-a")
    failures, stop = [], threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                json.loads((tmp_path / "latest" / "manifest.json").read_text())
            except (OSError, ValueError) as err:  # a missing or half link would show up here
                failures.append(err)

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(300):
        switch_latest(tmp_path, "run-b" if i % 2 == 0 else "run-a")
    stop.set()
    reader.join()
    assert failures == []
    assert os.readlink(tmp_path / "latest") == "run-a"  # relative target
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "run-a", "run-b"]


def test_latest_is_not_moved_back_to_an_older_run(tmp_path):
    for run_id, started in [("new", "2026-11-27T06:00:00+00:00"), ("old", "2026-11-27T05:00:00+00:00")]:
        (tmp_path / run_id).mkdir()
        (tmp_path / run_id / "manifest.json").write_text(json.dumps({"run_id": run_id, "started_at": started}))
    assert switch_latest(tmp_path, "new", "2026-11-27T06:00:00+00:00")
    assert not switch_latest(tmp_path, "old", "2026-11-27T05:00:00+00:00")
    assert os.readlink(tmp_path / "latest") == "new"


def test_a_real_folder_named_latest_is_refused(tmp_path):
    (tmp_path / "latest").mkdir()
    with pytest.raises(runner.RunError, match="not a symlink"):
        switch_latest(tmp_path, "run-a")


# -- manifest details ------------------------------------------------------------------------------


def test_rows_are_counted_per_format(tmp_path):
    (tmp_path / "a.csv").write_text("h1,h2\n1,2\n3,4\n\n")
    pd.DataFrame({"x": range(5)}).to_parquet(tmp_path / "b.parquet")
    pd.DataFrame({"x": range(4)}).to_excel(tmp_path / "c.xlsx", index=False)
    (tmp_path / "d.yaml").write_text("org: x\n")
    assert [count_rows(tmp_path / n) for n in ["a.csv", "b.parquet", "c.xlsx", "d.yaml"]] == [2, 5, 4, None]


def test_exit_codes_rank_a_dead_kernel_above_a_cell_error():
    def result(status):
        return executors.NotebookResult(name=status, status=status, started_at="", duration_s=0)

    assert runner.exit_code_for([result("ok")]) == 0
    assert runner.exit_code_for([result("ok"), result("failed")]) == 1
    assert runner.exit_code_for([result("failed"), result("kernel died")]) == 138


def test_progress_is_one_line_per_start_and_finish_off_a_terminal():
    stream = io.StringIO()
    failed = executors.NotebookResult(name="02_broken", status="failed", started_at="", duration_s=1.26,
                                   error={"cell_index": 3, "ename": "ValueError", "evalue": "boom"})
    with executors.Progress(stream) as progress:
        progress(executors.Event("start", "02_broken"))
        progress(executors.Event("finish", "02_broken", failed))
    assert stream.getvalue() == "[02_broken] started\n[02_broken] failed in 1.3s — cell 4: ValueError: boom\n"


def test_progress_on_a_terminal_also_shows_what_is_running():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    with executors.Progress(stream) as progress:
        progress(executors.Event("start", "01_alpha"))
    assert "[01_alpha] started\n" in stream.getvalue() and "running: 01_alpha 0s" in stream.getvalue()
    assert stream.getvalue().endswith("\r\x1b[K")  # the status line is cleared at the end


def test_default_parameter_file_documents_every_suite_parameter():
    assert params.read_params_file(paths.PARAMETERS_DIR / "default.yaml") == params.DEFAULTS
    for name in ["weekly.yaml", "per_org_example.yaml", "change_example.yaml"]:
        params.load_params([paths.PARAMETERS_DIR / "default.yaml", paths.PARAMETERS_DIR / name])


# -- escaping and pseudonyms -----------------------------------------------------------------------


def test_escape_text_makes_crm_text_literal_markdown():
    assert escape_text("<img src=x onerror=alert(1)>") == "&lt;img src=x onerror=alert\\(1\\)&gt;"
    assert escape_text("**Acme** [x](javascript:alert(1))\n# H") == (
        "\\*\\*Acme\\*\\* \\[x\\]\\(javascript:alert\\(1\\)\\) \\# H"
    )
    assert escape_text(None) == "" and escape_text("O'Brien & Co") == "O'Brien &amp; Co"


def test_pseudonyms_are_deterministic_distinct_and_numbered():
    frame = pd.DataFrame({"owner": ["Zoe", "Adam", "Zoe", None], "account": ["Acme", "Globex", "Initech", "Acme"]})
    once = pseudonymize_names(frame, ["owner", "account"])
    again = pseudonymize_names(frame.iloc[::-1], ["owner", "account"]).iloc[::-1]
    pd.testing.assert_frame_equal(once, again)
    assert set(once["owner"].dropna()) == {"Owner 01", "Owner 02"}
    assert once["owner"].iloc[0] == once["owner"].iloc[2] and pd.isna(once["owner"].iloc[3])
    assert set(once["account"]) == {"Account 01", "Account 02", "Account 03"}
    assert "Zoe" in set(frame["owner"])  # the input is not modified
    many = pseudonym_map([f"Account {i}" for i in range(150)], "Account")
    assert len(set(many.values())) == 150 and all(re.fullmatch(r"Account \d{3}", v) for v in many.values())


def test_pseudonyms_agree_across_tables():
    tables = {
        "opportunities": pd.DataFrame({"owner": ["Ann", "Ben"], "account": ["Acme", "Globex"], "name": ["A", "B"]}),
        "requests": pd.DataFrame({"requester": ["Ben", "Cal"]}),
    }
    out = pseudonymize_tables(tables)
    ben = out["opportunities"]["owner"].iloc[1]
    assert out["requests"]["requester"].iloc[0] == ben and ben.startswith("Owner ")
    assert set(out["opportunities"]["name"]) <= {"Opportunity 01", "Opportunity 02"}


def test_a_data_folder_with_no_opportunity_is_refused_before_any_notebook_runs(suite, tmp_path):
    folder = shutil.copytree(FIXTURES / "datafolder" / "northwind", tmp_path / "data" / "northwind")
    export = folder / "opportunities.csv"
    export.write_text(export.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    out = tmp_path / "reports"
    code, stderr = run_cli("--notebooks", str(suite["report"]), "-p", "data_dir", str(folder.parent), "--out", str(out))
    assert code == 2 and stderr.count("\n") == 1 and "Traceback" not in stderr
    assert "no opportunity to analyse" in stderr and f"quarterpanic validate {folder.parent}" in stderr
    assert not out.exists()
