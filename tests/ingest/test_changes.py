"""History from exports that hold values (OpportunityHistory snapshots, HubSpot property history), not changes."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from quarterpanic import cli
from quarterpanic.analysis import outcomes
from quarterpanic.analysis.features import opportunity_features
from quarterpanic.dataset import Dataset
from quarterpanic.errors import ProfileError
from quarterpanic.ingest import loading
from quarterpanic.ingest.changes import changes_from_values
from quarterpanic.ingest.profiles import detect_profile, profile_from_dict

from helpers import FIXTURES

DATA_EXPORT = FIXTURES / "salesforce_data_export"


def _changes(crm: loading.CRM) -> set[tuple[str, str, str | None, str | None]]:
    h = crm.history
    return set(zip(h["opportunity_id"], h["field"], h["old_value"], h["new_value"]))


def _accounting(crm: loading.CRM, name: str) -> tuple[int, int, int, int]:
    row = crm.accounting[crm.accounting["file"].map(lambda f: Path(f).name) == name].iloc[0]
    return int(row["read"]), int(row["accepted"]), int(row["rejected"]), int(row["ignored"])


def test_values_become_changes_with_the_previous_value_as_old():
    long = pd.DataFrame({
        "opportunity_id": ["A", "A", "A", "B", "A"],
        "changed_at": pd.to_datetime(["2025-01-01", "2025-02-01", "2025-03-01", "2025-01-01", "2025-01-15"]),
        "field": ["close_date", "close_date", "close_date", "close_date", "owner"],
        "new_value": ["2025-03-31", "2025-03-31", "2025-06-30", "2025-03-31", "Bob"],
    }, index=[2, 3, 4, 5, 6])
    out, unchanged = changes_from_values(long, ("close_date",), pd.Index([]))
    # Row 4 is the one change; 2 (first value), 3 (same again) and 5 (B's first) change nothing;
    # row 6's field is not compared and passes through for loading to count.
    assert list(out.index) == [4, 6]
    assert out.loc[4, ["old_value", "new_value"]].tolist() == ["2025-03-31", "2025-06-30"]
    assert sorted(unchanged) == [2, 3, 5]


def test_values_are_compared_in_time_order_not_file_order():
    long = pd.DataFrame({
        "opportunity_id": ["A", "A"], "field": ["stage", "stage"], "new_value": ["Won", "Open"],
        "changed_at": pd.to_datetime(["2025-02-01", "2025-01-01"]),
    }, index=[2, 3])
    out, unchanged = changes_from_values(long, ("stage",), pd.Index([]))
    assert out.loc[2, ["old_value", "new_value"]].tolist() == ["Open", "Won"]
    assert list(unchanged) == [3]


def test_salesforce_data_export_folder_loads_and_validates_clean(tmp_path):
    crm = loading.load_crm(DATA_EXPORT)
    assert crm.rejects.empty, crm.rejects.to_dict("records")
    acc = crm.accounting
    assert (acc["read"] == acc["accepted"] + acc["rejected"] + acc["ignored"]).all()
    # Eight snapshots: two give a close-date change; four are first snapshots or change nothing of
    # the three; two changed only fields the field history already holds (stage, amount).
    assert _accounting(crm, "OpportunityHistory.csv") == (8, 2, 0, 6)
    assert _accounting(crm, "OpportunityFieldHistory.csv") == (5, 3, 0, 2)
    assert _changes(crm) == {
        ("0065g00000AbCdEAAV", "stage", "Prospecting", "Negotiation/Review"),
        ("0065g00000AbCdEAAV", "stage", "Negotiation/Review", "Closed Won"),
        ("0065g00000AbCdF", "amount", "6000.0", "8000.0"),
        # Close date is not tracked in the field history: its changes come from the snapshots.
        ("0065g00000AbCdEAAV", "close_date", "2025-04-30", "2025-03-31"),
        ("0065g00000AbCdF", "close_date", "2025-03-31", "2025-06-30"),
    }
    opps = crm.opportunities.set_index("opportunity_id")
    assert opps.loc["0065g00000AbCdEAAV", ["owner", "account"]].tolist() == ["Ada Lovelace", "Acme Corp"]
    assert pd.isna(opps.loc["0065g00000AbCdG", "close_date"]) and not opps.loc["0065g00000AbCdG", "is_closed"]
    assert cli.main(["validate", str(DATA_EXPORT), "--rejects", str(tmp_path / "rejects.csv")]) == 0


def test_close_date_pushes_are_measured_from_the_snapshots():
    crm = loading.load_crm(DATA_EXPORT)
    orgs = {name: {"size_class": info.size_class, "fiscal_calendar": info.calendar} for name, info in crm.orgs.items()}
    data = Dataset.from_tables(crm.__dict__, orgs, as_of="2025-04-15")
    pushes = outcomes.close_date_pushes(opportunity_features(data), data)
    # Globex was due on 31 March; the snapshot of 27 March moved it to 30 June.
    assert pushes[["opportunity_id", "quarter", "pushed"]].values.tolist() == [["0065g00000AbCdF", "FY2025-Q1", True]]


def test_snapshots_alone_give_every_change(tmp_path):
    org = tmp_path / "acme"
    org.mkdir()
    for name in ("Opportunity.csv", "OpportunityHistory.csv", "org.yaml"):
        (org / name).write_bytes((DATA_EXPORT / "acme" / name).read_bytes())
    crm = loading.load_crm(tmp_path)
    assert _accounting(crm, "OpportunityHistory.csv") == (8, 4, 0, 4)
    assert _changes(crm) == {
        ("0065g00000AbCdEAAV", "stage", "Prospecting", "Negotiation/Review"),
        ("0065g00000AbCdEAAV", "close_date", "2025-04-30", "2025-03-31"),
        ("0065g00000AbCdEAAV", "stage", "Negotiation/Review", "Closed Won"),
        ("0065g00000AbCdF", "amount", "6000.0", "8000.0"),
        ("0065g00000AbCdF", "close_date", "2025-03-31", "2025-06-30"),
    }
    # The snapshot that changed amount and close date gives two rows from one source row.
    assert crm.history.groupby("source_row").size().max() == 2


def test_a_bad_snapshot_is_rejected_and_not_compared(tmp_path):
    lines = (DATA_EXPORT / "acme" / "OpportunityHistory.csv").read_text().splitlines()
    lines[6] = lines[6].replace("2025-03-31", "31/03/2025")  # Globex's second snapshot
    (tmp_path / "OpportunityHistory.csv").write_text("\n".join(lines) + "\n")
    crm = loading.load_crm(tmp_path / "OpportunityHistory.csv")
    assert crm.rejects[["row", "column"]].values.tolist() == [[7, "CloseDate"]]
    read, accepted, rejected, ignored = _accounting(crm, "OpportunityHistory.csv")
    assert (read, rejected) == (8, 1) and read == accepted + rejected + ignored
    # The push is measured from the snapshot before the rejected one.
    assert ("0065g00000AbCdF", "close_date", "2025-03-31", "2025-06-30") in _changes(crm)


def test_hubspot_property_history_becomes_field_history():
    crm = loading.load_crm(FIXTURES / "hubspot_deal_property_history.csv")
    assert crm.rejects.empty
    # 13 rows: 5 changes; 5 first values, 1 value set again unchanged and 2 untracked properties ignored.
    assert _accounting(crm, "hubspot_deal_property_history.csv") == (13, 5, 0, 8)
    assert _changes(crm) == {
        ("9001", "stage", "appointmentscheduled", "contractsent"),
        ("9001", "amount", "10000.0", "12500.0"),
        ("9001", "close_date", "2025-04-30", "2025-03-31"),
        ("9001", "stage", "contractsent", "closedwon"),
        ("9003", "close_date", "2025-03-31", "2025-06-30"),
    }
    pushed = crm.history.set_index("source_row").loc[14, "changed_at"]
    assert pushed == pd.Timestamp("2025-03-28 17:45")


@pytest.mark.parametrize("header, profile", [
    ("Id,OpportunityId,CreatedById,CreatedDate,StageName,Amount,ExpectedRevenue,CloseDate,Probability,"
     "ForecastCategory", "salesforce_api_opportunity_history"),
    ("deal_id,name,value,timestamp,source,source_id", "hubspot_deal_property_history"),
])
def test_value_exports_are_recognised_by_their_headers(header, profile):
    assert detect_profile(header.split(",")).name == profile
    assert detect_profile(header.upper().split(",")).name == profile


@pytest.mark.parametrize("doc, message", [
    ({"table": "history", "changes": "deltas"}, "changes must be one of"),
    ({"table": "leads", "changes": "values", "columns": {"lead_id": "a", "created_at": "b", "status": "c"}},
     "the table must be history"),
    ({"table": "history", "changes": "snapshots", "columns": {"opportunity_id": "a", "changed_at": "b"}},
     "needs snapshot:"),
    ({"table": "history", "changes": "snapshots", "snapshot": {"owner": "Owner"},
      "columns": {"opportunity_id": "a", "changed_at": "b"}}, "not one of"),
    ({"table": "history", "changes": "values",
      "columns": {"opportunity_id": "a", "changed_at": "b", "field": "f", "old_value": "o", "new_value": "n"}},
     "do not map old_value"),
])
def test_malformed_changes_mapping_is_one_line(doc, message):
    with pytest.raises(ProfileError, match=message):
        profile_from_dict(doc, name="m")
