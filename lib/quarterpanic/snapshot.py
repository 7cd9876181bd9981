"""Dataset snapshots: the :class:`~quarterpanic.dataset.Dataset` of an unchanged data folder, reused whole.

Every notebook of a report run loads the same data folder. Through the warm
reload cache (:mod:`quarterpanic.cache`) that still parses each mapping,
builds the pandera schemas (pandera then imports ``dask.dataframe`` when dask
is installed), reads a Parquet entry per export and assembles the tables:
about 0.7 s per notebook on the bundled sample, where reading a pickle of the
finished dataset takes a hundredth of that. :func:`load` keeps the dataset
:func:`quarterpanic.dataset.load_dataset` built under a key made of

* the data folder as given (the tables record source paths) and every file
  under it — path, size, modification and status-change times, inode (a
  rewritten file has a new status-change time, which cannot be set back),
* every shipped profile file, the same way,
* the loading parameters (``profile``, ``fiscal_calendar``, ``as_of``,
  ``orgs``, ``segment``),
* a hash of every quarterpanic module's source and the pandas, pyarrow and
  pandera versions.

A snapshot is only used when every mapping the folder names is a shipped
profile or a file beside its ``org.yaml`` (no mapping outside the folder
whose changes the key would miss), when no file changed within the last
:data:`RACY_SECONDS` (a second write in the same clock tick would not move
its times), and for datasets of at most :data:`MAX_ROWS` rows (for larger
ones the reload cache's Parquet is the better copy). Entries are pickles
under ``<cache_dir>/datasets/``, written atomically; the most recently used
:data:`MAX_ENTRIES` are kept.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import time
import uuid
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable, Mapping

from quarterpanic.paths import PACKAGE_DIR, PROFILES_DIR

log = logging.getLogger(__name__)

#: Parameters :func:`quarterpanic.dataset.load_dataset` reads besides the data folder.
LOAD_PARAMETERS = ("profile", "fiscal_calendar", "as_of", "orgs", "segment")
#: A file changed this recently may change again within the file system's clock tick (as in the reload cache).
RACY_SECONDS = 2.0
#: Datasets with more rows than this are not snapshotted.
MAX_ROWS = 2_000_000
MAX_ENTRIES = 8
SNAPSHOT_FORMAT = 1
ENTRIES = "datasets"
ORG_FILE = "org.yaml"


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
    path = Path(cache_dir) / ENTRIES / f"{key}.pkl"
    try:
        with path.open("rb") as handle:
            dataset = pickle.load(handle)
        os.utime(path)
        return dataset
    except FileNotFoundError:
        pass
    except Exception as err:  # an unreadable snapshot is rebuilt
        log.warning("dataset snapshot %s unreadable (%s): loading the exports", path.name, type(err).__name__)
    dataset = build()
    if sum(len(table) for table in dataset.tables().values()) <= MAX_ROWS:
        _store(path, dataset)
    return dataset


def snapshot_key(folder: Path, params: Mapping[str, Any]) -> str | None:
    """The snapshot key of ``folder`` loaded with ``params``, or None when no snapshot may be used."""
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
    loading = {name: params.get(name) for name in LOAD_PARAMETERS}
    digest = hashlib.sha256()
    for part in (code_fingerprint(), str(folder), _canonical(loading), _canonical(files), _canonical(profiles)):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


@cache
def code_fingerprint() -> str:
    """A hash of every quarterpanic module's source, with the versions of the libraries loading relies on."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        digest.update(path.name.encode("utf-8"))
        digest.update(path.read_bytes())
    versions = {"format": SNAPSHOT_FORMAT}
    for package in ("pandas", "pyarrow", "pandera", "numpy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return digest.hexdigest() + _canonical(versions)


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
    import yaml

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
            beside = "/" not in mapping and "\\" not in mapping and (org_file.parent / mapping).is_file()
            if not (beside or _shipped(mapping)):
                return False
    return True


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


def _store(path: Path, dataset: Any) -> None:
    """Write ``dataset`` to ``path`` atomically and keep the :data:`MAX_ENTRIES` most recently used."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp")
        with temporary.open("wb") as handle:
            pickle.dump(dataset, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(temporary, path)
        entries = sorted(((entry.stat().st_mtime, entry) for entry in path.parent.glob("*.pkl")), reverse=True)
        for _, entry in entries[MAX_ENTRIES:]:
            entry.unlink(missing_ok=True)
    except OSError as err:
        log.warning("dataset snapshot not written (%s)", err)
