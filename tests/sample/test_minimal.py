"""The ``minimal`` scenario: a plain opportunity report, the way most CRM exports look."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from quarterpanic import cli
from quarterpanic.calendar import FiscalCalendar
from quarterpanic.errors import ParameterError
from quarterpanic.ingest.loading import load_crm
from quarterpanic.sample import generate, load_scenario
from quarterpanic.sample.export import EFFECT_INPUTS, export_spec, measurable_effects

QUALIFICATION_FIELDS = ["bant_budget", "bant_authority", "bant_need", "bant_timeline", "next_step", "lead_score"]


@pytest.fixture(scope="module")
def minimal():
    return generate("minimal", seed=3, scale="small")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("minimal")
    code = cli.main(["sample", "--out", str(out), "--scenario", "minimal", "--scale", "small", "--seed", "3"])
    assert code == 0
    return out


def test_the_cli_writes_only_an_opportunity_report_per_org(written):
    folders = sorted(p for p in written.iterdir() if p.is_dir())
    assert len(folders) == 3
    for folder in folders:
        exports = sorted(p.name for p in folder.iterdir() if p.suffix == ".csv")
        assert len(exports) == 1 and exports[0] in ("deals.csv", "opportunities.csv")
        header = (folder / exports[0]).read_bytes().splitlines()[0].decode("cp1252")
        for absent in ("BANT", "Next", "Lead Score", "Segment", "Team", "Discount"):
            assert absent not in header
        for present in ("Amount", "Close Date", "Stage"):
            assert present in header


def test_what_is_read_back_lacks_the_fields_and_tables(written, minimal):
    crm = load_crm([written])
    assert crm.rejects.empty
    assert crm.history.empty and crm.leads.empty and crm.requests.empty
    opps = crm.opportunities
    assert opps[QUALIFICATION_FIELDS + ["segment", "team", "discount"]].isna().all().all()
    assert opps["amount"].notna().all() and opps["is_won"].any()
    assert len(opps) == len(minimal.tables["opportunities"])


def test_the_in_memory_tables_match_the_export(minimal):
    tables = minimal.tables
    assert tables["history"].empty and tables["leads"].empty and tables["requests"].empty
    assert tables["opportunities"][QUALIFICATION_FIELDS].isna().all().all()


def test_the_data_begin_in_week_9_of_the_first_quarter(minimal):
    opps = minimal.tables["opportunities"]
    for org, rows in opps.groupby("org"):
        calendar = FiscalCalendar.from_spec(minimal.orgs[org]["fiscal_calendar"])
        first = calendar.annotate(pd.Series([rows["created_at"].min()]))
        first_quarter = [r for r in minimal.truth["quarters"] if r["org"] == org][0]
        assert first["quarter"].iloc[0] == first_quarter["quarter"]
        assert first["week_of_quarter"].iloc[0] >= 9
        start = pd.Timestamp(minimal.truth["exports"][org]["data_start"])
        assert rows["created_at"].min() >= start


def test_truth_keeps_only_what_the_export_can_show(minimal):
    truth = minimal.truth
    assert set(truth["exports"]) == set(minimal.orgs)
    for org, export in truth["exports"].items():
        assert set(export["measurable_effects"]) == {"win_rate_ratio", "last_week_deal_size_change",
                                                    "month3_bookings_share", "last_week_win_rate_change"}
    records = truth["quarters"]
    for record in records:
        for effect, value in record["effects"].items():
            assert (value is None) == (effect not in truth["exports"][record["org"]]["measurable_effects"])
    first = {}
    for record in records:
        first.setdefault(record["org"], record)
    assert all(r["partial"] for r in first.values())
    assert sum(r["partial"] for r in records) == len(first)
    json.dumps(truth)
    # The data start late in the first quarter: (nearly) everything it books closes in month 3.
    assert all(r["effects"]["month3_bookings_share"] > 0.9 for r in first.values())
    later = [r["effects"]["month3_bookings_share"] for r in records if not r["panic"] and not r["partial"]]
    assert 0.2 < np.median(later) < 0.6


def test_the_default_scenario_is_untouched_by_the_export_machinery():
    full = generate(seed=3, scale="small")
    assert "exports" not in full.truth and all("partial" not in r for r in full.truth["quarters"])
    assert all("export" not in info for info in full.orgs.values())


def test_export_spec_checks_its_keys():
    scenario = load_scenario("minimal")
    spec = export_spec(scenario, scenario["orgs"]["Globex Corporation"])
    assert spec["tables"] == ["opportunities"] and spec["data_start_week"] == 9
    with pytest.raises(ParameterError):
        export_spec({"export": {"omit_columns": ["created_at"]}}, {})
    with pytest.raises(ParameterError):
        export_spec({"export": {"tables": ["history"]}}, {})
    with pytest.raises(ParameterError):
        export_spec({"export": {"colums": []}}, {})
    full = export_spec({}, {})
    assert measurable_effects(full) == list(EFFECT_INPUTS)
