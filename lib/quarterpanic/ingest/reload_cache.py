"""Reload cache: each export's canonical rows, rejects and row count, kept as Arrow IPC (Feather) files.

Reading and mapping an export is the slow part of :func:`quarterpanic.ingest.loading.load_crm`;
a notebook re-run, a second report or ``quarterpanic run`` loads the same
unchanged files again. :class:`LoadCache` keeps what :func:`~quarterpanic.ingest.loading.load_file`
produced for one file — its validated canonical frame, its rejects and the
number of records read — under a key made of

* the SHA-256 of the file's bytes (a changed export is a new key),
* the profile or mapping as parsed (a changed mapping is a new key),
* the organisation the rows are tagged with (name and size class),
* the quarterpanic version, the path, size and modification time of each
  module the loading code is made of (read on every load, so an edit under
  ``%autoreload`` is a new key at once), and the pandas / pyarrow / pandera
  versions.

The path a file is loaded under is not part of the key: ``source_file`` and the
rejects' ``file`` are filled in from the path given on every load.

An entry is a folder ``<cache_dir>/loads/<key>/`` with ``frame.arrow``,
``rejects.arrow`` and ``entry.json`` (the key, each file's size and checksum,
row counts, profile, table, and a checksum of its own), written under a
temporary name and renamed into place, so a reader never sees half an entry
(:mod:`quarterpanic.store.entries`). Every file is read into memory and
verified before it is parsed: an entry that is damaged, sits under another
key, or whose row counts or columns disagree with ``entry.json`` is removed,
reported in one warning line and rebuilt from the export. Duplicate ids across
files and the final accounting are worked out on every load, cached or not.

Hashing a gigabyte of exports takes about a second, so ``digests.json`` (with
a checksum: a damaged one is ignored) remembers each file's digest while its size, modification and status-change
times and inode stay the same (a file written less than two seconds before it
was hashed is hashed again next time: a second write in the same clock tick
would not move its times). After a load that added entries, the least
recently used ones are removed until the rest fit in ``max_bytes`` (8 GiB).

The frames are uncompressed Arrow IPC: reading one back is a copy of its
bytes, and pandas keeps the Arrow string columns as they are (no decoding) —
about six times faster than LZ4 Parquet, for files about six times larger.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import pandera
import pyarrow as pa

from quarterpanic import __version__
from quarterpanic.ingest.files import REJECT_COLUMNS, FileResult
from quarterpanic.ingest.orgs import OrgInfo
from quarterpanic.ingest.profiles import Profile, canonical_columns, lookup_files
from quarterpanic.ingest.schemas import constant_text
from quarterpanic.paths import CACHE_DIR, PACKAGE_DIR
from quarterpanic.store import entries as checked
from quarterpanic.util import department_field_columns, file_sha256

log = logging.getLogger(__name__)

#: Bumped when the layout of an entry changes.
CACHE_FORMAT = 4
#: The modules (relative to the package folder) whose code decides what a file loads into.
LOADING_MODULES = ("__init__.py", "errors.py", "paths.py", "util.py", "ingest/*.py")
ENTRIES = "loads"
DIGESTS = "digests.json"
#: A file changed this recently may change again within the file system's clock tick: hash it every time.
RACY_SECONDS = 2.0
#: Entries beyond this total are removed, least recently used first, after a load that stored new ones.
MAX_BYTES = 8 << 30
_REJECT_FIELDS = ["row", "column", "value", "reason"]


@dataclass
class CacheStats:
    """Hits, misses and rebuilt (unreadable) entries of one :class:`LoadCache`."""

    hits: int = 0
    misses: int = 0
    rebuilt: int = 0


class LoadCache:
    """Per-file load results kept as Arrow IPC files under ``root`` (see the module docstring).

    Args:
        root: the cache folder; entries go to ``root/loads/``.
        max_bytes: the size the entries are pruned to (least recently used
            first) after a load that stored new ones; entries of that load are kept.
    """

    def __init__(self, root: str | Path, max_bytes: int = MAX_BYTES):
        self.root = Path(root).expanduser()
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        self._used: set[str] = set()
        self._digest_memo: dict | None = None
        self._digests_changed = False
        self._lock = threading.RLock()  # load_crm loads files on several threads

    def __repr__(self) -> str:
        return f"LoadCache({str(self.root)!r})"

    @property
    def entries(self) -> Path:
        return self.root / ENTRIES

    def key(self, path: Path, profile: Profile, org: OrgInfo) -> str:
        """The entry key of ``path`` loaded with ``profile`` for ``org``."""
        digest = hashlib.sha256()
        # Every org.yaml fact loading applies goes into the key (departments: names the changelog's rows).
        for part in (code_fingerprint(), profile_fingerprint(profile), org.name, org.size_class,
                     org.close_before_created, json.dumps(org.department_fields, sort_keys=True),
                     json.dumps(org.departments, sort_keys=True)):
            digest.update(part.encode("utf-8"))
            digest.update(b"\0")
        digest.update(self.file_sha256(path).encode("ascii"))
        # A changed lookup file changes what the export maps to.
        for name in lookup_files(profile):
            lookup = path.parent / name
            digest.update(f"\0{name}\0".encode("utf-8"))
            digest.update(self.file_sha256(lookup).encode("ascii") if lookup.is_file() else b"absent")
        return digest.hexdigest()

    def file_sha256(self, path: Path) -> str:
        """SHA-256 of the file's bytes, remembered while its size, times and inode stay the same.

        The status change time (ctime) moves on every write and cannot be set
        back, so an unchanged status means unchanged bytes; a file modified
        within :data:`RACY_SECONDS` of being hashed is not remembered, since a
        second write in the same clock tick would leave its times unchanged.
        """
        stat = path.stat()
        signature = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]
        name = str(path.resolve())
        with self._lock:
            known = self._digests().get(name)
        if isinstance(known, list) and len(known) == 2 and known[0] == signature:
            return known[1]
        value = file_sha256(path)
        if time.time() - max(stat.st_mtime, stat.st_ctime) > RACY_SECONDS:
            with self._lock:
                self._digests()[name] = [signature, value]
                self._digests_changed = True
        return value

    def _digests(self) -> dict:
        if self._digest_memo is None:
            self._digest_memo = {}
            path = self.root / DIGESTS
            try:
                document = json.loads(path.read_bytes())
                files = document["files"]
                if checked.checksum(json.dumps(files, sort_keys=True).encode("utf-8")) != document["checksum"] \
                        or not isinstance(files, dict):
                    raise ValueError("it does not match its checksum")
                self._digest_memo = files
            except FileNotFoundError:
                pass
            except (OSError, ValueError, KeyError, TypeError, checked.BadEntry) as err:
                # Every file is hashed again; the memo is rewritten after the load.
                log.warning("cache file %s cannot be used (%s): ignored", path, err)
                checked.discard(path)
        return self._digest_memo

    def save_digests(self) -> None:
        """Write the remembered file digests (after a load), replacing the file atomically."""
        if not self._digests_changed:
            return
        staging = self.root / f".{DIGESTS}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        files = self._digest_memo
        document = {"checksum": checked.checksum(json.dumps(files, sort_keys=True).encode("utf-8")), "files": files}
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            staging.write_text(json.dumps(document), encoding="utf-8")
            if (self.root / DIGESTS).is_dir():
                checked.discard(self.root / DIGESTS)
            os.replace(staging, self.root / DIGESTS)
            self._digests_changed = False
        except OSError as err:
            log.warning("cannot write %s (%s)", self.root / DIGESTS, err)
            staging.unlink(missing_ok=True)

    def load(self, path: Path, profile: Profile, org: OrgInfo,
             build: Callable[[Path, Profile, OrgInfo], FileResult]) -> FileResult:
        """The result of ``build(path, profile, org)``, from the cache when it holds one."""
        key = self.key(path, profile, org)
        with self._lock:
            self._used.add(key)
        result = self.get(key, path)
        if result is not None:
            with self._lock:
                self.stats.hits += 1
            log.info("%s: %s via %s from the cache: %d read, %d rejected", path, result.table, result.profile,
                     result.read, len(result.rejects))
            return result
        with self._lock:
            self.stats.misses += 1
        result = build(path, profile, org)
        self.put(key, result)
        return result

    def get(self, key: str, path: Path) -> FileResult | None:
        """The cached result for ``key`` with ``path`` as its file; None when absent or unusable (then removed)."""
        folder = self.entries / key
        try:
            found = checked.read_tables(folder, key)
            if found is None:
                return None
            tables, entry = found
            if entry.get("format") != CACHE_FORMAT:
                raise checked.BadEntry(f"format {entry.get('format')!r}")
            frame, rejects = tables["frame"].to_pandas(), tables["rejects"].to_pandas()
            if len(frame) != entry["rows"] or frame["source_row"].nunique() != entry["accepted"] \
                    or len(rejects) != entry["rejected"] \
                    or entry["read"] != entry["accepted"] + entry["rejected"] + entry["ignored"] \
                    or list(rejects.columns) != _REJECT_FIELDS \
                    or [c for c in frame.columns if c not in department_field_columns(frame.columns)] \
                    != [c for c in canonical_columns(entry["table"]) if c != "source_file"]:
                raise checked.BadEntry("row counts or columns disagree with entry.json")
        except (checked.BadEntry, ValueError, KeyError, TypeError, pa.ArrowException) as err:
            checked.report_bad(folder, f"{path}: {err}")
            with self._lock:
                self.stats.rebuilt += 1
            return None
        file = str(path)
        frame.insert(1, "source_file", constant_text(file, len(frame)))
        rejects.insert(0, "file", constant_text(file, len(rejects)))
        rejects.insert(0, "table", constant_text(entry["table"], len(rejects)))
        return FileResult(path, entry["org"], entry["table"], entry["profile"], int(entry["read"]),
                           frame, rejects[REJECT_COLUMNS], entry.get("id_label"), entry.get("unique_ids"),
                           int(entry["ignored"]), entry.get("changes"))

    def put(self, key: str, result: FileResult) -> None:
        """Store ``result`` under ``key``; a failure to write only logs (the load already succeeded)."""
        folder = self.entries / key
        if folder.is_dir():
            return
        frame = result.frame.drop(columns=["source_file"])
        rejects = result.rejects[_REJECT_FIELDS]
        tables = {"frame": pa.Table.from_pandas(frame, preserve_index=True),
                  "rejects": pa.Table.from_pandas(rejects, preserve_index=False)}
        entry = {"format": CACHE_FORMAT, "org": result.org, "table": result.table, "profile": result.profile,
                 # A history row derived from a snapshot shares its source row with the snapshot's other changes.
                 "read": int(result.read), "rows": len(frame), "accepted": int(frame["source_row"].nunique()),
                 "rejected": len(rejects), "ignored": int(result.ignored), "changes": result.changes,
                 "id_label": result.id_label, "unique_ids": result.unique_ids, "source": str(result.path)}
        checked.write_tables(folder, key, tables, entry)

    def finish(self) -> None:
        """After a load: write the remembered digests and, if entries were added, prune to ``max_bytes``."""
        self.save_digests()
        if self.stats.misses:
            self.prune()

    def prune(self) -> None:
        """Remove the least recently used entries until the rest fit in ``max_bytes``; keep this load's."""
        checked.prune(self.entries, max_bytes=self.max_bytes, keep=self._used)

    def clear(self) -> None:
        """Remove every entry and every remembered digest."""
        shutil.rmtree(self.entries, ignore_errors=True)
        (self.root / DIGESTS).unlink(missing_ok=True)
        self._digest_memo, self._digests_changed = None, False


def open_cache(cache: bool | str | Path | LoadCache | None) -> LoadCache | None:
    """The :class:`LoadCache` for a ``cache=`` argument.

    ``True`` is the project's cache folder (:data:`quarterpanic.paths.CACHE_DIR`),
    a path is that folder, ``False`` / ``None`` is no cache, and a
    :class:`LoadCache` is used as it is.
    """
    if cache is None or cache is False:
        return None
    if cache is True:
        return LoadCache(CACHE_DIR)
    if isinstance(cache, LoadCache):
        return cache
    return LoadCache(cache)



def profile_fingerprint(profile: Profile) -> str:
    """The parts of a profile that decide what a file maps to, as canonical JSON.

    Where the profile was read from and its documentation are left out: the
    same mapping saved elsewhere, or with other comments, maps the same.
    """
    doc = {
        "name": profile.name, "table": profile.table, "columns": profile.columns,
        "identify": profile.identify, "read": asdict(profile.read), "dates": profile.dates,
        "decimal": profile.decimal, "constants": profile.constants,
    }
    return json.dumps(doc, sort_keys=True, default=str)


def code_fingerprint() -> str:
    """quarterpanic's version, the loading modules' paths, sizes and modification times (read now: stat only),
    and the library versions they rely on."""
    return json.dumps({"quarterpanic": __version__, "format": CACHE_FORMAT,
                       "code": checked.source_signature(PACKAGE_DIR, LOADING_MODULES),
                       "pandas": pd.__version__, "pyarrow": pa.__version__, "pandera": pandera.__version__})
