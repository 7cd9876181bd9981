"""Profiles and mapping YAML: loading, detection, the column vocabulary, vectorised parsing."""
from __future__ import annotations

import os

import pandas as pd
import pytest

from helpers import FIXTURES, ROOT
from quarterpanic.errors import ExportError, ProfileError
from quarterpanic.ingest.exports import read_export, read_headers
from quarterpanic.ingest.mapping import map_export
from quarterpanic.ingest.profiles import (
    detect_profile,
    known_profiles,
    load_profile,
    profile_from_dict,
    shipped_profiles,
)
from quarterpanic.ingest.values import parse_bools, parse_dates, parse_numbers

SHIPPED = ["dynamics_opportunities", "hubspot_deal_property_history", "hubspot_deals", "jira_changelog",
           "jira_requests", "salesforce_api_field_history", "salesforce_api_lead", "salesforce_api_opportunity",
           "salesforce_api_opportunity_history", "salesforce_history", "salesforce_leads",
           "salesforce_opportunities"]


def test_shipped_profiles_load_and_identify_themselves():
    assert known_profiles() == SHIPPED
    profiles = shipped_profiles()
    for profile in profiles:
        assert profile.identify, profile.name
        assert detect_profile(profile.identify, profiles=profiles).name == profile.name


@pytest.mark.parametrize("name, profile", [
    ("salesforce_opportunities_cp1252.csv", "salesforce_opportunities"),
    ("salesforce_opportunities_bom.csv", "salesforce_opportunities"),
    ("salesforce_history.csv", "salesforce_history"),
    ("salesforce_leads.csv", "salesforce_leads"),
    ("hubspot_deals.csv", "hubspot_deals"),
    ("jira_requests.csv", "jira_requests"),
])
def test_fixtures_are_detected_from_headers(name, profile):
    assert detect_profile(read_headers(FIXTURES / name), path=name).name == profile


def test_no_match_names_the_file_and_suggests_profile():
    with pytest.raises(ExportError, match=r"pipeline_eu\.csv: no profile recognises its headers .*--profile"):
        detect_profile(read_headers(FIXTURES / "generic" / "pipeline_eu.csv"), path="pipeline_eu.csv")


def test_table_restricts_detection():
    with pytest.raises(ExportError, match="no leads profile"):
        detect_profile(read_headers(FIXTURES / "hubspot_deals.csv"), table="leads")


def test_ambiguous_headers_ask_for_profile():
    a = profile_from_dict({"profile": "a", "table": "leads", "identify": ["id", "x"],
                           "columns": {"lead_id": "id", "created_at": "c", "status": "s"}})
    b = profile_from_dict({"profile": "b", "table": "leads", "identify": ["id", "y"],
                           "columns": {"lead_id": "id", "created_at": "c", "status": "s"}})
    with pytest.raises(ExportError, match=r"several profiles \(a, b\).*--profile"):
        detect_profile(["id", "x", "y"], profiles=[a, b])
    narrow = profile_from_dict({"profile": "narrow", "table": "leads", "identify": ["id"],
                                "columns": {"lead_id": "id", "created_at": "c", "status": "s"}})
    assert detect_profile(["id", "x"], profiles=[a, narrow]).name == "a"  # the more specific wins


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ProfileError, match="unknown profile 'salesforce' — known profiles: dynamics_opportunities"):
        load_profile("salesforce")


@pytest.mark.parametrize("doc, message", [
    ({"table": "deals", "columns": {}}, "table must be one of"),
    ({"table": "leads", "columns": {"lead_id": "id"}}, "no mapping for required column"),
    ({"table": "leads", "columns": {"lead_id": "id", "created_at": "c", "status": "s", "colour": "x"}},
     "'colour' is not a column of the leads table"),
    ({"table": "leads", "columns": {"lead_id": {"column": "id", "trim": True}, "created_at": "c", "status": "s"}},
     "unknown key"),
    ({"table": "leads", "dates": "american", "columns": {}}, "dates must be one of"),
    ({"table": "leads", "colums": {}}, "unknown key"),
])
def test_malformed_mappings_say_what_is_wrong(doc, message):
    with pytest.raises(ProfileError, match=message):
        profile_from_dict(doc, name="m.yaml")


def test_mapping_file_errors(tmp_path):
    with pytest.raises(ProfileError, match="mapping file not found"):
        load_profile(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("table: leads\ncolumns: [\n")
    with pytest.raises(ProfileError, match="bad.yaml: is not valid YAML"):
        load_profile(bad)


def test_example_mapping_in_parameters_is_valid():
    example = ROOT / "parameters" / "example_mapping.yaml"
    assert load_profile(example).table == "opportunities"


def test_missing_required_column_names_it_and_the_headers_found():
    raw = read_export(FIXTURES / "salesforce_missing_column.csv")
    with pytest.raises(ExportError) as err:
        map_export(raw, load_profile("salesforce_opportunities"))
    text = str(err.value)
    assert "salesforce_missing_column.csv: missing required column Close Date (close_date)" in text
    assert "found: Opportunity ID, Opportunity Name, Amount, Created Date, Stage" in text


def test_jira_labels_planned_words_and_time_spent_seconds():
    mapped = map_export(read_export(FIXTURES / "jira_requests.csv"), load_profile("jira_requests"))
    frame = mapped.frame
    # "planned" label -> planned; "unplanned" is another word; Planned Work issue type -> planned.
    assert frame["planned"].tolist() == [False, True, False, True]
    assert frame["handling_hours"].tolist()[:2] == [2.0, 1.0]
    assert frame["created_at"].iloc[0] == pd.Timestamp("2025-03-31 14:15")
    assert pd.isna(frame["resolved_at"].iloc[2])


def test_salesforce_values_and_derived_fields():
    mapped = map_export(read_export(FIXTURES / "salesforce_opportunities_cp1252.csv"),
                        load_profile("salesforce_opportunities"))
    frame = mapped.frame
    assert frame["amount"].tolist()[:3] == [12500.0, 8000.0, 1200.0]
    assert frame["discount"].tolist()[:2] == [0.15, 0.05]
    assert frame["created_at"].iloc[1] == pd.Timestamp("2025-02-01 14:15")
    assert frame["bant_budget"].tolist()[:3] == [True, True, False]
    assert mapped.labels["amount"] == "Amount" and mapped.problems.empty


def test_closed_and_won_fall_back_to_the_stage():
    profile = load_profile("salesforce_opportunities")
    raw = read_export(FIXTURES / "salesforce_bad_rows.csv")  # no Closed / Won columns
    frame = map_export(raw, profile).frame
    assert frame.loc[9, "is_closed"] and frame.loc[9, "is_won"]
    assert not frame.loc[2, "is_closed"]


def test_hubspot_stage_probability_and_forecast():
    frame = map_export(read_export(FIXTURES / "hubspot_deals.csv"), load_profile("hubspot_deals")).frame
    assert frame["is_won"].tolist() == [True, False, False]
    assert frame["is_closed"].tolist() == [True, True, False]
    assert frame["probability"].tolist() == [100.0, 0.0, 20.0]
    assert frame["forecast_category"].tolist() == ["Closed", "Omitted", "Pipeline"]
    assert frame["close_date"].iloc[0] == pd.Timestamp("2025-03-31 14:15")


def test_history_values_are_normalised():
    frame = map_export(read_export(FIXTURES / "salesforce_history.csv"), load_profile("salesforce_history")).frame
    assert frame["field"].tolist()[:4] == ["stage", "amount", "close_date", "forecast_category"]
    assert frame.loc[3, ["old_value", "new_value"]].tolist() == ["10000.0", "8000.0"]
    assert frame.loc[4, ["old_value", "new_value"]].tolist() == ["2025-03-31", "2025-04-30"]


def test_parse_problems_carry_row_header_and_raw_value():
    mapped = map_export(read_export(FIXTURES / "salesforce_bad_rows.csv"), load_profile("salesforce_opportunities"))
    problems = mapped.problems.set_index("row")
    assert problems.loc[3, "column"] == "Close Date" and problems.loc[3, "value"] == "31/3/2025"
    assert problems.loc[5, "column"] == "Amount" and problems.loc[5, "value"] == "12.500,00"


@pytest.mark.parametrize("order, text, expected", [
    ("month_first", "3/31/2025", "2025-03-31"),
    ("month_first", "3/31/2025 2:15 PM", "2025-03-31 14:15"),
    ("month_first", "03/31/25", "2025-03-31"),
    ("month_first", "2025-03-31", "2025-03-31"),
    ("day_first", "31/03/2025", "2025-03-31"),
    ("day_first", "31.03.2025 14:30", "2025-03-31 14:30"),
    ("day_first", "31/Mar/25 2:15 PM", "2025-03-31 14:15"),
    ("day_first", "31-Mar-2025", "2025-03-31"),
    ("iso", "2025-03-31 14:15", "2025-03-31 14:15"),
    ("iso", "2025-03-31T14:15:00Z", "2025-03-31 14:15"),
    ("iso", "2025/03/31", "2025-03-31"),
])
def test_parse_dates_by_order(order, text, expected):
    parsed, bad, _ = parse_dates(pd.Series([text], dtype="str"), order)
    assert parsed.iloc[0] == pd.Timestamp(expected) and not bad.any()


def test_parse_dates_rejects_the_wrong_order_and_reads_serials():
    parsed, bad, _ = parse_dates(pd.Series(["31/3/2025", "", None, "soon"], dtype="str"), "month_first")
    assert bad.tolist() == [True, False, False, True]
    mixed = pd.Series([pd.Timestamp("2025-03-31"), 45747, "3/31/2025", None], dtype="object")
    parsed, bad, _ = parse_dates(mixed, "month_first")
    assert parsed.tolist()[:3] == [pd.Timestamp("2025-03-31")] * 3 and not bad.any()


@pytest.mark.parametrize("decimal, text, expected", [
    (".", "$12,500.00", 12500.0),
    (".", "USD 12,500", 12500.0),
    (".", "12 500", 12500.0),
    (".", "15%", 15.0),
    (".", "(1,200.50)", -1200.5),
    (".", "1.5E+03", 1500.0),
    (",", "12.500,00", 12500.0),
    (",", "12.500,00 €", 12500.0),
    (",", "EUR 1.200", 1200.0),
    (",", "0,15", 0.15),
])
def test_parse_numbers_formats(decimal, text, expected):
    parsed, bad = parse_numbers(pd.Series([text], dtype="str"), decimal)
    assert parsed.iloc[0] == pytest.approx(expected) and not bad.any()


@pytest.mark.parametrize("decimal, text", [(".", "12.500,00"), (".", "12,5"), (".", "abc"), (",", "1,234.56")])
def test_parse_numbers_never_guesses(decimal, text):
    parsed, bad = parse_numbers(pd.Series([text], dtype="str"), decimal)
    assert bad.iloc[0] and pd.isna(parsed.iloc[0])


def test_parse_bools():
    parsed, bad = parse_bools(pd.Series(["Yes", "No", "1", "0", "TRUE", "false", "", None, "maybe"], dtype="object"))
    assert parsed.tolist()[:6] == [True, False, True, False, True, False]
    assert parsed.isna().tolist()[6:] == [True, True, True]
    assert bad.tolist() == [False] * 8 + [True]


@pytest.mark.parametrize("values, expected", [
    (["a\r\nb", " x ", "", None, "y"], ["a\nb", "x", None, None, "y"]),
    ([" x\n", "\t", "z\r\n"], ["x", None, "z"]),
    (["one\ntwo", "three"], ["one\ntwo", "three"]),
])
def test_clean_text_trims_empties_and_crlf_on_arrow_and_object_columns(values, expected):
    from quarterpanic.ingest.values import clean_text

    for dtype in ("str", "object"):
        cleaned = clean_text(pd.Series(values, dtype=dtype))
        assert [None if pd.isna(v) else v for v in cleaned] == expected, dtype
    # A slice of an Arrow column shares its parent's character bytes.
    tail = clean_text(pd.Series(["a\r\nb"] + values, dtype="str").iloc[1:])
    assert [None if pd.isna(v) else v for v in tail] == expected


@pytest.mark.parametrize("text, far", [("4/10/2262 11:59 PM", False), ("4/11/2262 11:59 PM", True),
                                       ("9/21/1677 12:05 AM", True), ("9/21/1677 1:00 AM", False), ("12/31/9999", True), ("1/1/1600 10:00", True)])
def test_dates_at_the_edge_of_the_range_are_never_wrapped(text, far):
    parsed, bad, outside = parse_dates(pd.Series([text, "3/31/2025"], dtype="str"), "month_first")
    assert bad.tolist() == [far, False] and outside.tolist() == [far, False]
    if far:
        assert pd.isna(parsed.iloc[0])
    else:
        assert parsed.iloc[0] == pd.Timestamp(text)


# -- extends: a shipped profile with another date order or decimal mark ------------------------------


def _european_hubspot(path):
    """A HubSpot deals export as a German locale writes it: semicolons, day-first dates, decimal commas."""
    path.write_text(
        "Record ID;Deal Name;Deal Stage;Pipeline;Close Date;Create Date;Deal owner;Amount;Currency\n"
        "1;Acme - Seats;Closed Won;Sales Pipeline;18.12.2023;27.11.2023 10:43;Ann Lee;12.880,00;EUR\n"
        "2;Beta - Seats;Closed Lost;Sales Pipeline;02.01.2024;28.11.2023 09:10;Ann Lee;1.500,50;EUR\n"
        "3;Gamma - Seats;Closed Won;Sales Pipeline;15.01.2024;30.11.2023 16:24;Bo Kim;990,00;EUR\n"
        "4;Delta - Seats;Closed Won;Sales Pipeline;31.01.2024;04.12.2023 08:00;Bo Kim;20.000,00;EUR\n",
        encoding="utf-8")
    return path


def test_a_mapping_that_extends_a_shipped_profile_changes_only_what_it_says(tmp_path):
    export = _european_hubspot(tmp_path / "deals.csv")
    mapping = tmp_path / "deals_mapping.yaml"
    mapping.write_text('extends: hubspot_deals\ndates: day_first\ndecimal: ","\ncolumns:\n  account: Deal Name\n')
    profile, shipped = load_profile(mapping), load_profile("hubspot_deals")
    assert (profile.name, profile.table, profile.dates, profile.decimal) == ("deals_mapping", "opportunities",
                                                                             "day_first", ",")
    assert profile.columns["account"] == {"column": "Deal Name"}  # merged key by key: the one column replaced
    assert {k: v for k, v in profile.columns.items() if k != "account"} == {
        k: v for k, v in shipped.columns.items() if k != "account"}
    mapped = map_export(read_export(export), profile)
    assert mapped.problems.empty
    assert mapped.frame["amount"].tolist() == [12880.0, 1500.5, 990.0, 20000.0]
    assert mapped.frame["close_date"].iloc[0] == pd.Timestamp("2023-12-18")


def test_one_column_can_carry_its_own_decimal_mark(tmp_path):
    # An export assembled from two systems: amounts with decimal commas, discounts with points.
    export = tmp_path / "deals.csv"
    export.write_text(
        "Record ID;Deal Name;Deal Stage;Close Date;Create Date;Deal owner;Amount;Discount (%)\n"
        "1;Acme;Closed Won;18.12.2023;27.11.2023 10:43;Ann Lee;12.880,00;7.5\n"
        "2;Beta;Closed Lost;02.01.2024;28.11.2023 09:10;Ann Lee;1.500,50;12.25\n", encoding="utf-8")
    mapping = tmp_path / "deals_mapping.yaml"
    mapping.write_text('extends: hubspot_deals\ndates: day_first\n'
                       'columns:\n  amount: {column: Amount, decimal: ","}\n  account: Deal Name\n')
    mapped = map_export(read_export(export), load_profile(mapping))
    assert mapped.problems.empty
    assert mapped.frame["amount"].tolist() == [12880.0, 1500.5]
    assert mapped.frame["discount"].tolist() == pytest.approx([0.075, 0.1225])
    # Read with the mapping-wide mark only, the amounts are rejected and the reason names the mark used.
    mapping.write_text('extends: hubspot_deals\ndates: day_first\ncolumns:\n  account: Deal Name\n')
    mapped = map_export(read_export(export), load_profile(mapping))
    assert set(mapped.problems["column"]) == {"Amount"}
    bad = tmp_path / "bad.yaml"
    bad.write_text('extends: hubspot_deals\ncolumns:\n  amount: {column: Amount, decimal: ";"}\n')
    with pytest.raises(ProfileError, match=r"columns.amount.decimal: must be '.' or ','"):
        load_profile(bad)


def test_extends_refuses_an_unknown_parent_and_a_cycle(tmp_path):
    unknown = tmp_path / "a.yaml"
    unknown.write_text("extends: hubspot_dealz\n")
    with pytest.raises(ProfileError, match="unknown profile 'hubspot_dealz'"):
        load_profile(unknown)
    (tmp_path / "b.yaml").write_text("extends: c.yaml\n")
    (tmp_path / "c.yaml").write_text("extends: b.yaml\ntable: leads\n")
    with pytest.raises(ProfileError, match="a cycle"):
        load_profile(tmp_path / "b.yaml")


def test_a_column_failing_on_most_rows_names_the_setting_it_reads_with(tmp_path, caplog):
    export = _european_hubspot(tmp_path / "deals.csv")
    with caplog.at_level("WARNING", logger="quarterpanic.ingest.mapping"):
        mapped = map_export(read_export(export), load_profile("hubspot_deals"))
    reasons = mapped.problems.groupby("column")["reason"].first()
    assert reasons["Close Date"] == "not a date (expected YYYY-MM-DD; the column reads with dates: day_first)"
    assert reasons["Amount"] == "not a number (decimal mark '.'; the column reads with decimal: \",\")"
    warning, = [r.getMessage() for r in caplog.records]
    assert "deals.csv: most rows fail to read" in warning
    assert "Close Date (e.g. '18.12.2023')" in warning and "Amount (e.g. '12.880,00')" in warning
    assert "`extends: hubspot_deals` and `dates: day_first`, `decimal: \",\"`" in warning


def test_a_few_bad_values_get_no_setting_advice(caplog):
    # Two bad rows among valid ones are row mistakes, not a file written with another setting.
    with caplog.at_level("WARNING", logger="quarterpanic.ingest.mapping"):
        mapped = map_export(read_export(FIXTURES / "salesforce_bad_rows.csv"), load_profile("salesforce_opportunities"))
    assert not mapped.problems["reason"].str.contains("reads with").any()
    assert not [r for r in caplog.records if "most rows fail" in r.getMessage()]


def test_an_edited_parent_mapping_is_seen_in_a_running_session(tmp_path):
    parent, child = tmp_path / "parent.yaml", tmp_path / "child.yaml"
    parent.write_text("extends: hubspot_deals\ndates: iso\n")
    child.write_text("extends: parent.yaml\n")
    assert load_profile(child).dates == "iso"
    parent.write_text("extends: hubspot_deals\ndates: day_first\n")
    os.utime(parent, ns=(parent.stat().st_atime_ns, parent.stat().st_mtime_ns + 10**9))
    assert load_profile(child).dates == "day_first"
