"""quarterpanic run --per-segment, alone and with --per-org, locally and on Dask (in-process and at an address).

One local run of three tiny notebooks (org × segment, org only, segment only)
is shared through a module-scoped fixture; the Dask runs compare against it.
The notebooks only record what they received; the data folder is two
organisations of Salesforce opportunities that the loader reads for real.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import assert_same_entries, by_name, report_cards, run_cli, run_on_in_process_dask, write_notebook
from quarterpanic.report import pages
from quarterpanic.run import executors, runner

HOSTILE_SEGMENT = "Enterprise & <Co>"  # segment names are CRM text
OPPORTUNITIES = {  # org -> segments of its opportunities ("" is a blank segment)
    "Acme": ["SMB", HOSTILE_SEGMENT, "SMB", ""],
    "Initech": ["SMB"],
}
RECORD = ("from quarterpanic.report.artifacts import save_summary\n"
          "save_summary({'orgs': orgs, 'segment': segment}, summary_path)")


def make_segment_suite(root: Path) -> dict[str, Path]:
    """Two organisation folders of opportunities and three notebooks declaring orgs and/or segment."""
    for org, segments in OPPORTUNITIES.items():
        folder = root / "data" / org.lower()
        folder.mkdir(parents=True)
        (folder / "org.yaml").write_text(f"org: {org}\nfiles:\n  opportunities.csv: salesforce_opportunities\n")
        rows = [f'{org}-{i},Deal {i},Account {i},Prospecting,3/31/2025,1/2/2025 9:00 AM,"{segment}"'
                for i, segment in enumerate(segments)]
        (folder / "opportunities.csv").write_text(
            "Opportunity ID,Opportunity Name,Account Name,Stage,Close Date,Created Date,Segment\n" + "\n".join(rows))
    nbs = root / "notebooks"
    nbs.mkdir()
    both = write_notebook(nbs / "01_both.ipynb", [
        ("markdown", "# Org and segment"),
        ("parameters", "orgs = None  # organisations\nsegment = None  # one segment\nsummary_path = None  # summary"),
        ("code", RECORD + "\nif orgs == ['Initech']:\n    raise ValueError('no data for Initech')"),
    ])
    org_only = write_notebook(nbs / "02_org_only.ipynb", [
        ("markdown", "# Org only"),
        ("parameters", "orgs = None  # organisations\nsummary_path = None  # summary"),
        ("code", RECORD.replace("'segment': segment", "'segment': None")),
    ])
    segment_only = write_notebook(nbs / "03_segment_only.ipynb", [
        ("markdown", "# Segment only"),
        ("parameters", "segment = None  # one segment\nsummary_path = None  # summary"),
        ("code", RECORD.replace("'orgs': orgs", "'orgs': None")),
    ])
    return {"root": root, "data": root / "data", "both": both, "org_only": org_only, "segment_only": segment_only}


def read_run(run_dir: Path) -> dict:
    return {"dir": run_dir, "manifest": json.loads((run_dir / "manifest.json").read_text()),
            "index": (run_dir / "index.html").read_text()}


@pytest.fixture(scope="module")
def by_segment(tmp_path_factory):
    suite = make_segment_suite(tmp_path_factory.mktemp("segments"))
    out = suite["root"] / "reports"
    code, stderr = run_cli("--notebooks", str(suite["both"]), str(suite["org_only"]), str(suite["segment_only"]),
                           "--per-org", "--per-segment", "-p", "data_dir", str(suite["data"]), "--jobs", "2",
                           "--out", str(out), "--run-id", "by-segment")
    return {**suite, **read_run(out / "by-segment"), "code": code, "stderr": stderr, "out": out}


EXPECTED = {  # task name -> (org, segment)
    "acme/enterprise-co/01_both": ("Acme", HOSTILE_SEGMENT),
    "acme/smb/01_both": ("Acme", "SMB"),
    "initech/smb/01_both": ("Initech", "SMB"),
    "acme/02_org_only": ("Acme", None),
    "initech/02_org_only": ("Initech", None),
    "enterprise-co/03_segment_only": (None, HOSTILE_SEGMENT),
    "smb/03_segment_only": (None, "SMB"),
}


@pytest.mark.slow
def test_per_segment_runs_each_segment_notebook_per_segment_each_org_has(by_segment):
    assert by_segment["code"] == 1  # Initech's org × segment report failed, the others are written
    assert not os.path.lexists(by_segment["out"] / "latest")  # a partial run is not published
    manifest = by_segment["manifest"]
    assert manifest["per_org"] == ["Acme", "Initech"]
    assert manifest["per_segment"] == [HOSTILE_SEGMENT, "SMB"]  # every segment found; blank ones are none
    entries = by_name(manifest)
    assert list(entries) == list(EXPECTED)  # Initech has no Enterprise opportunities: not run for it
    for name, (org, segment) in EXPECTED.items():
        entry = entries[name]
        assert (entry["org"], entry["segment"]) == (org, segment), name
        assert entry["summary"] == {"orgs": [org] if org else None, "segment": segment}, name
        passed = {**({"orgs": [org]} if org else {}), **({"segment": segment} if segment else {})}
        assert entry["parameters"] == passed, name
        assert entry["executed"] == f"{name}.ipynb" and entry["html"] == f"{name}.html", name
        assert (by_segment["dir"] / entry["summary_file"]).is_file(), name
        assert entry["status"] == ("failed" if name == "initech/smb/01_both" else "ok"), name
    assert "[initech/smb/01_both] failed" in by_segment["stderr"]
    page = (by_segment["dir"] / "acme" / "enterprise-co" / "01_both.html").read_text()
    assert "Org and segment — Acme, Enterprise &amp; &lt;Co&gt; segment" in page


@pytest.mark.slow
def test_per_segment_index_groups_reports_by_org_then_segment(by_segment):
    index = by_segment["index"]
    assert "<Co>" not in index
    headings = re.findall(r'<h([23]) class="qp-(?:org|segment)">(.*?)</h\1>', index)
    assert headings == [
        ("2", "Acme"), ("3", "Enterprise &amp; &lt;Co&gt; segment"), ("3", "SMB segment"), ("3", "All segments"),
        ("2", "Initech"), ("3", "SMB segment"), ("3", "All segments"),
        ("2", "All organisations"), ("3", "Enterprise &amp; &lt;Co&gt; segment"), ("3", "SMB segment"),
    ]
    sections = re.split(r'<h[23] class="qp-(?:org|segment)">', index)[1:]
    assert list(report_cards(sections[1])) == ["acme/enterprise-co/01_both.html"]
    assert list(report_cards(sections[3])) == ["acme/02_org_only.html"]
    assert list(report_cards(sections[9])) == ["smb/03_segment_only.html"]
    assert "6 of 7 reports complete" in index


def test_index_sections_without_orgs_are_segments_at_the_top_level():
    reports = [{"n": 1}, {"n": 2}, {"n": 3}]
    groups = pages.report_groups(reports, None, ["SMB", None, "SMB"])
    assert [(g["heading"], [(s["heading"], s["level"], len(s["reports"])) for s in g["sections"]]) for g in groups] == [
        (None, [("SMB segment", 2, 2), ("All segments", 2, 1)])]
    # A group whose reports all cover every segment needs no segment heading.
    groups = pages.report_groups(reports, ["Acme", None, None], [None, None, None])
    assert [s["heading"] for g in groups for s in g["sections"]] == [None, None]


# Dask twice more (the per-org variant in test_runner.py too): a sweep, so `make test` stays under 5 minutes.
@pytest.mark.slow
@pytest.mark.sweep
def test_per_segment_on_dask_gives_the_same_manifest_entries_and_index(by_segment):
    report = run_on_in_process_dask(
        out_dir=by_segment["root"] / "dask-reports",
        notebooks=[str(by_segment["both"]), str(by_segment["segment_only"])],
        overrides={"data_dir": str(by_segment["data"])},
        run_id="by-segment",
        per_org=[],
        per_segment=[],
    )
    assert report.exit_code == by_segment["code"]
    local, dask = by_name(by_segment["manifest"]), by_name(report.manifest)
    assert list(dask) == [name for name in local if "02_org_only" not in name]
    assert_same_entries(local, dask, ["org", "segment", "status", "error", "summary", "parameters", "html",
                                      "executed", "summary_file", "title"])
    assert report.manifest["per_segment"] == by_segment["manifest"]["per_segment"]
    local_cards = report_cards(by_segment["index"])
    for page, card in report_cards((report.run_dir / "index.html").read_text()).items():
        assert card == local_cards[page], page


# A scheduler in its own process (15 s): a sweep, so `make test` stays under 5 minutes; CI runs it.
@pytest.mark.slow
@pytest.mark.sweep
def test_the_cli_runs_per_segment_tasks_on_a_scheduler_at_an_address(by_segment):
    distributed = pytest.importorskip("distributed")
    out = by_segment["root"] / "scheduler-reports"
    # Worker processes, as on a team's cluster: they import quarterpanic and see the same paths.
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        done = subprocess.run(
            [str(Path(sys.executable).parent / "quarterpanic"), "run", "--executor", "dask",
             "--scheduler", cluster.scheduler_address, "--notebooks", str(by_segment["segment_only"]),
             "--per-segment", "SMB", "-p", "data_dir", str(by_segment["data"]),
             "--out", str(out), "--run-id", "on-cluster"],
            capture_output=True, text=True, timeout=300,
        )
    assert done.returncode == 0, done.stderr
    run = read_run(out / "on-cluster")
    assert run["manifest"]["executor"] == {"kind": "dask", "scheduler": cluster.scheduler_address, "jobs": 1}
    assert run["manifest"]["per_segment"] == ["SMB"] and "per_org" not in run["manifest"]
    [entry] = run["manifest"]["notebooks"]
    assert_same_entries(by_name(by_segment["manifest"]), {entry["name"]: entry},
                        ["segment", "status", "summary", "parameters", "html", "executed", "summary_file"])
    assert (out / "on-cluster" / "smb" / "03_segment_only.html").is_file()
    assert "[smb/03_segment_only] ok" in done.stderr


def test_an_unreachable_scheduler_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(executors.DaskExecutor, "connect_timeout_s", 1)
    suite = make_segment_suite(tmp_path)
    code, stderr = run_cli("--notebooks", str(suite["segment_only"]), "--executor", "dask",
                           "--scheduler", "tcp://127.0.0.1:9", "-p", "data_dir", str(suite["data"]),
                           "--out", str(tmp_path / "reports"))
    assert code == 2 and stderr.count("\n") == 1 and "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in stderr
    assert not [p for p in (tmp_path / "reports").iterdir() if p.name != "latest"]


def test_per_segment_names_must_be_segments_of_the_data(tmp_path):
    suite = make_segment_suite(tmp_path)
    assert runner.segments_by_org(suite["data"]) == {"Acme": [HOSTILE_SEGMENT, "SMB"], "Initech": ["SMB"]}
    out = tmp_path / "reports"
    code, stderr = run_cli("--notebooks", str(suite["both"]), "--per-segment", "SMB", "Enterprise",
                           "-p", "data_dir", str(suite["data"]), "--out", str(out))
    assert code == 2 and stderr.count("\n") == 1
    assert "'Enterprise' not among the segments of the opportunities" in stderr
    assert f"segments: {HOSTILE_SEGMENT}, SMB" in stderr
    assert not out.exists()
    code, stderr = run_cli("--notebooks", str(suite["both"]), "--per-org", "Initech", "--per-segment",
                           HOSTILE_SEGMENT, "-p", "data_dir", str(suite["data"]), "--out", str(out))
    assert code == 2 and "of Initech" in stderr and "segments: SMB" in stderr


def test_a_change_in_org_yaml_naming_no_segment_of_the_data_is_refused_before_any_notebook(tmp_path):
    suite = make_segment_suite(tmp_path)
    org_yaml = suite["data"] / "acme" / "org.yaml"
    org_yaml.write_text(org_yaml.read_text() + "changes: [{date: 2025-02-01, segment: Enterprise, label: deal desk}]\n")
    out = tmp_path / "reports"
    code, stderr = run_cli("--notebooks", str(suite["org_only"]), "-p", "data_dir", str(suite["data"]), "--out", str(out))
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert str(org_yaml) in stderr and "entry 1: segment 'Enterprise' is not among the segments of Acme" in stderr
    assert f"segments: {HOSTILE_SEGMENT}, SMB" in stderr
    assert not out.exists()


def test_per_segment_without_segments_in_the_data_says_so(tmp_path):
    suite = make_segment_suite(tmp_path)
    for csv in suite["data"].glob("*/opportunities.csv"):
        csv.write_text(re.sub(r',"[^"]*"$', ',""', csv.read_text(), flags=re.M))
    code, stderr = run_cli("--notebooks", str(suite["segment_only"]), "--per-segment",
                           "-p", "data_dir", str(suite["data"]), "--out", str(tmp_path / "reports"))
    assert code == 2 and "the opportunities have no segment" in stderr


def test_segment_folders_are_unique_and_never_an_organisations():
    assert runner.folder_slugs(["SMB", "smb", "Acme", "<>"], fallback="segment", taken=["acme"]) == {
        "SMB": "smb", "smb": "smb-2", "Acme": "acme-2", "<>": "segment"}
    plan = runner.SegmentPlan(slugs={"SMB": "smb", "Mid": "mid"}, by_org={"Acme": ["Mid", "SMB"], "Initech": ["SMB"]})
    assert plan.segments_of(["Initech"]) == ["SMB"] and plan.segments_of(None) == ["SMB", "Mid"]
