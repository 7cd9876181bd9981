"""Dataset snapshots: a hit is the dataset the exports load into; any change to the folder, the
loading parameters or the code misses; folders a key cannot vouch for are loaded from the exports."""
from __future__ import annotations

import shutil

import pandas as pd
import pytest

from quarterpanic.dataset import TABLE_NAMES, load_dataset
from quarterpanic.ingest import schemas
from quarterpanic.params import defaults
from quarterpanic.paths import SALESDATA_DIR
from quarterpanic.store import entries as checked
from quarterpanic.store import snapshots as snapshot

FRAMES = list(TABLE_NAMES) + ["rejects", "accounting"]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """One organisation of the bundled sample, copied (a data folder with one sub-folder)."""
    monkeypatch.setattr(snapshot, "RACY_SECONDS", 0.0)
    data = tmp_path / "data"
    shutil.copytree(SALESDATA_DIR / "globex_corporation", data / "globex_corporation")
    return data


def snapshots(cache_dir) -> list:
    folder = cache_dir / snapshot.ENTRIES
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


def assert_same(left, right):
    for name in FRAMES:
        pd.testing.assert_frame_equal(getattr(left, name), getattr(right, name))
    assert left.calendars == right.calendars
    assert left.size_classes == right.size_classes
    assert left.as_of == right.as_of


def test_the_table_names_are_the_schemas():
    assert TABLE_NAMES == tuple(schemas.TABLES)


def test_a_hit_is_the_dataset_the_exports_load_into(folder, tmp_path):
    cache_dir = tmp_path / "cache"
    fresh = load_dataset(folder, defaults(), cache=False)
    first = load_dataset(folder, defaults(), cache=cache_dir)
    assert len(snapshots(cache_dir)) == 1
    again = load_dataset(folder, defaults(), cache=cache_dir)
    assert_same(first, fresh)
    assert_same(again, fresh)
    assert len(snapshots(cache_dir)) == 1


def test_no_cache_no_snapshot(folder, tmp_path, monkeypatch):
    monkeypatch.setattr("quarterpanic.dataset.CACHE_DIR", tmp_path / "project-cache")
    monkeypatch.setattr("quarterpanic.ingest.reload_cache.CACHE_DIR", tmp_path / "project-cache")
    load_dataset(folder, defaults(), cache=False)
    assert not (tmp_path / "project-cache").exists()
    load_dataset(folder, defaults(), cache=True)
    assert len(snapshots(tmp_path / "project-cache")) == 1


def test_a_changed_file_misses(folder, tmp_path):
    cache_dir = tmp_path / "cache"
    before = load_dataset(folder, defaults(), cache=cache_dir)
    org_file = folder / "globex_corporation" / "org.yaml"
    org_file.write_text(org_file.read_text().replace("size_class: enterprise", "size_class: mid"))
    after = load_dataset(folder, defaults(), cache=cache_dir)
    assert before.size_classes == {"Globex Corporation": "enterprise"}
    assert after.size_classes == {"Globex Corporation": "mid"}
    assert len(snapshots(cache_dir)) == 2
    export = folder / "globex_corporation" / "leads.csv"
    key = snapshot.snapshot_key(folder, defaults())
    export.write_bytes(export.read_bytes())  # same bytes, rewritten: a new status-change time
    assert snapshot.snapshot_key(folder, defaults()) != key
    key = snapshot.snapshot_key(folder, defaults())
    (folder / "globex_corporation" / "notes.txt").write_text("a new file")
    assert snapshot.snapshot_key(folder, defaults()) != key


@pytest.mark.parametrize("change", [{"as_of": "2025-06-30"}, {"orgs": ["Globex Corporation"]}, {"segment": "SMB"},
                                    {"fiscal_calendar": {"start_month": 1}}, {"profile": "salesforce_leads"}])
def test_a_changed_loading_parameter_misses(folder, change):
    assert snapshot.snapshot_key(folder, {**defaults(), **change}) != snapshot.snapshot_key(folder, defaults())


def test_other_parameters_share_the_snapshot(folder):
    assert snapshot.snapshot_key(folder, {**defaults(), "alpha": 0.1}) == snapshot.snapshot_key(folder, defaults())


def test_changed_library_code_misses(folder, tmp_path, monkeypatch):
    package = tmp_path / "package"
    shutil.copytree(checked.PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(checked, "PACKAGE_DIR", package)
    before = snapshot.snapshot_key(folder, defaults())
    (package / "ingest" / "mapping.py").write_text((package / "ingest" / "mapping.py").read_text() + "\n# changed\n")
    assert snapshot.snapshot_key(folder, defaults()) != before


def test_a_changed_shipped_profile_misses(folder, tmp_path, monkeypatch):
    profiles = tmp_path / "profiles"
    shutil.copytree(snapshot.PROFILES_DIR, profiles)
    monkeypatch.setattr(snapshot, "PROFILES_DIR", profiles)
    before = snapshot.snapshot_key(folder, defaults())
    (profiles / "salesforce_leads.yaml").write_text((profiles / "salesforce_leads.yaml").read_text() + "\n")
    assert snapshot.snapshot_key(folder, defaults()) != before



def test_a_mapping_beside_org_yaml_that_extends_one_elsewhere_is_not_snapshotted(folder, tmp_path):
    # The key signs the folder's files and the shipped profiles: a parent mapping outside the folder could
    # change under an unchanged key. A chain that stays in the folder or ends in a shipped profile is fine.
    org_file = folder / "globex_corporation" / "org.yaml"
    org_file.write_text(org_file.read_text().replace("leads.csv: salesforce_leads", "leads.csv: leads.yaml"))
    beside = folder / "globex_corporation" / "leads.yaml"
    beside.write_text("extends: base_leads.yaml\n")
    (folder / "globex_corporation" / "base_leads.yaml").write_text("extends: salesforce_leads\n")
    assert snapshot.snapshot_key(folder, defaults()) is not None
    (tmp_path / "shared_leads.yaml").write_text("extends: salesforce_leads\n")
    beside.write_text(f"extends: {tmp_path / 'shared_leads.yaml'}\n")
    assert snapshot.snapshot_key(folder, defaults()) is None

def test_folders_a_key_cannot_vouch_for_are_not_snapshotted(folder, tmp_path, monkeypatch):
    org_file = folder / "globex_corporation" / "org.yaml"
    shutil.copy(snapshot.PROFILES_DIR / "salesforce_leads.yaml", tmp_path / "shared_leads.yaml")
    org_file.write_text(org_file.read_text().replace("leads.csv: salesforce_leads",
                                                     f"leads.csv: {tmp_path / 'shared_leads.yaml'}"))
    assert snapshot.snapshot_key(folder, defaults()) is None  # a mapping outside the folder
    assert snapshot.snapshot_key(folder, {**defaults(), "profile": str(tmp_path / "shared_leads.yaml")}) is None
    cache_dir = tmp_path / "cache"
    assert_same(load_dataset(folder, defaults(), cache=cache_dir), load_dataset(folder, defaults(), cache=False))
    assert snapshots(cache_dir) == []


def test_a_file_written_just_now_is_not_snapshotted(folder, monkeypatch):
    monkeypatch.setattr(snapshot, "RACY_SECONDS", 3600.0)
    assert snapshot.snapshot_key(folder, defaults()) is None


def test_an_unreadable_snapshot_is_rebuilt(folder, tmp_path):
    cache_dir = tmp_path / "cache"
    fresh = load_dataset(folder, defaults(), cache=cache_dir)
    [entry] = snapshots(cache_dir)
    (entry / "frame0.arrow").write_bytes(b"ARROW1 not a frame")
    assert_same(load_dataset(folder, defaults(), cache=cache_dir), fresh)
    assert_same(load_dataset(folder, defaults(), cache=cache_dir), fresh)


def test_large_datasets_are_not_snapshotted(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(snapshot, "MAX_ROWS", 10)
    cache_dir = tmp_path / "cache"
    load_dataset(folder, defaults(), cache=cache_dir)
    assert snapshots(cache_dir) == []


def test_the_environment_turns_snapshots_off(folder, tmp_path, monkeypatch):
    monkeypatch.setenv(snapshot.ENV_SWITCH, "off")
    assert snapshot.snapshot_key(folder, defaults()) is None
    load_dataset(folder, defaults(), cache=tmp_path / "cache")
    assert snapshots(tmp_path / "cache") == []
