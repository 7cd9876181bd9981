"""`quarterpanic validate`: summary table, rejects CSV, exit codes 0/1/2 with one-line errors."""
from __future__ import annotations

import pandas as pd
import pytest

from helpers import FIXTURES
from quarterpanic.cli import main


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
    assert total.split()[-4:] == ["12", "6", "6", "0"]
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
