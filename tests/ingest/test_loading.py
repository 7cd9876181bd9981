"""load_crm: canonical tables, rejects mapped to file/row/column/value, org folders, row accounting."""
from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

from helpers import FIXTURES
from quarterpanic.errors import ExportError, ProfileError
from quarterpanic.ingest import schemas
from quarterpanic.ingest.loading import ACCOUNTING_COLUMNS, REJECT_COLUMNS, OrgInfo, load_crm, write_rejects

GOOD = ["salesforce_opportunities_cp1252.csv", "salesforce_opportunities_bom.csv", "salesforce_history.csv",
        "salesforce_leads.csv", "hubspot_deals.csv", "jira_requests.csv", "salesforce_bad_rows.csv",
        "salesforce_stray_quote.csv"]


def assert_accounted(crm) -> None:
    """Every record of every file is accepted, rejected or ignored, exactly once."""
    acc = crm.accounting
    assert list(acc.columns) == ACCOUNTING_COLUMNS
    assert (acc["read"] == acc["accepted"] + acc["rejected"] + acc["ignored"]).all()
    for row in acc.itertuples():
        table = crm.table(row.table)
        accepted = table[table["source_file"] == row.file]
        rejected = crm.rejects[crm.rejects["file"] == row.file]
        assert len(accepted) == row.accepted and len(rejected) == row.rejected
        assert not set(accepted["source_row"]) & set(rejected["row"])
        assert rejected["row"].is_unique


@pytest.fixture(scope="module")
def crm():
    return load_crm([FIXTURES / name for name in GOOD])


def test_every_row_is_accounted_for(crm):
    assert_accounted(crm)
    assert crm.accounting.set_index("file")["read"].sum() == 4 + 2 + 5 + 3 + 3 + 4 + 8 + 3


def test_tables_validate_against_the_canonical_models(crm):
    for name, model in schemas.TABLES.items():
        model.validate(crm.table(name))
        assert list(crm.table(name).columns) == schemas.columns(name)


def test_rejects_name_file_row_column_value_and_reason(crm):
    assert list(crm.rejects.columns) == REJECT_COLUMNS
    bad = crm.rejects[crm.rejects["file"].str.endswith("salesforce_bad_rows.csv")].set_index("row")
    assert list(bad.index) == [3, 4, 5, 6, 7, 8]
    assert bad.loc[3, "column"] == "Close Date" and bad.loc[3, "value"] == "31/3/2025"
    assert "not a date" in bad.loc[3, "reason"]
    assert bad.loc[4, "reason"] == "has 7 fields, the header has 6"
    assert bad.loc[5, "column"] == "Amount" and bad.loc[5, "value"] == "12.500,00"
    assert bad.loc[6, "column"] == "Opportunity ID" and bad.loc[6, "reason"].startswith(
        "duplicate id, first seen at row 2 (kept); it differs in name: keep one record per id")
    assert bad.loc[7, "column"] == "Stage" and "empty, but required" in bad.loc[7, "reason"]
    assert bad.loc[8, "column"] == "Amount" and bad.loc[8, "value"] == "-5"
    # A change of a field no analysis reads (Probability) is ignored, not rejected.
    assert crm.rejects[crm.rejects["table"] == "history"].empty
    history = crm.accounting[crm.accounting["table"] == "history"].iloc[0]
    assert (history["read"], history["accepted"], history["rejected"], history["ignored"]) == (5, 4, 0, 1)


def test_provenance_points_at_the_source_line(crm):
    opps = crm.opportunities.set_index("opportunity_id")
    assert opps.loc["0065g00000AAA03", "source_row"] == 5  # after a two-line record
    assert opps.loc["0065g00000AAA01", "source_file"].endswith("salesforce_opportunities_cp1252.csv")


def test_files_outside_org_folders_take_the_folder_name(crm):
    assert set(crm.opportunities["org"]) == {"exports"}
    assert crm.orgs["exports"].size_class == "mid" and crm.orgs["exports"].calendar == {}


def test_data_folder_with_org_yaml():
    crm = load_crm(FIXTURES / "datafolder")
    assert_accounted(crm)
    assert set(crm.orgs) == {"Contoso", "Northwind Traders"}
    northwind = crm.orgs["Northwind Traders"]
    assert isinstance(northwind, OrgInfo)
    assert northwind.size_class == "mid" and northwind.calendar == {"start_month": 2, "naming": "end"}
    opps = crm.opportunities
    assert set(opps.loc[opps["org"] == "Contoso", "size_class"]) == {"enterprise"}
    # The same id in two organisations is two deals; within Contoso a later file's copy is rejected.
    assert (opps["opportunity_id"] == "006N01").sum() == 2
    dup = crm.rejects.set_index("file").loc[str(FIXTURES / "datafolder" / "contoso" / "pipeline.csv")]
    assert dup["row"] == 2 and "deals.csv row 2" in dup["reason"]
    profiles = dict(zip(crm.accounting["file"].map(lambda f: Path(f).name), crm.accounting["profile"]))
    assert profiles == {"deals.csv": "hubspot_deals", "pipeline.csv": "pipeline_mapping",
                        "opportunities.csv": "salesforce_opportunities", "requests.csv": "jira_requests"}
    assert len(crm.requests) == 1 and crm.requests["org"].iloc[0] == "Northwind Traders"


def test_user_mapping_with_constants():
    crm = load_crm(FIXTURES / "generic" / "pipeline_eu.csv",
                   profile=FIXTURES / "generic" / "pipeline_eu_mapping.yaml")
    assert_accounted(crm)
    opps = crm.opportunities
    assert opps["amount"].tolist() == [12500.0, 1200.0, 12500.0]
    assert set(opps["org"]) == {"Bergbau Gruppe"} and set(opps["size_class"]) == {"small"}
    assert opps["created_at"].iloc[2] == pd.Timestamp("2025-03-03 14:30")
    assert crm.orgs["Bergbau Gruppe"].size_class == "small"


def test_dynamics_excel_export(tmp_path):
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["(Do Not Modify) Opportunity", "(Do Not Modify) Row Checksum", "(Do Not Modify) Modified On",
                  "Topic", "Potential Customer", "Est. Close Date", "Created On", "Status", "Status Reason",
                  "Owner", "Est. Revenue", "Pipeline Phase"])
    guid = "3f2504e0-4f89-11d3-9a0c-0305e82c33{:02d}"
    sheet.append([guid.format(1), "x", dt.datetime(2025, 3, 1), "Big", "Contoso", dt.datetime(2025, 3, 31),
                  dt.datetime(2025, 1, 2, 14, 15), "Won", "Won", "Ann", 12500, "4-Close"])
    sheet.append([guid.format(2), "x", dt.datetime(2025, 3, 1), "Open one", "Fabrikam", 45777, "1/3/2025",
                  "Open", "In Progress", "Ann", None, "2-Develop"])
    sheet.append([guid.format(3), "x", dt.datetime(2025, 3, 1), "Odd", "X", dt.datetime(2025, 3, 31),
                  dt.datetime(2025, 1, 2), "Suspended", "?", "Ann", 5, None])
    hidden = book.create_sheet("hiddenSheet")
    hidden.sheet_state = "hidden"
    path = tmp_path / "Opportunities.xlsx"
    book.save(path)
    crm = load_crm(path)
    assert_accounted(crm)
    opps = crm.opportunities.set_index("opportunity_id")
    assert crm.accounting["profile"].tolist() == ["dynamics_opportunities"]
    assert opps.loc[guid.format(1), "is_won"] and opps.loc[guid.format(1), "amount"] == 12500
    assert opps.loc[guid.format(2), "close_date"] == pd.Timestamp("2025-04-30")  # Excel serial
    assert opps.loc[guid.format(2), "stage"] == "2-Develop"
    rejected = crm.rejects.set_index("row")
    assert rejected.loc[4, "column"] == "Status" and rejected.loc[4, "value"] == "Suspended"



def test_a_workbook_opening_on_a_cover_sheet_is_read_from_the_sheet_holding_the_export(tmp_path):
    # Reports saved from Excel often open on a summary sheet: detection and reading both look past it,
    # to the first visible sheet whose top rows hold a profile's identifying headers.
    book = openpyxl.Workbook()
    book.active.title = "Summary"
    book.active.append(["Deals export"])
    book.active.append(["generated", dt.datetime(2025, 12, 12)])
    deals = book.create_sheet("Deals")
    deals.append(["Record ID", "Deal Name", "Deal Stage", "Pipeline", "Close Date", "Create Date", "Amount"])
    deals.append([1, "Acme - Seats", "Closed Won", "Sales Pipeline", "2025-03-31", "2025-01-02 10:00", 1200])
    deals.append([2, "Beta - Seats", "Closed Lost", "Sales Pipeline", "2025-04-02", "2025-01-03 11:00", 900])
    path = tmp_path / "deals.xlsx"
    book.save(path)
    crm = load_crm(path)
    assert_accounted(crm)
    assert crm.accounting["profile"].tolist() == ["hubspot_deals"]
    assert crm.opportunities["opportunity_id"].tolist() == ["1", "2"]
    assert crm.opportunities["source_row"].tolist() == [2, 3]  # rows of the Deals sheet


def test_parquet_export(tmp_path):
    path = tmp_path / "leads.parquet"
    pd.DataFrame({"Lead ID": ["L1", "L2"], "Create Date": pd.to_datetime(["2025-01-01", "2025-01-02"]),
                  "Lead Status": ["Open", None]}).to_parquet(path)
    crm = load_crm(path)
    assert_accounted(crm)
    assert crm.leads["lead_id"].tolist() == ["L1"]
    assert crm.rejects[["row", "column"]].values.tolist() == [[3, "Lead Status"]]


def test_empty_tables_have_canonical_dtypes(crm):
    only_leads = load_crm(FIXTURES / "salesforce_leads.csv")
    for name in ("opportunities", "history", "requests"):
        assert only_leads.table(name).empty
        assert list(only_leads.table(name).columns) == schemas.columns(name)


def test_header_only_file_reads_zero_rows(tmp_path):
    path = tmp_path / "leads.csv"
    path.write_text("Lead ID,Create Date,Lead Status\n")
    crm = load_crm(path)
    assert crm.accounting[["read", "accepted", "rejected"]].values.tolist() == [[0, 0, 0]]


def test_folder_of_exports_and_hidden_files_skipped(tmp_path):
    shutil.copy(FIXTURES / "salesforce_leads.csv", tmp_path / "leads.csv")
    (tmp_path / ".hidden").mkdir()
    shutil.copy(FIXTURES / "binary.csv", tmp_path / ".hidden" / "junk.csv")
    (tmp_path / "notes.md").write_text("not an export")
    crm = load_crm(tmp_path)
    assert crm.accounting["file"].map(lambda f: Path(f).name).tolist() == ["leads.csv"]


@pytest.mark.parametrize("path, kwargs, error, message", [
    ("no_such_folder", {}, ExportError, "file not found"),
    ("empty.csv", {}, ExportError, "empty.csv: the file is empty"),
    ("binary.csv", {}, ExportError, "binary.csv: is a binary file"),
    ("salesforce_missing_column.csv", {"profile": "salesforce_opportunities"}, ExportError,
     "missing required column Close Date"),
    ("salesforce_leads.csv", {"profile": "zoho_deals"}, ProfileError, "unknown profile 'zoho_deals'"),
    ("salesforce_leads.csv", {"profile": "salesforce_leads", "table": "requests"}, ProfileError,
     "produces the leads table"),
    ("salesforce_leads.csv", {"table": "invoices"}, ProfileError, "unknown table"),
])
def test_user_mistakes_are_one_line_errors(path, kwargs, error, message):
    with pytest.raises(error, match=message) as err:
        load_crm(FIXTURES / path, **kwargs)
    assert "\n" not in str(err.value)


def test_bad_org_yaml(tmp_path):
    shutil.copy(FIXTURES / "salesforce_leads.csv", tmp_path / "leads.csv")
    (tmp_path / "org.yaml").write_text("org: X\nsize_class: huge\n")
    with pytest.raises(ProfileError, match="org.yaml: size_class 'huge'"):
        load_crm(tmp_path)


def test_accounting_invariant_breach_is_caught(monkeypatch):
    """If a row were dropped without a reject, loading must fail loudly, never report it."""
    import quarterpanic.ingest.files as files

    real = files.validate_table

    def lossy(frame, table):
        valid, failures = real(frame, table)
        return valid.iloc[1:], failures

    monkeypatch.setattr(files, "validate_table", lossy)
    with pytest.raises(AssertionError, match="read 3 != accepted 2"):
        load_crm(FIXTURES / "salesforce_leads.csv")


def test_write_rejects_round_trips(crm, tmp_path):
    path = write_rejects(crm.rejects, tmp_path / "out" / "rejects.csv")
    back = pd.read_csv(path, encoding="utf-8-sig", dtype=str, keep_default_na=False)
    assert list(back.columns) == REJECT_COLUMNS and len(back) == len(crm.rejects)


def test_table_option_skips_other_tables_in_a_folder():
    crm = load_crm(FIXTURES / "datafolder", table="requests")
    assert crm.accounting["table"].tolist() == ["requests"]
    assert crm.opportunities.empty and len(crm.requests) == 1


def test_unwritable_rejects_path_is_a_user_error(crm, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ExportError, match="cannot write the rejects file"):
        write_rejects(crm.rejects, blocker / "rejects.csv")


def test_files_loaded_on_threads_give_the_same_tables_in_the_same_order(crm, monkeypatch):
    from quarterpanic.ingest import loading

    monkeypatch.setattr(loading, "LOAD_THREADS", 3)
    threaded = load_crm([FIXTURES / name for name in GOOD])
    for name in schemas.TABLES:
        pd.testing.assert_frame_equal(threaded.table(name), crm.table(name))
    pd.testing.assert_frame_equal(threaded.rejects, crm.rejects)
    pd.testing.assert_frame_equal(threaded.accounting, crm.accounting)


@pytest.mark.parametrize("text, expected", [("", 3), ("1", 1), ("8", 8), ("0", 3), ("two", 3), ("-1", 3)])
def test_load_threads_from_the_environment(monkeypatch, text, expected):
    from quarterpanic.ingest import loading

    monkeypatch.setenv("QUARTERPANIC_LOAD_THREADS", text)
    assert loading._load_threads(default=3) == expected


@pytest.mark.parametrize("value, n", [("salesdata/globex/Opportunités.csv", 4), ("", 2), ("x", 0)])
def test_constant_text_is_n_copies_as_str(value, n):
    column = pd.Series(schemas.constant_text(value, n))
    assert str(column.dtype) == "str" and column.tolist() == [value] * n
    pd.testing.assert_series_equal(column, pd.Series([value] * n, dtype="str"))


# --------------------------------------------------------------------------- hostile inputs (issue 12)

OPP_HEADER = "Opportunity ID,Opportunity Name,Created Date,Close Date,Stage,Amount,Discount (%),Lead Score"


def opportunities(tmp_path: Path, *rows: str, header: str = OPP_HEADER) -> Path:
    path = tmp_path / "opportunities.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def reject_reasons(crm) -> dict[int, str]:
    return dict(zip(crm.rejects["row"], crm.rejects["reason"]))


@pytest.mark.parametrize("close", ["12/31/9999", "1/1/1600", "2300-01-01", "12/31/9999 11:59 PM"])
def test_dates_outside_the_supported_range_are_rejected_per_row(tmp_path, close):
    path = opportunities(tmp_path, "A,a,1/2/2025,3/31/2025,Prospecting,10,,",
                         f"B,b,1/2/2025,{close},Prospecting,10,,")
    crm = load_crm(path, profile="salesforce_opportunities")
    assert_accounted(crm)
    assert crm.opportunities["opportunity_id"].tolist() == ["A"]
    (reject,) = crm.rejects.itertuples()
    assert (reject.row, reject.column, reject.value) == (3, "Close Date", close)
    assert "outside the dates" in reject.reason and "1677" in reject.reason


def test_far_dates_in_parquet_and_excel_serials_are_rejected_per_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "leads.parquet"
    pq.write_table(pa.table({
        "Lead ID": ["L1", "L2", "L3", "L4"],
        "Create Date": pa.array([dt.date(2025, 1, 1), dt.date(9999, 12, 31), dt.date(2025, 1, 2),
                                 dt.date(2025, 1, 3)], pa.date32()),
        "Lead Status": ["Open"] * 4,
        "Converted Date": pa.array([None, None, dt.datetime(3000, 1, 1), None], pa.timestamp("us")),
    }), path)
    crm = load_crm(path)
    assert_accounted(crm)
    assert crm.leads["lead_id"].tolist() == ["L1", "L4"]
    assert crm.rejects["row"].tolist() == [3, 4]
    assert crm.rejects["reason"].str.contains("outside the dates").all()
    serial = tmp_path / "serial.parquet"
    pd.DataFrame({"Lead ID": ["L1", "L2"], "Create Date": [45747.0, 1e12], "Lead Status": ["Open", "Open"]}) \
        .to_parquet(serial)
    crm = load_crm(serial)
    assert crm.leads["lead_id"].tolist() == ["L1"]
    assert crm.rejects["row"].tolist() == [3] and "outside the dates" in crm.rejects["reason"].iloc[0]


def test_non_finite_numbers_are_rejected_per_row(tmp_path):
    path = opportunities(tmp_path, "A,a,1/2/2025,3/31/2025,Prospecting,1e309,,",
                         "B,b,1/2/2025,3/31/2025,Prospecting,10,,1e400",
                         "C,c,1/2/2025,3/31/2025,Prospecting,10,,-1e309",
                         "D,d,1/2/2025,3/31/2025,Prospecting,1e300,,5")
    crm = load_crm(path, profile="salesforce_opportunities")
    assert_accounted(crm)
    assert crm.opportunities["opportunity_id"].tolist() == ["D"]
    reasons = reject_reasons(crm)
    assert set(reasons) == {2, 3, 4}
    assert all("not a finite number" in reason for reason in reasons.values())
    assert crm.rejects.set_index("row").loc[3, ["column", "value"]].tolist() == ["Lead Score", "1e400"]
    parquet = tmp_path / "leads.parquet"
    pd.DataFrame({"Lead ID": ["L1", "L2"], "Create Date": pd.to_datetime(["2025-01-01", "2025-01-02"]),
                  "Lead Status": ["Open", "Open"], "Lead Score": [float("inf"), 3.0]}).to_parquet(parquet)
    crm = load_crm(parquet)
    assert crm.leads["lead_id"].tolist() == ["L2"] and "not a finite number" in crm.rejects["reason"].iloc[0]


@pytest.mark.parametrize("repeated, positions", [("Opportunity ID", "columns 1 and 9"),
                                                  ("Close Date", "columns 4 and 9")])
def test_a_repeated_header_the_profile_reads_refuses_the_file(tmp_path, repeated, positions):
    path = opportunities(tmp_path, "A,a,1/2/2025,3/31/2025,Prospecting,10,,,X",
                         header=OPP_HEADER + "," + repeated)
    with pytest.raises(ExportError, match=f"header {repeated!r} appears twice \\({positions}\\)") as err:
        load_crm(path, profile="salesforce_opportunities")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_repeated_header_the_profile_does_not_read_is_ignored(tmp_path):
    path = opportunities(tmp_path, "A,a,1/2/2025,3/31/2025,Prospecting,10,,,x,y",
                         header=OPP_HEADER + ",Type,Type")
    crm = load_crm(path, profile="salesforce_opportunities")
    assert crm.opportunities["opportunity_id"].tolist() == ["A"]


def test_bounds_are_shown_in_the_units_of_the_export(tmp_path):
    path = opportunities(tmp_path, "A,a,1/2/2025,3/31/2025,Prospecting,10,250,", "B,b,1/2/2025,3/31/2025,Prospecting,10,15,")
    crm = load_crm(path, profile="salesforce_opportunities")
    (reject,) = crm.rejects.itertuples()
    assert (reject.row, reject.column, reject.value) == (2, "Discount (%)", "250")
    assert reject.reason == "Discount (%): must be at most 100"
    assert crm.opportunities["discount"].tolist() == [0.15]


def test_history_rows_and_requests_for_unknown_deals_are_counted(tmp_path):
    opportunities(tmp_path, "006A,a,1/2/2025,3/31/2025,Prospecting,10,,")
    (tmp_path / "history.csv").write_text(
        "Opportunity ID,Field / Event,Old Value,New Value,Edit Date\n"
        "006A,Stage,Prospecting,Negotiation,3/1/2025 10:00 AM\n"
        "006Z,Stage,Prospecting,Negotiation,3/1/2025 10:00 AM\n"
        "006Y,Stage,Prospecting,Negotiation,3/1/2025 10:00 AM\n")
    shutil.copy(FIXTURES / "jira_requests.csv", tmp_path / "requests.csv")
    crm = load_crm(tmp_path)
    assert_accounted(crm)
    unknown = dict(zip(crm.accounting["file"].map(lambda f: Path(f).name), crm.accounting["unknown_deal"]))
    requests = crm.requests
    linked = requests["opportunity_id"].notna() & ~requests["opportunity_id"].isin(["006A"])
    assert unknown == {"history.csv": 2, "opportunities.csv": 0, "requests.csv": int(linked.sum())}
    assert unknown["requests.csv"] > 0


def test_overlapping_extracts_ignore_exact_repeats_and_reject_records_that_differ(tmp_path):
    header = "Opportunity ID,Opportunity Name,Amount,Close Date,Created Date,Stage\n"
    folder = tmp_path / "acme"
    folder.mkdir()
    (folder / "org.yaml").write_text("org: Acme\nfiles:\n  week1.csv: salesforce_opportunities\n"
                                     "  week2.csv: salesforce_opportunities\n")
    (folder / "week1.csv").write_text(header + "006A1,One,100,3/31/2025,3/1/2025,Prospecting\n"
                                               "006A2,Two,,3/31/2025,3/1/2025,Prospecting\n")
    # This week's extract repeats both deals (one unchanged, one moved to a later stage) and adds a third.
    (folder / "week2.csv").write_text(header + "006A2,Two,,3/31/2025,3/1/2025,Prospecting\n"
                                               "006A1,One,100,3/31/2025,3/1/2025,Closed Won\n"
                                               "006A3,Three,50,3/31/2025,3/2/2025,Prospecting\n")
    crm = load_crm(tmp_path)
    assert_accounted(crm)
    counts = crm.accounting.set_index(crm.accounting["file"].map(lambda f: Path(f).name))
    assert counts.loc["week2.csv", ["read", "accepted", "rejected", "ignored"]].tolist() == [3, 1, 1, 1]
    reject, = crm.rejects.itertuples(index=False)
    assert (reject.row, reject.value) == (3, "006A1")
    assert reject.reason.endswith("week1.csv row 2 (kept); it differs in stage, is_closed, is_won: keep one record per id")
    assert sorted(crm.opportunities["opportunity_id"]) == ["006A1", "006A2", "006A3"]
