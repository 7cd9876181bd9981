"""org.yaml is checked whole when it is read (by validate, detect and load alike), every message naming the file."""
from __future__ import annotations

import shutil

import pytest

from helpers import FIXTURES
from quarterpanic.errors import ProfileError
from quarterpanic.ingest.loading import load_crm
from quarterpanic.ingest.orgs import read_org_yaml


def org_folder(tmp_path, text: str):
    folder = tmp_path / "acme"
    folder.mkdir()
    shutil.copy(FIXTURES / "salesforce_leads.csv", folder / "leads.csv")
    (folder / "org.yaml").write_text(text)
    return folder


@pytest.mark.parametrize("calendar, message", [
    ("{start_month: 13}", "start_month must be 1..12"),
    ("{start_month: Smarch}", "is not a month"),
    ("{start_month: [1]}", "start_month"),
    ("{naming: middle}", "naming must be"),
    ("{week_pattern: 4-4-4}", "week_pattern"),
    ("{quarter: 2}", "unknown fiscal_calendar key"),
])
def test_fiscal_calendar_is_checked_naming_the_file(tmp_path, calendar, message):
    folder = org_folder(tmp_path, f"org: Acme\nfiscal_calendar: {calendar}\n")
    for check in (lambda: read_org_yaml(folder), lambda: load_crm(tmp_path)):
        with pytest.raises(ProfileError, match=message) as err:
            check()
        text = str(err.value)
        assert text.startswith(str(folder / "org.yaml")) and "fiscal_calendar" in text and "\n" not in text


def test_a_files_entry_for_a_missing_file_is_refused(tmp_path):
    folder = org_folder(tmp_path, "org: Acme\nfiles:\n  lead.csv: salesforce_leads\n")
    with pytest.raises(ProfileError, match="files: lead.csv is not in this folder") as err:
        load_crm(tmp_path)
    assert str(err.value).startswith(str(folder / "org.yaml"))


def test_an_unknown_profile_in_files_names_the_org_yaml(tmp_path):
    folder = org_folder(tmp_path, "org: Acme\nfiles:\n  leads.csv: salesforce_leeds\n")
    with pytest.raises(ProfileError, match="files: leads.csv: unknown profile 'salesforce_leeds'") as err:
        load_crm(tmp_path)
    assert str(err.value).startswith(str(folder / "org.yaml"))
    assert "known profiles" in str(err.value)


@pytest.mark.parametrize("text, message", [
    ("org: [a, b]\n", "org must be a name"),
    ("org: Acme\nfiles: [leads.csv]\n", "must be maps"),
    ("org: Acme\nfiles:\n  leads.csv: [salesforce_leads]\n", "files: leads.csv"),
])
def test_other_mistakes_name_the_file(tmp_path, text, message):
    folder = org_folder(tmp_path, text)
    with pytest.raises(ProfileError, match=message) as err:
        read_org_yaml(folder)
    assert str(err.value).startswith(str(folder / "org.yaml"))


def test_a_good_org_yaml_reads_as_before():
    info = read_org_yaml(FIXTURES / "datafolder" / "northwind")
    assert info.name == "Northwind Traders" and info.calendar == {"start_month": 2, "naming": "end"}


def test_country_subdivision_and_shutdown_days_are_read_as_a_working_calendar(tmp_path):
    folder = org_folder(tmp_path, "org: Acme\ncountry: de\nsubdivision: BY\n"
                                  "shutdown_days: [12-24..01-01, 2025-08-11, {from: 2025-10-27, to: 2025-10-31}]\n")
    info = read_org_yaml(folder)
    assert info.working_days == {"country": "DE", "subdivision": "BY",
                                 "shutdown_days": ["12-24..01-01", "2025-08-11..2025-08-11", "2025-10-27..2025-10-31"]}
    (tmp_path / "plain").mkdir()
    assert read_org_yaml(org_folder(tmp_path / "plain", "org: Plain\n")).working_days == {}


@pytest.mark.parametrize("text, message", [
    ("country: Atlantis\n", "not a country the holidays package knows"),
    ("country: DE\nsubdivision: XX\n", "subdivision 'XX' is not one of DE's"),
    ("subdivision: BY\n", "needs a country"),
    ("shutdown_days: [2025-12-01..2025-12-41]\n", "is not a date"),
    ("shutdown_days: [2025-13-01]\n", "cannot be read"),  # YAML itself refuses the date
    ("shutdown_days: [2025-12-31..2025-12-01]\n", "ends before it starts"),
    ("shutdown_days: [{from: 2025-12-24}]\n", "needs exactly from: and to:"),
])
def test_working_day_mistakes_name_the_file(tmp_path, text, message):
    folder = org_folder(tmp_path, "org: Acme\n" + text)
    with pytest.raises(ProfileError, match=message) as err:
        read_org_yaml(folder)
    assert str(err.value).startswith(str(folder / "org.yaml")) and "\n" not in str(err.value)


def test_changes_are_read_as_the_organisations_own(tmp_path):
    folder = org_folder(tmp_path, "org: Acme\nchanges:\n  - {date: 2024-11-01, segment: Enterprise, label: deal desk}\n"
                                  "  - {date: 2025-02-03, pre_trend: true}\n")
    assert read_org_yaml(folder).changes == [
        {"segment": "Enterprise", "date": "2024-11-01", "label": "deal desk", "pre_trend": False},
        {"segment": None, "date": "2025-02-03", "label": None, "pre_trend": True},
    ]
    (folder / "org.yaml").write_text("org: Acme\n")
    assert read_org_yaml(folder).changes == []


@pytest.mark.parametrize("changes, message", [
    ("{date: 2024-11-01}", "changes: must be a list"),
    ("[{segment: SMB}]", "changes: entry 1: date is missing"),
    ("[{date: 2024-11-01}, {date: 2024-11-31x}]", "changes: entry 2: date must be a date"),
    ("[{date: 2024-11-01, when: later}]", "changes: entry 1: when is not a key"),
    ("[{date: 2024-11-01, org: Other}]", "changes: entry 1: org is this file's own"),
])
def test_a_bad_change_names_the_file_and_the_entry(tmp_path, changes, message):
    folder = org_folder(tmp_path, f"org: Acme\nchanges: {changes}\n")
    with pytest.raises(ProfileError, match=message) as err:
        read_org_yaml(folder)
    assert str(err.value).startswith(str(folder / "org.yaml")) and "\n" not in str(err.value)
