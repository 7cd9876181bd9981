"""One export file loaded: read, mapped and validated against its canonical table.

:func:`load_file` returns a :class:`FileResult`: the accepted rows, one reject per rejected
source row (file, row, column, raw value, every reason) and the number of records read."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd
import pandera.pandas as pa

from quarterpanic.errors import ExportError
from quarterpanic.ingest import schemas
from quarterpanic.ingest.exports import RawExport, ReadOptions, normalise_label, read_export
from quarterpanic.ingest.mapping import LookupReader, MappedExport, map_export
from quarterpanic.ingest.orgs import OrgInfo, department_of
from quarterpanic.ingest.profiles import Profile, canonical_columns
from quarterpanic.ingest.values import as_text, clean_text, parse_dates
from quarterpanic.util import department_field_column

log = logging.getLogger(__name__)
#: History tables -> the fields an analysis reads; changes of other fields are ignored.
_TRACKED = {"history": schemas.HISTORY_FIELDS, "request_history": schemas.REQUEST_HISTORY_FIELDS}
REJECT_COLUMNS = ["table", "file", "row", "column", "value", "reason"]
_CHECK_REASONS = {
    "not_nullable": "empty, but required",
    "won_is_closed": "won but not closed",
    "closed_has_close_date": "empty, but the deal is closed",
}


@dataclass
class FileResult:
    path: Path
    org: str
    table: str
    profile: str
    read: int
    frame: pd.DataFrame
    rejects: pd.DataFrame
    id_label: str | None = None
    unique_ids: bool | None = None  # every accepted id differs (None: the table has no id)
    ignored: int = 0  # records read but of no use to any analysis (history of untracked fields, no change)
    changes: str | None = None  # the profile's changes: kind (history derived from values), else None


def load_file(path: Path, profile: Profile, org: OrgInfo) -> FileResult:
    """Read, map and validate one export; the rows it rejects, with reasons."""
    raw = read_export(path, profile.read, header_labels=profile.identify or profile.required_labels())
    mapped = map_export(raw, profile, lookup_reader(path.parent))
    file = str(path)
    frame = mapped.frame
    frame.insert(0, "source_row", frame.index.to_numpy())
    frame.insert(0, "source_file", schemas.constant_text(file, len(frame)))
    frame.insert(0, "org", schemas.constant_text(org.name, len(frame)))
    if profile.table == "opportunities":
        frame["size_class"] = schemas.constant_text(org.size_class, len(frame))
    if profile.table == "request_history" and "field" in frame:
        frame["department"] = department_of(frame["field"], frame["new_value"], org.departments)
    frame = frame.reindex(columns=canonical_columns(profile.table))
    if profile.table == "opportunities" and org.department_fields:
        for column, values in department_field_values(raw, profile, org).items():
            frame[column] = values
    problems = [
        raw.bad_rows.assign(column=""),
        mapped.problems,
    ]
    parse_failed = pd.Index(mapped.problems["row"].unique())
    untracked = _untracked_history(frame, profile.table) if profile.table in _TRACKED else pd.Index([])
    skipped = parse_failed.union(untracked)
    # Dropping nothing still copies every column: only drop when a value failed to parse. A row of a
    # values history export that failed to parse may have become no change row at all.
    parsed = frame.drop(index=skipped.intersection(frame.index)) if len(skipped) else frame
    valid, failures = validate_table(parsed, profile.table)
    problems.append(_describe_failures(failures, raw, mapped, profile))
    if profile.table == "opportunities":
        valid, early = _close_before_created(valid, org, path, mapped.labels.get("close_date", "close_date"))
        if len(early):
            problems.append(early)
    rejects = one_per_row(pd.concat(problems, ignore_index=True), profile.table, file)
    ignored = len(untracked.union(mapped.unchanged).difference(rejects["row"]))
    log.info("%s: %s via %s: %d read, %d rejected, %d ignored, %d footer lines", path, profile.table, profile.name,
             raw.read, len(rejects), ignored, raw.footer_lines)
    id_column = schemas.ID_COLUMNS[profile.table]
    id_label = mapped.labels.get(id_column) if id_column else None
    unique_ids = bool(valid[id_column].is_unique) if id_column else None
    return FileResult(path, org.name, profile.table, profile.name, raw.read, valid, rejects, id_label, unique_ids,
                      ignored, profile.changes)


def department_field_values(raw: RawExport, profile: Profile, org: OrgInfo) -> dict[str, pd.Series]:
    """The fields other departments own (``org.yaml``'s ``department_fields:``) found in an opportunity export.

    Each becomes a column ``"<department>: <header>"`` of trimmed text (empty: missing); a column whose
    values are all dates in the profile's date order holds ISO dates (``2025-03-31``), so that the
    analysis can tell a field filled in after the deal closed. A header the export lacks gives no column
    (a warning names it); of a header the export repeats, the first column is read.
    """
    positions: dict[str, int] = {}
    for pos, label in enumerate(raw.headers):
        positions.setdefault(normalise_label(label), pos)
    out: dict[str, pd.Series] = {}
    for department, headers in org.department_fields.items():
        for header in headers:
            pos = positions.get(normalise_label(header))
            if pos is None:
                log.warning("%s: no column %r (department_fields: %s of %s); its deals are read without it",
                            raw.path, header, department, org.name)
                continue
            source = raw.frame[pos]
            text = clean_text(source)
            values = text
            # Numbers are not dates here, though a spreadsheet's numbers could be read as serial days.
            if text.notna().any() and not pd.api.types.is_numeric_dtype(source.dtype) \
                    and not source.dropna().map(lambda v: isinstance(v, (int, float))).any():
                dates, bad, _ = parse_dates(text, profile.dates)
                if not (bad | (dates.isna() & text.notna())).any():
                    values = as_text(dates.dt.strftime("%Y-%m-%d").where(dates.notna(), None))
            out[department_field_column(department, header)] = values
    return out


def _close_before_created(frame: pd.DataFrame, org: OrgInfo, path: Path,
                          label: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Deals whose close date falls before the day they were created: kept with a warning, or rejected.

    Deals entered after the fact (a won deal typed in the week after it closed) are real bookings,
    so they are kept by default; ``close_before_created: reject`` in org.yaml rejects them.
    """
    early = frame["close_date"].notna() & (frame["close_date"] < frame["created_at"].dt.normalize())
    none = pd.DataFrame(columns=["row", "column", "value", "reason"])
    if not early.any():
        return frame, none
    rows = frame.index[early]
    if org.close_before_created == "reject":
        problems = pd.DataFrame({"row": rows.to_numpy(dtype="int64"), "column": label,
                                 "value": frame.loc[early, "close_date"].dt.strftime("%Y-%m-%d").to_numpy(),
                                 "reason": "close date before the created date"})
        return frame.drop(index=rows), problems
    log.warning("%s: %d deal(s) close before the day they were created (first at row %d); kept as they are "
                "(set close_before_created: reject in org.yaml to reject them)", path, len(rows), rows[0])
    return frame, none


def _untracked_history(frame: pd.DataFrame, table: str) -> pd.Index:
    """Rows of a history export that change a field no analysis reads (owner, description, ...).

    Field-history exports and changelogs hold every tracked field; such rows are counted as
    ignored, not rejected, so a clean export validates clean.
    """
    field = frame["field"]
    return frame.index[field.notna() & ~field.isin(list(_TRACKED[table]))].unique()


def lookup_reader(folder: Path) -> LookupReader:
    """Reads the lookup files of ``folder`` by name, through the export reader (encodings, footers)."""
    def read(name: str) -> RawExport | None:
        path = folder / name
        if not path.is_file():
            return None
        stat = path.stat()
        return _read_lookup(path, (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino))
    return read


@lru_cache(maxsize=16)
def _read_lookup(path: Path, version: tuple[int, ...]) -> RawExport:
    """A lookup file read once per version (every export of a folder may use it)."""
    return read_export(path, ReadOptions())


def validate_table(frame: pd.DataFrame, table: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate ``frame`` against the canonical model; the valid rows and the failure cases.

    Rows named by pandera's failure cases are dropped and the rest validated
    again, since a dataframe-level check can only run on rows that coerce.
    """
    model = schemas.TABLES[table]
    failures = []
    for _ in range(4):
        try:
            return model.validate(frame, lazy=True), _concat_failures(failures)
        except pa.errors.SchemaErrors as err:
            cases = err.failure_cases
            rows = cases[cases["index"].notna()]
            if rows.empty:
                checks = ", ".join(sorted(set(cases["check"].astype(str))))
                raise ExportError(f"the {table} table fails the schema as a whole ({checks})") from err
            failures.append(rows)
            frame = frame.drop(index=pd.Index(rows["index"].unique()).intersection(frame.index))
    raise AssertionError(f"{table}: schema failures did not converge")


def _concat_failures(failures: list[pd.DataFrame]) -> pd.DataFrame:
    if not failures:
        return pd.DataFrame(columns=["schema_context", "column", "check", "failure_case", "index"])
    return pd.concat(failures, ignore_index=True)


def _describe_failures(failures: pd.DataFrame, raw: RawExport, mapped: MappedExport,
                       profile: Profile) -> pd.DataFrame:
    """Pandera failure cases as problems: source row, source header, raw value, reason."""
    if failures.empty:
        return pd.DataFrame(columns=["row", "column", "value", "reason"])
    # A dataframe-level check reports every column of a failing row: keep one.
    whole_row = failures["schema_context"] == "DataFrameSchema"
    failures = failures.assign(column=failures["column"].where(~whole_row, None))
    failures = failures.drop_duplicates(subset=["index", "column", "check"])
    rows = failures["index"].astype("int64").to_numpy()
    columns, values, reasons = [], [], []
    positions = {label: i for i, label in reversed(list(enumerate(raw.headers)))}
    for row, name, check, case in zip(rows, failures["column"], failures["check"].astype(str),
                                      failures["failure_case"]):
        if name is None or pd.isna(name):
            name = ""
            label = _dataframe_check_label(check, mapped)
        else:
            label = mapped.labels.get(name, name)
        pos = positions.get(label)
        value = raw.frame.at[row, pos] if pos is not None and row in raw.frame.index else case
        columns.append(label)
        values.append("" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value))
        reasons.append(_reason(check, name, profile.columns.get(name) or {}))
    return pd.DataFrame({"row": rows, "column": columns, "value": values, "reason": reasons})


def _dataframe_check_label(check: str, mapped: MappedExport) -> str:
    if check == "won_is_closed":
        return mapped.labels.get("is_won", "is_won")
    if check == "closed_has_close_date":
        return mapped.labels.get("close_date", "close_date")
    return ""


def _reason(check: str, column: str, spec: dict) -> str:
    """The words for a failed check, bounds in the export's units (``Discount (%)``: at most 100, not 1)."""
    if check in _CHECK_REASONS:
        return _CHECK_REASONS[check]
    if check.startswith("greater_than_or_equal_to("):
        return f"must be at least {_in_export_units(check[25:-1], spec)}"
    if check.startswith("less_than_or_equal_to("):
        return f"must be at most {_in_export_units(check[22:-1], spec)}"
    if check.startswith("isin("):
        allowed = check[5:-1].strip("[]").replace("'", "")
        return f"not one of {allowed}"
    return f"fails check {check}"


def _in_export_units(bound: str, spec: dict) -> str:
    """A canonical bound as the export writes it: undoing the spec's ``scale`` / ``divide``."""
    value = float(bound) / float(spec.get("scale", 1)) * float(spec.get("divide", 1))
    return f"{value:g}"


def one_per_row(problems: pd.DataFrame, table: str, file: str) -> pd.DataFrame:
    """One reject per source row: the first problem's column and value, every reason."""
    if problems.empty:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c == "row" else "str") for c in REJECT_COLUMNS})
    problems = problems.astype({"row": "int64"}).fillna({"column": "", "value": ""})
    described = problems["column"].where(problems["column"] == "", problems["column"] + ": ") + problems["reason"]
    grouped = problems.groupby("row", sort=True)
    out = grouped[["column", "value"]].first()
    out["reason"] = described.groupby(problems["row"]).agg("; ".join)
    out = out.reset_index()
    out.insert(0, "file", file)
    out.insert(0, "table", table)
    return out[REJECT_COLUMNS]
