"""What every analysis reads: the five canonical tables plus each organisation's calendar.

A :class:`Dataset` comes from loaded exports (:func:`quarterpanic.ingest.loading.load_crm`)
or straight from the sample generator, so detectors are tested on generated
data without writing files, and run on real exports the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from quarterpanic.calendar import WORKING_KEYS, FiscalCalendar, WorkingCalendar
from quarterpanic.errors import ExportError, NoDataError
from quarterpanic.params import defaults
from quarterpanic.paths import CACHE_DIR, PROJ_ROOT
from quarterpanic.store import snapshots as snapshot

#: The canonical tables, in :data:`quarterpanic.ingest.schemas.TABLES` order (named here so that a dataset read
#: from a snapshot does not import pandera).
TABLE_NAMES = ("opportunities", "history", "leads", "requests", "request_history")

TIMESTAMP_COLUMNS = {
    "opportunities": ["created_at", "close_date"],
    "history": ["changed_at"],
    "leads": ["created_at", "converted_at"],
    "requests": ["created_at", "resolved_at"],
    "request_history": ["changed_at"],
}


@dataclass
class Dataset:
    """The canonical tables of one or more organisations.

    Attributes
    ----------
    opportunities, history, leads, requests, request_history:
        Canonical tables (see :mod:`quarterpanic.ingest.schemas`), each with ``org``.
    calendars:
        Organisation → its :class:`FiscalCalendar`.
    working_calendars:
        Organisation → its :class:`WorkingCalendar` (the days it works;
        Monday to Friday for an organisation not listed).
    size_classes:
        Organisation → ``small`` / ``mid`` / ``enterprise``.
    changes:
        The changes the organisations declare in ``org.yaml`` (``changes:``): ``org``,
        ``segment`` (None: the whole organisation), ``date`` (ISO text), ``label`` and
        ``pre_trend`` each; :func:`changes_to_judge` merges them with the parameters'.
    as_of:
        The moment the data describes: records after it do not exist yet, and
        the quarter containing it is still open.
    rejects, accounting:
        The loader's rejected rows and per-file row accounting (empty for
        generated data).

    A dataset is not changed in place (:meth:`cut`, :meth:`filter` and
    ``dataclasses.replace`` return new ones): the results cache keeps each
    table's content hash on the dataset while the same frame is in its place.
    """

    opportunities: pd.DataFrame
    history: pd.DataFrame
    leads: pd.DataFrame
    requests: pd.DataFrame
    request_history: pd.DataFrame
    calendars: dict[str, FiscalCalendar] = field(default_factory=dict)
    working_calendars: dict[str, WorkingCalendar] = field(default_factory=dict)
    size_classes: dict[str, str] = field(default_factory=dict)
    changes: list[dict] = field(default_factory=list)
    as_of: pd.Timestamp | None = None
    rejects: pd.DataFrame = field(default_factory=pd.DataFrame)
    accounting: pd.DataFrame = field(default_factory=pd.DataFrame)

    def __post_init__(self) -> None:
        if self.as_of is None:
            self.as_of = latest_timestamp(self.tables())
        self.as_of = pd.Timestamp(self.as_of)

    @property
    def orgs(self) -> list[str]:
        return sorted(set(self.calendars) | set(self.opportunities["org"].dropna().unique()))

    def tables(self) -> dict[str, pd.DataFrame]:
        return {name: getattr(self, name) for name in TABLE_NAMES}

    def calendar(self, org: str) -> FiscalCalendar:
        return self.calendars.get(org) or FiscalCalendar()

    def working_calendar(self, org: str) -> WorkingCalendar:
        return self.working_calendars.get(org) or WorkingCalendar()

    @classmethod
    def from_tables(
        cls,
        tables: Mapping[str, pd.DataFrame],
        orgs: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        calendar_override: Mapping[str, Any] | FiscalCalendar | None = None,
        as_of: Any = None,
    ) -> Dataset:
        """Build from canonical tables and ``{org: {"size_class", "fiscal_calendar", "country", ...}}``.

        ``country``, ``subdivision`` and ``shutdown_days`` (as in org.yaml) make
        the organisation's :class:`WorkingCalendar`; ``changes`` (as in org.yaml:
        ``{date, segment, label}`` each) are the changes it made.
        """
        # The ingest layer imports pandera (and dask.dataframe through it): a second or more that a dataset read
        # back from a snapshot never needs, so only building or loading tables pays it.
        from quarterpanic.ingest import schemas

        orgs = orgs or {}
        frames = {name: tables[name] if name in tables else schemas.empty(name) for name in TABLE_NAMES}
        calendars = {
            org: FiscalCalendar.from_spec(calendar_override or info.get("fiscal_calendar") or info.get("calendar"))
            for org, info in orgs.items()
        }
        working = {
            org: WorkingCalendar.from_spec({key: info[key] for key in WORKING_KEYS if info.get(key) is not None})
            for org, info in orgs.items()
        }
        size_classes = {org: str(info.get("size_class", "mid")) for org, info in orgs.items()}
        changes = [declared_change(org, change) for org, info in orgs.items() for change in info.get("changes") or []]
        dataset = cls(**frames, calendars=calendars, working_calendars=working, size_classes=size_classes,
                      changes=changes, as_of=as_of)
        if as_of is not None:
            dataset = dataset.cut(as_of)
        return dataset

    def cut(self, as_of: Any) -> Dataset:
        """The data as it stood at ``as_of``: later records dropped, later outcomes unknown."""
        as_of = pd.Timestamp(as_of)
        opps = self.opportunities[self.opportunities["created_at"] <= as_of].copy()
        # An outcome recorded after as_of was not known yet: the deal was still open.
        not_yet = opps["is_closed"] & (opps["close_date"] > as_of)
        opps.loc[not_yet, ["is_closed", "is_won"]] = False
        requests = self.requests[self.requests["created_at"] <= as_of].copy()
        requests.loc[requests["resolved_at"] > as_of, "resolved_at"] = pd.NaT
        leads = self.leads[self.leads["created_at"] <= as_of].copy()
        late_conversion = leads["converted_at"] > as_of
        leads.loc[late_conversion, "converted_at"] = pd.NaT
        leads.loc[late_conversion, "converted_opportunity_id"] = pd.NA
        history = self.history[self.history["changed_at"] <= as_of].copy()
        request_history = self.request_history[(self.request_history["changed_at"] <= as_of)
                                               & self.request_history["request_id"].isin(requests["request_id"])]
        return replace(self, opportunities=opps, history=history, leads=leads, requests=requests,
                       request_history=request_history.copy(), as_of=as_of)

    def filter(self, orgs: list[str] | None = None, segment: str | None = None) -> Dataset:
        """Only some organisations and/or one segment (requests follow their opportunity's segment)."""
        tables = self.tables()
        if orgs:
            tables = {name: frame[frame["org"].isin(orgs)] for name, frame in tables.items()}
        if segment:
            opps = tables["opportunities"]
            opps = opps[opps["segment"] == segment]
            keep = set(opps["opportunity_id"])
            tables["opportunities"] = opps
            tables["history"] = tables["history"][tables["history"]["opportunity_id"].isin(keep)]
            tables["requests"] = tables["requests"][tables["requests"]["opportunity_id"].isin(keep)]
            changes = tables["request_history"]
            tables["request_history"] = changes[changes["request_id"].isin(tables["requests"]["request_id"])]
            leads = tables["leads"]
            tables["leads"] = leads[leads["converted_opportunity_id"].isin(keep)]
        calendars = {o: c for o, c in self.calendars.items() if not orgs or o in orgs}
        working = {o: c for o, c in self.working_calendars.items() if not orgs or o in orgs}
        sizes = {o: s for o, s in self.size_classes.items() if not orgs or o in orgs}
        changes = [change for change in self.changes if not orgs or change["org"] in orgs]
        return replace(self, **tables, calendars=calendars, working_calendars=working, size_classes=sizes,
                       changes=changes)


def declared_change(org: str, change: Mapping[str, Any]) -> dict[str, Any]:
    """One change of an organisation's ``org.yaml`` as a ``changes`` parameter entry (dates as ISO text)."""
    date = change["date"]
    return {"org": str(org), "segment": change.get("segment"),
            "date": date if isinstance(date, str) else pd.Timestamp(date).date().isoformat(),
            "label": change.get("label"), "pre_trend": bool(change.get("pre_trend", False))}


def changes_to_judge(dataset: Dataset, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The changes the before/after comparison judges: ``params["changes"]`` and the organisations' own.

    A change is a fact about the organisation, so ``org.yaml`` declares it; the parameters
    override per organisation: an organisation that any ``params["changes"]`` entry names is judged
    on the parameters' changes only, the others on their ``org.yaml`` changes.
    """
    given = [dict(change) for change in params.get("changes") or []]
    named = {str(change["org"]) for change in given}
    return given + [dict(change) for change in dataset.changes if change["org"] not in named]


def latest_timestamp(tables: Mapping[str, pd.DataFrame]) -> pd.Timestamp | None:
    """The latest timestamp of any kind in the tables (what the data is 'as of').

    Created, changed, converted and resolved times, and the close dates of
    closed deals: an export whose last deal was created in March but closed in
    May is as of May, and a quarter that ended in April is complete.
    """
    latest = []
    opportunities = tables.get("opportunities")
    if opportunities is not None and not opportunities.empty:
        closed = opportunities.loc[opportunities["is_closed"].astype(bool), "close_date"].max()
        if pd.notna(closed):
            latest.append(pd.Timestamp(closed))
    leads = tables.get("leads")
    if leads is not None and not leads.empty and pd.notna(leads["converted_at"].max()):
        latest.append(pd.Timestamp(leads["converted_at"].max()))
    for name, columns in (("opportunities", ["created_at"]), ("history", ["changed_at"]),
                          ("leads", ["created_at"]), ("requests", ["created_at", "resolved_at"]),
                          ("request_history", ["changed_at"])):
        frame = tables.get(name)
        if frame is None or frame.empty:
            continue
        for column in columns:
            value = frame[column].max()
            if pd.notna(value):
                latest.append(pd.Timestamp(value))
    return max(latest) if latest else None


def resolve_data_dir(data_dir: str | Path | None, *, must_exist: bool = True) -> Path:
    """A data folder as an absolute path: as given when absolute, else relative to the working folder
    when it exists there, else to the project root (where ``salesdata/`` lives), so notebooks run from anywhere.

    A folder found nowhere raises :class:`~quarterpanic.errors.ExportError`, or with ``must_exist=False``
    resolves against the project root (``quarterpanic run`` records a missing folder in its manifest).
    """
    path = Path(data_dir if data_dir is not None else defaults()["data_dir"]).expanduser()
    if path.is_absolute():
        return path
    for base in (Path.cwd(), PROJ_ROOT):
        if (base / path).exists():
            return (base / path).resolve()
    if must_exist:
        raise ExportError("data folder not found", path=path, hint="set data_dir to a folder of CRM exports")
    return (PROJ_ROOT / path).resolve()


def load_dataset(data_dir: str | Path | None = None, params: Mapping[str, Any] | None = None,
                 cache: bool | str | Path = True) -> Dataset:
    """Load a folder of CRM exports as a :class:`Dataset`, as the parameters say.

    Parameters
    ----------
    data_dir:
        Folder of exports (one sub-folder per organisation, each with an
        ``org.yaml``); defaults to ``params["data_dir"]``. A relative path is
        tried against the working folder, then the project root.
    params:
        Analysis parameters (see :mod:`quarterpanic.params`); uses
        ``profile``, ``fiscal_calendar``, ``as_of``, ``orgs`` and ``segment``.
    cache:
        The reload cache (:mod:`quarterpanic.ingest.reload_cache`): ``True`` (the project's
        ``.cache/`` folder), a cache folder, or ``False`` to read every file.
        With a cache, an unchanged folder loaded with the same parameters is
        read back whole from a snapshot (:mod:`quarterpanic.store.snapshots`).

    Returns
    -------
    The dataset, cut at ``as_of`` when given, with the loader's ``rejects``
    and ``accounting``.
    """
    params = {**defaults(), **(params or {})}
    path = resolve_data_dir(data_dir if data_dir is not None else params["data_dir"])
    if cache is False or cache is None or not isinstance(cache, (bool, str, Path)):
        return _load(path, params, cache)
    cache_dir = CACHE_DIR if cache is True else Path(cache).expanduser()
    return snapshot.load(path, params, cache_dir, lambda: _load(path, params, cache))


def require_opportunities(dataset: Dataset, data_dir: str | Path | None, params: Mapping[str, Any]) -> Dataset:
    """``dataset`` when it holds an opportunity; otherwise :class:`NoDataError` saying why in one line.

    Every page and command starts from opportunities; with none, the reader is
    told whether the exports hold none (or every row was rejected) or the
    filters (``as_of``, ``orgs``, ``segment``) left none, instead of a chart
    failing further down.
    """
    if not dataset.opportunities.empty:
        return dataset
    raise no_opportunity_error(dataset.accounting, data_dir, params)


def no_opportunity_error(accounting: pd.DataFrame | None, data_dir: str | Path | None,
                         params: Mapping[str, Any]) -> NoDataError:
    """Why a dataset has no opportunity: the exports (none accepted) or the filters (as_of, orgs, segment)."""
    accounting = accounting if accounting is not None else pd.DataFrame()
    opportunities = accounting[accounting["table"] == "opportunities"] if len(accounting) else accounting
    if len(opportunities) and int(opportunities["accepted"].sum()):
        filters = ", ".join(f"{key} {params[key]!r}" for key in ("as_of", "orgs", "segment") if params.get(key))
        return NoDataError(f"no opportunity left to analyse after {filters or 'the filters'}", path=data_dir,
                           hint="check those parameters against the data")
    return NoDataError("no opportunity to analyse (every opportunities export is empty or all its rows were rejected)",
                       path=data_dir, hint=f"check the exports with `quarterpanic validate {data_dir}`")


def _load(path: Path, params: Mapping[str, Any], cache: Any) -> Dataset:
    # Imported here for the reason given in Dataset.from_tables.
    from quarterpanic.ingest.loading import load_crm

    crm = load_crm(path, profile=params.get("profile"), cache=cache)
    orgs = {name: {"size_class": info.size_class, "fiscal_calendar": info.calendar, "changes": info.changes,
                   **info.working_days}
            for name, info in crm.orgs.items()}
    dataset = Dataset.from_tables(
        crm.__dict__, orgs, calendar_override=params.get("fiscal_calendar"), as_of=params.get("as_of")
    )
    dataset.rejects, dataset.accounting = crm.rejects, crm.accounting
    if params.get("orgs") or params.get("segment"):
        dataset = dataset.filter(orgs=params.get("orgs"), segment=params.get("segment"))
    return dataset
