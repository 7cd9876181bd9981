"""Results cache: a detector's output kept on disk, reused while its inputs are unchanged.

The notebooks run the same detectors on the same data with the same
parameters: 02 runs the qualification detector, 03 the reactive one, and 04
runs both again through :func:`quarterpanic.analysis.detect.detect`; a second
``quarterpanic run`` on unchanged exports runs them all once more.
:func:`cached` keeps what a detector returned under a key made of

* the detector's name and its own arguments (segment, a ``features`` frame
  by its content, ...),
* the dataset's content: every canonical table hashed row by row with its
  column names and dtypes, the calendars, size classes and ``as_of``
  (:func:`dataset_fingerprint`) — a changed export, ``as_of``, calendar or
  pseudonymisation is a new key. A table is hashed once per :class:`Dataset`
  object (datasets are not changed in place: ``cut``, ``filter`` and
  ``dataclasses.replace`` make new ones); a table put in its place is hashed anew,
* every analysis parameter except those that only decide what is loaded
  (whose effect the dataset's content already carries) or that no detector
  reads (:data:`IGNORED_PARAMETERS`),
* each quarterpanic module's path, size and modification time, read on every
  call, and the versions of the numerical libraries (:func:`code_fingerprint`)
  — a module edited under ``%autoreload`` is a new key at once.

Entries are Arrow IPC files with a JSON manifest under ``<cache_dir>/results/``
(:mod:`quarterpanic.store.entries`: written atomically, every file checksummed
and verified before use; a damaged entry is removed, reported in one warning
line and recomputed; a result that would not read back exactly is not kept).
Only callers that ask for it (``cache=True``: the notebooks) use the cache;
setting the environment variable ``QUARTERPANIC_RESULTS_CACHE=off`` turns it off
for every caller. Beyond :data:`MAX_ENTRIES` entries or :data:`MAX_BYTES`, the
least recently used are removed.
"""
from __future__ import annotations

import hashlib
import logging
import os
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import pandas as pd

from quarterpanic.paths import CACHE_DIR
from quarterpanic.store import entries

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Environment variable that turns the cache off for every caller ("off", "0", "false", "no").
ENV_SWITCH = "QUARTERPANIC_RESULTS_CACHE"
#: Parameters that only decide what is loaded (the dataset's content carries their effect) or that no detector reads.
IGNORED_PARAMETERS = frozenset({"data_dir", "profile", "pseudonymize", "index_thresholds", "summary_path"})
#: Bumped when the layout of an entry changes.
RESULTS_FORMAT = 2
ENTRIES = "results"
#: Entries kept after a store, most recently used first: at most this many, and at most this many bytes.
MAX_ENTRIES = 256
MAX_BYTES = 2 << 30
#: The libraries whose versions a cached result depends on.
RESULT_LIBRARIES = ("pandas", "numpy", "scipy", "statsmodels", "pyarrow")
#: Where a dataset keeps its tables' hashes (see :func:`dataset_fingerprint`).
_TABLE_HASHES = "_table_hashes"


def enabled(requested: bool = True) -> bool:
    """Whether a caller that asked for the cache (``requested``) gets it: not when the environment turns it off."""
    return requested and os.environ.get(ENV_SWITCH, "").strip().lower() not in {"off", "0", "false", "no"}


def cached(name: str, compute: Callable[[], T], dataset: Any, params: Mapping[str, Any], *,
           extra: Mapping[str, Any] | None = None, use: bool = True, cache_dir: str | Path | None = None) -> T:
    """``compute()``, or what it returned before for the same detector, data, parameters and code.

    Args:
        name: the detector (e.g. ``"quarterpanic.analysis.reactive.analyse_reactive"``).
        compute: computes the result (called on a miss, or when the cache is off).
        dataset: the :class:`~quarterpanic.dataset.Dataset` the result is computed from.
        params: the analysis parameters the result is computed with.
        extra: the detector's other arguments that change its result (JSON-able, or frames by
            :func:`frame_fingerprint`).
        use: False computes without the cache.
        cache_dir: the cache folder (default: the project's ``.cache/``).
    """
    if not enabled(use):
        return compute()
    try:
        key = result_key(name, dataset, params, extra)
    except TypeError as err:  # an argument the key cannot hold exactly: computed, never served from the cache
        log.info("results cache not used for %s: %s", name, err)
        return compute()
    folder = Path(cache_dir).expanduser() if cache_dir is not None else CACHE_DIR
    path = folder / ENTRIES / key
    result = entries.read_value(path, key)
    if result is not entries.MISSING:
        log.debug("results cache hit: %s", name)
        return result
    result = compute()
    if entries.write_value(path, key, result):
        entries.prune(path.parent, MAX_ENTRIES, MAX_BYTES)
    return result


def result_key(name: str, dataset: Any, params: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> str:
    """The entry key of ``name`` run on ``dataset`` with ``params`` and ``extra`` (see the module docstring).

    Raises TypeError for a parameter whose value a key cannot hold exactly.
    """
    digest = hashlib.sha256()
    relevant = {key: value for key, value in params.items() if key not in IGNORED_PARAMETERS}
    parts = (code_fingerprint(), name, entries.canonical(relevant), entries.canonical(extra or {}),
             dataset_fingerprint(dataset))
    for part in parts:
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def dataset_fingerprint(dataset: Any) -> str:
    """A hash of a dataset's content: each table's columns, dtypes and rows, the fiscal and working calendars,
    size classes, ``as_of``.

    Each table's hash is kept on the dataset and reused while the same frame
    object is in its place; the rest is small and hashed on every call.
    """
    memo = getattr(dataset, "__dict__", {}).get(_TABLE_HASHES, {})
    hashes = {}
    for name, table in dataset.tables().items():
        known = memo.get(name)
        hashes[name] = (table, known[1] if known is not None and known[0] is table else frame_fingerprint(table))
    if hasattr(dataset, "__dict__"):
        dataset.__dict__[_TABLE_HASHES] = hashes
    digest = hashlib.sha256()
    for name, (_, table_hash) in hashes.items():
        digest.update(f"{name}\0{table_hash}\0".encode("utf-8"))
    calendars = {str(org): repr(calendar) for org, calendar in dataset.calendars.items()}
    working = {str(org): repr(calendar) for org, calendar in getattr(dataset, "working_calendars", {}).items()}
    digest.update(entries.canonical({"calendars": calendars, "working_calendars": working,
                                     "size_classes": dict(dataset.size_classes),
                                     "as_of": str(dataset.as_of)}).encode("utf-8"))
    return digest.hexdigest()


def frame_fingerprint(frame: pd.DataFrame) -> str:
    """A hash of a frame's column names, dtypes, index and every value."""
    digest = hashlib.sha256()
    digest.update(entries.canonical({"columns": [repr(c) for c in frame.columns], "dtypes": [str(t) for t in frame.dtypes],
                                     "index": str(frame.index.dtype), "rows": len(frame)}).encode("utf-8"))
    digest.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    return digest.hexdigest()


def code_fingerprint() -> str:
    """Each quarterpanic module's path, size and modification time (read now), with the library versions."""
    return entries.source_signature() + _versions()


@cache
def _versions() -> str:
    return entries.canonical({"format": RESULTS_FORMAT, **{name: version(name) for name in RESULT_LIBRARIES}})
