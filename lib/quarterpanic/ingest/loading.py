"""``load_crm(path)``: exports in, validated canonical tables + rejects + row accounting out.

A path is an export file, a folder of exports, or a data folder with one
sub-folder per organisation (each with an ``org.yaml``, see
docs/ARCHITECTURE.md). Every data record of every file ends up in a canonical
table, in ``rejects``, or counted as ignored (field-history rows of fields no
analysis reads, records repeating an earlier one exactly) — ``read == accepted + rejected + ignored`` for every file, always. Rejects come from three places, all mapped back to the file, the
source row, the source column and the raw value:

1. records that are not tabular (a CSV line with the wrong number of fields);
2. values that cannot be parsed (a bad date, a bad amount, a yes/no that is
   neither);
3. pandera failure cases of the canonical schema (a required value missing,
   a negative amount, won but not closed, ...);

and, across the files of one organisation, ids seen before: the first record
is kept; a later one equal to it in every column is ignored (overlapping
extracts), one that differs is rejected naming the first's file and row and
the columns that differ.
"""
from __future__ import annotations

import functools
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from quarterpanic.errors import ExportError, ProfileError
from quarterpanic.ingest import schemas
from quarterpanic.ingest.exports import read_headers
from quarterpanic.ingest.files import REJECT_COLUMNS, FileResult, load_file, one_per_row
from quarterpanic.ingest.orgs import OrgInfo, discover, org_without_yaml, read_org_yaml
from quarterpanic.ingest.profiles import PROVENANCE, Profile, detect_profile, load_profile, lookup_files, shipped_profiles
from quarterpanic.ingest.reload_cache import LoadCache, open_cache

log = logging.getLogger(__name__)


def _load_threads(default: int = min(4, os.cpu_count() or 1)) -> int:
    text = os.environ.get("QUARTERPANIC_LOAD_THREADS", "").strip()
    if not text:
        return default
    if text.isdigit() and int(text) > 0:
        return int(text)
    log.warning("QUARTERPANIC_LOAD_THREADS=%r is not a positive whole number; loading on %d threads",
                text, default)
    return default


#: Files loaded at once by :func:`load_crm` (the ``QUARTERPANIC_LOAD_THREADS`` environment variable sets it).
LOAD_THREADS = _load_threads()
ACCOUNTING_COLUMNS = ["file", "org", "table", "profile", "read", "accepted", "rejected", "ignored", "unknown_deal"]
#: Tables whose rows name a deal: their accepted rows naming none of the organisation's opportunities are counted.
_DEAL_LINKS = ("history", "requests")


@dataclass
class CRM:
    """The canonical tables of one or more organisations, with what was rejected.

    ``rejects`` has columns table, file, row, column, value, reason (one row
    per rejected source record); ``accounting`` has one row per file with
    file, org, table, profile, read, accepted, rejected, ignored (history rows of fields no analysis reads,
    records repeating an earlier record of the same id exactly)
    and unknown_deal (of the accepted history rows and requests, those naming a deal that is not among
    their organisation's opportunities; 0 for the other tables).
    """

    opportunities: pd.DataFrame
    history: pd.DataFrame
    leads: pd.DataFrame
    requests: pd.DataFrame
    request_history: pd.DataFrame
    rejects: pd.DataFrame
    accounting: pd.DataFrame
    orgs: dict[str, OrgInfo]

    def table(self, name: str) -> pd.DataFrame:
        """A canonical table by name (``opportunities``, ``history``, ``leads``, ``requests``, ``request_history``)."""
        return getattr(self, name)


def load_crm(path_or_paths: str | Path | Iterable[str | Path], profile: str | Path | None = None,
             table: str | None = None, cache: bool | str | Path | LoadCache = False) -> CRM:
    """Load CRM exports into validated canonical tables.

    Args:
        path_or_paths: an export file, a folder of exports, a data folder with
            one sub-folder per organisation, or a list of these.
        profile: a shipped profile name or a mapping YAML path used for every
            file; by default ``org.yaml``'s ``files:`` entry, else detected
            from each file's headers.
        table: restrict detection to one canonical table.
        cache: keep each file's result in the reload cache and reuse it while
            the file, its mapping and the loading code are unchanged
            (:mod:`quarterpanic.ingest.reload_cache`): ``True`` for the project's ``.cache/``
            folder, or a cache folder.

    Returns:
        A :class:`CRM`.

    Raises:
        ExportError / ProfileError: a file or a mapping cannot be used.
    """
    if table is not None and table not in schemas.TABLES:
        raise ProfileError(f"unknown table {table!r}", hint=f"tables: {', '.join(schemas.TABLES)}")
    paths = [path_or_paths] if isinstance(path_or_paths, (str, Path)) else list(path_or_paths)
    if not paths:
        raise ExportError("no export files given", hint="give a file or a folder of exports")
    fixed = load_profile(profile) if profile is not None else None
    if fixed is not None and table is not None and fixed.table != table:
        raise ProfileError(f"profile {fixed.name} produces the {fixed.table} table, not {table}")
    orgs: dict[str, OrgInfo] = {}
    jobs: list[tuple[Path, Profile, OrgInfo]] = []
    folder_orgs: dict[Path, OrgInfo | None] = {}
    profiles = None
    store = open_cache(cache)
    unrecognised: list[tuple[Path, ExportError]] = []
    for file in discover(paths):
        folder = file.parent
        if folder not in folder_orgs:
            folder_orgs[folder] = read_org_yaml(folder)
        org = folder_orgs[folder]
        if org is not None and org.skips(file):
            continue
        if fixed is not None:
            chosen = fixed
        elif org is not None and file.name in org.files:
            chosen = load_profile(org.files[file.name], base=folder)
            if table is not None and chosen.table != table:
                continue
        else:
            if profiles is None:
                profiles = shipped_profiles()
            headers = read_headers(file, candidates=[p.identify for p in profiles])
            try:
                chosen = detect_profile(headers, path=file, profiles=profiles) if table is None else \
                    _detect_for_table(headers, file, table, profiles)
            except ExportError as err:
                unrecognised.append((file, err))
                continue
            if chosen is None:
                continue
        info = org if org is not None else org_without_yaml(folder, chosen)
        if info.name in orgs and orgs[info.name].folder not in (None, info.folder) and info.folder is not None:
            log.warning("%s: organisation %r is also defined in %s", file, info.name, orgs[info.name].folder)
        orgs.setdefault(info.name, info)
        jobs.append((file, chosen, orgs[info.name]))
    used_as_lookups = {(job_file.parent / name).resolve() for job_file, job_profile, _ in jobs
                       for name in lookup_files(job_profile)}
    for file, err in unrecognised:
        if file.resolve() not in used_as_lookups:
            raise err
    results = _load_files(jobs, store)
    if store is not None:
        store.finish()
    return _assemble(results, orgs)


def _load_files(jobs: list[tuple[Path, Profile, OrgInfo]], store: LoadCache | None) -> list[FileResult]:
    """``load_file`` for each job (through the cache when given), in order.

    Files load on :data:`LOAD_THREADS` threads, largest first: most of the work
    (pyarrow's parsing, its string and hashing kernels) runs without the GIL.
    """
    def one(job: tuple[Path, Profile, OrgInfo]) -> FileResult:
        return load_file(*job) if store is None else store.load(*job, load_file)

    threads = min(LOAD_THREADS, len(jobs))
    if threads <= 1:
        return [one(job) for job in jobs]
    sizes = [job[0].stat().st_size for job in jobs]
    with ThreadPoolExecutor(threads, thread_name_prefix="quarterpanic-load") as pool:
        futures = {i: pool.submit(one, jobs[i]) for i in sorted(range(len(jobs)), key=lambda i: -sizes[i])}
        return [futures[i].result() for i in range(len(jobs))]


def _detect_for_table(headers: list[str], file: Path, table: str, profiles: list[Profile]) -> Profile | None:
    """The profile of ``table`` for a file; None when the file is another table's export."""
    try:
        return detect_profile(headers, path=file, table=table, profiles=profiles)
    except ExportError:
        try:
            other = detect_profile(headers, path=file, profiles=profiles)
        except ExportError:
            other = None
        if other is not None:
            log.info("%s: a %s export (%s), skipped for --table %s", file, other.table, other.name, table)
            return None
        raise


def _reject_duplicates(results: list[FileResult], table: str,
                       id_labels: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Keep the first record of each id per org; of the later ones, ignore exact repeats, reject the others.

    Overlapping extracts (this week's and last week's) repeat records: a later record equal to the
    kept one in every column is counted as ignored in its file (the third value: file -> rows). One
    that differs is rejected, naming the kept record and the columns that differ, because which of
    the two is right cannot be told from the files.
    """
    id_column = schemas.ID_COLUMNS[table]
    frames = [r.frame for r in results]
    data = pd.concat(frames, ignore_index=True) if frames else schemas.empty(table)
    nothing = one_per_row(pd.DataFrame(), table, "")
    if id_column is None or data.empty:
        return data, nothing, {}
    orgs = [r.org for r in results]
    if len(set(orgs)) == len(orgs) and all(r.unique_ids for r in results):
        # One file per organisation, each without repeats: nothing to compare.
        return data, nothing, {}
    keys = ["org", id_column]
    later = data.duplicated(keys, keep="first")
    if not later.any():
        return data, nothing, {}
    first_at = pd.Series(np.arange(len(data)), index=data.index).groupby(
        [data[k] for k in keys], sort=False).transform("min")
    dups, firsts = data[later], data.iloc[first_at[later].to_numpy()].set_index(data.index[later])
    compared = [c for c in data.columns if c not in (*PROVENANCE, "org")]
    same = pd.DataFrame({c: _equal_or_both_missing(dups[c], firsts[c]) for c in compared}, index=dups.index)
    identical = same.all(axis=1)
    repeats = dups.loc[identical, "source_file"].value_counts()
    if len(repeats):
        log.info("%d record(s) repeat earlier ones exactly (overlapping exports): ignored", int(repeats.sum()))
    differ = [", ".join(c for c in compared if not row[c]) for row in same[~identical].to_dict("records")]
    dups, firsts = dups[~identical], firsts[~identical]
    same_file = firsts["source_file"] == dups["source_file"]
    where = ("row " + firsts["source_row"].astype(str)).where(
        same_file, firsts["source_file"] + " row " + firsts["source_row"].astype(str))
    rejects = pd.DataFrame({
        "table": table, "file": dups["source_file"], "row": dups["source_row"].astype("int64"),
        "column": dups["source_file"].map(id_labels).fillna(id_column), "value": dups[id_column],
        "reason": "duplicate id, first seen at " + where + " (kept); it differs in "
                  + pd.Series(differ, index=dups.index, dtype="object") + ": keep one record per id",
    })
    return (data[~later].reset_index(drop=True), rejects[REJECT_COLUMNS].reset_index(drop=True),
            {str(k): int(v) for k, v in repeats.items()})


def _equal_or_both_missing(left: pd.Series, right: pd.Series) -> pd.Series:
    """Element-wise equality where two missing values count as equal (NaN, None and NaT alike)."""
    equal = left.eq(right).astype("boolean").fillna(False).astype(bool)
    return equal | (left.isna() & right.isna())


def _assemble(results: list[FileResult], orgs: dict[str, OrgInfo]) -> CRM:
    results = _without_double_counts(results)
    tables = {}
    rejects = [r.rejects for r in results]
    for table in schemas.TABLES:
        loaded = [r for r in results if r.table == table and len(r.frame)]
        id_labels = {str(r.path): r.id_label for r in results if r.table == table and r.id_label}
        kept, duplicates, repeats = _reject_duplicates(loaded, table, id_labels)
        tables[table] = _validated(kept, table) if loaded else schemas.empty(table)
        rejects.append(duplicates)
        results = [replace(r, ignored=r.ignored + repeats.get(str(r.path), 0)) if r.table == table else r
                   for r in results]
    rejects = [r for r in rejects if len(r)]
    all_rejects = pd.concat(rejects, ignore_index=True) if rejects else one_per_row(pd.DataFrame(), "", "")
    all_rejects = all_rejects.astype({"row": "int64"}).sort_values(["file", "row"], kind="stable")
    all_rejects = all_rejects.reset_index(drop=True)
    accounting = _accounting(results, tables, all_rejects)
    return CRM(**tables, rejects=all_rejects, accounting=accounting,
               orgs={name: info for name, info in orgs.items()})


def _without_double_counts(results: list[FileResult]) -> list[FileResult]:
    """History derived from values (OpportunityHistory snapshots) yields to field history of the same deal and field.

    A Salesforce export holds both OpportunityHistory (a snapshot per save) and
    OpportunityFieldHistory (a row per tracked change): a close-date push is in both. Per
    organisation, opportunity and field, the changes come from the field-history (change-row)
    files when they hold any row of that opportunity and field, else from the snapshots (a field
    whose history tracking was off, or whose field history was deleted after its retention).
    Snapshot rows left with no change are counted as ignored.
    """
    derived = [i for i, r in enumerate(results) if r.table == "history" and r.changes is not None and len(r.frame)]
    direct = [r.frame for r in results if r.table == "history" and r.changes is None and len(r.frame)]
    if not derived or not direct:
        return results
    keys = ["org", "opportunity_id", "field"]
    covered = pd.MultiIndex.from_frame(pd.concat([f[keys] for f in direct]).astype(str).drop_duplicates())
    out = list(results)
    for i in derived:
        r = results[i]
        dropped = pd.MultiIndex.from_frame(r.frame[keys].astype(str)).isin(covered)
        if not dropped.any():
            continue
        frame = r.frame[~dropped]
        emptied = len(set(r.frame["source_row"]) - set(frame["source_row"]))
        out[i] = replace(r, frame=frame.reset_index(drop=True), ignored=r.ignored + emptied)
    return out


@functools.cache
def _canonical_dtypes(table: str) -> pd.Series:
    return schemas.empty(table).dtypes


def _validated(kept: pd.DataFrame, table: str) -> pd.DataFrame:
    """The assembled table, validated again unless it is the validated files' rows in the canonical dtypes.

    Every file's rows passed the model already and every check is per row, so
    rows of files concatenated in the canonical dtypes pass it too.
    """
    canonical = _canonical_dtypes(table)
    if list(kept.columns) == list(canonical.index) and (kept.dtypes == canonical).all():
        return kept
    return schemas.TABLES[table].validate(kept)


def _accounting(results: list[FileResult], tables: dict[str, pd.DataFrame], rejects: pd.DataFrame) -> pd.DataFrame:
    # Counted from the final tables and rejects (one pass each), not carried over from the files.
    # A history row derived from a snapshot may share its source row with others (one per field that changed).
    accepted_by_file = {name: _source_rows(table)["source_file"].value_counts()
                        for name, table in tables.items() if len(table)}
    rejected_by_file = rejects.groupby(["file", "table"]).size() if len(rejects) else pd.Series(dtype="int64")
    unknown_by_file = _unknown_deals(tables)
    rows = []
    for r in results:
        file = str(r.path)
        accepted = int(accepted_by_file[r.table].get(file, 0)) if r.table in accepted_by_file else 0
        rejected = int(rejected_by_file.get((file, r.table), 0))
        if accepted + rejected + r.ignored != r.read:
            raise AssertionError(f"{file}: read {r.read} != accepted {accepted} + rejected {rejected} "
                                 f"+ ignored {r.ignored}")
        rows.append({"file": file, "org": r.org, "table": r.table, "profile": r.profile,
                     "read": r.read, "accepted": accepted, "rejected": rejected, "ignored": r.ignored,
                     "unknown_deal": int(unknown_by_file.get((file, r.table), 0))})
    frame = pd.DataFrame(rows, columns=ACCOUNTING_COLUMNS)
    return frame.astype({"read": "int64", "accepted": "int64", "rejected": "int64", "ignored": "int64",
                         "unknown_deal": "int64"})


def _unknown_deals(tables: dict[str, pd.DataFrame]) -> dict[tuple[str, str], int]:
    """(file, table) -> accepted history rows or requests naming a deal their organisation's opportunities lack.

    They stay accepted (a report may be filtered differently from the
    opportunities export), but are counted, so that a history export that
    matches no deal is seen rather than silently analysed as nothing.
    """
    opportunities = tables["opportunities"]
    counts: dict[tuple[str, str], int] = {}
    for name in _DEAL_LINKS:
        table = tables[name]
        if not len(table):
            continue
        unknown = table["opportunity_id"].notna()
        for org in table["org"].unique():
            in_org = (table["org"] == org).to_numpy()
            known = opportunities.loc[opportunities["org"] == org, "opportunity_id"]
            unknown[in_org] &= ~table.loc[in_org, "opportunity_id"].isin(known).to_numpy()
        for file, count in _source_rows(table.loc[unknown.to_numpy()])["source_file"].value_counts().items():
            counts[(str(file), name)] = int(count)
        if unknown.any():
            log.info("%d %s rows name a deal that is not among the opportunities loaded", int(unknown.sum()), name)
    return counts


def _source_rows(table: pd.DataFrame) -> pd.DataFrame:
    """``table``'s provenance, one row per source record (history derived from snapshots repeats them)."""
    if "field" not in table:
        return table
    return table[["source_file", "source_row"]].drop_duplicates()


def write_rejects(rejects: pd.DataFrame, path: str | Path) -> Path:
    """Write ``rejects`` as a UTF-8 CSV (with BOM, so Excel opens accents right)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        rejects.reindex(columns=REJECT_COLUMNS).to_csv(path, index=False, encoding="utf-8-sig")
    except OSError as err:
        raise ExportError(f"cannot write the rejects file ({err.strerror})", path=path,
                          hint="choose another place with --rejects") from err
    return path
