"""Cache entries on disk, as the reload cache, the dataset snapshots and the results cache keep them.

An entry is a folder named by its key with Arrow IPC files (tables) and a
manifest, ``entry.json``, that names the key, each file's size and checksum,
and what the layer needs besides the tables (JSON), and carries a checksum of
its own. Nothing in an entry can run code on load: Arrow IPC and JSON only.

:func:`read_tables` reads every file into memory and verifies it before any
byte is used, so a damaged entry (bytes changed, truncated, replaced by a
folder, an entry moved under another key, a file swapped between entries) is
never parsed: it is removed, reported in one warning line, and the caller
rebuilds it. Reading into memory rather than memory-mapping means the bytes
verified are the bytes used (a mapped file changed afterwards could still
crash the process with SIGBUS).

An entry is written under a temporary name and renamed into place (a reader
never sees half of one); reading one marks it used, and :func:`prune` removes
the least recently used. :func:`write_value` / :func:`read_value` keep any value
made of DataFrames, dataclasses, dicts, lists, Timestamps and JSON scalars, and
only when it reads back exactly as it was.

:func:`source_signature` is the part of the keys that changes with the code:
each module's path, size and modification time, read on every call, so that
a module edited under ``%autoreload`` is a new key at once.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import importlib
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

from quarterpanic.paths import PACKAGE_DIR

try:  # xxhash verifies tens of GB/s; blake2b (always there) about 0.6 GB/s
    import xxhash
except ImportError:  # pragma: no cover - depends on the environment
    xxhash = None

log = logging.getLogger(__name__)

#: What :func:`read_value` returns for an entry that is absent or unusable.
MISSING = object()
MANIFEST = "entry.json"
#: Bumped when the layout of an entry changes (an entry of another format is rebuilt).
ENTRY_FORMAT = 1
#: Temporary folders of a writer that died are removed by :func:`prune` after this many seconds.
STALE_STAGING_SECONDS = 3600.0


class BadEntry(Exception):
    """An entry that cannot be used: damaged, under another key, half-written or of another format."""


# --------------------------------------------------------------------------- checksums


def _hashers() -> dict[str, Callable[[], Any]]:
    found = {"blake2b-128": lambda: hashlib.blake2b(digest_size=16)}
    if xxhash is not None:
        found["xxh3-128"] = xxhash.xxh3_128
    return found


HASHERS = _hashers()
#: The checksum new entries carry: the fastest one installed.
HASH = "xxh3-128" if "xxh3-128" in HASHERS else "blake2b-128"


def checksum(data: bytes | memoryview | pa.Buffer, algorithm: str = HASH) -> str:
    """The ``algorithm`` checksum of ``data`` as hex."""
    if algorithm not in HASHERS:
        raise BadEntry(f"checksum {algorithm} is not available here")
    hasher = HASHERS[algorithm]()
    hasher.update(memoryview(data))
    return hasher.hexdigest()


def canonical(value: Any) -> str:
    """``value`` as canonical JSON (sorted keys), for keys: dataclasses by their fields, times in ISO format.

    Raises TypeError for anything else JSON cannot hold (a ``repr`` may leave
    out what tells two values apart, so a key never rests on one).
    """
    return json.dumps(value, sort_keys=True, default=_key_part)


def _key_part(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"$dataclass": type(value).__qualname__,
                **{f.name: getattr(value, f.name) for f in dataclasses.fields(value)}}
    if isinstance(value, (dt.date, dt.time)):  # pandas Timestamps too
        return {f"${type(value).__name__}": value.isoformat()}
    if isinstance(value, np.generic):
        return {f"${type(value).__name__}": value.item()}
    if isinstance(value, (set, frozenset)):
        return {"$set": sorted(canonical(item) for item in value)}
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"a {type(value).__name__} cannot be part of a cache key")


def _manifest_body(entry: Mapping[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":")).encode("utf-8")


def manifest_bytes(entry: Mapping[str, Any]) -> bytes:
    """The manifest file of ``entry`` (format, key, checksum algorithm, files, meta) with its checksum."""
    return json.dumps({"checksum": checksum(_manifest_body(entry), entry["hash"]), "entry": entry}).encode("utf-8")


# --------------------------------------------------------------------------- code signature


def source_signature(folder: Path | None = None, names: Iterable[str] | None = None) -> str:
    """Each module's path, size and modification time (ns), as canonical JSON, read now (stat only).

    Args:
        folder: the package folder (default: quarterpanic's).
        names: only these paths relative to ``folder`` (``*`` patterns allowed); default every ``*.py`` under it.
    """
    folder = PACKAGE_DIR if folder is None else folder
    paths = sorted({p for pattern in (names or ["**/*.py"]) for p in folder.glob(pattern)})
    modules = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError:  # removed while listed: its absence is the signature
            continue
        modules.append([path.relative_to(folder).as_posix(), stat.st_size, stat.st_mtime_ns])
    return canonical(modules)


# --------------------------------------------------------------------------- entries of tables


def write_tables(path: Path, key: str, tables: Mapping[str, pa.Table], meta: Mapping[str, Any]) -> bool:
    """Write ``tables`` and ``meta`` (JSON) as the entry ``path`` of ``key``, atomically.

    False (and a warning) when it cannot be written; an entry another process
    wrote first under the same key is left as it is.
    """
    staging = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    try:
        _make_folder(path.parent)
        staging.mkdir()
        files = {}
        for name, table in tables.items():
            sink = pa.BufferOutputStream()
            with pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
            data = sink.getvalue()
            with open(staging / f"{name}.arrow", "wb") as handle:
                handle.write(data)
            files[name] = {"bytes": data.size, "checksum": checksum(data)}
        entry = {"format": ENTRY_FORMAT, "key": key, "hash": HASH, "files": files, "meta": dict(meta)}
        (staging / MANIFEST).write_bytes(manifest_bytes(entry))
        if not path.is_dir():
            discard(path)
        os.rename(staging, path)
        return True
    except OSError as err:
        if path.is_dir():  # another process stored it first: theirs is as good as ours
            return True
        log.warning("cache entry %s not written (%s)", path, err)
        return False
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_tables(path: Path, key: str) -> tuple[dict[str, pa.Table], dict[str, Any]] | None:
    """The tables and meta of the entry ``path`` of ``key``, verified; None when there is none.

    Raises :class:`BadEntry` when the entry is there but cannot be used (see
    :func:`load_tables`, which removes it and warns).
    """
    if not os.path.lexists(path):
        return None
    if not path.is_dir():
        raise BadEntry("not a folder")
    try:
        document = json.loads((path / MANIFEST).read_bytes())
        entry = document["entry"]
        algorithm = entry["hash"]
        if checksum(_manifest_body(entry), algorithm) != document["checksum"]:
            raise BadEntry(f"{MANIFEST} does not match its checksum")
        if entry["format"] != ENTRY_FORMAT:
            raise BadEntry(f"format {entry['format']!r}, expected {ENTRY_FORMAT}")
        if entry["key"] != key:
            raise BadEntry("it belongs to another key")
        tables = {}
        for name, expected in entry["files"].items():
            data = (path / f"{name}.arrow").read_bytes()
            if len(data) != expected["bytes"] or checksum(data, algorithm) != expected["checksum"]:
                raise BadEntry(f"{name}.arrow does not match its checksum")
            tables[name] = pa.ipc.open_file(pa.py_buffer(data)).read_all()
        meta = entry["meta"]
    except BadEntry:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError, pa.ArrowException) as err:
        raise BadEntry(f"{type(err).__name__}: {err}") from err
    try:  # the manifest's modification time is the entry's last use, for pruning
        os.utime(path / MANIFEST)
    except OSError:
        pass
    return tables, meta


def load_tables(path: Path, key: str) -> tuple[dict[str, pa.Table], dict[str, Any]] | None:
    """:func:`read_tables`, with an unusable entry removed and reported in one warning line (then None)."""
    try:
        return read_tables(path, key)
    except BadEntry as err:
        report_bad(path, err)
        return None


def report_bad(path: Path, reason: Any) -> None:
    """Remove the unusable entry ``path`` and say so in one line."""
    log.warning("cache entry %s cannot be used (%s): removed, rebuilding it", path, str(reason).splitlines()[0])
    discard(path)


def discard(path: Path) -> None:
    """Remove ``path``, a folder or anything else; never fails."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def _make_folder(folder: Path) -> None:
    """Create ``folder``, replacing a file that stands in its place."""
    if os.path.lexists(folder) and not folder.is_dir():
        discard(folder)
    folder.mkdir(parents=True, exist_ok=True)


def prune(folder: Path, max_entries: int | None = None, max_bytes: int | None = None,
          keep: Iterable[str] = ()) -> None:
    """Remove the least recently used entries of ``folder`` beyond ``max_entries`` or ``max_bytes``.

    The most recently used entry and those named in ``keep`` stay; anything
    else in the folder (files of an older cache format, a dead writer's
    temporary folders) is removed.
    """
    keep = set(keep)
    entries = []
    try:
        children = list(folder.iterdir())
    except OSError:
        return
    for child in children:
        try:
            if child.name.startswith("."):
                if time.time() - child.stat().st_mtime > STALE_STAGING_SECONDS:
                    discard(child)
                continue
            if not child.is_dir():
                discard(child)
                continue
            size = sum(f.stat().st_size for f in child.iterdir())
            used = (child / MANIFEST).stat().st_mtime
        except OSError:
            size, used = 0, 0.0
        entries.append((used, size, child))
    total = 0
    for rank, (_, size, entry) in enumerate(sorted(entries, key=lambda e: e[0], reverse=True)):
        total += size
        if entry.name in keep or rank == 0:
            continue
        if (max_entries is not None and rank >= max_entries) or (max_bytes is not None and total > max_bytes):
            discard(entry)
            total -= size


# --------------------------------------------------------------------------- entries of values


class Unencodable(Exception):
    """A value the entries cannot keep exactly."""


def write_value(path: Path, key: str, value: Any) -> bool:
    """Keep ``value`` as the entry ``path`` of ``key``, only if it reads back exactly; False otherwise."""
    frames: list[pd.DataFrame] = []
    try:
        tree = _encode(value, frames)
        tables = {f"frame{i}": pa.Table.from_pandas(frame) for i, frame in enumerate(frames)}
        decoded = _decode(tree, {name: to_pandas(table) for name, table in tables.items()})
        if not same(value, decoded):
            raise Unencodable("it does not read back exactly")
    except (Unencodable, pa.ArrowException, TypeError, ValueError, OverflowError) as err:
        log.info("cache entry %s not written: %s cannot be kept (%s)", path, type(value).__name__, err)
        return False
    return write_tables(path, key, tables, {"value": tree})


def read_value(path: Path, key: str) -> Any:
    """The value kept as the entry ``path`` of ``key``, or :data:`MISSING` (an unusable entry removed and reported)."""
    try:
        found = read_tables(path, key)
        if found is None:
            return MISSING
        tables, meta = found
        return _decode(meta["value"], {name: to_pandas(table) for name, table in tables.items()})
    except BadEntry as err:
        report_bad(path, err)
    except (KeyError, TypeError, ValueError, AttributeError, ImportError, pa.ArrowException) as err:
        report_bad(path, f"{type(err).__name__}: {err}")
    return MISSING


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """``table`` as the frame it was made from: text columns that were ``object`` are ``object`` again
    (pandas reads every Arrow string column as ``str``), missing values in them None."""
    frame = table.to_pandas()
    for column in (table.schema.pandas_metadata or {}).get("columns", []):
        name = column.get("name")
        if column.get("numpy_type") == "object" and column.get("pandas_type") == "unicode" \
                and name in frame.columns and frame[name].dtype != object:
            missing = table.column(column["field_name"]).is_null().to_numpy(zero_copy_only=False)
            values = frame[name].astype(object)
            values[missing] = None
            frame[name] = values
        elif column.get("pandas_type") == "list[unicode]" and name in frame.columns:
            # Arrow gives list cells back as arrays: the findings' needs and signals are lists of text.
            frame[name] = pd.Series([None if v is None else [str(x) for x in v] for v in frame[name]],
                                    index=frame.index, dtype=object)
    return frame


def _encode(value: Any, frames: list[pd.DataFrame]) -> Any:
    if value is None or type(value) in (bool, int, float, str):
        return value
    if type(value) is pd.DataFrame:
        frames.append(value)
        return {"$frame": f"frame{len(frames) - 1}"}
    if type(value) is pd.Timestamp:
        return {"$timestamp": value.as_unit("ns").value, "unit": value.unit,
                "tz": None if value.tz is None else str(value.tz)}
    if type(value) in (list, tuple):
        return {f"${type(value).__name__}": [_encode(item, frames) for item in value]}
    if type(value) is dict:
        if not all(isinstance(name, str) for name in value):
            raise Unencodable("a dict with keys other than text")
        return {"$dict": {name: _encode(item, frames) for name, item in value.items()}}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        if not cls.__module__.startswith("quarterpanic.") or not all(f.init for f in dataclasses.fields(value)):
            raise Unencodable(f"dataclass {cls.__qualname__}")
        fields = {f.name: _encode(getattr(value, f.name), frames) for f in dataclasses.fields(value)}
        return {"$dataclass": f"{cls.__module__}:{cls.__qualname__}", "fields": fields}
    raise Unencodable(type(value).__name__)


def _decode(tree: Any, frames: Mapping[str, pd.DataFrame]) -> Any:
    if not isinstance(tree, dict):
        return tree
    if "$frame" in tree:
        return frames[tree["$frame"]]
    if "$timestamp" in tree:
        stamp = pd.Timestamp(tree["$timestamp"], unit="ns")
        if tree["tz"] is not None:
            stamp = stamp.tz_localize("UTC").tz_convert(tree["tz"])
        return stamp.as_unit(tree["unit"])
    if "$list" in tree:
        return [_decode(item, frames) for item in tree["$list"]]
    if "$tuple" in tree:
        return tuple(_decode(item, frames) for item in tree["$tuple"])
    if "$dict" in tree:
        return {name: _decode(item, frames) for name, item in tree["$dict"].items()}
    if "$dataclass" in tree:
        return _dataclass(tree["$dataclass"])(**{name: _decode(item, frames) for name, item in tree["fields"].items()})
    raise ValueError(f"unknown node {sorted(tree)}")


def _dataclass(name: str) -> type:
    """The quarterpanic dataclass ``module:qualname`` (nothing else: an entry names no other code)."""
    module, _, qualname = name.partition(":")
    if not module.startswith("quarterpanic."):
        raise ValueError(f"{name} is not a quarterpanic dataclass")
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    if not (isinstance(found, type) and dataclasses.is_dataclass(found)):
        raise ValueError(f"{name} is not a dataclass")
    return found


def same(left: Any, right: Any) -> bool:
    """Whether ``right`` is exactly ``left``: same types, same values (NaN equals NaN), frames equal to the dtype."""
    if type(left) is not type(right):
        return False
    if isinstance(left, pd.DataFrame):
        return _same_frame(left, right)
    if isinstance(left, (list, tuple)):
        return len(left) == len(right) and all(same(a, b) for a, b in zip(left, right))
    if isinstance(left, dict):
        return list(left) == list(right) and all(same(left[name], right[name]) for name in left)
    if dataclasses.is_dataclass(left):
        return all(same(getattr(left, f.name), getattr(right, f.name)) for f in dataclasses.fields(left))
    if isinstance(left, pd.Timestamp):
        return left == right and left.unit == right.unit and str(left.tz) == str(right.tz)
    if isinstance(left, float) and left != left:
        return right != right
    return left == right


def _same_frame(left: pd.DataFrame, right: pd.DataFrame) -> bool:
    if left.attrs != right.attrs:
        return False
    try:
        pd.testing.assert_frame_equal(left, right, check_exact=True, check_freq=True, check_flags=True)
    except AssertionError:
        return False
    for column in range(left.shape[1]):  # equal values may still be other types (a list read back as an array)
        a, b = left.iloc[:, column], right.iloc[:, column]
        if a.dtype == object and not a.map(type).equals(b.map(type)):
            return False
    return True
