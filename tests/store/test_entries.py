"""Pickle entries: written whole, broken or absent ones read as missing, the least recently used pruned."""
from __future__ import annotations

import os

import pandas as pd

from quarterpanic.store import entries as pickle_store


def test_an_entry_reads_back_what_was_written(tmp_path):
    frame = pd.DataFrame({"x": pd.array([1, None], dtype="Int64"), "s": pd.array(["a", None], dtype="string")})
    assert pickle_store.write(tmp_path / "sub" / "a.pkl", frame)
    pd.testing.assert_frame_equal(pickle_store.read(tmp_path / "sub" / "a.pkl"), frame)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.pkl"]  # no temporary left behind


def test_absent_and_broken_entries_are_missing(tmp_path):
    assert pickle_store.read(tmp_path / "absent.pkl") is pickle_store.MISSING
    (tmp_path / "broken.pkl").write_bytes(b"\x80\x05 not a pickle")
    assert pickle_store.read(tmp_path / "broken.pkl") is pickle_store.MISSING


def test_prune_keeps_the_most_recently_used(tmp_path):
    for i, name in enumerate(["old", "middle", "new"]):
        pickle_store.write(tmp_path / f"{name}.pkl", i)
        os.utime(tmp_path / f"{name}.pkl", (1000 + i, 1000 + i))
    pickle_store.read(tmp_path / "old.pkl")  # used now
    pickle_store.prune(tmp_path, max_entries=2)
    assert sorted(p.stem for p in tmp_path.glob("*.pkl")) == ["new", "old"]
    pickle_store.prune(tmp_path, max_entries=2, max_bytes=1)
    assert [p.stem for p in tmp_path.glob("*.pkl")] == ["old"]


def test_the_source_hash_names_every_module(monkeypatch, tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(pickle_store, "PACKAGE_DIR", tmp_path)
    pickle_store.source_hash.cache_clear()
    try:
        before = pickle_store.source_hash()
        (tmp_path / "a.py").rename(tmp_path / "b.py")
        pickle_store.source_hash.cache_clear()
        assert pickle_store.source_hash() != before
    finally:
        pickle_store.source_hash.cache_clear()
