"""Reload cache: each export's canonical rows, rejects and row count, kept as Arrow IPC (Feather) files.

Reading and mapping an export is the slow part of :func:`quarterpanic.ingest.loading.load_crm`;
a notebook re-run, a second report or ``quarterpanic run`` loads the same
unchanged files again. :class:`LoadCache` keeps what :func:`~quarterpanic.ingest.loading.load_file`
produced for one file — its validated canonical frame, its rejects and the
number of records read — under a key made of

* the SHA-256 of the file's bytes (a changed export is a new key),
* the profile or mapping as parsed (a changed mapping is a new key),
* the organisation the rows are tagged with (name and size class),
* the quarterpanic version and a hash of the loading code itself, and the
  pandas / pyarrow / pandera versions (a code change is a new key).

The path a file is loaded under is not part of the key: ``source_file`` and the
rejects' ``file`` are filled in from the path given on every load.

An entry is a folder ``<cache_dir>/loads/<key>/`` with ``frame.arrow``,
``rejects.arrow`` and ``entry.json`` (row counts, profile, table), written
under a temporary name and renamed into place, so a reader never sees half an
entry. An entry that cannot be read, or whose row counts or columns disagree
with ``entry.json``, is removed and rebuilt from the export. Duplicate ids
across files and the final accounting are worked out on every load, cached or
not.

Hashing a gigabyte of exports takes about a second, so ``digests.json``
remembers each file's digest while its size, modification and status-change
times and inode stay the same (a file written less than two seconds before it
was hashed is hashed again next time: a second write in the same clock tick
would not move its times). After a load that added entries, the least
recently used ones are removed until the rest fit in ``max_bytes`` (8 GiB).

The frames are uncompressed Arrow IPC: reading one back is a copy of its
bytes, and pandas keeps the Arrow string columns as they are (no decoding) —
about six times faster than LZ4 Parquet, for files about six times larger.
On POSIX systems the files are memory-mapped, so the data is not even copied;
removing an entry (pruning, a rebuild, ``rm -rf .cache``) is safe while a
loaded frame still maps it, overwriting its files in place is not.
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
from functools import cache
from pathlib import Path
from typing import Callable

import pandas as pd
import pandera
import pyarrow as pa
import pyarrow.feather as feather

from quarterpanic import __version__
from quarterpanic.ingest.files import REJECT_COLUMNS, FileResult
from quarterpanic.ingest.orgs import OrgInfo
from quarterpanic.ingest.profiles import Profile, canonical_columns, lookup_files
from quarterpanic.ingest.schemas import constant_text
from quarterpanic.paths import CACHE_DIR
from quarterpanic.util import file_sha256

log = logging.getLogger(__name__)

#: Bumped when the layout of an entry changes.
CACHE_FORMAT = 2
#: The reload cache depends on the code of the whole ingest package (this folder).
INGEST_DIR = Path(__file__).resolve().parent
ENTRIES = "loads"
#: Uncompressed Arrow IPC reads back fastest (the cache is read far more often than written).
IPC_OPTIONS = {"compression": "uncompressed"}
#: Entries are memory-mapped where a mapped file may still be removed (pruning, rebuilding): not on Windows.
_MAP_FILES = os.name == "posix"
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
        for part in (code_fingerprint(), profile_fingerprint(profile), org.name, org.size_class,
                     org.close_before_created):
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
            try:
                self._digest_memo = json.loads((self.root / DIGESTS).read_text(encoding="utf-8"))
                if not isinstance(self._digest_memo, dict):
                    raise ValueError("not a map")
            except (OSError, ValueError):
                self._digest_memo = {}
        return self._digest_memo

    def save_digests(self) -> None:
        """Write the remembered file digests (after a load), replacing the file atomically."""
        if not self._digests_changed:
            return
        staging = self.root / f".{DIGESTS}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            staging.write_text(json.dumps(self._digest_memo), encoding="utf-8")
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
        """The cached result for ``key`` with ``path`` as its file; None when absent or unreadable."""
        folder = self.entries / key
        if not folder.is_dir():
            return None
        try:
            entry = json.loads((folder / "entry.json").read_text(encoding="utf-8"))
            if entry.get("format") != CACHE_FORMAT:
                raise ValueError(f"format {entry.get('format')!r}")
            frame = feather.read_table(folder / "frame.arrow", memory_map=_MAP_FILES).to_pandas()
            rejects = feather.read_table(folder / "rejects.arrow", memory_map=_MAP_FILES).to_pandas()
            if len(frame) != entry["accepted"] or len(rejects) != entry["rejected"] \
                    or entry["read"] != entry["accepted"] + entry["rejected"] + entry["ignored"] \
                    or list(rejects.columns) != _REJECT_FIELDS \
                    or list(frame.columns) != [c for c in canonical_columns(entry["table"]) if c != "source_file"]:
                raise ValueError("row counts or columns disagree with entry.json")
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as err:
            log.warning("%s: cache entry %s cannot be used (%s); rebuilding it", path, folder, err)
            with self._lock:
                self.stats.rebuilt += 1
            shutil.rmtree(folder, ignore_errors=True)
            return None
        try:  # the entry's modification time is its last use, for pruning
            os.utime(folder / "entry.json")
        except OSError:
            pass
        file = str(path)
        frame.insert(1, "source_file", constant_text(file, len(frame)))
        rejects.insert(0, "file", constant_text(file, len(rejects)))
        rejects.insert(0, "table", constant_text(entry["table"], len(rejects)))
        return FileResult(path, entry["org"], entry["table"], entry["profile"], int(entry["read"]),
                           frame, rejects[REJECT_COLUMNS], entry.get("id_label"), entry.get("unique_ids"),
                           int(entry["ignored"]))

    def put(self, key: str, result: FileResult) -> None:
        """Store ``result`` under ``key``; a failure to write only logs (the load already succeeded)."""
        folder = self.entries / key
        if folder.is_dir():
            return
        staging = self.entries / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        try:
            staging.mkdir(parents=True)
            frame = result.frame.drop(columns=["source_file"])
            feather.write_feather(pa.Table.from_pandas(frame, preserve_index=True), staging / "frame.arrow",
                                  **IPC_OPTIONS)
            rejects = result.rejects[_REJECT_FIELDS]
            feather.write_feather(pa.Table.from_pandas(rejects, preserve_index=False), staging / "rejects.arrow",
                                  **IPC_OPTIONS)
            entry = {"format": CACHE_FORMAT, "org": result.org, "table": result.table, "profile": result.profile,
                     "read": int(result.read), "accepted": len(frame), "rejected": len(rejects),
                     "ignored": int(result.ignored),
                     "id_label": result.id_label, "unique_ids": result.unique_ids, "source": str(result.path)}
            (staging / "entry.json").write_text(json.dumps(entry, indent=1), encoding="utf-8")
            os.rename(staging, folder)
        except OSError as err:
            # Another process may have stored the same entry first: theirs is as good as ours.
            if not folder.is_dir():
                log.warning("%s: cannot write the cache entry (%s)", result.path, err)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def finish(self) -> None:
        """After a load: write the remembered digests and, if entries were added, prune to ``max_bytes``."""
        self.save_digests()
        if self.stats.misses:
            self.prune()

    def prune(self) -> None:
        """Remove the least recently used entries until the rest fit in ``max_bytes``; keep this load's."""
        entries = []
        try:
            folders = [p for p in self.entries.iterdir() if p.is_dir() and not p.name.startswith(".")]
        except OSError:
            return
        for folder in folders:
            try:
                size = sum(f.stat().st_size for f in folder.iterdir())
                used = (folder / "entry.json").stat().st_mtime
            except OSError:
                size, used = 0, 0.0
            entries.append((used, size, folder))
        total = sum(size for _, size, _ in entries)
        for used, size, folder in sorted(entries, key=lambda e: e[0]):
            if total <= self.max_bytes:
                break
            if folder.name in self._used:
                continue
            shutil.rmtree(folder, ignore_errors=True)
            total -= size

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


@cache
def code_fingerprint() -> str:
    """quarterpanic's version, a hash of the loading modules, and the library versions they rely on."""
    digest = hashlib.sha256()
    for path in sorted(INGEST_DIR.glob("*.py")):
        digest.update(path.name.encode("utf-8"))
        digest.update(path.read_bytes())
    return json.dumps({"quarterpanic": __version__, "format": CACHE_FORMAT, "code": digest.hexdigest(),
                       "pandas": pd.__version__, "pyarrow": pa.__version__, "pandera": pandera.__version__})
