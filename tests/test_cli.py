"""`quarterpanic validate`: summary table, rejects CSV, exit codes 0/1/2 with one-line errors;
`quarterpanic detect`: levels and row accounting in its output, the rejected-rows warning, --strict, no data."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers import FIXTURES
from quarterpanic.cli import EXIT_BROKEN_PIPE, EXIT_REJECTED, main


def run(capsys, *args):
    code = main(["validate", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_all_accepted_exits_0(capsys, tmp_path):
    rejects = tmp_path / "rejects.csv"
    code, out, err = run(capsys, FIXTURES / "salesforce_leads.csv", "--rejects", rejects)
    assert code == 0 and err == ""
    assert "salesforce_leads" in out and "every row accepted" in out
    for column in ("file", "org", "table", "profile", "read", "accepted", "rejected", "ignored"):
        assert column in out.splitlines()[0]
    assert pd.read_csv(rejects, encoding="utf-8-sig").empty


def test_some_rejected_exits_1_and_writes_rejects(capsys, tmp_path):
    rejects = tmp_path / "sub" / "rejects.csv"
    code, out, err = run(capsys, FIXTURES / "salesforce_bad_rows.csv", FIXTURES / "jira_requests.csv",
                         "--rejects", rejects)
    assert code == 1 and err == ""
    total = [line for line in out.splitlines() if line.strip().startswith("total")][0]
    assert total.split()[-5:-1] == ["12", "6", "6", "0"]  # read, accepted, rejected, ignored; then unknown_deal
    assert f"6 rejected rows written to {rejects}" in out
    written = pd.read_csv(rejects, encoding="utf-8-sig", dtype=str)
    assert written["row"].tolist() == ["3", "4", "5", "6", "7", "8"]


def test_profile_and_table_options(capsys, tmp_path):
    code, out, _ = run(capsys, FIXTURES / "generic" / "pipeline_eu.csv", "--profile",
                       FIXTURES / "generic" / "pipeline_eu_mapping.yaml", "--rejects", tmp_path / "r.csv")
    assert code == 0 and "Bergbau Gruppe" in out
    code, out, _ = run(capsys, FIXTURES / "hubspot_deals.csv", "--table", "opportunities",
                       "--rejects", tmp_path / "r.csv")
    assert code == 0 and "hubspot_deals" in out


@pytest.mark.parametrize("args, message", [
    (["empty.csv"], "empty.csv: the file is empty"),
    (["binary.csv"], "binary.csv: is a binary file"),
    (["missing.csv"], "missing.csv: file not found"),
    (["generic/pipeline_eu.csv"], "no profile recognises its headers"),
    (["salesforce_leads.csv", "--profile", "nope"], "unknown profile 'nope' — known profiles:"),
    (["salesforce_missing_column.csv", "--profile", "salesforce_opportunities"],
     "missing required column Close Date (close_date); found: Opportunity ID"),
])
def test_unusable_input_exits_2_with_one_line(capsys, tmp_path, args, message):
    argv = [str(FIXTURES / args[0]), *args[1:], "--rejects", str(tmp_path / "r.csv")]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("quarterpanic validate: error: ")
    assert message in err


# -- detect ------------------------------------------------------------------------------------------------------
def detect(capsys, *args):
    code = main(["detect", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def data_with_a_reject(tmp_path_factory):
    """A copy of the fixture data folder: 7 rows read, 1 rejected (a repeated deal ID in contoso/pipeline.csv)."""
    folder = tmp_path_factory.mktemp("detect") / "data"
    shutil.copytree(FIXTURES / "datafolder", folder)
    return folder


def test_detect_json_carries_levels_and_row_accounting_and_warns_on_rejects(capsys, data_with_a_reject):
    code, out, err = detect(capsys, data_with_a_reject, "--json", "-p", "alpha", 0.01, "-p", "ci_level", 0.9,
                            "-p", "fdr_family", "run")
    document = json.loads(out)
    assert code == 0
    assert document["alpha"] == 0.01 and document["ci_level"] == 0.9
    assert document["false_discovery"] == {
        "method": "Benjamini-Hochberg", "alpha": 0.01, "family": "run", "family_keys": [],
        "note": "flags keep the false discovery rate at 1% (Benjamini–Hochberg) across every test of the run at once, "
                "so one organisation's flags can change with another's data"}
    files = {Path(record["file"]).relative_to(data_with_a_reject).as_posix(): record for record in document["files"]}
    expected = validated_accounting(data_with_a_reject)
    assert files.keys() == expected.keys()
    for name, record in files.items():
        assert {k: record[k] for k in ("read", "accepted", "rejected")} == expected[name]
        assert record["read"] == record["accepted"] + record["rejected"] + record.get("ignored", 0)
    assert files["contoso/pipeline.csv"]["rejected"] == 1
    assert document["changes"] == []  # no change named, none judged
    assert err.count("\n") == 1 and err.startswith("quarterpanic detect: warning: 1 of 7 rows rejected in 1 of 4 files")
    assert f"quarterpanic validate {data_with_a_reject}" in err


def validated_accounting(folder: Path) -> dict[str, dict[str, int]]:
    """What `quarterpanic validate` counts per file (the reference the detect accounting must agree with)."""
    from quarterpanic.ingest.loading import load_crm

    accounting = load_crm(folder).accounting
    return {Path(row["file"]).relative_to(folder).as_posix(): {k: int(row[k]) for k in ("read", "accepted", "rejected")}
            for row in accounting.to_dict("records")}


def test_detect_table_prints_the_row_accounting_and_the_interval_level(capsys, data_with_a_reject):
    code, out, err = detect(capsys, data_with_a_reject, "-p", "ci_level", 0.99)
    assert code == 0 and "1 of 7 rows rejected" in err
    accounting = out[out.index("rows read per file:"):].splitlines()
    header = accounting[1].split()
    assert header == ["file", "org", "table", "profile", "read", "accepted", "rejected", "ignored", "unknown_deal"]
    total = dict(zip(header[4:], accounting[-1].split()[-len(header[4:]):]))
    assert (total["read"], total["accepted"], total["rejected"]) == ("7", "6", "1") and "total (4 files)" in accounting[-1]
    assert "intervals: 99% CI" in out.splitlines()[0]
    assert "did the change work?" not in out


def test_detect_strict_exits_4_when_rows_were_rejected(capsys, data_with_a_reject):
    code, out, err = detect(capsys, data_with_a_reject, "--strict", "--json")
    assert code == EXIT_REJECTED == 4
    assert json.loads(out)["files"] and "1 of 7 rows rejected" in err


def test_detect_strict_exits_0_when_every_row_is_accepted(capsys, tmp_path):
    folder = shutil.copytree(FIXTURES / "datafolder" / "northwind", tmp_path / "data" / "northwind")
    code, out, err = detect(capsys, folder.parent, "--strict", "--json")
    assert code == 0 and err == ""
    assert all(record["rejected"] == 0 for record in json.loads(out)["files"])


@pytest.mark.parametrize("rows", ["header only", "every row rejected"])
def test_detect_with_no_opportunity_says_so_in_one_line(capsys, tmp_path, rows):
    folder = shutil.copytree(FIXTURES / "datafolder" / "northwind", tmp_path / "data" / "northwind")
    export = folder / "opportunities.csv"
    header, *records = export.read_text(encoding="utf-8").splitlines()
    close = header.split(",").index("Close Date")
    if rows == "header only":
        export.write_text(header + "\n", encoding="utf-8")
    else:
        broken = [",".join("not a date" if i == close else v for i, v in enumerate(r.split(","))) for r in records]
        export.write_text("\n".join([header, *broken]) + "\n", encoding="utf-8")
    code, out, err = detect(capsys, folder.parent, "--json")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("quarterpanic detect: error: ") and "no opportunity to analyse" in err
    assert f"quarterpanic validate {folder.parent}" in err


def test_detect_with_no_opportunity_left_after_the_filters_names_them(capsys, tmp_path):
    folder = shutil.copytree(FIXTURES / "datafolder" / "northwind", tmp_path / "data" / "northwind")
    code, out, err = detect(capsys, folder.parent, "--as-of", "2020-01-01")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "no opportunity left to analyse after as_of '2020-01-01'" in err


def test_validate_of_header_only_opportunity_exports_says_nothing_can_be_analysed(capsys, tmp_path):
    folder = shutil.copytree(FIXTURES / "datafolder" / "northwind", tmp_path / "data" / "northwind")
    export = folder / "opportunities.csv"
    export.write_text(export.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    code = main(["validate", str(folder.parent), "--rejects", str(tmp_path / "rejects.csv")])
    out, _ = capsys.readouterr()
    assert code == 1
    assert "no opportunity rows: the opportunity export holds a header and nothing else" in out
    assert "every row accepted" not in out


# A whole detect in a subprocess (10 s): a sweep, so `make test` stays under 5 minutes; CI runs it.
@pytest.mark.sweep
def test_detect_piped_into_a_reader_that_stops_early_exits_quietly(tmp_path):
    folder = shutil.copytree(FIXTURES / "datafolder" / "northwind", tmp_path / "data" / "northwind")
    script = "import sys; from quarterpanic.cli import main; sys.exit(main(sys.argv[1:]))"
    # A pipe whose reader has gone: the first write of the findings table meets EPIPE.
    read_end, write_end = os.pipe()
    os.close(read_end)
    done = subprocess.run([sys.executable, "-c", script, "detect", str(folder.parent)], stdout=write_end,
                          stderr=subprocess.PIPE, text=True, timeout=300)
    os.close(write_end)
    assert done.returncode == EXIT_BROKEN_PIPE
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


def test_detect_judges_a_change_and_says_when_there_are_too_few_quarters(capsys, data_with_a_reject):
    change = "[{org: Contoso, date: 2024-07-01, label: deal desk}]"
    code, out, _ = detect(capsys, data_with_a_reject, "--json", "-p", "changes", change)
    assert code == 0
    changes = json.loads(out)["changes"]
    index = [row for row in changes if row["quantity"] == "panic_index" and row["method"] == "before/after"]
    assert len(index) == 1 and index[0]["org"] == "Contoso" and index[0]["label"] == "deal desk"
    # A handful of rows: no quarter on either side has a number, and none is made up.
    assert all(row["status"] == "insufficient data" and row["estimate"] is None for row in changes)
    assert index[0]["sentence"].startswith("Contoso, deal desk (from 2024-07-01): too few complete quarters to judge "
                                           "panic index")
    code, out, _ = detect(capsys, data_with_a_reject, "-p", "changes", change)
    section = out[out.index("did the change work?"):out.index("open quarters")]
    assert index[0]["sentence"] in section
