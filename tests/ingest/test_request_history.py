"""The request history table: a Jira changelog read, untracked fields ignored, departments from org.yaml."""
from __future__ import annotations

import pandas as pd
import pytest

from quarterpanic.errors import ProfileError
from quarterpanic.ingest import loading
from quarterpanic.ingest.orgs import department_of, read_org_yaml
from quarterpanic.ingest.profiles import detect_profile

from helpers import FIXTURES

FOLDER = FIXTURES / "jira_changelog"


def test_jira_changelog_becomes_request_history():
    crm = loading.load_crm(FOLDER)
    acc = crm.accounting.set_index("profile").loc["jira_changelog"]
    # 8 rows: the Rank change ignored, the row with a bad date rejected, 6 accepted.
    assert (acc["read"], acc["accepted"], acc["rejected"], acc["ignored"]) == (8, 6, 1, 1)
    assert crm.rejects[["row", "column", "value"]].values.tolist() == [[9, "Created", "xx/Mar/25 10:05 AM"]]
    changes = crm.request_history.sort_values("changed_at")
    assert changes["field"].tolist() == ["component", "assignee", "status", "status", "status", "status"]
    # Display strings (From String / To String), not Jira's ids.
    assert changes["new_value"].tolist()[:2] == ["Legal", "Dana Reyes"]
    # Departments from org.yaml: component, assignee and status values; Done names none.
    assert changes["department"].fillna("-").tolist() == ["legal", "legal", "sales", "finance", "-", "finance"]
    # ISO and Jira's own date form in one file.
    assert changes["changed_at"].iloc[2] == pd.Timestamp("2025-03-07 15:00")


def test_changelog_is_recognised_by_its_headers():
    header = "Issue key,Issue id,Created,Author,Field,Field Type,From,From String,To,To String".split(",")
    assert detect_profile(header).name == "jira_changelog"


def test_without_departments_a_component_names_its_department():
    field = pd.Series(["component", "status", "component"])
    value = pd.Series(["Legal  Team", "Awaiting Finance", None])
    assert department_of(field, value, None).tolist() == ["legal team", None, None]


def test_departments_must_name_request_history_fields(tmp_path):
    (tmp_path / "org.yaml").write_text("org: X\ndepartments:\n  reporter: {Ann: legal}\n")
    with pytest.raises(ProfileError, match="reporter is not one of status, assignee, component"):
        read_org_yaml(tmp_path)
    (tmp_path / "org.yaml").write_text("org: X\ndepartments: [legal]\n")
    with pytest.raises(ProfileError, match="departments: must map"):
        read_org_yaml(tmp_path)
