"""Pickle entries on disk, as the results cache and the dataset snapshots keep them.

An entry is written under a temporary name and renamed into place (a reader
never sees half of one); an entry that cannot be read counts as missing and is
rewritten; reading one marks it used, and :func:`prune` removes the least
recently used. :func:`source_hash` is the part of both caches' keys that
changes with any quarterpanic module.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import uuid
from functools import cache
from pathlib import Path
from typing import Any

from quarterpanic.paths import PACKAGE_DIR

log = logging.getLogger(__name__)

#: What :func:`read` returns for an entry that is absent or unreadable.
MISSING = object()


@cache
def source_hash() -> str:
    """SHA-256 of every quarterpanic module's name and source."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode("utf-8"))
        digest.update(path.read_bytes())
    return digest.hexdigest()


def canonical(value: Any) -> str:
    """``value`` as canonical JSON (sorted keys; what JSON cannot hold as its ``repr``), for keys."""
    return json.dumps(value, sort_keys=True, default=repr)


def read(path: Path) -> Any:
    """The value pickled at ``path`` (its time set to now: used), or :data:`MISSING`."""
    try:
        with path.open("rb") as handle:
            value = pickle.load(handle)
    except FileNotFoundError:
        return MISSING
    except Exception as err:  # a broken entry is rebuilt and replaced
        log.warning("cache entry %s unreadable (%s): rebuilding it", path, type(err).__name__)
        return MISSING
    try:
        os.utime(path)
    except OSError:
        pass
    return value


def write(path: Path, value: Any) -> bool:
    """Pickle ``value`` to ``path`` atomically; False (and a warning) when it cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp")
        with temporary.open("wb") as handle:
            pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(temporary, path)
        return True
    except OSError as err:
        log.warning("cache entry %s not written (%s)", path, err)
        return False


def prune(folder: Path, max_entries: int, max_bytes: int | None = None) -> None:
    """Remove the least recently used ``*.pkl`` entries of ``folder`` beyond ``max_entries`` or ``max_bytes``
    (the most recent is always kept)."""
    entries = []
    for entry in folder.glob("*.pkl"):
        try:
            stat = entry.stat()
        except FileNotFoundError:
            continue
        entries.append((stat.st_mtime, stat.st_size, entry))
    total = 0
    for rank, (_, size, entry) in enumerate(sorted(entries, reverse=True)):
        total += size
        if rank >= max_entries or (rank > 0 and max_bytes is not None and total > max_bytes):
            entry.unlink(missing_ok=True)
