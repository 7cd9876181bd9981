"""Dataset snapshots: the :class:`~quarterpanic.dataset.Dataset` of an unchanged data folder, reused whole.

Every notebook of a report run loads the same data folder. Through the warm
reload cache (:mod:`quarterpanic.ingest.reload_cache`) that still parses each mapping,
builds the pandera schemas (pandera then imports ``dask.dataframe`` when dask
is installed), reads an Arrow entry per export and assembles the tables:
about 1 s of CPU per notebook on the bundled sample (2.5 s with no cache),
where reading and verifying the snapshot of the finished dataset takes
0.08 s and imports neither pandera nor dask (measured in a fresh interpreter,
December 2026; the pickles this replaced took 0.05 s). :func:`load` keeps the dataset
:func:`quarterpanic.dataset.load_dataset` built under a key made of

* the data folder as given (the tables record source paths) and every file
  under it — path, size, modification and status-change times, inode (a
  rewritten file has a new status-change time, which cannot be set back),
* every shipped profile file, the same way,
* the loading parameters (``profile``, ``fiscal_calendar``, ``as_of``,
  ``orgs``, ``segment``),
* each quarterpanic module's path, size and modification time (read on
  every load) and the pandas, pyarrow and pandera versions.

A snapshot is only used when every mapping the folder names is a shipped
profile or a file beside its ``org.yaml`` (no mapping outside the folder
whose changes the key would miss), when no file changed within the last
:data:`RACY_SECONDS` (a second write in the same clock tick would not move
its times), and for datasets of at most :data:`MAX_ROWS` rows (for larger
ones the reload cache is the better copy). Entries are Arrow IPC files with a
JSON manifest under ``<cache_dir>/datasets/`` (:mod:`quarterpanic.store.entries`:
every file checksummed and verified before use; a damaged entry is removed,
reported in one warning line and rebuilt from the exports); the most
recently used :data:`MAX_ENTRIES` are kept. ``QUARTERPANIC_SNAPSHOTS=off`` in the
environment turns snapshots off (the reload cache still serves each file).
"""
from __future__ import annotations

import hashlib
import os
import time
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from quarterpanic.paths import ORG_FILE, PROFILES_DIR
from quarterpanic.store import entries

#: Environment variable that turns snapshots off ("off", "0", "false", "no").
ENV_SWITCH = "QUARTERPANIC_SNAPSHOTS"
#: Parameters :func:`quarterpanic.dataset.load_dataset` reads besides the data folder.
LOAD_PARAMETERS = ("profile", "fiscal_calendar", "as_of", "orgs", "segment")
#: A file changed this recently may change again within the file system's clock tick (as in the reload cache).
RACY_SECONDS = 2.0
#: Datasets with more rows than this are not snapshotted.
MAX_ROWS = 2_000_000
MAX_ENTRIES = 8
SNAPSHOT_FORMAT = 2
ENTRIES = "datasets"


def load(folder: Path, params: Mapping[str, Any], cache_dir: Path, build: Callable[[], Any]) -> Any:
    """The dataset ``build()`` returns for ``folder`` and ``params``, from a snapshot when one is valid.

    Args:
        folder: the data folder, as the dataset's source paths will show it.
        params: the analysis parameters (see :data:`LOAD_PARAMETERS`).
        cache_dir: the cache folder; snapshots go to ``cache_dir/datasets/``.
        build: loads the dataset (on a miss, or when no snapshot can be used).
    """
    key = snapshot_key(folder, params)
    if key is None:
        return build()
    path = Path(cache_dir) / ENTRIES / key
    dataset = entries.read_value(path, key)
    if dataset is not entries.MISSING:
        return dataset
    dataset = build()
    if sum(len(table) for table in dataset.tables().values()) <= MAX_ROWS and entries.write_value(path, key, dataset):
        entries.prune(path.parent, MAX_ENTRIES)
    return dataset


def snapshot_key(folder: Path, params: Mapping[str, Any]) -> str | None:
    """The snapshot key of ``folder`` loaded with ``params``, or None when no snapshot may be used."""
    if os.environ.get(ENV_SWITCH, "").strip().lower() in {"off", "0", "false", "no"}:
        return None
    profile = params.get("profile")
    if profile is not None and not _shipped(str(profile)):
        return None
    files = _signatures(folder)
    if files is None:
        return None
    profiles = _signatures(PROFILES_DIR)
    if profiles is None or not _mappings_inside(folder):
        return None
    latest = max([entry[2] for entry in files + profiles] + [0])
    if time.time_ns() - latest < RACY_SECONDS * 1e9:
        return None
    try:
        loading = entries.canonical({name: params.get(name) for name in LOAD_PARAMETERS})
    except TypeError:  # a parameter a key cannot hold exactly: load from the exports
        return None
    digest = hashlib.sha256()
    for part in (code_fingerprint(), str(folder), loading, entries.canonical(files), entries.canonical(profiles)):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def code_fingerprint() -> str:
    """Each quarterpanic module's path, size and modification time (read now), with the library versions."""
    return entries.source_signature() + _versions()


@cache
def _versions() -> str:
    versions: dict[str, Any] = {"format": SNAPSHOT_FORMAT}
    for package in ("pandas", "pyarrow", "pandera", "numpy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return entries.canonical(versions)


def _signatures(folder: Path) -> list[list] | None:
    """Every file under ``folder``: relative path, size, the later of its modification and status-change
    times (ns), those times, inode; None when the folder cannot be listed."""
    entries = []
    try:
        for root, dirs, names in os.walk(folder):
            dirs.sort()
            for name in sorted(names):
                path = Path(root) / name
                stat = path.stat()
                entries.append([str(path.relative_to(folder)), stat.st_size, max(stat.st_mtime_ns, stat.st_ctime_ns),
                                stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino])
    except OSError:
        return None
    return entries if entries else None


def _shipped(name: str) -> bool:
    return not name.endswith((".yaml", ".yml")) and "/" not in name and "\\" not in name \
        and (PROFILES_DIR / f"{name}.yaml").is_file()


def _mappings_inside(folder: Path) -> bool:
    """Whether every ``files:`` entry of every ``org.yaml`` under ``folder`` is a shipped profile or a file beside it."""
    for org_file in folder.rglob(ORG_FILE):
        try:
            doc = yaml.safe_load(org_file.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return False
        files = doc.get("files") if isinstance(doc, dict) else None
        if files is None:
            continue
        if not isinstance(files, dict):
            return False
        for mapping in map(str, files.values()):
            if not (_shipped(mapping) or _beside_all_the_way(org_file.parent, mapping, set())):
                return False
    return True


def _beside_all_the_way(folder: Path, mapping: str, seen: set[str]) -> bool:
    """Whether ``mapping`` is a file in ``folder`` whose ``extends:`` chain stays in ``folder`` or ends in a
    shipped profile: a parent mapping elsewhere could change without any file the key signs changing."""
    if "/" in mapping or "\\" in mapping or mapping in seen or not (folder / mapping).is_file():
        return False
    try:
        doc = yaml.safe_load((folder / mapping).read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    parent = doc.get("extends") if isinstance(doc, dict) else None
    if parent is None:
        return True
    return _shipped(str(parent)) or _beside_all_the_way(folder, str(parent), seen | {mapping})
