"""Checked entries: written whole, verified before use, unusable ones removed with one warning, values kept
only when they read back exactly, the least recently used pruned, the code signature read on every call."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from quarterpanic.calendar import FiscalCalendar
from quarterpanic.store import entries


def frame() -> pd.DataFrame:
    return pd.DataFrame({"x": pd.array([1, None], dtype="Int64"), "s": pd.array(["a", None], dtype="string"),
                         "t": pd.to_datetime(["2025-01-01", None]), "f": [0.1, np.nan]},
                        index=pd.Index([3, 7], name="row"))


@dataclass
class Outside:
    value: int


def test_an_entry_reads_back_what_was_written(tmp_path):
    path = tmp_path / "sub" / "k1"
    assert entries.write_tables(path, "k1", {"a": pa.table({"n": [1, 2]})}, {"rows": 2})
    tables, meta = entries.read_tables(path, "k1")
    assert tables["a"].equals(pa.table({"n": [1, 2]})) and meta == {"rows": 2}
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["k1"]  # no temporary left behind


def test_an_absent_entry_is_none(tmp_path):
    assert entries.read_tables(tmp_path / "absent", "absent") is None
    assert entries.read_value(tmp_path / "absent", "absent") is entries.MISSING


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "manifest flipped", "checksum flipped", "folder",
                                    "another key", "a file", "other checksum"])
def test_an_unusable_entry_is_removed_with_one_warning(tmp_path, caplog, monkeypatch, damage):
    path = tmp_path / "k1"
    entries.write_tables(path, "k1", {"a": pa.table({"n": list(range(100))})}, {})
    arrow, manifest = path / "a.arrow", path / entries.MANIFEST
    if damage == "flip a byte":
        data = bytearray(arrow.read_bytes())
        data[len(data) // 2] ^= 0x01
        arrow.write_bytes(bytes(data))
    elif damage == "truncate":
        arrow.write_bytes(arrow.read_bytes()[:-8])
    elif damage == "manifest flipped":  # still JSON: a digit of the file size
        manifest.write_bytes(manifest.read_bytes().replace(b'"bytes": ', b'"bytes": 1', 1))
    elif damage == "checksum flipped":
        text = manifest.read_text()
        start = text.index('"checksum": "') + len('"checksum": "')
        manifest.write_text(text[:start] + ("0" if text[start] != "0" else "1") + text[start + 1:])
    elif damage == "folder":
        arrow.unlink()
        arrow.mkdir()
    elif damage == "another key":
        path.rename(tmp_path / "k2")
        path = tmp_path / "k2"
    elif damage == "a file":
        entries.discard(path)
        path.write_bytes(b"ARROW1")
    else:  # written where a checksum is installed that is not installed here
        monkeypatch.delitem(entries.HASHERS, entries.HASH)
    with caplog.at_level(logging.WARNING, logger=entries.__name__):
        assert entries.load_tables(path, path.name) is None
    [record] = caplog.records
    assert "cannot be used" in record.getMessage() and "\n" not in record.getMessage()
    assert not os.path.lexists(path)


def test_values_read_back_exactly(tmp_path):
    calendar = FiscalCalendar(start_month=2)
    value = {"frames": [frame(), frame().iloc[:0]], "when": pd.Timestamp("2025-03-01 12:00", tz="Europe/Berlin"),
             "plain": (1, 2.5, None, "x", True, float("nan")), "calendar": calendar}
    assert entries.write_value(tmp_path / "k", "k", value)
    back = entries.read_value(tmp_path / "k", "k")
    assert entries.same(value, back)
    pd.testing.assert_frame_equal(back["frames"][0], frame())
    assert back["calendar"] == calendar and back["when"] == value["when"] and back["plain"][:2] == (1, 2.5)


@pytest.mark.parametrize("value", [pd.DataFrame({"lists": [[1, 2], [3]]}), np.float64(1.0), Outside(1),
                                   {1: "not a text key"}, pd.DataFrame({"x": [1]}).rename_axis("i").assign(y=[object()])])
def test_values_that_would_not_read_back_exactly_are_not_kept(tmp_path, value):
    assert not entries.write_value(tmp_path / "k", "k", value)
    assert entries.read_value(tmp_path / "k", "k") is entries.MISSING


def test_frame_attrs_must_survive(tmp_path):
    tagged = frame()
    tagged.attrs["level"] = 0.95
    assert entries.write_value(tmp_path / "k", "k", tagged) == entries.same(tagged, tagged.copy())
    back = entries.read_value(tmp_path / "k", "k")
    assert back is entries.MISSING or back.attrs == {"level": 0.95}


def test_prune_keeps_the_most_recently_used_and_removes_strays(tmp_path):
    for i, name in enumerate(["old", "middle", "new"]):
        entries.write_value(tmp_path / name, name, i)
        os.utime(tmp_path / name / entries.MANIFEST, (1000 + i, 1000 + i))
    (tmp_path / "old_format.pkl").write_bytes(b"a pickle of an older version")
    entries.read_value(tmp_path / "old", "old")  # used now
    entries.prune(tmp_path, max_entries=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "old"]
    entries.prune(tmp_path, max_entries=2, max_bytes=1)
    assert [p.name for p in tmp_path.iterdir()] == ["old"]
    entries.write_value(tmp_path / "kept", "kept", 1)
    os.utime(tmp_path / "kept" / entries.MANIFEST, (1000, 1000))
    entries.prune(tmp_path, max_bytes=1, keep={"kept"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "old"]


def test_a_writer_replaces_a_file_in_the_folders_place(tmp_path):
    (tmp_path / "layer").write_bytes(b"not a folder")
    assert entries.write_value(tmp_path / "layer" / "k", "k", 1)
    assert entries.read_value(tmp_path / "layer" / "k", "k") == 1


def test_the_source_signature_follows_every_edit_at_once(monkeypatch, tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text("y = 1\n")
    monkeypatch.setattr(entries, "PACKAGE_DIR", tmp_path)
    seen = {entries.source_signature()}
    (tmp_path / "sub" / "b.py").write_text("y = 22\n")  # another size
    seen.add(entries.source_signature())
    os.utime(tmp_path / "a.py", ns=(1, 1))  # same size, another modification time
    seen.add(entries.source_signature())
    (tmp_path / "a.py").rename(tmp_path / "c.py")
    seen.add(entries.source_signature())
    assert len(seen) == 4
    assert entries.source_signature(tmp_path, ["sub/*.py"]) != entries.source_signature(tmp_path)


@pytest.mark.parametrize("value", [object(), pd.DataFrame({"x": [1]}), np.arange(3)])
def test_a_key_never_rests_on_a_repr(value):
    with pytest.raises(TypeError):
        entries.canonical({"value": value})


def test_keys_tell_times_calendars_and_numbers_apart():
    texts = {entries.canonical(v) for v in [pd.Timestamp("2025-01-01"), pd.Timestamp("2025-01-01 00:00:01"),
                                            FiscalCalendar(start_month=2), FiscalCalendar(start_month=3),
                                            np.int64(1), np.float64(1.0), {"a"}, {"b"}]}
    assert len(texts) == 8


def test_a_frame_with_list_cells_reads_back_exactly(tmp_path):
    # The findings carry lists of text (needs, signals) beside None.
    frame = pd.DataFrame({"metric": ["a", "b", "c"], "needs": [["BANT flags", "lead_score"], None, []]})
    assert entries.write_value(tmp_path / "k", "k", frame)
    back = entries.read_value(tmp_path / "k", "k")
    assert back["needs"].tolist() == [["BANT flags", "lead_score"], None, []]
