"""Vendor profiles and user mapping YAML: rename, parse dates/numbers, derive fields.

A *profile* says how one kind of export becomes one canonical table (see
docs/DATA.md for the format). The shipped ones live in
``lib/quarterpanic/profiles/<name>.yaml``; a user's mapping YAML for any other
CSV/XLSX/Parquet has the same format. :func:`map_export` applies a profile to a
:class:`~quarterpanic.exports.RawExport` and returns the canonical columns plus
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
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from functools import cache, reduce
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from quarterpanic import schemas
from quarterpanic.errors import ExportError, ProfileError
from quarterpanic.exports import RawExport, ReadOptions, normalise_label
from quarterpanic.paths import PROFILES_DIR

log = logging.getLogger(__name__)

DATE_ORDERS = ("month_first", "day_first", "iso")
SPEC_KEYS = {"column", "value", "map", "default", "contains", "format", "scale", "divide", "coalesce", "any_of"}
PROFILE_KEYS = {"profile", "table", "vendor", "description", "identify", "read", "dates", "decimal",
                "columns", "constants"}
#: Canonical columns loading fills in; a profile may still set org or size_class as constants.
PROVENANCE = ("org", "source_file", "source_row")
TRUE_WORDS = ("true", "yes", "y", "t", "1", "1.0", "x", "checked", "on")
FALSE_WORDS = ("false", "no", "n", "f", "0", "0.0", "unchecked", "off")

_DATE_FORMATS = {
    "month_first": ["%m/%d/%Y %I:%M %p", "%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S",
                    "%m/%d/%Y", "%m/%d/%y %I:%M %p", "%m/%d/%y %H:%M", "%m/%d/%y",
                    "%b/%d/%Y", "%b %d, %Y", "%B %d, %Y", "%b %d %Y"],
    "day_first": ["%d/%m/%Y %H:%M", "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %I:%M %p", "%d/%m/%Y",
                  "%d/%m/%y %H:%M", "%d/%m/%y", "%d/%b/%y %I:%M %p", "%d/%b/%Y %I:%M %p",
                  "%d/%b/%y %H:%M", "%d/%b/%Y %H:%M", "%d/%b/%y", "%d/%b/%Y", "%d/%B/%Y"],
    "iso": ["%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y/%m/%d"],
}
# Plain-string patterns in RE2's subset ([0-9] not \d, no \s, no look-arounds), so
# pandas runs them in pyarrow instead of Python's re, row by row.
_DATE_SEPARATORS = r"^([0-9]{1,2}|[A-Za-z]{3,9})[.\- ]([0-9]{1,2}|[A-Za-z]{3,9})[.\- ]([0-9]{2,4})($|[ T].*)"
_DATE_TIME_PATTERN = (r"^(?P<date>[0-9]{1,2}/[0-9]{1,2}/[0-9]{2,4}|[0-9]{1,2}/[A-Za-z]{3,9}/[0-9]{2,4}"
                      r"|[0-9]{4}[/-][0-9]{1,2}[/-][0-9]{1,2}) "
                      r"(?P<time>(?:[01]?[0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9])?(?: [AaPp][Mm])?)$")
_NUMBER_JUNK = "^[A-Za-z]{3}|[A-Za-z]{3}$|[$€£¥₹% \t  '’]"
_NUMBER_PATTERN = {
    ".": r"^[+-]?([0-9]{1,3}(,[0-9]{3})+|[0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$",
    ",": r"^[+-]?([0-9]{1,3}(\.[0-9]{3})+|[0-9]*)(,[0-9]+)?$",
}
_DATE_SAMPLE = 500
_DISTINCT_MIN_ROWS = 1000
_DISTINCT_SAMPLE = 10000


@dataclass
class Profile:
    """How one kind of export becomes one canonical table."""

    name: str
    table: str
    columns: dict[str, Any]
    source: Path | None = None
    vendor: str | None = None
    description: str = ""
    identify: list[str] = field(default_factory=list)
    read: ReadOptions = field(default_factory=ReadOptions)
    dates: str = "iso"
    decimal: str = "."
    constants: dict[str, Any] = field(default_factory=dict)

    def labels(self, canonical: str) -> list[str]:
        """Source headers a canonical column is read from, in spec order."""
        return _spec_labels(self.columns.get(canonical))

    def required_labels(self) -> list[str]:
        """Headers needed for the required canonical columns (first alternative each)."""
        out = []
        for name in _required(self.table):
            spec = self.columns.get(name)
            if spec is not None and not _has_fallback(spec):
                out.extend(_spec_labels(spec)[:1])
        return out


@dataclass
class MappedExport:
    """Canonical columns of one export (indexed by source row) and its parse problems.

    ``problems`` has columns ``row, column, value, reason`` (``column`` is the
    source header); ``labels`` maps each canonical column to its source header.
    """

    frame: pd.DataFrame
    problems: pd.DataFrame
    labels: dict[str, str]


# --------------------------------------------------------------------------- profiles


def known_profiles() -> list[str]:
    """Names of the shipped vendor profiles."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def load_profile(name_or_path: str | Path, *, base: Path | None = None) -> Profile:
    """A shipped profile by name, or a mapping YAML by path.

    Args:
        name_or_path: ``salesforce_opportunities`` or ``deals_mapping.yaml``.
        base: folder a relative YAML path is looked up in first (an org folder).

    Raises:
        ProfileError: unknown name, missing file, or malformed YAML.
    """
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text or "\\" in text:
        path = Path(text).expanduser()
        if base is not None and not path.is_absolute() and (base / path).exists():
            path = base / path
        if not path.exists():
            raise ProfileError("mapping file not found", path=path,
                               hint=f"give a mapping YAML path or one of: {', '.join(known_profiles())}")
        return _profile_from_file(path)
    path = PROFILES_DIR / f"{text}.yaml"
    if not path.exists():
        raise ProfileError(f"unknown profile {text!r}",
                           hint=f"known profiles: {', '.join(known_profiles())}; or give a mapping YAML path")
    return _profile_from_file(path)


def shipped_profiles() -> list[Profile]:
    """All shipped profiles, loaded."""
    return [load_profile(name) for name in known_profiles()]


def _profile_from_file(path: Path) -> Profile:
    return _cached_profile(path.resolve(), path.stat().st_mtime_ns, str(path))


@cache
def _cached_profile(path: Path, mtime_ns: int, shown: str) -> Profile:
    """A profile file parsed once per version (every file of a folder asks again)."""
    path = Path(shown)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ProfileError(f"is not valid YAML{where}", path=path, hint="fix the YAML syntax") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ProfileError(f"cannot be read ({err})", path=path) from err
    if not isinstance(doc, dict):
        raise ProfileError("is not a mapping YAML (expected keys table:, columns:)", path=path,
                           hint="see parameters/example_mapping.yaml")
    return profile_from_dict(doc, path=path)


def profile_from_dict(doc: dict, *, path: Path | None = None, name: str | None = None) -> Profile:
    """Build and check a :class:`Profile` from its YAML document."""
    where = path or name or "mapping"

    def fail(message: str, hint: str | None = None) -> ProfileError:
        return ProfileError(message, path=where, hint=hint)

    unknown = set(doc) - PROFILE_KEYS
    if unknown:
        raise fail(f"unknown key(s) {', '.join(sorted(map(str, unknown)))}",
                   f"allowed: {', '.join(sorted(PROFILE_KEYS))}")
    table = doc.get("table")
    if table not in schemas.TABLES:
        raise fail(f"table must be one of {', '.join(schemas.TABLES)}, not {table!r}")
    dates = doc.get("dates", "iso")
    if dates not in DATE_ORDERS:
        raise fail(f"dates must be one of {', '.join(DATE_ORDERS)}, not {dates!r}")
    decimal = str(doc.get("decimal", "."))
    if decimal not in _NUMBER_PATTERN:
        raise fail(f"decimal must be '.' or ',', not {decimal!r}")
    read = doc.get("read") or {}
    try:
        read_options = ReadOptions(**read)
    except TypeError as err:
        raise fail(f"read: {err}", "allowed: encoding, delimiter, footer, sheet, header_row") from err
    if read_options.footer not in ("auto", "none"):
        raise fail(f"read.footer must be auto or none, not {read_options.footer!r}")
    canonical = set(canonical_columns(table)) - set(PROVENANCE)
    columns_doc = doc.get("columns") or {}
    constants = doc.get("constants") or {}
    if not isinstance(columns_doc, dict) or not isinstance(constants, dict):
        raise fail("columns: and constants: must be maps of canonical column -> spec")
    specs: dict[str, Any] = {}
    for target, spec in {**columns_doc, **{k: {"value": v} for k, v in constants.items()}}.items():
        if target in ("org", "size_class"):  # organisation facts: loading applies them
            continue
        if target not in canonical:
            raise fail(f"{target!r} is not a column of the {table} table",
                       f"columns: {', '.join(c for c in canonical_columns(table) if c in canonical)}")
        specs[target] = _check_spec(spec, f"columns.{target}", fail)
    if constants.get("size_class", schemas.SIZE_CLASSES[1]) not in schemas.SIZE_CLASSES:
        raise fail(f"constants.size_class must be one of {', '.join(schemas.SIZE_CLASSES)}")
    missing = [c for c in _required(table) if c not in specs and c != "size_class"]
    if missing:
        raise fail(f"no mapping for required column(s) {', '.join(missing)} of the {table} table")
    return Profile(
        name=str(doc.get("profile") or name or (path.stem if path else "mapping")),
        table=table,
        columns=specs,
        source=path,
        vendor=doc.get("vendor"),
        description=str(doc.get("description") or ""),
        identify=[str(x) for x in doc.get("identify") or []],
        read=read_options,
        dates=dates,
        decimal=decimal,
        constants=dict(constants),
    )


def _check_spec(spec: Any, where: str, fail) -> Any:
    if isinstance(spec, str):
        return {"column": spec}
    if isinstance(spec, list) and all(isinstance(x, str) for x in spec):
        return {"column": spec}
    if not isinstance(spec, dict):
        raise fail(f"{where}: expected a header name or a map with keys {', '.join(sorted(SPEC_KEYS))}")
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise fail(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}",
                   f"allowed: {', '.join(sorted(SPEC_KEYS))}")
    sources = [k for k in ("column", "value", "coalesce", "any_of") if k in spec]
    if len(sources) != 1:
        raise fail(f"{where}: give exactly one of column, value, coalesce, any_of")
    out = dict(spec)
    for key in ("coalesce", "any_of"):
        if key in spec:
            if not isinstance(spec[key], list) or not spec[key]:
                raise fail(f"{where}.{key}: expected a list of column specs")
            out[key] = [_check_spec(s, f"{where}.{key}[{i}]", fail) for i, s in enumerate(spec[key])]
    if "map" in spec:
        if not isinstance(spec["map"], dict):
            raise fail(f"{where}.map: expected source value: canonical value pairs")
        out["map"] = {" ".join(str(k).split()).lower(): v for k, v in spec["map"].items()}
    if "contains" in spec:
        words = spec["contains"]
        out["contains"] = [str(w) for w in (words if isinstance(words, list) else [words])]
    return out


@cache
def _schema(table: str):
    """The pandera schema of a canonical table (building one takes milliseconds)."""
    return schemas.TABLES[table].to_schema()


def canonical_columns(table: str) -> list[str]:
    """The columns of a canonical table in schema order (cached :func:`schemas.columns`)."""
    return list(_schema(table).columns)


@cache
def _required(table: str) -> tuple[str, ...]:
    schema = _schema(table)
    return tuple(name for name, col in schema.columns.items() if not col.nullable and name not in PROVENANCE)


def _spec_labels(spec: Any) -> list[str]:
    if not spec:
        return []
    if "column" in spec:
        col = spec["column"]
        return [str(c) for c in (col if isinstance(col, list) else [col])]
    return [label for sub in spec.get("coalesce", []) + spec.get("any_of", []) for label in _spec_labels(sub)]


def _has_fallback(spec: dict) -> bool:
    return "value" in spec or "default" in spec


# --------------------------------------------------------------------------- detection


def detect_profile(headers: list[str], *, path: Path | str | None = None, table: str | None = None,
                   profiles: list[Profile] | None = None) -> Profile:
    """The one shipped profile whose identifying headers are all in ``headers``.

    When several match and one's identifying headers include another's, the
    more specific one wins; otherwise the choice is ambiguous.

    Raises:
        ExportError: no profile or more than one matches.
    """
    candidates = [p for p in (profiles if profiles is not None else shipped_profiles())
                  if p.identify and (table is None or p.table == table)]
    present = {normalise_label(h) for h in headers}
    matches = [p for p in candidates if all(normalise_label(h) in present for h in p.identify)]
    matches = [p for p in matches
               if not any(set(map(normalise_label, p.identify)) < set(map(normalise_label, q.identify))
                          for q in matches)]
    shown = ", ".join(h for h in headers[:12] if h) + (", ..." if len(headers) > 12 else "")
    if not matches:
        what = f" {table}" if table else ""
        raise ExportError(f"no{what} profile recognises its headers ({shown})", path=path,
                          hint="pass --profile NAME or a mapping YAML "
                               f"(profiles: {', '.join(p.name for p in candidates)})")
    if len(matches) > 1:
        raise ExportError(f"headers match several profiles ({', '.join(p.name for p in matches)})", path=path,
                          hint="pass --profile NAME to choose one")
    return matches[0]


# --------------------------------------------------------------------------- mapping


def map_export(raw: RawExport, profile: Profile) -> MappedExport:
    """The canonical columns of ``raw`` (except org and provenance) per ``profile``.

    Raises:
        ExportError: a required canonical column has no source header in the file.
    """
    context = _Context(raw, profile)
    missing = []
    for name in _required(profile.table):
        spec = profile.columns.get(name)
        if spec is not None and not context.satisfiable(spec):
            missing.append((name, spec))
    if missing:
        wanted = "; ".join(f"{' or '.join(_spec_labels(spec)) or name} ({name})" for name, spec in missing)
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
    if profile.table == "history":
        _normalise_history(frame, context)
    labels = {name: (context.label_of(profile.columns[name]) or name) for name in data}
    return MappedExport(frame, context.problems(), labels)


class _Context:
    """Evaluates column specs against one raw export, collecting problems."""

    def __init__(self, raw: RawExport, profile: Profile):
        self.raw = raw
        self.profile = profile
        self.positions: dict[str, list[int]] = {}
        for pos, label in enumerate(raw.headers):
            self.positions.setdefault(normalise_label(label), []).append(pos)
        self._problems: list[pd.DataFrame] = []

    def present(self, label: str) -> bool:
        return normalise_label(label) in self.positions

    def satisfiable(self, spec: dict) -> bool:
        if _has_fallback(spec):
            return True
        if "column" in spec:
            return any(self.present(label) for label in _spec_labels(spec))
        return any(self.satisfiable(sub) for sub in spec.get("coalesce", []) + spec.get("any_of", []))

    def label_of(self, spec: dict) -> str | None:
        """The source header actually used by a spec (first present)."""
        for label in _spec_labels(spec):
            if self.present(label):
                return self.raw.headers[self.positions[normalise_label(label)][0]]
        return None

    def source(self, spec: dict) -> pd.Series | None:
        """The source column of a spec; repeated headers are joined with ';'."""
        label = self.label_of(spec)
        if label is None:
            return None
        columns = [self.raw.frame[pos] for pos in self.positions[normalise_label(label)]]
        if len(columns) == 1:
            return columns[0]
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
        index = self.raw.frame.index
        if "coalesce" in spec:
            parts = [self.evaluate(sub, name) for sub in spec["coalesce"]]
            return reduce(lambda a, b: a.combine_first(b) if a.isna().any() else a, parts)
        if "any_of" in spec:
            parts = pd.concat([self.evaluate(sub, name).astype("boolean") for sub in spec["any_of"]], axis=1)
            any_true = parts.fillna(False).any(axis=1).astype("boolean")
            return any_true.mask(parts.isna().all(axis=1), pd.NA)
        if "value" in spec:
            return self.constant(spec["value"], kind, spec, name)
        raw = self.source(spec)
        if raw is None:
            return self.constant(spec.get("default"), kind, spec, name)
        if "contains" in spec:
            pattern = "|".join(rf"\b{re.escape(w)}\b" for w in spec["contains"])
            text = _as_text(raw)
            return text.str.contains(pattern, case=False, regex=True).fillna(False).astype("boolean")
        label = self.label_of(spec) or name
        if "map" not in spec:
            parsed = self.parse(raw, kind, spec, label)
            if "default" in spec:
                parsed = parsed.where(raw.notna(), self.constant(spec["default"], kind, spec, name))
            return parsed
        keys = _as_text(raw).str.strip().str.lower()
        matched = keys.isin(list(spec["map"])).fillna(False).astype(bool)
        if "default" in spec:
            # Everything not in the map takes the default: nothing left to parse.
            parsed = self.constant(spec["default"], kind, spec, name)
        else:
            parsed = self.parse(raw.where(~matched, None), kind, spec, label, raw=raw)
        if matched.any():
            # Parse each map value once, then spread it over the rows by code.
            codes, uniques = _factorize(keys.where(matched, None))
            canonical = self.parse(pd.Series([spec["map"][u] for u in uniques], dtype="object"), kind, {}, label)
            if len(canonical) and pd.isna(canonical).any():
                raise ProfileError(f"columns.{name}.map: a value is not a valid {kind}", path=self.profile.source)
            mask = matched.to_numpy()
            if _arrow_strings(parsed) is not None:
                return _put(parsed, matched, canonical.take(codes[mask]))
            parsed = parsed.copy()
            parsed[mask] = canonical.to_numpy()[codes[mask]]
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
            parsed, bad = parse_dates(values, self.profile.dates, spec.get("format"))
            reason = f"not a date ({_order_hint(self.profile.dates, spec)})"
        elif kind == "number":
            parsed, bad = parse_numbers(values, self.profile.decimal)
            reason = f"not a number (decimal mark {self.profile.decimal!r})"
            if "scale" in spec:
                parsed = parsed * float(spec["scale"])
            if "divide" in spec:
                parsed = parsed / float(spec["divide"])
        elif kind == "bool":
            parsed, bad = parse_bools(values)
            reason = "not a yes/no value (Yes/No, True/False, 1/0)"
        else:
            return clean_text(values)
        if record:
            self.problem(bad, raw, label, reason)
        return parsed


_EMPTY_DTYPES = {"date": "datetime64[ns]", "number": "float64", "bool": "boolean", "text": "str"}


@cache
def _kind(table: str, name: str) -> str:
    dtype = str(_schema(table).columns[name].dtype)
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
    left, right = _as_text(left), _as_text(right)
    both = left.notna() & right.notna()
    return left.where(~both, left + ";" + right).fillna(right)


def _normalise_history(frame: pd.DataFrame, context: _Context) -> None:
    """Old/new values of amount and close-date changes as plain numbers and ISO dates."""
    profile = context.profile
    for column in ("old_value", "new_value"):
        if column not in frame:
            continue
        label = context.label_of(profile.columns[column]) or column
        values = frame[column]
        amount = (frame["field"] == "amount").fillna(False) & values.notna()
        if amount.any():
            numbers, bad = parse_numbers(values[amount], profile.decimal)
            context.problem(bad, values[amount], label, "not an amount")
            values = _put(values, amount, _each_distinct(numbers, lambda v: v.astype(str).where(v.notna(), None)))
        close = (frame["field"] == "close_date").fillna(False) & values.notna()
        if close.any():
            dates, bad = parse_dates(values[close], profile.dates)
            context.problem(bad, values[close], label, f"not a date ({_order_hint(profile.dates, {})})")
            values = _put(values, close,
                          _each_distinct(dates, lambda v: v.dt.strftime("%Y-%m-%d").where(v.notna(), None)))
        frame[column] = values.astype("str").where(values.notna(), None) if len(values) else values


def _put(values: pd.Series, mask: pd.Series, replacement: pd.Series) -> pd.Series:
    """``values`` with ``replacement`` (one value per True of ``mask``, in order) where ``mask``."""
    array, new = _arrow_strings(values), _arrow_strings(replacement)
    if array is not None and new is not None:
        # Arrow's kernel on Arrow strings: no round trip through a million Python objects.
        result = pc.replace_with_mask(array.combine_chunks(), pa.array(mask.to_numpy(dtype=bool)),
                                      new.combine_chunks().cast(array.type))
        return pd.Series(pd.array(result, dtype=values.dtype), index=values.index, name=values.name)
    if pd.api.types.is_string_dtype(values.dtype) and values.dtype != object:
        values = values.copy()
        values[mask.to_numpy()] = replacement.to_numpy()
        return values
    values = values.astype("object")
    values[mask] = replacement
    return values


# --------------------------------------------------------------------------- parsing


def _as_text(values: pd.Series) -> pd.Series:
    """``values`` as a string Series, missing values kept missing."""
    if pd.api.types.is_string_dtype(values.dtype) and values.dtype != object:
        return values
    text = values.map(_to_text, na_action="ignore") if values.dtype == object else values.astype("str")
    return text.astype("str").where(values.notna(), None)


def _to_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return str(value)


def _each_distinct(values: pd.Series, function):
    """``function(values)`` for an element-wise ``function``, run once per distinct value.

    Export columns repeat their values (stages, owners, dates, round amounts):
    the work is done on the distinct values and spread back by code. Returns
    what ``function`` returns, a Series or a tuple of Series, on ``values``'s
    index. Object columns (cells of mixed types) and columns of mostly
    distinct values are passed to ``function`` as they are.
    """
    if values.dtype == object or len(values) < _DISTINCT_MIN_ROWS:
        return function(values)
    # Ids, names and timestamps hardly repeat: a sample says so before the whole column is hashed.
    sample = values.iloc[:_DISTINCT_SAMPLE]
    if sample.nunique() * 2 > len(sample):
        return function(values)
    if values.dtype.kind == "f":  # by bits: 0.0 and -0.0 print differently
        array = values.to_numpy()
        codes, uniques = pd.factorize(array.view(np.int64))
        uniques = uniques.view(array.dtype)
    else:
        codes, uniques = _factorize(values)
    if len(uniques) * 2 > len(values):
        return function(values)
    # One missing value after the distinct ones stands for every missing row (code -1).
    distinct = pd.Series(uniques, dtype=values.dtype).reindex(range(len(uniques) + 1))
    codes = np.where(codes < 0, len(uniques), codes)
    result = function(distinct)

    def spread(part: pd.Series) -> pd.Series:
        return part.take(codes).set_axis(values.index)

    return tuple(spread(part) for part in result) if isinstance(result, tuple) else spread(result)


def _arrow_strings(values: pd.Series) -> pa.ChunkedArray | None:
    """The Arrow array behind a pyarrow-backed string Series, else None."""
    array = getattr(values.array, "_pa_array", None)
    if array is None or not pa.types.is_string(array.type) and not pa.types.is_large_string(array.type):
        return None
    return array


def _has_byte(array: pa.ChunkedArray | pa.Array, byte: bytes) -> bool:
    """Whether the character data of an Arrow string array may hold ``byte`` (a look at the raw bytes)."""
    code = ord(byte)
    chunks = array.chunks if isinstance(array, pa.ChunkedArray) else [array]
    for chunk in chunks:
        data = chunk.buffers()[2]
        if data is not None and data.size and (np.frombuffer(data, dtype=np.uint8) == code).any():
            return True
    return False


def _factorize(values: pd.Series) -> tuple[np.ndarray, Any]:
    """``pd.factorize(values)``: codes (-1 for missing) and the distinct values in order of appearance.

    Arrow string columns are encoded by Arrow's hash kernel, which is faster
    than pandas's for them and gives the same codes.
    """
    array = _arrow_strings(values)
    if array is None:
        return pd.factorize(values)
    # One chunk, so that every code refers to the same dictionary.
    encoded = pc.dictionary_encode(array.combine_chunks())
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.intp)
    return codes, pd.array(encoded.dictionary, dtype=values.dtype)


def clean_text(values: pd.Series) -> pd.Series:
    """Trimmed strings; empty strings become missing; CRLF inside values becomes LF."""
    array = _arrow_strings(values)
    if array is None:
        text = _as_text(values).str.strip().str.replace("\r\n", "\n", regex=False)
        return text.where(text != "", None)
    # Arrow's kernels on the whole column: cheaper than finding its distinct values first.
    text = pc.utf8_trim_whitespace(array)
    if _has_byte(text, b"\r"):
        text = pc.replace_substring(text, "\r\n", "\n")
    text = pc.if_else(pc.equal(text, ""), pa.scalar(None, text.type), text)
    return pd.Series(pd.array(text, dtype=values.dtype), index=values.index, name=values.name)


def parse_dates(values: pd.Series, order: str, fmt: str | None = None) -> tuple[pd.Series, pd.Series]:
    """Datetimes from export values, vectorised, and a mask of values that are not dates.

    Strings are tried against the formats of ``order`` (``month_first``,
    ``day_first``, ``iso``; ISO 8601 is accepted in every order, and ``.``/``-``
    separators are read like ``/``), or only ``fmt`` when given. Datetime
    cells pass through; numbers (XLSX cells not formatted as dates) are Excel
    serial days. Time zones are converted to UTC and dropped.
    """
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    if len(values) == 0:
        return out, pd.Series(False, index=values.index)
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return _naive(values), pd.Series(False, index=values.index)
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return _from_serial(values), pd.Series(False, index=values.index)
    if values.dtype == object:
        is_time = values.map(lambda v: hasattr(v, "year"), na_action="ignore").fillna(False).astype(bool)
        is_number = values.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
                               na_action="ignore").fillna(False).astype(bool)
        if is_time.any():
            out[is_time] = _naive(pd.to_datetime(values[is_time].astype("object"), errors="coerce"))
        if is_number.any():
            out[is_number] = _from_serial(values[is_number].astype(float))
        values = values.where(~(is_time | is_number), None)
    # Exports repeat dates a lot: parse each distinct string once.
    codes, uniques = _factorize(values)
    parsed, failed = _parse_date_strings(clean_text(pd.Series(uniques, dtype="str")), order, fmt)
    known = codes >= 0
    out[known] = parsed.to_numpy()[codes[known]]
    bad = pd.Series(False, index=values.index)
    bad[known] = failed.to_numpy()[codes[known]]
    return out, bad


def _parse_date_strings(text: pd.Series, order: str, fmt: str | None) -> tuple[pd.Series, pd.Series]:
    out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns]")
    todo = text.notna()
    if fmt:
        formats = [fmt]
    else:
        text = text.str.replace(_DATE_SEPARATORS, r"\1/\2/\3\4", regex=True)
        formats = (["ISO8601"] if order == "iso" else []) + _DATE_FORMATS[order] + \
                  ([] if order == "iso" else ["ISO8601"])
        split = _parse_date_and_time(text, order)
        out[split.notna()] = split[split.notna()]
        todo &= split.isna()
    tried: set[str] = set()
    while todo.any():
        form = _best_format(text[todo], [f for f in formats if f not in tried])
        if form is None:
            break
        tried.add(form)
        parsed = _strptime(text[todo], form)
        hit = parsed.notna()
        if hit.any():
            rows = hit[hit].index
            out[rows] = parsed[hit].astype("datetime64[ns]")
            todo[rows] = False
    return out, todo


@cache
def _date_time_formats(order: str) -> tuple[list[str], list[str], np.ndarray]:
    """The date and time halves of the ``order``'s date-time formats, and which pairs exist.

    ``pairs[d, t]`` is True when date format ``d`` followed by a space and time
    format ``t`` is one of the formats; the extra last row and column (code -1,
    nothing matched) are all False.
    """
    halves = []
    for form in _DATE_FORMATS[order]:
        cut = min((form.find(mark) for mark in (" %H", " %I") if mark in form), default=-1)
        if cut > 0:
            halves.append((form[:cut], form[cut + 1:]))
    halves += [("ISO8601", "%H:%M"), ("ISO8601", "%H:%M:%S")]
    dates = list(dict.fromkeys(d for d, _ in halves))
    times = list(dict.fromkeys(t for _, t in halves))
    pairs = np.zeros((len(dates) + 1, len(times) + 1), dtype=bool)
    for d, t in halves:
        pairs[dates.index(d), times.index(t)] = True
    return dates, times, pairs


def _parse_date_and_time(text: pd.Series, order: str) -> pd.Series:
    """Date-times of the common ``<date> <h:mm[:ss][ AM]>`` shape, parsing each date and time once.

    Timestamps repeat their date and their time of day far more than the
    whole: parsing the distinct halves and adding them is the same as parsing
    by the matching date-time format, because the formats of one order never
    both read the same text. Values of any other shape, or whose halves do not
    pair into one of the formats, stay NaT for the format-by-format parser.
    """
    out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns]")
    if len(text) == 0:
        return out
    parts = pc.extract_regex(pa.array(text, type=pa.large_string()), _DATE_TIME_PATTERN)
    date_formats, time_formats, pairs = _date_time_formats(order)
    date_codes, date_values, date_format = _parse_halves(parts.field("date"), date_formats)
    time_codes, time_values, time_format = _parse_halves(parts.field("time"), time_formats)
    time_values = time_values - np.datetime64("1900-01-01", "ns")
    # ISO 8601 wants a two-digit hour; the other formats take one or two digits.
    two_digit = pc.match_substring_regex(parts.field("time"), "^[0-9]{2}:").fill_null(False)
    iso = date_format[date_codes] == date_formats.index("ISO8601")
    ok = pairs[date_format[date_codes], time_format[time_codes]] & (~iso | two_digit.to_numpy(zero_copy_only=False))
    ok &= (date_codes >= 0) & (time_codes >= 0)
    out[ok] = date_values[date_codes[ok]] + time_values[time_codes[ok]]
    return out


def _parse_halves(halves: pa.Array, formats: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes of ``halves`` into their distinct values, each value parsed, and the format that read it.

    The format index is -1 (and the value NaT) for a value no format reads;
    a missing half has code -1.
    """
    encoded = pc.dictionary_encode(halves).combine_chunks() if isinstance(halves, pa.ChunkedArray) else \
        pc.dictionary_encode(halves)
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    distinct = pd.Series(encoded.dictionary.to_pylist(), dtype="str")
    values = np.full(len(distinct), np.datetime64("NaT"), dtype="datetime64[ns]")
    which = np.full(len(distinct) + 1, -1, dtype=np.int64)
    for i, form in enumerate(formats):
        todo = np.flatnonzero(which[:-1] < 0)
        if len(todo) == 0:
            break
        parsed = _strptime(distinct.iloc[todo].reset_index(drop=True), form).astype("datetime64[ns]").to_numpy()
        hit = ~np.isnat(parsed)
        values[todo[hit]] = parsed[hit]
        which[todo[hit]] = i
    which[-1] = -1
    return codes, values, which


def _best_format(text: pd.Series, formats: list[str]) -> str | None:
    """The format that reads most of a sample of ``text``, else the first one left.

    Trying the likely format first keeps a million-row column to one or two
    passes; when nothing in the sample parses, every format is still tried.
    """
    if not formats:
        return None
    sample = text.iloc[:_DATE_SAMPLE]
    hits = []
    for i, form in enumerate(formats):
        count = int(_strptime(sample, form).notna().sum())
        if count == len(sample):
            return form
        hits.append((count, -i, form))
    best = max(hits)
    return best[2] if best[0] > 0 else formats[0]


def _strptime(text: pd.Series, form: str) -> pd.Series:
    if form == "ISO8601":
        iso = text[text.str.match(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}")]
        parsed = pd.to_datetime(iso, format=form, errors="coerce", utc=True).dt.tz_convert(None)
        return parsed.reindex(text.index)
    return pd.to_datetime(text, format=form, errors="coerce")


def _naive(values: pd.Series) -> pd.Series:
    values = pd.to_datetime(values, errors="coerce")
    if getattr(values.dt, "tz", None) is not None:
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    return values.astype("datetime64[ns]")


def _from_serial(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values.astype(float), unit="D", origin="1899-12-30", errors="coerce").astype(
        "datetime64[ns]")


def parse_numbers(values: pd.Series, decimal: str = ".") -> tuple[pd.Series, pd.Series]:
    """Floats from export values, vectorised, and a mask of values that are not numbers.

    Currency symbols and three-letter codes (``$12,500.00``, ``USD 12,500``,
    ``12.500,00 €``), spaces and apostrophes as thousands separators
    (``12 500``, ``12'500``) and ``%`` are removed; ``(1,200)`` is negative.
    ``decimal`` is the decimal mark: ``.`` (``1,234.56``) or ``,``
    (``1.234,56``). A value whose separators do not fit the decimal mark is
    reported, never guessed.
    """
    if len(values) == 0:
        return pd.Series(np.nan, index=values.index, dtype="float64"), pd.Series(False, index=values.index)
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("float64"), pd.Series(False, index=values.index)
    return _each_distinct(values, lambda distinct: _parse_number_text(distinct, decimal))


def _parse_number_text(values: pd.Series, decimal: str) -> tuple[pd.Series, pd.Series]:
    cleaned = text = clean_text(values)
    negative = text.str.match(r"^\(.*\)$").fillna(False).astype(bool)
    text = text.str.strip("()").str.replace(_NUMBER_JUNK, "", regex=True)
    valid = text.str.match(_NUMBER_PATTERN[decimal]).fillna(False).astype(bool) & text.str.contains("[0-9]")
    if decimal == ",":
        text = text.str.replace(".", "", regex=False).str.replace(",", ".", regex=False)
    else:
        text = text.str.replace(",", "", regex=False)
    numbers = pd.to_numeric(text.where(valid, None), errors="coerce").astype("float64")
    numbers = numbers.where(~negative, -numbers)
    bad = values.notna() & cleaned.notna() & numbers.isna()
    return numbers, bad


def parse_bools(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Nullable booleans from Yes/No, True/False, 1/0, Y/N, X/blank-style values."""
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("boolean"), pd.Series(False, index=values.index)
    return _each_distinct(values, _parse_bool_text)


def _parse_bool_text(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    text = clean_text(values).str.lower()
    parsed = pd.Series(pd.NA, index=values.index, dtype="boolean")
    parsed[text.isin(TRUE_WORDS).to_numpy()] = True
    parsed[text.isin(FALSE_WORDS).to_numpy()] = False
    bad = text.notna() & parsed.isna()
    return parsed, bad
