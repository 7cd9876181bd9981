"""Fields other departments own on a deal: named in org.yaml, kept as opportunity columns, dates as ISO dates."""
from __future__ import annotations

import logging
import shutil

import pytest

from quarterpanic.analysis.department_fields import won_deals
from quarterpanic.analysis.inputs import input_presence
from quarterpanic.dataset import load_dataset
from quarterpanic.errors import ProfileError
from quarterpanic.ingest import loading
from quarterpanic.ingest.orgs import read_org_yaml

from helpers import FIXTURES

FOLDER = FIXTURES / "department_fields"
COLUMNS = ["legal: Contract Signed Date", "finance: PO Number", "finance: Billing Contact", "delivery: Kick-off Date"]


def test_department_fields_become_opportunity_columns_with_dates_as_iso_dates():
    crm = loading.load_crm(FOLDER)
    assert crm.rejects.empty
    opps = crm.opportunities.set_index("opportunity_id")
    assert [c for c in opps.columns if ": " in c] == COLUMNS
    assert opps["legal: Contract Signed Date"].tolist()[:3] == ["2025-03-12", "2025-04-03", "2025-03-31"]
    # Text stays as written; empty is missing.
    assert opps.loc["006A1", "finance: PO Number"] == "PO-4411"
    assert opps[COLUMNS].loc["006A4"].isna().all()


def test_what_each_won_deal_misses_at_close():
    data = load_dataset(FOLDER, cache=False)
    assert "department_fields" in input_presence(data)["Fabrikam"]
    deals = won_deals(data).set_index("opportunity_id")
    missing = deals[["missing:legal", "missing:finance", "missing:delivery", "missing:any"]].astype(bool)
    # Alpha has everything before its close; Beta's contract was signed after it closed; Gamma has no PO
    # number and no kick-off date (its contract was signed on the day it closed: present).
    assert missing.to_dict("index") == {
        "006A1": {"missing:legal": False, "missing:finance": False, "missing:delivery": False, "missing:any": False},
        "006A2": {"missing:legal": True, "missing:finance": False, "missing:delivery": False, "missing:any": True},
        "006A3": {"missing:legal": False, "missing:finance": True, "missing:delivery": True, "missing:any": True},
    }


def test_a_declared_header_the_export_lacks_is_named_in_a_warning(tmp_path, caplog):
    folder = tmp_path / "fabrikam"
    shutil.copytree(FOLDER, folder)
    text = (folder / "org.yaml").read_text().replace("delivery: Kick-off Date", "delivery: Go-live Date")
    (folder / "org.yaml").write_text(text)
    with caplog.at_level(logging.WARNING):
        crm = loading.load_crm(folder)
    assert "Go-live Date" in caplog.text and "department_fields" in caplog.text
    assert "delivery: Go-live Date" not in crm.opportunities and crm.rejects.empty


def test_the_reload_cache_keeps_the_columns_and_follows_org_yaml(tmp_path):
    folder = tmp_path / "fabrikam"
    shutil.copytree(FOLDER, folder)
    cache = tmp_path / "cache"
    first = loading.load_crm(folder, cache=cache).opportunities
    again = loading.load_crm(folder, cache=cache).opportunities
    assert list(again.columns) == list(first.columns)
    assert again["legal: Contract Signed Date"].tolist() == first["legal: Contract Signed Date"].tolist()
    text = (folder / "org.yaml").read_text().replace("legal: [Contract Signed Date]", "legal: [PO Number]")
    (folder / "org.yaml").write_text(text)
    changed = loading.load_crm(folder, cache=cache).opportunities
    assert "legal: PO Number" in changed and "legal: Contract Signed Date" not in changed


@pytest.mark.parametrize("value", ["[Contract Signed Date]", "{legal: 3}", "{legal: []}", "{'le:gal': [X]}"])
def test_a_malformed_department_fields_entry_is_one_line_naming_org_yaml(tmp_path, value):
    (tmp_path / "org.yaml").write_text(f"org: Fabrikam\ndepartment_fields: {value}\n")
    with pytest.raises(ProfileError, match="department_fields") as err:
        read_org_yaml(tmp_path)
    assert "org.yaml" in str(err.value) and "\n" not in str(err.value)
