"""Vendor profiles and mapping YAML: how one kind of export becomes one canonical table.

A *profile* (see docs/DATA.md for the format) names the table it produces, how to
read the file, which headers identify it, and a column spec per canonical column.
The shipped ones live in ``lib/quarterpanic/ingest/vendor_profiles/<name>.yaml``;
a user's mapping YAML for any other CSV/XLSX/Parquet has the same format.
:func:`detect_profile` picks the shipped profile whose identifying headers a file has.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from quarterpanic.errors import ExportError, ProfileError
from quarterpanic.ingest import schemas
from quarterpanic.ingest.changes import CHANGE_KINDS
from quarterpanic.ingest.exports import ReadOptions, normalise_label
from quarterpanic.ingest.values import NUMBER_PATTERN
from quarterpanic.paths import PROFILES_DIR

DATE_ORDERS = ("month_first", "day_first", "iso")
SPEC_KEYS = {"column", "value", "map", "default", "contains", "format", "scale", "divide", "coalesce", "any_of",
             "present", "absent", "lookup", "decimal"}
#: Keys of a lookup spec: ``{lookup: FILE, key: HEADER, on: HEADER, value: HEADER, missing: reject|empty}``.
LOOKUP_KEYS = {"lookup", "key", "on", "value", "missing", "format", "map", "default", "decimal"}
LOOKUP_MISSING = ("reject", "empty")
PROFILE_KEYS = {"profile", "table", "vendor", "description", "identify", "read", "dates", "decimal",
                "columns", "constants", "changes", "snapshot", "extends"}
#: Keys an ``extends:`` mapping merges key by key into its parent's; every other key replaces the parent's.
MERGED_KEYS = ("read", "columns", "constants", "snapshot")
#: Canonical columns loading fills in; a profile may still set org or size_class as constants.
PROVENANCE = ("org", "source_file", "source_row")


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
    #: None: each row is a change; ``snapshots`` / ``values``: rows hold values, changes are derived
    #: (:mod:`quarterpanic.ingest.changes`).
    changes: str | None = None
    #: For ``changes: snapshots``: history field -> the spec of the column holding its value.
    snapshot: dict[str, Any] = field(default_factory=dict)

    def labels(self, canonical: str) -> list[str]:
        """Source headers a canonical column is read from, in spec order."""
        return spec_labels(self.columns.get(canonical))

    def required_labels(self) -> list[str]:
        """Headers needed for the required canonical columns (first alternative each)."""
        out = []
        for name in required_columns(self.table):
            spec = self.columns.get(name)
            if spec is not None and not has_fallback(spec):
                out.extend(spec_labels(spec)[:1])
        return out


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
    return _profile_from_file(profile_path(name_or_path, base=base))


def profile_path(name_or_path: str | Path, *, base: Path | None = None) -> Path:
    """The YAML file of a shipped profile name or a mapping path (see :func:`load_profile`)."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text or "\\" in text:
        path = Path(text).expanduser()
        if base is not None and not path.is_absolute() and (base / path).exists():
            path = base / path
        if not path.exists():
            raise ProfileError("mapping file not found", path=path,
                               hint=f"give a mapping YAML path or one of: {', '.join(known_profiles())}")
        return path
    path = PROFILES_DIR / f"{text}.yaml"
    if not path.exists():
        raise ProfileError(f"unknown profile {text!r}",
                           hint=f"known profiles: {', '.join(known_profiles())}; or give a mapping YAML path")
    return path


def shipped_profiles() -> list[Profile]:
    """All shipped profiles, loaded."""
    return [load_profile(name) for name in known_profiles()]


def _profile_from_file(path: Path) -> Profile:
    """A profile file parsed once per version of it and of every file it ``extends:`` (each file of a
    folder asks again; an analyst editing a parent mapping in a running session sees the edit)."""
    key = path.resolve()
    cached = _PARSED.get(key)
    if cached is not None and all(_stamp(file) == stamp for file, stamp in cached[1]):
        return cached[0]
    doc = _yaml_document(path)
    chain = [path]
    if "extends" in doc:
        doc = _extended(doc, path, chain=chain)
    profile = profile_from_dict(doc, path=path)
    _PARSED[key] = (profile, [(file, _stamp(file)) for file in chain])
    return profile


#: resolved path -> (profile, [(file, modification stamp)] of it and the files it extends)
_PARSED: dict[Path, tuple[Profile, list[tuple[Path, int]]]] = {}


def _stamp(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1


def _yaml_document(path: Path) -> dict:
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
    return doc


def _extended(doc: dict, path: Path, seen: tuple[Path, ...] = (), chain: list[Path] | None = None) -> dict:
    """``doc`` over the profile it ``extends:`` (a shipped name or a mapping YAML beside it), recursively.

    A European export of a shipped profile differs by its date order or decimal mark, a customised
    one by a few columns: ``extends: hubspot_deals`` plus ``dates: day_first`` says so without
    copying the profile. ``read``, ``columns``, ``constants`` and ``snapshot`` merge key by key.
    """
    parent_name = doc["extends"]
    if not isinstance(parent_name, str) or not parent_name:
        raise ProfileError("extends: must name a shipped profile or a mapping YAML", path=path,
                           hint=f"known profiles: {', '.join(known_profiles())}")
    parent_path = profile_path(parent_name, base=path.parent)
    if parent_path.resolve() in seen + (path.resolve(),):
        raise ProfileError(f"extends: {parent_name!r} extends this mapping again (a cycle)", path=path)
    parent = _yaml_document(parent_path)
    if chain is not None:
        chain.append(parent_path)
    if "extends" in parent:
        parent = _extended(parent, parent_path, seen + (path.resolve(),), chain)
    merged = {key: value for key, value in parent.items() if key != "profile"}
    for key, value in doc.items():
        if key == "extends":
            continue
        if key in MERGED_KEYS and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


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
    if decimal not in NUMBER_PATTERN:
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
    changes, snapshot = _check_changes(doc, table, specs, fail)
    missing = [c for c in required_columns(table)
               if c not in specs and c != "size_class" and not (snapshot and c == "field")]
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
        changes=changes,
        snapshot=snapshot,
    )


def _check_changes(doc: dict, table: str, specs: dict, fail) -> tuple[str | None, dict[str, Any]]:
    """The ``changes:`` kind and ``snapshot:`` field specs of a history profile whose rows hold values."""
    changes = doc.get("changes")
    snapshot_doc = doc.get("snapshot") or {}
    if changes is None:
        if snapshot_doc:
            raise fail("snapshot: needs changes: snapshots")
        return None, {}
    if changes not in CHANGE_KINDS:
        raise fail(f"changes must be one of {', '.join(CHANGE_KINDS)}, not {changes!r}")
    if table != "history":
        raise fail(f"changes: {changes} derives opportunity field history; the table must be history, not {table}")
    if changes == "values":
        if snapshot_doc:
            raise fail("snapshot: is for changes: snapshots; with changes: values map field: and new_value:")
        if "old_value" in specs:
            raise fail("with changes: values the old value is the previous value; do not map old_value")
        return changes, {}
    if not isinstance(snapshot_doc, dict) or not snapshot_doc:
        raise fail("changes: snapshots needs snapshot: a map of history field -> the column holding its value",
                   f"fields: {', '.join(schemas.HISTORY_FIELDS)}")
    unknown = set(snapshot_doc) - set(schemas.HISTORY_FIELDS)
    if unknown:
        raise fail(f"snapshot: {', '.join(sorted(map(str, unknown)))} not one of {', '.join(schemas.HISTORY_FIELDS)}")
    clash = {"field", "old_value", "new_value"} & set(specs)
    if clash:
        raise fail(f"with changes: snapshots the snapshot: fields give {', '.join(sorted(clash))}; do not map them")
    return changes, {name: _check_spec(spec, f"snapshot.{name}", fail) for name, spec in snapshot_doc.items()}


def _check_spec(spec: Any, where: str, fail) -> Any:
    if isinstance(spec, str):
        return {"column": spec}
    if isinstance(spec, list) and all(isinstance(x, str) for x in spec):
        return {"column": spec}
    if not isinstance(spec, dict):
        raise fail(f"{where}: expected a header name or a map with keys {', '.join(sorted(SPEC_KEYS))}")
    if "lookup" in spec:
        return _check_lookup(spec, where, fail)
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise fail(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}",
                   f"allowed: {', '.join(sorted(SPEC_KEYS))}")
    sources = [k for k in ("column", "value", "coalesce", "any_of", "present", "absent") if k in spec]
    if len(sources) != 1:
        raise fail(f"{where}: give exactly one of column, value, coalesce, any_of, present, absent, lookup")
    out = dict(spec)
    # One column written with the other decimal mark (an export assembled from two systems).
    if "decimal" in spec and str(spec["decimal"]) not in NUMBER_PATTERN:
        raise fail(f"{where}.decimal: must be '.' or ',', not {spec['decimal']!r}")
    for key in ("present", "absent"):
        if key in spec:
            labels = spec[key]
            out[key] = [str(x) for x in (labels if isinstance(labels, list) else [labels])]
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


def _check_lookup(spec: dict, where: str, fail) -> dict:
    """A lookup spec, normalised to ``{"lookup": {file, key, on, value, missing}, ...}``.

    Its ``value`` names a column of the lookup file, not a constant, so it is kept apart
    from the top-level keys (where ``value`` means a constant).
    """
    if True in spec and "on" not in spec:
        # YAML 1.1 reads an unquoted ``on:`` key as the boolean true.
        spec = {("on" if k is True else k): v for k, v in spec.items()}
    unknown = set(spec) - LOOKUP_KEYS
    if unknown:
        raise fail(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))} in a lookup",
                   f"allowed: {', '.join(sorted(LOOKUP_KEYS))}")
    missing_keys = [k for k in ("key", "on", "value") if not spec.get(k)]
    if missing_keys or not spec.get("lookup"):
        raise fail(f"{where}: a lookup needs lookup: FILE, key: HEADER (in this export), on: HEADER and "
                   f"value: HEADER (in FILE); missing {', '.join(missing_keys or ['lookup'])}")
    missing = spec.get("missing", "reject")
    if missing not in LOOKUP_MISSING:
        raise fail(f"{where}.missing must be one of {', '.join(LOOKUP_MISSING)}, not {missing!r}")
    out = {k: v for k, v in spec.items() if k in ("format", "default")}
    for key in ("map", "decimal"):
        if key in spec:
            out[key] = _check_spec({"column": "-", key: spec[key]}, where, fail)[key]
    out["lookup"] = {"file": str(spec["lookup"]), "key": str(spec["key"]), "on": str(spec["on"]),
                     "value": str(spec["value"]), "missing": missing}
    return out


def lookup_files(profile: Profile) -> list[str]:
    """The lookup files a profile's column specs read (names relative to the export's folder)."""
    found: list[str] = []

    def walk(spec: Any) -> None:
        if not isinstance(spec, dict):
            return
        if "lookup" in spec:
            found.append(spec["lookup"]["file"])
        for sub in spec.get("coalesce", []) + spec.get("any_of", []):
            walk(sub)

    for spec in [*profile.columns.values(), *profile.snapshot.values()]:
        walk(spec)
    return list(dict.fromkeys(found))


@cache
def canonical_schema(table: str):
    """The pandera schema of a canonical table (building one takes milliseconds)."""
    return schemas.TABLES[table].to_schema()


def canonical_columns(table: str) -> list[str]:
    """The columns of a canonical table in schema order (cached :func:`schemas.columns`)."""
    return list(canonical_schema(table).columns)


@cache
def required_columns(table: str) -> tuple[str, ...]:
    schema = canonical_schema(table)
    return tuple(name for name, col in schema.columns.items()
                 if (not col.nullable or name in schemas.REQUIRED_NULLABLE.get(table, ())) and name not in PROVENANCE)


def spec_labels(spec: Any) -> list[str]:
    if not spec:
        return []
    if "column" in spec:
        col = spec["column"]
        return [str(c) for c in (col if isinstance(col, list) else [col])]
    if "lookup" in spec:
        return [spec["lookup"]["key"]]
    if "present" in spec or "absent" in spec:
        return list(spec.get("present") or spec.get("absent"))
    return [label for sub in spec.get("coalesce", []) + spec.get("any_of", []) for label in spec_labels(sub)]


def has_fallback(spec: dict) -> bool:
    return "value" in spec or "default" in spec


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
        near = _near_miss(candidates, present)
        if near is not None:
            profile, absent = near
            raise ExportError(f"looks like a {profile.description or profile.name}, but "
                              f"{' and '.join(absent)} {'is' if len(absent) == 1 else 'are'} missing", path=path,
                              hint="export it with that column, or map the file with a mapping YAML "
                                   f"(see docs/DATA.md; the shipped one is {profile.name})")
        what = f" {table}" if table else ""
        raise ExportError(f"no{what} profile recognises its headers ({shown})", path=path,
                          hint="if it is a lookup or not an export, list it under lookups: or ignore: in the "
                               "folder's org.yaml; else pass --profile NAME or a mapping YAML "
                               f"(profiles: {', '.join(p.name for p in candidates)})")
    if len(matches) > 1:
        raise ExportError(f"headers match several profiles ({', '.join(p.name for p in matches)})", path=path,
                          hint="pass --profile NAME to choose one")
    return matches[0]


def _near_miss(candidates: list[Profile], present: set[str]) -> tuple[Profile, list[str]] | None:
    """The profile whose identifying headers the file nearly has (all but one or two, and most of them)."""
    best = None
    for profile in candidates:
        absent = [h for h in profile.identify if normalise_label(h) not in present]
        found = len(profile.identify) - len(absent)
        if absent and len(absent) <= 2 and found >= 2 and found / len(profile.identify) >= 0.6:
            score = found / len(profile.identify)
            if best is None or score > best[0]:
                best = (score, profile, absent)
    return None if best is None else (best[1], best[2])
