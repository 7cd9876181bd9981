"""Lookups, present/absent flags and org.yaml's lookups:/ignore: in mapping YAML: real exports with no code."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from quarterpanic.errors import ExportError, ProfileError
from quarterpanic.ingest.loading import load_crm
from quarterpanic.ingest.reload_cache import LoadCache

PIPELINE = """deal,seller,client,stage,created,closed,value
D1,Ann,Acme,Won,2025-01-05,2025-03-28,1000
D2,Bob,Globex,Lost,2025-01-10,2025-03-01,500
D3,Cid,Initech,Won,2025-02-02,2025-03-30,700
D4,Ann,Nobody Inc,Open,2025-03-01,2025-04-30,300
"""
TEAMS = "seller,regional_office\nAnn,East\nBob,West\nCid,East\n"
ACCOUNTS = "client,sector\nAcme,Enterprise\nGlobex,SMB\nInitech,Mid-Market\n"
MAPPING = """table: opportunities
dates: iso
columns:
  opportunity_id: deal
  owner: seller
  account: client
  team: {lookup: sales_teams.csv, key: seller, on: seller, value: regional_office}
  segment: {lookup: accounts.csv, key: client, on: client, value: sector, missing: MISSING}
  created_at: created
  close_date: closed
  stage: stage
  is_closed: {column: stage, map: {Won: true, Lost: true}, default: false}
  is_won: {column: stage, map: {Won: true}, default: false}
  amount: value
"""


def org_folder(tmp_path: Path, *, missing: str = "empty", org_yaml: str | None = None) -> Path:
    org = tmp_path / "data" / "acme"
    org.mkdir(parents=True)
    (org / "pipeline.csv").write_text(PIPELINE)
    (org / "sales_teams.csv").write_text(TEAMS)
    (org / "accounts.csv").write_text(ACCOUNTS)
    (org / "pipeline_mapping.yaml").write_text(MAPPING.replace("MISSING", missing))
    (org / "org.yaml").write_text(org_yaml or "org: Acme\nfiles:\n  pipeline.csv: pipeline_mapping.yaml\n"
                                              "lookups: [sales_teams.csv, accounts.csv]\n")
    return org


def test_team_and_segment_filled_through_lookups(tmp_path):
    org_folder(tmp_path)
    crm = load_crm(tmp_path / "data")
    opps = crm.opportunities.set_index("opportunity_id")
    assert opps["team"].tolist() == ["East", "West", "East", "East"]
    assert opps.loc[["D1", "D2", "D3"], "segment"].tolist() == ["Enterprise", "SMB", "Mid-Market"]
    # missing: empty keeps the deal with no segment.
    assert pd.isna(opps.loc["D4", "segment"])
    assert crm.accounting["file"].map(lambda f: Path(f).name).tolist() == ["pipeline.csv"]
    acc = crm.accounting.iloc[0]
    assert (acc["read"], acc["accepted"], acc["rejected"]) == (4, 4, 0)


def test_unmatched_key_is_rejected_with_its_row(tmp_path):
    org_folder(tmp_path, missing="reject")
    crm = load_crm(tmp_path / "data")
    assert sorted(crm.opportunities["opportunity_id"]) == ["D1", "D2", "D3"]
    reject = crm.rejects.iloc[0]
    assert (reject["row"], reject["column"], reject["value"]) == (5, "client", "Nobody Inc")
    assert "not found in accounts.csv" in reject["reason"]
    acc = crm.accounting.iloc[0]
    assert acc["read"] == acc["accepted"] + acc["rejected"] == 4


def test_changed_lookup_file_is_not_served_from_the_reload_cache(tmp_path):
    org = org_folder(tmp_path)
    store = LoadCache(tmp_path / "cache")
    first = load_crm(tmp_path / "data", cache=store)
    assert first.opportunities.set_index("opportunity_id").loc["D2", "team"] == "West"
    (org / "sales_teams.csv").write_text(TEAMS.replace("Bob,West", "Bob,North"))
    second = load_crm(tmp_path / "data", cache=LoadCache(tmp_path / "cache"))
    assert second.opportunities.set_index("opportunity_id").loc["D2", "team"] == "North"


def test_lookup_with_conflicting_duplicate_keys_is_one_line(tmp_path):
    org = org_folder(tmp_path)
    (org / "sales_teams.csv").write_text(TEAMS + "Bob,North\n")
    with pytest.raises(ExportError, match=r"sales_teams\.csv: lines 3 and 5: seller 'Bob' appears more than once"):
        load_crm(tmp_path / "data")


def test_lookup_naming_a_column_the_file_lacks(tmp_path):
    org = org_folder(tmp_path)
    (org / "pipeline_mapping.yaml").write_text(MAPPING.replace("value: regional_office", "value: office")
                                               .replace("MISSING", "empty"))
    with pytest.raises(ExportError, match=r"sales_teams\.csv: lookup file has no column office"):
        load_crm(tmp_path / "data")


def test_unlisted_unknown_file_says_how_to_list_or_ignore_it(tmp_path):
    org = org_folder(tmp_path)
    (org / "notes.csv").write_text("topic,text\na,b\n")
    with pytest.raises(ExportError) as err:
        load_crm(tmp_path / "data")
    assert "notes.csv" in str(err.value) and "ignore:" in str(err.value)
    (org / "org.yaml").write_text((org / "org.yaml").read_text() + "ignore: ['*.bak', notes.csv]\n")
    assert len(load_crm(tmp_path / "data").opportunities) == 4


def test_lookup_files_used_by_a_mapping_need_not_be_listed(tmp_path):
    org_folder(tmp_path, org_yaml="org: Acme\nfiles:\n  pipeline.csv: pipeline_mapping.yaml\n")
    assert load_crm(tmp_path / "data").opportunities["team"].notna().all()


def test_listed_lookup_that_does_not_exist_names_org_yaml(tmp_path):
    org_folder(tmp_path, org_yaml="org: Acme\nlookups: [teams.csv]\n")
    with pytest.raises(ProfileError, match=r"org\.yaml: lookups: teams\.csv not found"):
        load_crm(tmp_path / "data")


LEADS = """lead,first_contact,source,status
L1,2024-12-01,Web,Converted
L2,2025-01-15,Event,Converted
L3,2025-02-01,Web,Open
"""
WON = """deal,lead,won_date,amount
W1,L1,2025-03-20,1200
W2,L2,,800
"""
LEADS_MAPPING = """table: leads
dates: iso
columns:
  lead_id: lead
  created_at: first_contact
  lead_source: source
  status: status
"""
WON_MAPPING = """table: opportunities
dates: iso
columns:
  opportunity_id: deal
  created_at: {lookup: leads.csv, key: lead, on: lead, value: first_contact}
  close_date: {coalesce: [{column: won_date}, {value: 2025-06-30}]}
  stage: {value: Pipeline}
  is_closed: {present: won_date}
  is_won: {present: won_date}
  amount: amount
"""


def test_marketing_funnel_pair_becomes_leads_and_opportunities(tmp_path):
    org = tmp_path / "data" / "funnel"
    org.mkdir(parents=True)
    (org / "leads.csv").write_text(LEADS)
    (org / "won.csv").write_text(WON)
    (org / "leads.yaml").write_text(LEADS_MAPPING)
    (org / "won.yaml").write_text(WON_MAPPING)
    (org / "org.yaml").write_text("org: Funnel\nfiles:\n  leads.csv: leads.yaml\n  won.csv: won.yaml\n")
    crm = load_crm(tmp_path / "data")
    assert crm.rejects.empty
    assert len(crm.leads) == 3
    opps = crm.opportunities.set_index("opportunity_id")
    # The deal's created date is its lead's first contact, from the other file.
    assert opps.loc["W1", "created_at"] == pd.Timestamp("2024-12-01")
    assert opps.loc["W2", "created_at"] == pd.Timestamp("2025-01-15")
    assert opps["is_won"].tolist() == [True, False]
    assert opps["is_closed"].tolist() == [True, False]


def test_absent_flag(tmp_path):
    org = tmp_path / "data" / "x"
    org.mkdir(parents=True)
    (org / "won.csv").write_text(WON)
    (org / "leads.csv").write_text(LEADS)
    (org / "won.yaml").write_text(WON_MAPPING.replace("is_closed: {present: won_date}", "is_closed: {absent: amount}")
                                  .replace("is_won: {present: won_date}", "is_won: {absent: amount}"))
    (org / "org.yaml").write_text("org: X\nfiles:\n  won.csv: won.yaml\nignore: [leads.csv]\n")
    opps = load_crm(tmp_path / "data").opportunities
    assert not opps["is_closed"].any()


OPEN_AND_EARLY = """deal,seller,client,stage,created,closed,value
D1,Ann,Acme,Won,2025-01-05,2025-03-28,1000
D2,Bob,Globex,Open,2025-01-10,,500
D3,Cid,Initech,Won,2025-02-02 15:00,2025-01-30,700
D4,Ann,Acme,Lost,2025-03-01,,300
D5,Ann,Acme,Won,2025-03-01 16:30,2025-03-01,300
"""


@pytest.mark.parametrize("policy", ["warn", "reject"])
def test_open_deals_without_close_date_and_close_before_created(tmp_path, caplog, policy):
    org = org_folder(tmp_path, org_yaml="org: Acme\nfiles:\n  pipeline.csv: pipeline_mapping.yaml\n"
                                        f"close_before_created: {policy}\n")
    (org / "pipeline.csv").write_text(OPEN_AND_EARLY)
    store = LoadCache(tmp_path / "cache")
    crm = load_crm(tmp_path / "data", cache=store)
    opps = crm.opportunities.set_index("opportunity_id")
    rejects = crm.rejects.set_index("row")
    # An open deal may have no close date yet; a closed one may not.
    assert "D2" in opps.index and pd.isna(opps.loc["D2", "close_date"])
    assert "D4" not in opps.index and rejects.loc[5, ["column", "reason"]].tolist() == [
        "closed", "closed: empty, but the deal is closed"]
    # Closed the same day it was created is not early.
    assert "D5" in opps.index
    if policy == "warn":
        assert "D3" in opps.index
        assert "close before the day they were created (first at row 4)" in caplog.text
    else:
        assert "D3" not in opps.index
        assert rejects.loc[4, ["column", "value", "reason"]].tolist() == [
            "closed", "2025-01-30", "closed: close date before the created date"]
    acc = crm.accounting.iloc[0]
    assert acc["read"] == acc["accepted"] + acc["rejected"] + acc["ignored"] == 5
    # The policy is part of the reload cache's key.
    cached = load_crm(tmp_path / "data", cache=LoadCache(tmp_path / "cache"))
    assert sorted(cached.opportunities["opportunity_id"]) == sorted(opps.index)
