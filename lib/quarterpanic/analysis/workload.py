"""Sales-ops workload: what kind of work each request is, and how much of it arrives each week.

The raw material of the reactive order-taking detector (:mod:`quarterpanic.analysis.reactive`):

* :func:`classify_requests` — which requests are unplanned, urgent, exceptions
  to policy, planned work, raised after hours or on a weekend;
* :func:`week_grid` — every organisation × fiscal quarter × week of quarter
  with its *working days* (the days of that week up to ``as_of`` that the
  organisation's :class:`~quarterpanic.calendar.WorkingCalendar` counts: Mon–Fri
  less its public holidays and shutdown days), the exposure every daily rate
  is measured against;
* :func:`weekly_requests` — weekly volumes and shares, the backlog at each
  week's end and unplanned requests per closed-won deal;
* :func:`share_by_week` — pooled weekly shares with Wilson intervals, for
  comparing a quarter with its calm baseline;
* :func:`deal_links` and :func:`wasted_effort` — what the effort was spent
  on: deals later won, lost, still open (censored), or unqualified when created.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from statsmodels.stats.proportion import proportion_confint

from quarterpanic.analysis.inputs import data_starts, quarter_coverage
from quarterpanic.analysis.rule import qualified_at_creation, qualified_by_signals
from quarterpanic.calendar import WorkingCalendar, annotate_by_org
from quarterpanic.dataset import Dataset
from quarterpanic.params import defaults

#: An opportunity history with no change in it, for callers that have none.
_NO_HISTORY = pd.DataFrame({"org": pd.Series(dtype="str"), "opportunity_id": pd.Series(dtype="str"),
                            "changed_at": pd.Series(dtype="datetime64[ns]"), "field": pd.Series(dtype="str"),
                            "old_value": pd.Series(dtype="str"), "new_value": pd.Series(dtype="str")})
BUSINESS_HOURS = (8, 18)  # a request created outside [08:00, 18:00) is after hours
FLAG_COLUMNS = ("unplanned", "planned", "urgent", "exception", "after_hours", "weekend")


# -- 1. classification ----------------------------------------------------------------------------
def _normalised(values: pd.Series) -> pd.Series:
    return values.astype("string").str.strip().str.casefold()


def _in(values: pd.Series, names: Sequence[str] | None) -> pd.Series:
    wanted = {str(n).strip().casefold() for n in (names or [])}
    # A million requests carry a dozen distinct names: normalise each name once, gather by code.
    codes, distinct = pd.factorize(values)
    member = _normalised(pd.Series(distinct, dtype=object)).isin(wanted).fillna(False).to_numpy(dtype=bool)
    return pd.Series(np.append(member, False)[codes], index=values.index)


def classify_requests(
    requests: pd.DataFrame,
    params: Mapping[str, Any] | None = None,
    *,
    type_column: str = "request_type",
    priority_column: str = "priority",
    planned_column: str = "planned",
    created_column: str = "created_at",
    business_hours: tuple[int, int] = BUSINESS_HOURS,
) -> pd.DataFrame:
    """Tag every request with what kind of work it is.

    Parameters
    ----------
    requests:
        Canonical requests.
    params:
        Uses ``reactive_types``, ``exception_types``, ``planned_types`` and
        ``urgent_priorities`` (names match case- and space-insensitively).
    business_hours:
        ``(start, end)`` hours; a request created outside ``[start, end)`` is
        after hours.

    Returns
    -------
    A copy of ``requests`` with boolean columns ``is_unplanned``,
    ``is_planned`` (its complement), ``is_urgent``, ``is_exception``,
    ``is_after_hours`` and ``is_weekend``. A request type listed in
    ``reactive_types`` is unplanned and one in ``planned_types`` planned,
    whatever the export's ``planned`` flag says; for any other type the
    canonical ``planned`` flag decides.
    """
    params = {**defaults(), **(params or {})}
    out = requests.copy()
    types = out[type_column]
    reactive = _in(types, params["reactive_types"])
    planned_type = _in(types, params["planned_types"]) & ~reactive
    flag = out[planned_column].astype("boolean").fillna(False).astype(bool)
    out["is_unplanned"] = (reactive | (~planned_type & ~flag)).astype(bool)
    out["is_planned"] = ~out["is_unplanned"]
    out["is_urgent"] = _in(out[priority_column], params["urgent_priorities"])
    out["is_exception"] = _in(types, params["exception_types"])
    created = pd.to_datetime(out[created_column])
    hour = created.dt.hour + created.dt.minute / 60
    start, end = business_hours
    out["is_after_hours"] = ((hour < start) | (hour >= end)).fillna(False).astype(bool)
    out["is_weekend"] = (created.dt.day_of_week >= 5).fillna(False).astype(bool)
    return out


# -- 2. the week grid and its exposure ------------------------------------------------------------
def working_days(start: pd.Series, end: pd.Series, as_of: Any, calendar: WorkingCalendar | None = None) -> np.ndarray:
    """Working days in each ``[start, end]`` (inclusive dates) that had begun by ``as_of``.

    ``calendar`` says which days are worked (None: Mon–Fri); see
    :meth:`quarterpanic.calendar.WorkingCalendar.count`.
    """
    return (calendar or WorkingCalendar()).count(start, end, as_of)


def week_grid(dataset: Dataset, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Every organisation × fiscal quarter × week of quarter the data covers, with its exposure.

    Parameters
    ----------
    dataset:
        Uses each organisation's calendar, its earliest request or opportunity
        (where its data starts) and ``as_of`` (where it ends).
    params:
        Uses ``orgs``, ``quarters`` and ``baseline_quarters``.

    Returns
    -------
    One row per ``org`` × ``quarter`` × ``week_of_quarter`` with
    ``quarter_start``, ``quarter_end``, ``weeks_in_quarter``, ``week_start``,
    ``week_end`` (first and last day of the week; the last week of a
    month-based quarter takes its odd days), ``working_days`` (the days the
    organisation's working calendar counts, up to ``as_of``: 0 for weeks that
    have not begun), ``quarter_complete``
    (the quarter's last day is over by ``as_of`` and the data start in its
    first week), ``judged`` (complete and among ``params["quarters"]``) and
    ``baseline`` (complete and among ``params["baseline_quarters"]``; by
    default the complete quarters not shown, or all complete quarters when
    every quarter is shown).
    """
    params = {**defaults(), **(params or {})}
    starts = _data_starts(dataset, params.get("orgs"))
    frames = []
    for org, first in starts.items():
        quarters = dataset.calendar(org).quarters(first, dataset.as_of)
        weeks = quarters.loc[quarters.index.repeat(quarters["weeks_in_quarter"])].copy()
        weeks["week_of_quarter"] = weeks.groupby("quarter").cumcount() + 1
        weeks["org"] = org
        weeks["data_start"] = first
        weeks["week_start"] = weeks["quarter_start"] + pd.to_timedelta(7 * (weeks["week_of_quarter"] - 1), unit="D")
        last_week = weeks["week_of_quarter"] == weeks["weeks_in_quarter"]
        weeks["week_end"] = (weeks["week_start"] + pd.Timedelta(days=6)).where(~last_week, weeks["quarter_end"])
        weeks["working_days"] = working_days(weeks["week_start"], weeks["week_end"], dataset.as_of,
                                             dataset.working_calendar(org))
        frames.append(weeks)
    if not frames:
        return pd.DataFrame(columns=GRID_COLUMNS)
    grid = pd.concat(frames, ignore_index=True)
    coverage = quarter_coverage(dataset, grid["org"], grid["quarter_start"], grid["quarter_end"])
    grid["quarter_complete"] = coverage["complete"].astype(bool)
    grid["quarter"] = grid["quarter"].astype(str)
    shown = grid["quarter"].isin(params["quarters"]) if params.get("quarters") else True
    grid["judged"] = grid["quarter_complete"] & shown
    if params.get("baseline_quarters"):
        baseline = grid["quarter"].isin(params["baseline_quarters"])
    elif params.get("quarters"):
        baseline = ~grid["quarter"].isin(params["quarters"])
    else:
        baseline = True
    grid["baseline"] = grid["quarter_complete"] & baseline
    return grid[GRID_COLUMNS]


GRID_COLUMNS = [
    "org", "quarter", "quarter_start", "quarter_end", "weeks_in_quarter", "week_of_quarter", "week_start",
    "week_end", "working_days", "quarter_complete", "judged", "baseline",
]


def _data_starts(dataset: Dataset, orgs: Sequence[str] | None = None) -> dict[str, pd.Timestamp]:
    starts = data_starts(dataset)
    return {org: day for org, day in starts.items() if not orgs or org in orgs}


# -- 3. weekly series ------------------------------------------------------------------------------
def request_features(dataset: Dataset, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Classified requests with the fiscal quarter and week of their creation.

    Returns the canonical requests (of ``params["orgs"]``) with the columns of
    :func:`classify_requests` plus ``quarter``, ``quarter_start``,
    ``quarter_end``, ``week_of_quarter`` and ``weeks_in_quarter`` by each
    organisation's calendar.
    """
    params = {**defaults(), **(params or {})}
    requests = dataset.requests
    if params.get("orgs"):
        requests = requests[requests["org"].isin(params["orgs"])]
    classified = classify_requests(requests, params)
    calendars = {org: dataset.calendar(org) for org in classified["org"].unique()}
    annotated = annotate_by_org(classified, "created_at", calendars)
    annotated = annotated.drop(
        columns=["fiscal_year", "quarter_num", "day_of_quarter", "days_in_quarter", "month_of_quarter",
                 "days_to_quarter_end", "quarter_elapsed"]
    )
    annotated["quarter"] = annotated["quarter"].astype(str)
    for column in ("week_of_quarter", "weeks_in_quarter"):
        annotated[column] = annotated[column].astype(int)
    return annotated.reset_index(drop=True)


def weekly_requests(
    requests: pd.DataFrame,
    grid: pd.DataFrame,
    *,
    by: Sequence[str] | None = None,
    as_of: Any = None,
    opportunities: pd.DataFrame | None = None,
    calendars: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Weekly request volumes, shares and backlog per organisation × quarter × week (× ``by``).

    Parameters
    ----------
    requests:
        Output of :func:`request_features`.
    grid:
        Output of :func:`week_grid` (weeks without requests get zeros).
    by:
        Extra grouping columns of ``requests``, e.g. ``["team"]`` or
        ``["request_type"]``.
    as_of:
        When the data end: backlog is counted at ``min(week end, as_of)``;
        needed for ``backlog``.
    opportunities, calendars:
        Canonical opportunities and ``{org: calendar}``: adds ``won_deals``
        (deals closed won that week) and ``unplanned_per_won_deal`` (only
        without ``by``).

    Returns
    -------
    The grid columns plus counts ``requests`` and one per
    :data:`FLAG_COLUMNS` (``unplanned``, ``planned``, ``urgent``,
    ``exception``, ``after_hours``, ``weekend``), their shares of all
    requests (``unplanned_share``, ...), ``handling_hours``,
    ``unplanned_per_day`` and, with ``as_of``, ``backlog`` (requests open at
    the end of the week).
    """
    by = list(by or [])
    keys = ["org", "quarter", "week_of_quarter"]
    flags = {name: ("is_" + name, "sum") for name in FLAG_COLUMNS}
    requests = requests.assign(handling_hours=pd.to_numeric(requests["handling_hours"], errors="coerce"))
    counts = (
        requests.groupby(keys + by, observed=True, dropna=False)
        .agg(requests=("request_id", "size"), handling_hours=("handling_hours", "sum"), **flags)
        .reset_index()
    )
    if by:
        levels = requests[["org"] + by].drop_duplicates()
        frame = grid.merge(levels, on="org", how="inner")
    else:
        frame = grid.copy()
    frame = frame.merge(counts, on=keys + by, how="left")
    for column in ("requests", "handling_hours", *FLAG_COLUMNS):
        frame[column] = frame[column].fillna(0)
        if column != "handling_hours":
            frame[column] = frame[column].astype(int)
    with np.errstate(divide="ignore", invalid="ignore"):
        for name in FLAG_COLUMNS:
            frame[name + "_share"] = np.where(frame["requests"] > 0, frame[name] / frame["requests"], np.nan)
        frame["unplanned_per_day"] = np.where(
            frame["working_days"] > 0, frame["unplanned"] / frame["working_days"], np.nan
        )
    if as_of is not None:
        frame["backlog"] = backlog_at(requests, frame, as_of=as_of, by=by)
    if opportunities is not None and not by:
        won = won_deals_by_week(opportunities, calendars or {}, as_of=as_of)
        frame = frame.merge(won, on=keys, how="left")
        frame["won_deals"] = frame["won_deals"].fillna(0).astype(int)
        with np.errstate(divide="ignore", invalid="ignore"):
            frame["unplanned_per_won_deal"] = np.where(
                frame["won_deals"] > 0, frame["unplanned"] / frame["won_deals"], np.nan
            )
    return frame.sort_values(["org"] + by + ["quarter_start", "week_of_quarter"]).reset_index(drop=True)


def backlog_at(
    requests: pd.DataFrame,
    weeks: pd.DataFrame,
    *,
    as_of: Any,
    by: Sequence[str] | None = None,
    created_column: str = "created_at",
    resolved_column: str = "resolved_at",
) -> np.ndarray:
    """Requests open at the end of each week (created by then, not resolved by then).

    Parameters
    ----------
    requests:
        Requests with ``org`` (and ``by``) columns and creation / resolution
        times (no resolution time = still open).
    weeks:
        Rows with ``org`` (and ``by``) and ``week_end`` (the week's last day);
        the backlog is counted at the end of that day, or at ``as_of`` if
        earlier.

    Returns
    -------
    One backlog count per row of ``weeks``.
    """
    keys = ["org"] + list(by or [])
    moment = np.minimum(
        (pd.to_datetime(weeks["week_end"]) + pd.Timedelta(days=1)).to_numpy(dtype="datetime64[ns]"),
        np.datetime64(pd.Timestamp(as_of).to_datetime64(), "ns"),
    )
    out = np.zeros(len(weeks), dtype=int)
    # One code per series, shared by the weeks and the requests.
    both = pd.concat([weeks[keys], requests[keys]], ignore_index=True)
    codes = pd.MultiIndex.from_frame(both.astype("string").fillna("\x00")).factorize()[0]
    week_codes, request_codes = codes[: len(weeks)], codes[len(weeks):]
    created_all = requests[created_column].to_numpy(dtype="datetime64[ns]")
    resolved_all = requests[resolved_column].to_numpy(dtype="datetime64[ns]")
    for code in np.unique(week_codes):
        pos = np.flatnonzero(week_codes == code)
        mine = request_codes == code
        created = np.sort(created_all[mine])
        resolved = resolved_all[mine]
        resolved = np.sort(resolved[~np.isnat(resolved)])
        # Created by t (t included) minus resolved by t.
        out[pos] = np.searchsorted(created, moment[pos], side="right") - np.searchsorted(
            resolved, moment[pos], side="right"
        )
    return out


def won_deals_by_week(
    opportunities: pd.DataFrame, calendars: Mapping[str, Any], *, as_of: Any = None
) -> pd.DataFrame:
    """Deals closed won per organisation × fiscal quarter × week of their close date.

    Returns columns ``org``, ``quarter``, ``week_of_quarter``, ``won_deals``.
    """
    won = opportunities[opportunities["is_won"].astype(bool) & opportunities["close_date"].notna()]
    if as_of is not None:
        won = won[won["close_date"] <= pd.Timestamp(as_of)]
    if won.empty:
        return pd.DataFrame({"org": [], "quarter": [], "week_of_quarter": [], "won_deals": []}).astype(
            {"org": str, "quarter": str, "week_of_quarter": int, "won_deals": int}
        )
    annotated = annotate_by_org(won[["org", "close_date"]], "close_date", calendars)
    annotated["quarter"] = annotated["quarter"].astype(str)
    annotated["week_of_quarter"] = annotated["week_of_quarter"].astype(int)
    return annotated.groupby(["org", "quarter", "week_of_quarter"]).size().rename("won_deals").reset_index()


def share_by_week(
    weekly: pd.DataFrame,
    *,
    events: str,
    total: str = "requests",
    by: Sequence[str] = ("org", "role"),
    ci_level: float = 0.95,
) -> pd.DataFrame:
    """Pooled share of ``events`` among ``total`` per week of quarter, with Wilson intervals.

    Parameters
    ----------
    weekly:
        Output of :func:`weekly_requests`, typically with a ``role`` column
        (e.g. the quarter label, or ``"baseline"`` for pooled calm quarters).
    by:
        Columns to keep apart; weeks are pooled over everything else.

    Returns
    -------
    One row per ``by`` × ``week_of_quarter``: ``events``, ``total``,
    ``share``, ``ci_low``, ``ci_high``.
    """
    pooled = (
        weekly.groupby(list(by) + ["week_of_quarter"], observed=True)[[events, total]].sum().reset_index()
        .rename(columns={events: "events", total: "total"})
    )
    pooled = pooled[pooled["total"] > 0].reset_index(drop=True)
    pooled["share"] = pooled["events"] / pooled["total"]
    low, high = proportion_confint(pooled["events"], pooled["total"], alpha=1 - ci_level, method="wilson")
    pooled["ci_low"], pooled["ci_high"] = np.asarray(low), np.asarray(high)
    return pooled


# -- what the effort was spent on -----------------------------------------------------------------
def deal_links(
    requests: pd.DataFrame,
    opportunities: pd.DataFrame,
    params: Mapping[str, Any] | None = None,
    *,
    opportunity_column: str = "opportunity_id",
    history: pd.DataFrame | None = None,
    signals: Mapping[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """Each request with the fate of the deal it was raised for.

    Returns a copy of ``requests`` with ``deal_outcome`` (``won`` / ``lost`` /
    ``open`` / ``no deal``), ``deal_lost`` (1.0 lost, 0.0 won, NaN while the
    deal is open — censored, its fate unknown — or without a deal) and
    ``deal_unqualified`` (1.0 / 0.0 by the qualification rule at creation,
    :func:`quarterpanic.analysis.rule.qualified_at_creation` with
    ``params["qualification_rule"]`` and ``params["qualification_overrides"]``;
    NaN without a deal). With ``signals`` (``{org: qualification signals}``,
    :func:`quarterpanic.analysis.inputs.qualification_signals`) and ``history``
    the rule uses those signals
    (:func:`quarterpanic.analysis.rule.qualified_by_signals`), and deals of an
    organisation without any are NaN: their qualification is not measured.
    """
    opps = opportunities[["org", "opportunity_id", "is_closed", "is_won"]].copy()
    closed, won = opps["is_closed"].astype(bool), opps["is_won"].astype(bool)
    opps["deal_outcome"] = np.where(won, "won", np.where(closed, "lost", "open"))
    params = {**defaults(), **(params or {})}
    if signals is None:
        rule, overrides = params["qualification_rule"], params["qualification_overrides"]
        qualified = qualified_at_creation(opportunities, rule, overrides)
        opps["deal_unqualified"] = (~qualified).astype(float)
    else:
        qualified = qualified_by_signals(opportunities, _NO_HISTORY if history is None else history,
                                         signals, params["qualification_rule"], params["qualification_overrides"])
        opps["deal_unqualified"] = (~qualified).astype("Float64").astype(float)
    opps = opps.drop(columns=["is_closed", "is_won"]).drop_duplicates(["org", "opportunity_id"])
    opps = opps.rename(columns={"opportunity_id": opportunity_column})
    out = requests.merge(opps, on=["org", opportunity_column], how="left")
    out.index = requests.index
    out["deal_outcome"] = out["deal_outcome"].fillna("no deal").astype(str)
    out["deal_lost"] = np.where(out["deal_outcome"] == "lost", 1.0, np.where(out["deal_outcome"] == "won", 0.0, np.nan))
    out["deal_unqualified"] = out["deal_unqualified"].astype(float)
    return out


def wasted_effort(linked: pd.DataFrame, by: Sequence[str] = ("org", "quarter", "window")) -> pd.DataFrame:
    """How much sales-ops effort went to deals that were lost or unqualified, per group.

    Parameters
    ----------
    linked:
        Output of :func:`deal_links`.

    Returns
    -------
    One row per group: ``requests``, ``deal_requests`` (linked to a deal),
    ``on_won``, ``on_lost``, ``on_open``, ``lost_share`` (on lost deals among
    requests on closed deals: open deals are censored, not counted either way),
    ``unqualified_share`` (among deal requests), and the same for handling
    hours where recorded (``hours``, ``lost_hours_share``,
    ``unqualified_hours_share``).
    """
    data = linked.assign(
        _deal=linked["deal_outcome"] != "no deal",
        _won=linked["deal_outcome"] == "won",
        _lost=linked["deal_outcome"] == "lost",
        _open=linked["deal_outcome"] == "open",
        _hours=pd.to_numeric(linked["handling_hours"], errors="coerce"),
    )
    data["_closed_hours"] = data["_hours"].where(data["_won"] | data["_lost"])
    data["_lost_hours"] = data["_hours"].where(data["_lost"])
    data["_deal_hours"] = data["_hours"].where(data["_deal"] & data["deal_unqualified"].notna())
    data["_unq_hours"] = data["_hours"].where(data["deal_unqualified"] == 1)
    data["_unq"] = data["deal_unqualified"]
    table = (
        data.groupby(list(by), observed=True, dropna=False)
        .agg(
            requests=("request_id", "size"), deal_requests=("_deal", "sum"), on_won=("_won", "sum"),
            on_lost=("_lost", "sum"), on_open=("_open", "sum"), unqualified_share=("_unq", "mean"),
            hours=("_hours", "sum"), closed_hours=("_closed_hours", "sum"), lost_hours=("_lost_hours", "sum"),
            deal_hours=("_deal_hours", "sum"), unqualified_hours=("_unq_hours", "sum"),
        )
        .reset_index()
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        closed = table["on_won"] + table["on_lost"]
        table["lost_share"] = np.where(closed > 0, table["on_lost"] / closed, np.nan)
        table["lost_hours_share"] = np.where(table["closed_hours"] > 0, table["lost_hours"] / table["closed_hours"], np.nan)
        table["unqualified_hours_share"] = np.where(
            table["deal_hours"] > 0, table["unqualified_hours"] / table["deal_hours"], np.nan
        )
    return table.drop(columns=["closed_hours", "lost_hours", "deal_hours", "unqualified_hours"])
