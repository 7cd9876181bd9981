"""The reload cache: hits, misses, invalidation, identical results, corrupt entries tolerated."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers import FIXTURES
from quarterpanic.dataset import load_dataset
from quarterpanic.ingest import reload_cache as qp_cache
from quarterpanic.ingest.loading import load_crm
from quarterpanic.ingest.reload_cache import LoadCache, open_cache
from quarterpanic.store import entries as checked

MIXED = ["salesforce_opportunities_cp1252.csv", "salesforce_history.csv", "salesforce_leads.csv",
         "hubspot_deals.csv", "jira_requests.csv", "salesforce_bad_rows.csv", "salesforce_stray_quote.csv"]
PARTS = ("opportunities", "history", "leads", "requests", "rejects", "accounting")


def assert_same(left, right) -> None:
    for part in PARTS:
        pd.testing.assert_frame_equal(getattr(left, part), getattr(right, part), obj=part)
    assert left.orgs == right.orgs


@pytest.fixture
def store(tmp_path) -> LoadCache:
    return LoadCache(tmp_path / "cache")


@pytest.fixture
def exports(tmp_path) -> Path:
    """A folder of exports with rejects (bad rows, duplicates) and a user mapping."""
    folder = tmp_path / "exports"
    folder.mkdir()
    for name in MIXED:
        shutil.copy(FIXTURES / name, folder / name)
    return folder


def test_second_load_is_served_from_the_cache(exports, store):
    first = load_crm(exports, cache=store)
    assert (store.stats.hits, store.stats.misses) == (0, len(MIXED))
    second = load_crm(exports, cache=store)
    assert (store.stats.hits, store.stats.misses) == (len(MIXED), len(MIXED))
    assert_same(first, second)


def test_cached_tables_rejects_and_accounting_equal_an_uncached_load(exports, store):
    load_crm(exports, cache=store)
    cached = load_crm(exports, cache=store)
    plain = load_crm(exports)
    assert_same(cached, plain)
    assert len(cached.rejects) > 0 and (cached.rejects["reason"].str.startswith("duplicate id")).any()
    accounting = cached.accounting
    assert (accounting["read"] == accounting["accepted"] + accounting["rejected"] + accounting["ignored"]).all()


def assert_reload_matches(paths, store: LoadCache, files: int) -> None:
    """Loading ``paths`` twice through ``store`` hits on every file and equals an uncached load."""
    load_crm(paths, cache=store)
    cached = load_crm(paths, cache=store)
    assert store.stats.hits == files
    assert_same(cached, load_crm(paths))


def test_data_folder_with_org_yaml_and_mapping(store):
    assert_reload_matches(FIXTURES / "datafolder", store, files=4)


def test_changed_file_is_read_again(exports, store):
    load_crm(exports, cache=store)
    leads = exports / "salesforce_leads.csv"
    text = leads.read_bytes().decode("utf-8")
    last = text.rstrip("\r\n").splitlines()[-1]
    leads.write_bytes((text.rstrip("\r\n") + "\n" + last.replace(last.split(",")[0], "00Q_NEW", 1) + "\n")
                      .encode("utf-8"))
    again = load_crm(exports, cache=store)
    assert (store.stats.hits, store.stats.misses) == (len(MIXED) - 1, len(MIXED) + 1)
    assert "00Q_NEW" in set(again.leads["lead_id"])
    assert_same(again, load_crm(exports))


def test_changed_mapping_is_a_miss(tmp_path, store):
    csv = shutil.copy(FIXTURES / "generic" / "pipeline_eu.csv", tmp_path / "pipeline_eu.csv")
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text((FIXTURES / "generic" / "pipeline_eu_mapping.yaml").read_text(encoding="utf-8"),
                       encoding="utf-8")
    before = load_crm(csv, profile=mapping, cache=store)
    load_crm(csv, profile=mapping, cache=store)
    assert store.stats.hits == 1
    # A comment is not a change of the mapping: still a hit.
    mapping.write_text(mapping.read_text(encoding="utf-8") + "\n# reviewed\n", encoding="utf-8")
    load_crm(csv, profile=mapping, cache=store)
    assert store.stats.hits == 2
    doc = mapping.read_text(encoding="utf-8")
    assert "Bergbau Gruppe" in doc
    mapping.write_text(doc.replace("Bergbau Gruppe", "Bergbau AG"), encoding="utf-8")
    after = load_crm(csv, profile=mapping, cache=store)
    assert (store.stats.hits, store.stats.misses) == (2, 2)
    assert set(before.opportunities["org"]) == {"Bergbau Gruppe"}
    assert set(after.opportunities["org"]) == {"Bergbau AG"}


def test_changed_org_yaml_is_a_miss(tmp_path, store):
    folder = shutil.copytree(FIXTURES / "datafolder" / "northwind", tmp_path / "northwind")
    load_crm(folder, cache=store)
    org_yaml = folder / "org.yaml"
    org_yaml.write_text(org_yaml.read_text(encoding="utf-8").replace("size_class: mid", "size_class: enterprise"),
                        encoding="utf-8")
    crm = load_crm(folder, cache=store)
    assert store.stats.hits == 0
    assert set(crm.opportunities["size_class"]) == {"enterprise"}



def test_a_changed_departments_map_in_org_yaml_is_a_miss(tmp_path, store):
    # departments: is applied while the changelog is loaded: an entry kept across an edit of it would
    # serve the old departments.
    folder = shutil.copytree(FIXTURES / "jira_changelog" / "fabrikam", tmp_path / "fabrikam")
    before = load_crm(folder, cache=store).table("request_history")
    org_yaml = folder / "org.yaml"
    org_yaml.write_text(org_yaml.read_text(encoding="utf-8").replace("Legal: legal,", "Legal: counsel,"),
                        encoding="utf-8")
    after = load_crm(folder, cache=store).table("request_history")
    assert "counsel" not in set(before["department"].dropna()) and "counsel" in set(after["department"].dropna())

def test_changed_loading_code_is_a_miss(exports, store, monkeypatch):
    load_crm(exports, cache=store)
    monkeypatch.setattr(qp_cache, "code_fingerprint", lambda: "another version of the loading code")
    load_crm(exports, cache=store)
    assert store.stats.hits == 0 and store.stats.misses == 2 * len(MIXED)


def test_the_same_file_under_another_path_is_a_hit_with_its_own_path(exports, tmp_path, store):
    load_crm(exports / "salesforce_bad_rows.csv", cache=store)
    elsewhere = tmp_path / "elsewhere" / "exports"
    shutil.copytree(exports, elsewhere)
    crm = load_crm(elsewhere / "salesforce_bad_rows.csv", cache=store)
    assert store.stats.hits == 1
    assert set(crm.opportunities["source_file"]) == {str(elsewhere / "salesforce_bad_rows.csv")}
    assert set(crm.rejects["file"]) == {str(elsewhere / "salesforce_bad_rows.csv")}
    assert_same(crm, load_crm(elsewhere / "salesforce_bad_rows.csv"))


@pytest.mark.parametrize("damage", ["garbage frame", "missing rejects", "truncated frame", "truncated entry", "wrong counts",
                                    "wrong columns"])
def test_corrupt_entries_are_ignored_and_rebuilt(exports, store, damage):
    load_crm(exports, cache=store)
    entries = sorted(p for p in store.entries.iterdir() if p.is_dir())
    assert len(entries) == len(MIXED)
    for entry in entries:
        if damage == "garbage frame":
            (entry / "frame.arrow").write_bytes(b"ARROW1 not really")
        elif damage == "missing rejects":
            (entry / "rejects.arrow").unlink()
        elif damage == "truncated frame":
            data = (entry / "frame.arrow").read_bytes()
            (entry / "frame.arrow").write_bytes(data[: len(data) // 2])
        elif damage == "wrong columns":
            frame = pd.read_feather(entry / "frame.arrow")
            frame.rename(columns={frame.columns[-1]: "something_else"}).to_feather(entry / "frame.arrow")
        elif damage == "truncated entry":
            (entry / "entry.json").write_text('{"format": 1, "rea', encoding="utf-8")
        else:  # a well-formed entry (its checksums match) whose counts disagree with its frames
            doc = json.loads((entry / "entry.json").read_text(encoding="utf-8"))["entry"]
            doc["meta"]["read"] += 1
            (entry / "entry.json").write_bytes(checked.manifest_bytes(doc))
    crm = load_crm(exports, cache=store)
    assert store.stats.rebuilt == len(MIXED) and store.stats.hits == 0
    assert_same(crm, load_crm(exports))
    load_crm(exports, cache=store)
    assert store.stats.hits == len(MIXED)


def test_header_only_and_parquet_exports_round_trip(tmp_path, store):
    (tmp_path / "leads.csv").write_text("Lead ID,Create Date,Lead Status\n")
    pd.DataFrame({"Lead ID": ["L1", "L2"], "Create Date": pd.to_datetime(["2025-01-01", "2025-01-02"]),
                  "Lead Status": ["Open", None]}).to_parquet(tmp_path / "more_leads.parquet")
    assert_reload_matches([tmp_path / "leads.csv", tmp_path / "more_leads.parquet"], store, files=2)


def test_open_cache_arguments(tmp_path, monkeypatch):
    monkeypatch.setattr(qp_cache, "CACHE_DIR", tmp_path / "project_cache")
    assert open_cache(False) is None and open_cache(None) is None
    assert open_cache(True).root == tmp_path / "project_cache"
    assert open_cache(tmp_path / "x").root == tmp_path / "x"
    assert open_cache(str(tmp_path / "y")).root == tmp_path / "y"
    store = LoadCache(tmp_path / "z")
    assert open_cache(store) is store


def test_no_cache_writes_nothing(exports, tmp_path, monkeypatch):
    monkeypatch.setattr(qp_cache, "CACHE_DIR", tmp_path / "project_cache")
    load_crm(exports)
    assert not (tmp_path / "project_cache").exists()


def test_load_dataset_uses_the_project_cache_by_default(tmp_path, monkeypatch):
    from quarterpanic import dataset as qp_dataset

    # The project cache of both layers: the files' entries and the whole-folder snapshots
    # (a snapshot left in the real project cache by another test would skip the load).
    monkeypatch.setattr(qp_cache, "CACHE_DIR", tmp_path / "project_cache")
    monkeypatch.setattr(qp_dataset, "CACHE_DIR", tmp_path / "project_cache")
    folder = FIXTURES / "datafolder"
    first = load_dataset(folder)
    entries = list((tmp_path / "project_cache" / qp_cache.ENTRIES).iterdir())
    assert len(entries) == 4
    second = load_dataset(folder)
    for name in ("opportunities", "history", "leads", "requests", "rejects", "accounting"):
        pd.testing.assert_frame_equal(getattr(first, name), getattr(second, name))
    uncached = load_dataset(folder, cache=False)
    pd.testing.assert_frame_equal(uncached.opportunities, second.opportunities)


def test_digests_are_remembered_for_settled_files_only(exports, store, monkeypatch):
    # Every file counts as just written, however slowly the machine loads them.
    monkeypatch.setattr(qp_cache, "RACY_SECONDS", 1e9)
    hashed = []
    real = qp_cache.file_sha256
    monkeypatch.setattr(qp_cache, "file_sha256", lambda path: hashed.append(path) or real(path))
    load_crm(exports, cache=store)
    assert len(hashed) == len(MIXED)
    assert not (store.root / qp_cache.DIGESTS).exists()  # just written: hashed on every load
    load_crm(exports, cache=LoadCache(store.root))
    assert len(hashed) == 2 * len(MIXED)


def test_a_damaged_digest_memo_is_ignored(exports, store, monkeypatch):
    monkeypatch.setattr(qp_cache, "RACY_SECONDS", -1.0)
    load_crm(exports, cache=store)
    memo = store.root / qp_cache.DIGESTS
    doc = json.loads(memo.read_text(encoding="utf-8"))
    memo.write_text(json.dumps({name: 7 for name in doc}), encoding="utf-8")
    again = LoadCache(store.root)
    assert_same(load_crm(exports, cache=again), load_crm(exports))
    assert again.stats.hits == len(MIXED)
    memo.write_text("not json", encoding="utf-8")
    assert_same(load_crm(exports, cache=LoadCache(store.root)), load_crm(exports))


def test_a_remembered_digest_is_dropped_when_the_file_changes(exports, store, monkeypatch):
    monkeypatch.setattr(qp_cache, "RACY_SECONDS", -1.0)  # treat every file as settled
    hashed = []
    real = qp_cache.file_sha256
    monkeypatch.setattr(qp_cache, "file_sha256", lambda path: hashed.append(path) or real(path))
    load_crm(exports, cache=store)
    assert (store.root / qp_cache.DIGESTS).exists()
    second = LoadCache(store.root)
    load_crm(exports, cache=second)
    assert len(hashed) == len(MIXED) and second.stats.hits == len(MIXED)
    time.sleep(0.05)
    leads = exports / "salesforce_leads.csv"
    data = leads.read_bytes()
    leads.write_bytes(data.replace(b"Working", b"Nursing", 1))  # same size, other bytes
    third = LoadCache(store.root)
    crm = load_crm(exports, cache=third)
    assert len(hashed) == len(MIXED) + 1 and third.stats.misses == 1
    assert_same(crm, load_crm(exports))


def test_least_recently_used_entries_are_pruned_beyond_the_size_limit(exports, tmp_path):
    root = tmp_path / "small_cache"
    load_crm(exports / "salesforce_leads.csv", cache=LoadCache(root))
    old = {p.name for p in (root / qp_cache.ENTRIES).iterdir()}
    time.sleep(0.05)
    tight = LoadCache(root, max_bytes=1)  # only this load's entries may stay
    load_crm([exports / "hubspot_deals.csv", exports / "jira_requests.csv"], cache=tight)
    kept = {p.name for p in (root / qp_cache.ENTRIES).iterdir()}
    assert len(kept) == 2 and not kept & old
    again = LoadCache(root)
    load_crm([exports / "hubspot_deals.csv", exports / "jira_requests.csv"], cache=again)
    assert again.stats.hits == 2
