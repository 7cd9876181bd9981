"""Applying a profile: rename, parse dates/numbers, derive fields.

:func:`map_export` applies a profile (:mod:`quarterpanic.ingest.profiles`) to a
:class:`~quarterpanic.ingest.exports.RawExport` and returns the canonical columns plus
one *problem* per value that could not be parsed (a bad date, a bad amount), so
loading can reject those rows with the raw value the user will find in the file.

The per-column vocabulary is deliberately small:

``column``   source header (a list: the first header present)
``value``    a constant
``map``      source value -> canonical value (trimmed, case-insensitive)
``default``  used when the source is empty (or, with ``map``, not in the map)
``contains`` list of words: True when any occurs as a whole word (case-insensitive), else False
``format``   explicit strptime format for a date column
``scale`` / ``divide``  multiply / divide a number (percent -> fraction, seconds -> hours)
``coalesce`` list of column specs: per row, the first that has a value
``any_of``   list of column specs (yes/no): True when any is True
``present`` / ``absent``  header(s): True when the row has (or lacks) a value in any of them
``lookup``   fill from another file of the same folder by key:
             ``{lookup: teams.csv, key: Owner, on: Seller, value: Team, missing: reject|empty}``
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from functools import cache, reduce
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from quarterpanic.errors import ExportError, ProfileError
from quarterpanic.ingest import schemas
from quarterpanic.ingest.changes import changes_from_values, melt_snapshots
from quarterpanic.ingest.exports import RawExport, normalise_label
from quarterpanic.ingest.profiles import (
    DATE_ORDERS,
    PROVENANCE,
    Profile,
    canonical_columns,
    canonical_schema,
    has_fallback,
    required_columns,
    spec_labels,
)
from quarterpanic.ingest.values import (
    DATE_RANGE,
    NUMBER_PATTERN,
    arrow_strings,
    as_text,
    clean_text,
    each_distinct,
    factorize,
    parse_bools,
    parse_dates,
    parse_numbers,
    put_masked,
)
from quarterpanic.paths import PROFILES_DIR

log = logging.getLogger(__name__)


@dataclass
class MappedExport:
    """Canonical columns of one export (indexed by source row) and its parse problems.

    ``problems`` has columns ``row, column, value, reason`` (``column`` is the
    source header); ``labels`` maps each canonical column to its source header.
    ``unchanged`` holds the source rows of a values or snapshots history export
    (:mod:`quarterpanic.ingest.changes`) that changed nothing: read, and ignored.
    A snapshot row that changed several fields gives several rows of ``frame``
    with the same index.
    """

    frame: pd.DataFrame
    problems: pd.DataFrame
    labels: dict[str, str]
    unchanged: pd.Index = field(default_factory=lambda: pd.Index([], dtype="int64"))


#: Reads a lookup file named in a profile: the file's :class:`RawExport`, or None when it does not exist.
LookupReader = Callable[[str], "RawExport | None"]


def map_export(raw: RawExport, profile: Profile, lookups: LookupReader | None = None) -> MappedExport:
    """The canonical columns of ``raw`` (except org and provenance) per ``profile``.

    Args:
        raw: the export as read.
        profile: how its headers become canonical columns.
        lookups: reads the lookup files the profile's ``lookup:`` specs name (None: no lookups,
            and a required column that needs one is missing).

    Raises:
        ExportError: a required canonical column has no source header in the file.
    """
    context = _Context(raw, profile, lookups)
    missing = []
    for name in required_columns(profile.table):
        spec = profile.columns.get(name)
        if spec is not None and not context.satisfiable(spec):
            missing.append((name, spec))
    if missing:
        wanted = "; ".join(f"{' or '.join(spec_labels(spec)) or name} ({name})" for name, spec in missing)
        shown = ", ".join(h for h in raw.headers if h)
        raise ExportError(f"missing required column {wanted}; found: {shown}", path=raw.path,
                          hint=f"check the export's columns or the {profile.name} mapping")
    data = {}
    for name in canonical_columns(profile.table):
        if name in PROVENANCE:
            continue
        spec = profile.columns.get(name)
        if spec is None:
            continue
        data[name] = context.evaluate(spec, name)
    frame = pd.DataFrame(data, index=raw.frame.index)
    labels = {name: (context.label_of(profile.columns[name]) or name) for name in data}
    if profile.changes == "snapshots":
        fields = {}
        for name, spec in profile.snapshot.items():
            label = context.label_of(spec) or name
            fields[name] = _normalised_values(context.evaluate(spec, "new_value"), name, label, context,
                                              _decimal_of(spec, profile))
        frame = melt_snapshots(frame, fields)
        labels["new_value"] = labels["old_value"] = "/".join(
            context.label_of(spec) or name for name, spec in profile.snapshot.items())
    elif profile.table == "history":
        _normalise_history(frame, context)
    unchanged = pd.Index([], dtype="int64")
    problems = context.problems()
    context.advise()
    if profile.changes is not None:
        frame, unchanged = changes_from_values(frame, schemas.HISTORY_FIELDS, pd.Index(problems["row"].unique()))
    return MappedExport(frame, problems, labels, unchanged)


class _Context:
    """Evaluates column specs against one raw export, collecting problems."""

    def __init__(self, raw: RawExport, profile: Profile, lookups: LookupReader | None = None):
        self.raw = raw
        self.profile = profile
        self.lookups = lookups
        self._lookup_tables: dict[tuple[str, str, str], dict[str, Any] | None] = {}
        self.positions: dict[str, list[int]] = {}
        for pos, label in enumerate(raw.headers):
            self.positions.setdefault(normalise_label(label), []).append(pos)
        self._problems: list[pd.DataFrame] = []
        self.advice: dict[str, list[str]] = {}  # setting -> the columns that read with it

    def present(self, label: str) -> bool:
        return normalise_label(label) in self.positions

    def satisfiable(self, spec: dict) -> bool:
        if has_fallback(spec):
            return True
        if "lookup" in spec:
            return self.present(spec["lookup"]["key"]) and self.lookup_table(spec["lookup"]) is not None
        if "present" in spec or "absent" in spec:
            return True
        if "column" in spec:
            return any(self.present(label) for label in spec_labels(spec))
        return any(self.satisfiable(sub) for sub in spec.get("coalesce", []) + spec.get("any_of", []))

    def label_of(self, spec: dict) -> str | None:
        """The source header actually used by a spec (first present)."""
        if "coalesce" in spec or "any_of" in spec:
            return next(filter(None, (self.label_of(sub) for sub in spec.get("coalesce", []) + spec.get("any_of", []))),
                        None)
        for label in spec_labels(spec):
            if self.present(label):
                return self.raw.headers[self.positions[normalise_label(label)][0]]
        return None

    def source(self, spec: dict) -> pd.Series | None:
        """The source column of a spec.

        A header the file repeats is read as all its values joined with ';'
        when the spec looks for words in it (``contains``: Jira's ``Labels``);
        for any other spec it is ambiguous which column holds the value, and
        the file is refused naming the header and its positions.
        """
        label = self.label_of(spec)
        if label is None:
            return None
        positions = self.positions[normalise_label(label)]
        columns = [self.raw.frame[pos] for pos in positions]
        if len(columns) == 1:
            return columns[0]
        if "contains" not in spec:
            count = {2: "twice", 3: "three times"}.get(len(positions), f"{len(positions)} times")
            where = ", ".join(str(p + 1) for p in positions[:-1]) + f" and {positions[-1] + 1}"
            raise ExportError(f"header {label!r} appears {count} (columns {where}) and the {self.profile.name} "
                              "mapping reads one value from it", path=self.raw.path,
                              hint="remove or rename the extra column and export again")
        return reduce(_join_labels, columns)

    def problems(self) -> pd.DataFrame:
        if not self._problems:
            return pd.DataFrame({"row": pd.Series(dtype="int64"), "column": pd.Series(dtype="str"),
                                 "value": pd.Series(dtype="str"), "reason": pd.Series(dtype="str")})
        return pd.concat(self._problems, ignore_index=True)

    def problem(self, mask: pd.Series, raw: pd.Series, label: str, reason: str) -> None:
        if mask.any():
            bad = raw[mask]
            self._problems.append(pd.DataFrame({
                "row": bad.index.to_numpy(dtype="int64"), "column": label,
                "value": bad.astype(str).to_numpy(), "reason": reason}))

    def evaluate(self, spec: dict, name: str) -> pd.Series:
        kind = _kind(self.profile.table, name)
        if "coalesce" in spec:
            parts = [self.evaluate(sub, name) for sub in spec["coalesce"]]
            return reduce(lambda a, b: a.combine_first(b) if a.isna().any() else a, parts)
        if "any_of" in spec:
            parts = pd.concat([self.evaluate(sub, name).astype("boolean") for sub in spec["any_of"]], axis=1)
            any_true = parts.fillna(False).any(axis=1).astype("boolean")
            return any_true.mask(parts.isna().all(axis=1), pd.NA)
        if "value" in spec:
            return self.constant(spec["value"], kind, spec, name)
        if "present" in spec or "absent" in spec:
            has = self.has_value(spec.get("present") or spec.get("absent"))
            return (has if "present" in spec else ~has).astype("boolean")
        if "lookup" in spec:
            return self.looked_up(spec, kind, name)
        raw = self.source(spec)
        if raw is None:
            return self.constant(spec.get("default"), kind, spec, name)
        if "contains" in spec:
            pattern = "|".join(rf"\b{re.escape(w)}\b" for w in spec["contains"])
            text = as_text(raw)
            return text.str.contains(pattern, case=False, regex=True).fillna(False).astype("boolean")
        label = self.label_of(spec) or name
        if "map" not in spec:
            parsed = self.parse(raw, kind, spec, label)
            if "default" in spec:
                parsed = parsed.where(raw.notna(), self.constant(spec["default"], kind, spec, name))
            return parsed
        keys = as_text(raw).str.strip().str.lower()
        matched = keys.isin(list(spec["map"])).fillna(False).astype(bool)
        if "default" in spec:
            # Everything not in the map takes the default: nothing left to parse.
            parsed = self.constant(spec["default"], kind, spec, name)
        else:
            parsed = self.parse(raw.where(~matched, None), kind, spec, label, raw=raw)
        if matched.any():
            # Parse each map value once, then spread it over the rows by code.
            codes, uniques = factorize(keys.where(matched, None))
            canonical = self.parse(pd.Series([spec["map"][u] for u in uniques], dtype="object"), kind, {}, label)
            if len(canonical) and pd.isna(canonical).any():
                raise ProfileError(f"columns.{name}.map: a value is not a valid {kind}", path=self.profile.source)
            mask = matched.to_numpy()
            if arrow_strings(parsed) is not None:
                return put_masked(parsed, matched, canonical.take(codes[mask]))
            parsed = parsed.copy()
            parsed[mask] = canonical.to_numpy()[codes[mask]]
        return parsed

    def finite(self, numbers: pd.Series, raw: pd.Series | None, label: str) -> pd.Series:
        """``numbers`` with infinite values (``1e309``, ``inf`` in a Parquet file) missing and, given
        ``raw``, each reported as a problem."""
        infinite = pd.Series(np.isinf(numbers.to_numpy(dtype="float64", na_value=np.nan)), index=numbers.index)
        if not infinite.any():
            return numbers
        if raw is not None:
            self.problem(infinite, raw, label, NOT_FINITE)
        return numbers.mask(infinite)

    def has_value(self, labels: list[str]) -> pd.Series:
        """Per row: any of ``labels`` holds a non-blank value (a missing header holds none)."""
        has = pd.Series(False, index=self.raw.frame.index)
        for label in labels:
            raw = self.source({"column": label})
            if raw is not None:
                text = as_text(raw)
                has |= (text.notna() & (text.str.strip() != "")).fillna(False).astype(bool)
        return has

    def lookup_table(self, lookup: dict) -> dict[str, Any] | None:
        """``on`` value -> ``value`` value of a lookup file, or None when the file is not there.

        Built once per export: a required column asks for it when its header is checked and again
        when it is filled.
        """
        key = (lookup["file"], lookup["on"], lookup["value"])
        if key not in self._lookup_tables:
            self._lookup_tables[key] = self._build_lookup_table(lookup)
        return self._lookup_tables[key]

    def _build_lookup_table(self, lookup: dict) -> dict[str, Any] | None:
        table = self.lookups(lookup["file"]) if self.lookups is not None else None
        if table is None:
            return None
        positions = {normalise_label(label): pos for pos, label in reversed(list(enumerate(table.headers)))}
        absent = [lookup[k] for k in ("on", "value") if normalise_label(lookup[k]) not in positions]
        if absent:
            raise ExportError(f"lookup file has no column {' or '.join(absent)} (needed by the "
                              f"{self.profile.name} mapping); found: {', '.join(h for h in table.headers if h)}",
                              path=table.path, hint="fix the lookup's on:/value: headers")
        keys = as_text(table.frame[positions[normalise_label(lookup["on"])]]).str.strip()
        values = table.frame[positions[normalise_label(lookup["value"])]]
        pairs = pd.DataFrame({"key": keys, "value": as_text(values)}).dropna(subset=["key"])
        pairs = pairs[pairs["key"] != ""]
        conflicting = pairs.drop_duplicates().duplicated("key", keep=False)
        if conflicting.any():
            key = pairs.loc[conflicting.reindex(pairs.index, fill_value=False), "key"].iloc[0]
            lines = " and ".join(str(line) for line in pairs.index[pairs["key"] == key][:2])
            raise ExportError(f"lines {lines}: {lookup['on']} {key!r} appears more than once with different "
                              f"{lookup['value']} values", path=table.path,
                              hint="a lookup file needs one row per key; remove the duplicates")
        return dict(zip(pairs["key"], pairs["value"]))

    def looked_up(self, spec: dict, kind: str, name: str) -> pd.Series:
        """A column filled from a lookup file by key; unmatched keys rejected or left empty."""
        lookup = spec["lookup"]
        table = self.lookup_table(lookup)
        keys = self.source({"column": lookup["key"]})
        if table is None or keys is None:
            return self.constant(spec.get("default"), kind, spec, name)
        label = self.label_of({"column": lookup["key"]}) or lookup["key"]
        keys = as_text(keys).str.strip()
        found = keys.map(table)
        unmatched = keys.notna() & (keys != "") & found.isna()
        if lookup["missing"] == "reject" and "default" not in spec:
            self.problem(unmatched.fillna(False).astype(bool), keys, label,
                         f"not found in {lookup['file']} (column {lookup['on']})")
        elif unmatched.any():
            log.warning("%s: %d value(s) of %s not found in %s; %s left empty", self.raw.path,
                        int(unmatched.sum()), label, lookup["file"], name)
        values = found.astype("object").where(found.notna(), None)
        if "map" in spec:
            mapped = values.map(lambda v: None if v is None else spec["map"].get(" ".join(str(v).split()).lower()))
            values = mapped.where(mapped.notna(), values)
        parsed = self.parse(values, kind, spec, f"{lookup['file']}: {lookup['value']}")
        if "default" in spec:
            parsed = parsed.where(values.notna(), self.constant(spec["default"], kind, spec, name))
        return parsed

    def constant(self, value: Any, kind: str, spec: dict, name: str) -> pd.Series:
        """``value`` parsed once and repeated on every row (missing when None)."""
        if value is None:
            return pd.Series(None, index=self.raw.frame.index, dtype=_EMPTY_DTYPES[kind])
        one = pd.Series([value], dtype="object")
        parsed = self.parse(one, kind, {k: v for k, v in spec.items() if k == "format"}, name, record=False)
        if value is not None and parsed.isna().all():
            raise ProfileError(f"columns.{name}: {value!r} is not a valid {kind}", path=self.profile.source,
                               hint="fix the mapping")
        return parsed.take(np.zeros(len(self.raw.frame), dtype=int)).set_axis(self.raw.frame.index)

    def parse(self, values: pd.Series, kind: str, spec: dict, label: str, *,
              raw: pd.Series | None = None, record: bool = True) -> pd.Series:
        """``values`` as the canonical ``kind``; unparseable values become problems."""
        raw = values if raw is None else raw
        if kind == "date":
            parsed, bad, far = parse_dates(values, self.profile.dates, spec.get("format"))
            if record:
                self.problem(far, raw, label, OUT_OF_RANGE)
            bad &= ~far
            reason = f"not a date ({_order_hint(self.profile.dates, spec)})"
        elif kind == "number":
            mark = _decimal_of(spec, self.profile)
            parsed, bad = parse_numbers(values, mark)
            reason = f"not a number (decimal mark {mark!r})"
            if "scale" in spec:
                parsed = parsed * float(spec["scale"])
            if "divide" in spec:
                parsed = parsed / float(spec["divide"])
            parsed = self.finite(parsed, raw if record else None, label)
        elif kind == "bool":
            parsed, bad = parse_bools(values)
            reason = "not a yes/no value (Yes/No, True/False, 1/0)"
        else:
            return clean_text(values)
        if record:
            self.problem(bad, raw, label, reason[:-1] + self._setting_hint(kind, spec, values, bad, label) + ")")
        return parsed

    def _setting_hint(self, kind: str, spec: dict, values: pd.Series, bad: pd.Series, label: str) -> str:
        """When most of a column fails, the date order or decimal mark it reads with (noted for :meth:`advise`).

        A day-first export read as month-first fails on every row for one setting, not row by row: the
        rejects then say which setting reads them instead of leaving the user to guess.
        """
        given = values.notna() & (values.astype(str).str.strip() != "")
        if bad.sum() < 3 or bad.sum() * 2 < given.sum() or spec.get("format"):
            return ""
        failed = values[bad]
        if kind == "date":
            settings = [("dates", order) for order in DATE_ORDERS if order != self.profile.dates]
            reads = [~parse_dates(failed, order)[1].to_numpy() for _, order in settings]
        elif kind == "number":
            settings = [("decimal", mark) for mark in NUMBER_PATTERN if mark != _decimal_of(spec, self.profile)]
            reads = [~parse_numbers(failed, mark)[1].to_numpy() for _, mark in settings]
        else:
            return ""
        best = int(np.argmax([r.mean() for r in reads])) if reads else 0
        if not reads or reads[best].mean() < 0.9:
            return ""
        key, value = settings[best]
        setting = f"{key}: {value}" if key == "dates" else f'{key}: "{value}"'
        self.advice.setdefault(setting, []).append(f"{label} (e.g. {failed.iloc[int(np.argmax(reads[best]))]!r})")
        return f"; the column reads with {setting}"

    def advise(self) -> None:
        """One warning per export naming the settings its failing columns read with, and where to put them."""
        if not self.advice:
            return
        settings = ", ".join(f"`{setting}`" for setting in self.advice)
        columns = "; ".join(f"{', '.join(labels)} with `{setting}`" for setting, labels in self.advice.items())
        shipped = self.profile.source is None or self.profile.source.parent == PROFILES_DIR
        where = (f"write a mapping YAML with `extends: {self.profile.name}` and {settings}, and name it for this "
                 "file under org.yaml `files:` (docs/DATA.md, 'Mapping YAML')" if shipped
                 else f"set {settings} in {self.profile.source}")
        log.warning("%s: most rows fail to read, but they read as %s: %s", self.raw.path, columns, where)



#: Reasons for values that parse but cannot be kept.
OUT_OF_RANGE = (f"outside the dates this tool can hold ({DATE_RANGE[0]:%Y-%m-%d} to {DATE_RANGE[1]:%Y-%m-%d}); "
                "a placeholder for 'no date' (like 12/31/9999) should be left empty")
NOT_FINITE = "not a finite number (too large to hold)"
_EMPTY_DTYPES = {"date": "datetime64[ns]", "number": "float64", "bool": "boolean", "text": "str"}


@cache
def _kind(table: str, name: str) -> str:
    dtype = str(canonical_schema(table).columns[name].dtype)
    if dtype.startswith("datetime"):
        return "date"
    if dtype.startswith(("float", "int")):
        return "number"
    if dtype in ("bool", "boolean"):
        return "bool"
    return "text"


def _order_hint(order: str, spec: dict) -> str:
    if spec.get("format"):
        return f"expected {spec['format']}"
    return {"month_first": "expected month first, e.g. 3/31/2025",
            "day_first": "expected day first, e.g. 31/03/2025",
            "iso": "expected YYYY-MM-DD"}[order]


def _join_labels(left: pd.Series, right: pd.Series) -> pd.Series:
    left, right = as_text(left), as_text(right)
    both = left.notna() & right.notna()
    return left.where(~both, left + ";" + right).fillna(right)


def _normalise_history(frame: pd.DataFrame, context: _Context) -> None:
    """Old/new values of amount and close-date changes as plain numbers and ISO dates."""
    profile = context.profile
    for column in ("old_value", "new_value"):
        if column not in frame:
            continue
        spec = profile.columns[column]
        label = context.label_of(spec) or column
        frame[column] = _normalised_values(frame[column], frame["field"], label, context, _decimal_of(spec, profile))


def _decimal_of(spec: Any, profile: Profile) -> str:
    """The decimal mark a column is written with: its spec's ``decimal``, else the mapping's."""
    return str(spec.get("decimal", profile.decimal)) if isinstance(spec, dict) else profile.decimal


def _normalised_values(values: pd.Series, fields: pd.Series | str, label: str, context: _Context,
                       decimal: str) -> pd.Series:
    """History values as text that compares equal when the value is: amounts as plain numbers
    (``"12500.0"``), close dates as ISO dates; other fields as written. ``fields`` names each
    value's field (or one field for all); ``decimal`` is the column's decimal mark (:func:`_decimal_of`)."""
    profile = context.profile
    field_of = pd.Series(fields, index=values.index) if isinstance(fields, str) else fields
    amount = (field_of == "amount").fillna(False) & values.notna()
    if amount.any():
        numbers, bad = parse_numbers(values[amount], decimal)
        context.problem(bad, values[amount], label, "not an amount")
        numbers = context.finite(numbers, values[amount], label)
        values = put_masked(values, amount, each_distinct(numbers, lambda v: v.astype(str).where(v.notna(), None)))
    close = (field_of == "close_date").fillna(False) & values.notna()
    if close.any():
        dates, bad, far = parse_dates(values[close], profile.dates)
        context.problem(far, values[close], label, OUT_OF_RANGE)
        context.problem(bad & ~far, values[close], label, f"not a date ({_order_hint(profile.dates, {})})")
        values = put_masked(values, close,
                            each_distinct(dates, lambda v: v.dt.strftime("%Y-%m-%d").where(v.notna(), None)))
    return values.astype("str").where(values.notna(), None) if len(values) else values
