"""Organisations in a data folder: which files are exports, and what each folder's ``org.yaml`` says.

A data folder holds one sub-folder per organisation, each with an ``org.yaml``
(name, size class, fiscal calendar, which profile reads which file; see docs/DATA.md)."""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml
from pydantic import ValidationError

from quarterpanic.calendar import WORKING_KEYS, FiscalCalendar, WorkingCalendar
from quarterpanic.errors import CalendarError, ExportError, ProfileError
from quarterpanic.ingest import schemas
from quarterpanic.ingest.exports import export_kind
from quarterpanic.ingest.profiles import Profile, load_profile
from quarterpanic.params import Change
from quarterpanic.paths import ORG_FILE

DEFAULT_SIZE_CLASS = "mid"
ORG_KEYS = {"org", "size_class", "fiscal_calendar", "files", "lookups", "ignore", "close_before_created",
            "departments", "department_fields", "changes", *WORKING_KEYS}
CLOSE_BEFORE_CREATED = ("warn", "reject")


@dataclass
class OrgInfo:
    """An organisation: its name, size class and raw fiscal-calendar spec.

    ``calendar`` is the ``fiscal_calendar`` map of ``org.yaml`` as written
    (``{}`` when absent), for ``quarterpanic.calendar.FiscalCalendar.from_spec``;
    ``working_days`` its ``country``, ``subdivision`` and ``shutdown_days``
    (those given), for ``quarterpanic.calendar.WorkingCalendar.from_spec``.
    Without a country only weekends are days off. ``changes`` are the changes
    it made (``changes:``), for the before/after comparison.
    """

    name: str
    size_class: str = DEFAULT_SIZE_CLASS
    calendar: dict = field(default_factory=dict)
    folder: Path | None = None
    files: dict[str, str] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)  # files other exports read by key, never loaded as a table
    ignore: list[str] = field(default_factory=list)  # file names or glob patterns to pass over
    close_before_created: str = "warn"  # a deal closing before it was created: kept with a warning, or rejected
    #: Request-history field -> {value (trimmed, lower case): department}; None: a component names its department.
    departments: dict[str, dict[str, str]] | None = None
    working_days: dict = field(default_factory=dict)
    #: Department (lower case) -> the opportunity export's headers of the fields it owns (``department_fields:``).
    department_fields: dict[str, list[str]] = field(default_factory=dict)
    #: The changes the organisation made (``changes:``): ``{segment, date, label, pre_trend}`` each, date as ISO text.
    changes: list[dict] = field(default_factory=list)

    def skips(self, path: Path) -> bool:
        """Whether ``path`` is a lookup file or ignored here, rather than an export to load."""
        return path.name in self.lookups or any(fnmatch.fnmatch(path.name, pattern) for pattern in self.ignore)


def discover(paths: list[str | Path]) -> list[Path]:
    """Export files under ``paths``, sorted within each folder.

    A folder contributes its export files (.csv, .txt, .tsv, .xlsx, .xlsm,
    .parquet) and those of its sub-folders, skipping hidden files and folders.
    Symlinked folders are followed (an organisation's exports may live elsewhere),
    each real folder once.
    """
    files: list[Path] = []
    for given in paths:
        path = Path(given).expanduser()
        if not path.exists():
            raise ExportError("file not found", path=path, hint="check the path")
        if path.is_file():
            files.append(path)
            continue
        found = sorted(p for p in _walk(path) if export_kind(p))
        if not found:
            raise ExportError("has no export files (.csv, .xlsx, .parquet)", path=path,
                              hint="give a folder of exports or a data folder with one sub-folder per organisation")
        files.extend(found)
    unique = list(dict.fromkeys(files))
    return unique


def _walk(folder: Path) -> list[Path]:
    """Every file under ``folder`` that is not hidden and not in a hidden folder, following symlinks once."""
    seen: set[str] = set()
    out: list[Path] = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        out.extend(Path(root) / name for name in names if not name.startswith(".") and (Path(root) / name).is_file())
    return out


def org_folders(data_dir: str | Path) -> list[Path]:
    """The organisation folders of a data folder: its sub-folders (symlinked ones too) with an ``org.yaml``."""
    folder = Path(data_dir)
    if not folder.is_dir():
        return []
    return sorted(child for child in folder.iterdir()
                  if not child.name.startswith(".") and (child / ORG_FILE).is_file())


def read_org_yaml(folder: Path) -> OrgInfo | None:
    """The :class:`OrgInfo` of an organisation folder, or None without ``org.yaml``.

    The whole file is checked here, so that ``validate``, ``detect`` and every
    load refuse the same mistakes with a message naming the file: its keys,
    the organisation's name and size class, the fiscal calendar (built once to
    see that it is one), and each ``files:`` entry (the export is in the folder,
    the profile or mapping exists and is well formed).

    Raises:
        ProfileError: anything in ``org.yaml`` that cannot be used.
    """
    path = folder / ORG_FILE
    if not path.exists():
        return None
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, OSError, UnicodeDecodeError, ValueError) as err:  # ValueError: an impossible date
        raise ProfileError(f"cannot be read ({type(err).__name__})", path=path, hint="fix the YAML") from err
    if not isinstance(doc, dict):
        raise ProfileError("must be a map with org:, size_class:, fiscal_calendar:", path=path)
    unknown = set(doc) - ORG_KEYS
    if unknown:
        raise ProfileError(f"unknown key(s) {', '.join(sorted(map(str, unknown)))}", path=path,
                           hint=f"allowed: {', '.join(sorted(ORG_KEYS))}")
    size_class = doc.get("size_class", DEFAULT_SIZE_CLASS)
    if size_class not in schemas.SIZE_CLASSES:
        raise ProfileError(f"size_class {size_class!r} is not one of {', '.join(schemas.SIZE_CLASSES)}", path=path)
    name = doc.get("org")
    if isinstance(name, (list, dict)):
        raise ProfileError(f"org must be a name, not {name!r}", path=path)
    calendar = doc.get("fiscal_calendar") or {}
    files = doc.get("files") or {}
    if not isinstance(calendar, dict) or not isinstance(files, dict):
        raise ProfileError("fiscal_calendar: and files: must be maps", path=path)
    try:
        FiscalCalendar.from_spec(calendar)
    except (CalendarError, TypeError, ValueError) as err:
        raise ProfileError(f"fiscal_calendar: {err}", path=path,
                           hint="see docs/DATA.md (start_month 1-12, naming end or start, ...)") from err
    working_days = {key: doc[key] for key in WORKING_KEYS if doc.get(key) is not None}
    try:
        # Kept as the canonical spec (dates as ISO text), so a snapshot or a cache key holds it exactly.
        working_days = WorkingCalendar.from_spec(working_days).to_spec()
    except CalendarError as err:
        raise ProfileError(err.args[0], path=path, hint=err.hint or "see docs/DATA.md (country: DE, "
                           "subdivision: BY, shutdown_days: [12-24..01-01])") from err
    for file, profile in files.items():
        _check_files_entry(path, str(file), profile)
    lists = {key: doc.get(key) or [] for key in ("lookups", "ignore")}
    for key, names in lists.items():
        if isinstance(names, str):
            lists[key] = names = [names]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ProfileError(f"{key}: must be a list of file names", path=path,
                               hint=f"e.g. {key}: [accounts.csv]")
    missing = [name for name in lists["lookups"] if not (folder / name).is_file()]
    if missing:
        raise ProfileError(f"lookups: {', '.join(missing)} not found in {folder}", path=path,
                           hint="fix the file name or remove it from lookups:")
    early = doc.get("close_before_created", "warn")
    if early not in CLOSE_BEFORE_CREATED:
        raise ProfileError(f"close_before_created must be one of {', '.join(CLOSE_BEFORE_CREATED)}, not {early!r}",
                           path=path)
    return OrgInfo(name=str(name or folder.name), size_class=size_class, calendar=dict(calendar),
                   folder=folder, files={str(k): str(v) for k, v in files.items()},
                   lookups=list(lists["lookups"]), ignore=list(lists["ignore"]), close_before_created=early,
                   departments=_departments(path, doc.get("departments")), working_days=working_days,
                   department_fields=_department_fields(path, doc.get("department_fields")),
                   changes=_changes(path, str(name or folder.name), doc.get("changes")))


def _departments(path: Path, doc: object) -> dict[str, dict[str, str]] | None:
    """``departments:`` of ``org.yaml``: per request-history field, which value means which department."""
    if doc is None:
        return None
    fields = schemas.REQUEST_HISTORY_FIELDS
    example = "e.g. departments: {component: {Legal: legal}, status: {Awaiting Finance: finance}}"
    if not isinstance(doc, dict) or not all(isinstance(m, dict) for m in doc.values()):
        raise ProfileError("departments: must map a field to {value: department}", path=path, hint=example)
    unknown = set(doc) - set(fields)
    if unknown:
        raise ProfileError(f"departments: {', '.join(sorted(map(str, unknown)))} is not one of {', '.join(fields)}",
                           path=path, hint=example)
    return {str(f): {" ".join(str(k).split()).lower(): str(v).strip().lower() for k, v in m.items()}
            for f, m in doc.items()}


def _department_fields(path: Path, doc: object) -> dict[str, list[str]]:
    """``department_fields:`` of ``org.yaml``: per department, the headers of the deal fields it owns."""
    if doc is None:
        return {}
    example = "e.g. department_fields: {legal: [Contract Signed Date], finance: [PO Number]}"
    if not isinstance(doc, dict) or not doc:
        raise ProfileError("department_fields: must map a department to the headers of its fields", path=path,
                           hint=example)
    out: dict[str, list[str]] = {}
    for department, headers in doc.items():
        name = str(department).strip().lower()
        headers = [headers] if isinstance(headers, str) else headers
        if not name or ":" in name:
            raise ProfileError(f"department_fields: {department!r} is not a department name (no colon)",
                               path=path, hint=example)
        if not isinstance(headers, list) or not headers or not all(isinstance(h, str) and h.strip()
                                                                    for h in headers):
            raise ProfileError(f"department_fields: {department}: must be a list of column headers", path=path,
                               hint=example)
        out[name] = [" ".join(h.split()) for h in headers]
    return out


def _changes(path: Path, org: str, doc: object) -> list[dict]:
    """``changes:`` of ``org.yaml``: each change's ``segment`` (None: the whole org), ``date``, ``label``, ``pre_trend``.

    Checked like a ``changes`` parameter (:class:`quarterpanic.params.Change`), the organisation
    being the file's own.
    """
    example = 'e.g. changes: [{date: 2024-11-01, segment: Enterprise, label: "deal desk"}]'
    if doc is None:
        return []
    if not isinstance(doc, list) or not all(isinstance(change, dict) for change in doc):
        raise ProfileError("changes: must be a list of {date, segment, label}", path=path, hint=example)
    out = []
    for number, change in enumerate(doc, start=1):
        if "org" in change:
            raise ProfileError(f"changes: entry {number}: org is this file's own, drop it", path=path, hint=example)
        try:
            checked = Change.model_validate({**change, "org": org})
        except ValidationError as err:
            problem = err.errors(include_url=False)[0]
            key = ".".join(map(str, problem["loc"])) or "?"
            words = {"extra_forbidden": "is not a key (keys: date, segment, label, pre_trend)",
                     "missing": "is missing"}.get(problem["type"], problem["msg"].removeprefix("Value error, "))
            raise ProfileError(f"changes: entry {number}: {key} {words}", path=path, hint=example) from None
        out.append(checked.model_dump(exclude={"org"}))
    return out


def department_of(field_name: pd.Series, value: pd.Series,
                  departments: dict[str, dict[str, str]] | None) -> pd.Series:
    """The department each request-history change hands the request to; missing when its value names none.

    With an org's ``departments:`` map, a value (trimmed, any case) of a mapped field names the
    department its map gives; without one, a component names its own department (lower case).
    """
    key = value.astype("object").where(value.notna(), None).map(
        lambda v: None if v is None else " ".join(str(v).split()).lower())
    if departments is None:
        out = key.where((field_name == "component").fillna(False).astype(bool))
    else:
        out = pd.Series(None, index=value.index, dtype="object")
        for name, mapping in departments.items():
            here = (field_name == name).fillna(False).to_numpy()
            out[here] = key[here].map(mapping)
    return out.astype("object").where(out.notna(), None)


def _check_files_entry(path: Path, file: str, profile: object) -> None:
    """One ``files:`` entry of ``org.yaml`` (at ``path``): the export is there and its profile can be loaded."""
    if not isinstance(profile, str) or not profile.strip():
        raise ProfileError(f"files: {file}: expected a profile name or a mapping YAML, not {profile!r}", path=path)
    if not (path.parent / file).is_file():
        raise ProfileError(f"files: {file} is not in this folder", path=path,
                           hint="fix the file name or remove the entry")
    try:
        load_profile(profile, base=path.parent)
    except ProfileError as err:
        if err.path is not None:  # the mapping YAML's own mistake names that file
            raise
        raise ProfileError(f"files: {file}: {err}", path=path) from err


def org_without_yaml(folder: Path, profile: Profile) -> OrgInfo:
    """A file outside an org folder: org from the mapping's constants, else its folder's name."""
    constants = profile.constants
    size_class = constants.get("size_class", DEFAULT_SIZE_CLASS)
    name = str(constants.get("org") or folder.resolve().name or "default")
    return OrgInfo(name=name, size_class=size_class)
