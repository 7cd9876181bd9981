"""Salesforce object exports (Data Export, Data Loader, Bulk/REST API, warehouse syncs) read by header."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from quarterpanic.ingest import loading
from quarterpanic.ingest.profiles import detect_profile

OPPORTUNITY = [
    "Id,AccountId,OwnerId,Name,StageName,Amount,CloseDate,CreatedDate,IsClosed,IsWon,ForecastCategoryName,"
    "LeadSource,NextStep,Probability",
    # 18-character ids, +0000 offsets, true/false.
    "0065g00000AbCdEAAV,0015g00000XyZaBAAV,0055g00000Jk1mNAAR,Acme renewal,Closed Won,12500.00,2025-03-31,"
    "2025-01-15T09:05:00.000+0000,true,true,Closed,Web,,100",
    # 15-character ids, a Z timestamp.
    "0065g00000AbCdF,0015g00000XyZaC,0055g00000Jk1mO,Globex expansion,Negotiation/Review,8000,2025-04-30,"
    "2025-02-01T14:15:00Z,false,false,Commit,Partner,Call CFO,75",
    "0065g00000AbCdG,0015g00000XyZaD,0055g00000Jk1mO,Initech lost,Closed Lost,1200,2025-02-28,"
    "2024-12-02T08:00:00.000+0000,true,false,Omitted,Cold Call,,0",
]
FIELD_HISTORY = [
    "Id,OpportunityId,CreatedById,CreatedDate,Field,DataType,OldValue,NewValue",
    "0175g0000001AAA,0065g00000AbCdEAAV,0055g00000Jk1mNAAR,2025-02-01T10:00:00.000+0000,StageName,Text,"
    "Prospecting,Negotiation/Review",
    "0175g0000001AAB,0065g00000AbCdEAAV,0055g00000Jk1mNAAR,2025-03-20T10:00:00.000+0000,CloseDate,Date,"
    "2025-04-30,2025-03-31",
    "0175g0000001AAC,0065g00000AbCdF,0055g00000Jk1mO,2025-03-01T10:00:00Z,Amount,Currency,6000,8000",
]
LEAD = [
    "Id,FirstName,LastName,Company,Status,LeadSource,OwnerId,CreatedDate,IsConverted,ConvertedDate,"
    "ConvertedOpportunityId",
    "00Q5g000001AAAA,Ada,Lovelace,Acme,Closed - Converted,Web,0055g00000Jk1mNAAR,2025-01-02T09:00:00.000+0000,"
    "true,2025-01-15,0065g00000AbCdEAAV",
    "00Q5g000001AAAB,Alan,Turing,Globex,Working - Contacted,Partner,0055g00000Jk1mO,2025-01-20T11:30:00Z,"
    "false,,",
]


def write(folder: Path, name: str, lines: list[str], *, lower: bool = False) -> Path:
    if lower:
        lines = [lines[0].lower(), *lines[1:]]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("lower", [False, True], ids=["api-names", "lower-case-sync"])
def test_data_export_folder_loads(tmp_path, lower):
    org = tmp_path / "acme"
    write(org, "Opportunity.csv", OPPORTUNITY, lower=lower)
    write(org, "OpportunityFieldHistory.csv", FIELD_HISTORY, lower=lower)
    write(org, "Lead.csv", LEAD, lower=lower)
    (org / "org.yaml").write_text("org: Acme\nsize_class: mid\n")

    crm = loading.load_crm(tmp_path)

    assert crm.rejects.empty, crm.rejects.to_dict("records")
    acc = crm.accounting.set_index("table")
    assert (acc["read"] == acc["accepted"]).all()
    assert acc.loc["opportunities", "accepted"] == 3
    assert acc.loc["history", "accepted"] == 3
    assert acc.loc["leads", "accepted"] == 2
    opps = crm.opportunities.set_index("opportunity_id")
    won = opps.loc["0065g00000AbCdEAAV"]
    assert won["is_won"] and won["is_closed"] and won["amount"] == 12500.0
    assert won["created_at"] == pd.Timestamp("2025-01-15 09:05")
    # A Z timestamp is UTC like +0000.
    assert opps.loc["0065g00000AbCdF", "created_at"] == pd.Timestamp("2025-02-01 14:15")
    assert not opps.loc["0065g00000AbCdF", "is_closed"]
    assert opps.loc["0065g00000AbCdF", "next_step"] == "Call CFO"
    history = crm.history
    assert sorted(history["field"]) == ["amount", "close_date", "stage"]
    leads = crm.leads.set_index("lead_id")
    assert leads.loc["00Q5g000001AAAA", "converted_opportunity_id"] == "0065g00000AbCdEAAV"
    assert pd.isna(leads.loc["00Q5g000001AAAB", "converted_at"])


@pytest.mark.parametrize("lines, profile", [
    (OPPORTUNITY, "salesforce_api_opportunity"),
    (FIELD_HISTORY, "salesforce_api_field_history"),
    (LEAD, "salesforce_api_lead"),
])
def test_object_exports_are_recognised_by_their_headers(lines, profile):
    assert detect_profile(lines[0].split(",")).name == profile
    assert detect_profile(lines[0].lower().split(",")).name == profile


USERS = [
    "Id,Username,LastName,FirstName,Name,IsActive",
    "0055g00000Jk1mNAAR,ada@example.com,Lovelace,Ada,Ada Lovelace,true",
    "0055g00000Jk1mO,alan@example.com,Turing,Alan,Alan Turing,true",
]
ACCOUNTS = [
    "Id,Name,Type,Industry",
    "0015g00000XyZaBAAV,Acme Corp,Customer,Manufacturing",
    "0015g00000XyZaC,Globex,Prospect,Energy",
]


def test_owner_and_account_names_come_from_user_and_account_files(tmp_path):
    org = tmp_path / "acme"
    write(org, "Opportunity.csv", OPPORTUNITY)
    write(org, "Lead.csv", LEAD)
    write(org, "User.csv", USERS)
    write(org, "Account.csv", ACCOUNTS)
    (org / "org.yaml").write_text("org: Acme\nsize_class: mid\n")

    crm = loading.load_crm(tmp_path)

    assert crm.rejects.empty
    # User.csv and Account.csv are read as lookups, not as tables.
    assert sorted(Path(f).name for f in crm.accounting["file"]) == ["Lead.csv", "Opportunity.csv"]
    opps = crm.opportunities.set_index("opportunity_id")
    assert opps.loc["0065g00000AbCdEAAV", ["owner", "account"]].tolist() == ["Ada Lovelace", "Acme Corp"]
    assert opps.loc["0065g00000AbCdF", ["owner", "account"]].tolist() == ["Alan Turing", "Globex"]
    # An account the Account file does not hold keeps its id rather than losing the row.
    assert opps.loc["0065g00000AbCdG", "account"] == "0015g00000XyZaD"
    assert crm.leads.set_index("lead_id").loc["00Q5g000001AAAB", "owner"] == "Alan Turing"


def test_without_user_file_owner_is_the_id(tmp_path):
    org = tmp_path / "acme"
    write(org, "Opportunity.csv", OPPORTUNITY)
    (org / "org.yaml").write_text("org: Acme\n")
    crm = loading.load_crm(tmp_path)
    assert crm.opportunities.set_index("opportunity_id").loc["0065g00000AbCdEAAV", "owner"] == "0055g00000Jk1mNAAR"


def test_report_export_missing_a_column_is_named(tmp_path):
    path = write(tmp_path, "opps.csv", ["Opportunity ID,Opportunity Name,Stage,Amount,Created Date",
                                        "006A,Deal,Prospecting,100,3/1/2025"])
    from quarterpanic.errors import ExportError
    with pytest.raises(ExportError) as err:
        loading.load_crm(path)
    text = str(err.value)
    assert "looks like a Salesforce Opportunities report" in text and "Close Date is missing" in text
    assert str(path) in text


def test_history_of_untracked_fields_is_ignored_and_validate_exits_0(tmp_path, capsys):
    from quarterpanic import cli
    org = tmp_path / "data" / "acme"
    write(org, "Opportunity.csv", OPPORTUNITY)
    write(org, "OpportunityFieldHistory.csv", FIELD_HISTORY + [
        "0175g0000001AAD,0065g00000AbCdF,0055g00000Jk1mO,2025-03-02T10:00:00Z,Owner,EntityId,Ann,Bob",
        "0175g0000001AAE,0065g00000AbCdF,0055g00000Jk1mO,2025-03-02T10:00:00Z,created,,,",
    ])
    (org / "org.yaml").write_text("org: Acme\n")
    crm = loading.load_crm(tmp_path / "data")
    history = crm.accounting.set_index("table").loc["history"]
    assert (history["read"], history["accepted"], history["rejected"], history["ignored"]) == (5, 3, 0, 2)
    assert cli.main(["validate", str(tmp_path / "data"), "--rejects", str(tmp_path / "rejects.csv")]) == 0


def test_whole_data_export_folder_validates_clean(tmp_path, capsys):
    """Opportunity, OpportunityHistory, OpportunityFieldHistory, Lead, User and Account side by side."""
    from quarterpanic import cli
    org = tmp_path / "data" / "acme"
    write(org, "Opportunity.csv", OPPORTUNITY)
    write(org, "OpportunityFieldHistory.csv", FIELD_HISTORY)
    write(org, "Lead.csv", LEAD)
    write(org, "User.csv", USERS)
    write(org, "Account.csv", ACCOUNTS)
    write(org, "OpportunityHistory.csv", [
        "Id,OpportunityId,CreatedById,CreatedDate,StageName,Amount,ExpectedRevenue,CloseDate,Probability,"
        "ForecastCategory,IsDeleted",
        "0085g000001AAA,0065g00000AbCdEAAV,0055g00000Jk1mNAAR,2025-01-15T09:05:00.000+0000,Prospecting,12500,"
        "1250,2025-04-30,10,Pipeline,false",
    ])
    (org / "org.yaml").write_text("org: Acme\n")
    rejects = str(tmp_path / "rejects.csv")
    assert cli.main(["validate", str(tmp_path / "data"), "--rejects", rejects]) == 0
    crm = loading.load_crm(tmp_path / "data")
    assert crm.opportunities.set_index("opportunity_id").loc["0065g00000AbCdF", "owner"] == "Alan Turing"
    snapshots = crm.accounting.set_index("profile").loc["salesforce_api_opportunity_history"]
    # One snapshot: where the deal's history starts, no change.
    assert (snapshots["read"], snapshots["accepted"], snapshots["ignored"]) == (1, 0, 1)
