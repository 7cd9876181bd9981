"""Pipeline overview tables: what the data covers, what was read, how bookings and the funnel look.

Every function takes canonical tables (see :mod:`quarterpanic.ingest.schemas`) and
each organisation's fiscal calendar, and returns a tidy DataFrame keyed by
``org`` × fiscal ``quarter`` (× ``week_of_quarter``) that a chart helper in
:mod:`quarterpanic.report.plots` can draw directly:

* :func:`coverage_by_source`, :func:`quarter_coverage` — date spans, rows per
  table, complete / open / partial / warm-up quarters, and
  :func:`select_quarters` to keep the complete ones;
* :func:`row_accounting`, :func:`accounting_totals`, :func:`top_reject_reasons`
  — the loader's row accounting and the commonest reasons rows were rejected;
* :func:`bookings_by_week`, :func:`month3_share` — won amount by week of the
  quarter it closed in, the cumulative "hockey stick" and the share booked
  in the quarter's last month, with a bootstrap confidence interval;
* :func:`funnel_counts` — leads and opportunities created in a quarter and how
  far they got;
* :func:`pipeline_created_by_week`, :func:`pipeline_month3_share` — new
  pipeline by week of quarter and the share created in the last month.

The ``*_headline`` functions turn those tables into chart titles that state
the finding ("Globex books 64% of each quarter in its last month").
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from quarterpanic.calendar import FiscalCalendar, annotate_by_org

# The date that places a row of each canonical table in a fiscal quarter.
TABLE_DATES = {
    "opportunities": "created_at",
    "history": "changed_at",
    "leads": "created_at",
    "requests": "created_at",
}
COMPLETE = "complete"
OPEN = "open"
PARTIAL = "partial"
WARMUP = "warm-up"
ACCOUNTING_COUNTS = ["read", "accepted", "rejected", "ignored"]
Calendars = Mapping[str, FiscalCalendar | Mapping[str, Any] | None]


# -- coverage --------------------------------------------------------------------------------------
def _dated_rows(tables: Mapping[str, pd.DataFrame], calendars: Calendars) -> pd.DataFrame:
    """One row per record of every table: org, table, source_file, date and its fiscal quarter."""
    frames = []
    for table, date_column in TABLE_DATES.items():
        frame = tables.get(table)
        if frame is None or frame.empty:
            continue
        frames.append(
            pd.DataFrame(
                {
                    "org": frame["org"].astype(str),
                    "table": table,
                    "source_file": frame["source_file"].astype(str) if "source_file" in frame else "",
                    "date": pd.to_datetime(frame[date_column]),
                }
            )
        )
    columns = ["org", "table", "source_file", "date"]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    rows = rows[rows["date"].notna()].reset_index(drop=True)
    rows["date"] = rows["date"].astype("datetime64[ns]")
    return annotate_by_org(rows, "date", calendars)


def coverage_by_source(tables: Mapping[str, pd.DataFrame], calendars: Calendars) -> pd.DataFrame:
    """Date span and size of every export file, per organisation and table.

    Parameters
    ----------
    tables:
        Canonical tables by name (``Dataset.tables()``); each needs ``org``,
        ``source_file`` and its date column (:data:`TABLE_DATES`).
    calendars:
        Organisation → fiscal calendar (or calendar spec).

    Returns
    -------
    DataFrame with ``org, table, source_file, rows, first_date, last_date,
    first_quarter, last_quarter, quarters`` (number of fiscal quarters with at
    least one record), one row per file, sorted by org, table and file.
    """
    rows = _dated_rows(tables, calendars)
    out = (
        rows.groupby(["org", "table", "source_file"], as_index=False)
        .agg(
            rows=("date", "size"),
            first_date=("date", "min"),
            last_date=("date", "max"),
            first_quarter=("quarter", "min"),
            last_quarter=("quarter", "max"),
            quarters=("quarter", "nunique"),
        )
        .sort_values(["org", "table", "source_file"], ignore_index=True)
    )
    return out


def quarter_coverage(
    tables: Mapping[str, pd.DataFrame],
    calendars: Calendars,
    as_of: Any = None,
    *,
    start_tolerance_days: int = 7,
    warmup_days: float | None = None,
) -> pd.DataFrame:
    """Rows per table in every fiscal quarter of every organisation, with the quarter's status.

    Parameters
    ----------
    tables:
        Canonical tables by name (``Dataset.tables()``).
    calendars:
        Organisation → fiscal calendar (or calendar spec).
    as_of:
        The moment the data describes (``Dataset.as_of``); defaults to the
        latest record. The quarter containing it is ``open``.
    start_tolerance_days:
        A quarter whose organisation has no record in its first
        ``start_tolerance_days`` days and none before is ``partial``: the
        export starts inside it, so its weekly shape is not comparable.
    warmup_days:
        A quarter starting less than this many days after the organisation's
        first record is ``warm-up``: the exports hold no deal created before
        that record, so the quarter misses the bookings of longer deals and
        looks more back-loaded than it was. ``None`` uses the organisation's
        median won-deal cycle (close date - creation); ``0`` turns it off.

    Returns
    -------
    Long frame ``org, quarter, quarter_start, quarter_end, status, label,
    table, rows``: every quarter from each organisation's first record to
    ``as_of`` × the four tables, zero where a table has no rows. ``status`` is
    ``complete``, ``open``, ``partial`` or ``warm-up``; ``label`` is the
    quarter label with the status appended when not complete
    (``FY2026-Q1 (open)``).
    """
    rows = _dated_rows(tables, calendars)
    columns = ["org", "quarter", "quarter_start", "quarter_end", "status", "label", "table", "rows"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    as_of = pd.Timestamp(as_of) if as_of is not None else rows["date"].max()
    spans = rows.groupby("org")["date"].agg(["min", "max"])
    frames = []
    for org, span in spans.iterrows():
        calendar = FiscalCalendar.from_spec(calendars.get(org))
        quarters = calendar.quarters(span["min"], max(span["max"], as_of.normalize()))
        quarters = quarters[quarters["quarter_start"] <= as_of]
        quarters.insert(0, "org", org)
        quarters["first_record"] = span["min"]
        frames.append(quarters)
    grid = pd.concat(frames, ignore_index=True)
    day = as_of.normalize()
    is_open = (grid["quarter_start"] <= day) & (day <= grid["quarter_end"])
    starts_late = grid["first_record"] > grid["quarter_start"] + pd.Timedelta(days=start_tolerance_days)
    if warmup_days is None:
        cycle = grid["org"].map(won_cycle_days(tables.get("opportunities"))).fillna(0.0)
    else:
        cycle = pd.Series(float(warmup_days), index=grid.index)
    warming_up = grid["quarter_start"] < grid["first_record"].dt.normalize() + pd.to_timedelta(cycle, unit="D")
    grid["status"] = np.select([is_open, starts_late, warming_up], [OPEN, PARTIAL, WARMUP], default=COMPLETE)
    grid = grid.merge(pd.DataFrame({"table": list(TABLE_DATES)}), how="cross")
    counts = rows.groupby(["org", "quarter", "table"]).size().rename("rows").reset_index()
    counts["quarter"] = counts["quarter"].astype(str)
    grid["quarter"] = grid["quarter"].astype(str)
    out = grid.merge(counts, on=["org", "quarter", "table"], how="left")
    out["rows"] = out["rows"].fillna(0).astype(int)
    out["label"] = out["quarter"] + np.where(out["status"] == COMPLETE, "", " (" + out["status"] + ")")
    return out[columns].sort_values(["org", "quarter_start", "table"], ignore_index=True)


def won_cycle_days(opportunities: pd.DataFrame | None) -> pd.Series:
    """Median days from creation to close of each organisation's won deals (org → days)."""
    if opportunities is None or opportunities.empty:
        return pd.Series(dtype=float)
    won = opportunities[opportunities["is_won"].astype(bool)]
    days = (won["close_date"] - won["created_at"]).dt.total_seconds() / 86400
    return days.groupby(won["org"]).median()


def quarter_status(coverage: pd.DataFrame) -> pd.DataFrame:
    """One row per ``org, quarter`` with ``quarter_start, quarter_end, status`` (from :func:`quarter_coverage`)."""
    keys = ["org", "quarter", "quarter_start", "quarter_end", "status"]
    return coverage[keys].drop_duplicates(["org", "quarter"]).reset_index(drop=True)


def select_quarters(
    frame: pd.DataFrame, coverage: pd.DataFrame, quarters: Sequence[str] | None = None
) -> pd.DataFrame:
    """Rows of ``frame`` (keyed by ``org, quarter``) in the quarters to show.

    ``quarters=None`` keeps each organisation's complete quarters (the
    ``quarters`` parameter's default); a list keeps those labels, whatever
    their status.
    """
    return frame[_shown(frame["org"], frame["quarter"], coverage, quarters)].reset_index(drop=True)


def restrict_to_quarters(
    records: pd.DataFrame,
    date_column: str,
    calendars: Calendars,
    coverage: pd.DataFrame,
    quarters: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Rows of a canonical table whose ``date_column`` falls in a shown quarter (see :func:`select_quarters`)."""
    features = annotate_by_org(records[["org", date_column]].reset_index(drop=True), date_column, calendars)
    keep = _shown(features["org"], features["quarter"], coverage, quarters).to_numpy()
    return records[keep].reset_index(drop=True)


def _shown(org: pd.Series, quarter: pd.Series, coverage: pd.DataFrame, quarters: Sequence[str] | None) -> pd.Series:
    labels = quarter.astype(object).where(quarter.notna(), "").astype(str)
    if quarters:
        return labels.isin([str(q) for q in quarters])
    status = quarter_status(coverage)
    complete = status.loc[status["status"] == COMPLETE, ["org", "quarter"]].astype(str)
    keys = pd.MultiIndex.from_arrays([org.astype(str), labels])
    return pd.Series(keys.isin(pd.MultiIndex.from_frame(complete)), index=org.index)


# -- row accounting --------------------------------------------------------------------------------
def row_accounting(accounting: pd.DataFrame, by: Sequence[str] = ("org", "table", "file")) -> pd.DataFrame:
    """Rows read, accepted and rejected, summed ``by`` the given columns.

    Parameters
    ----------
    accounting:
        The loader's accounting (``file, org, table, profile, read, accepted,
        rejected, ignored``; one row per file).
    by:
        Columns to group by; ``()`` gives one total row.

    Returns
    -------
    ``by`` columns plus ``read, accepted, rejected, ignored, rejected_share``.
    """
    by = [c for c in by if c in accounting.columns]
    counts = accounting.reindex(columns=ACCOUNTING_COUNTS).apply(pd.to_numeric).fillna(0).astype(int)
    counts = pd.concat([accounting[by], counts], axis=1)
    out = counts.groupby(by, as_index=False)[ACCOUNTING_COUNTS].sum() if by else counts[ACCOUNTING_COUNTS].sum().to_frame().T
    out = out.reset_index(drop=True)
    out["rejected_share"] = out["rejected"] / out["read"].where(out["read"] > 0)
    return out


def accounting_totals(accounting: pd.DataFrame) -> dict[str, int]:
    """``{"files", "read", "accepted", "rejected", "ignored"}`` over every file of the accounting."""
    total = row_accounting(accounting, by=()) if len(accounting) else None
    counts = {c: int(total[c].iloc[0]) if total is not None else 0 for c in ACCOUNTING_COUNTS}
    return {"files": int(len(accounting)), **counts}


def top_reject_reasons(rejects: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """The commonest reasons source rows were rejected.

    Parameters
    ----------
    rejects:
        The loader's rejects (``table, file, row, column, value, reason``; one
        row per rejected source row, its ``reason`` naming the column, e.g.
        ``"close_date: not a date"``).
    n:
        How many reasons to keep.

    Returns
    -------
    ``table, reason, rows`` (distinct source rows), ``files`` (files
    affected) and ``example`` (one offending value, raw CRM text: escape it
    before showing it as HTML), most rows first.
    """
    columns = ["table", "reason", "rows", "files", "example"]
    if rejects is None or rejects.empty:
        return pd.DataFrame(columns=columns)
    keys = ["table", "reason"]
    frame = rejects.drop_duplicates(["table", "file", "row", "reason"]).copy()
    frame[keys] = frame[keys].astype(object).fillna("").astype(str)
    out = frame.groupby(keys, as_index=False).agg(
        rows=("row", "size"), files=("file", "nunique"), example=("value", "first")
    )
    out = out.sort_values(["rows", "table", "reason"], ascending=[False, True, True], ignore_index=True)
    return out.head(n)[columns]


def relative_paths(paths: pd.Series, root: str | Path) -> pd.Series:
    """File paths relative to ``root`` (the data folder), for display; paths outside it unchanged."""
    root = Path(root).resolve()
    shown = {}
    for path in paths.astype(str).unique():
        try:
            shown[path] = str(Path(path).resolve().relative_to(root))
        except ValueError:
            shown[path] = path
    return paths.astype(str).map(shown)


def accounting_for_orgs(
    accounting: pd.DataFrame, rejects: pd.DataFrame, orgs: Sequence[str] | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The accounting rows and rejects of some organisations' files (all when ``orgs`` is empty)."""
    if not orgs or accounting is None or "org" not in accounting:
        return accounting, rejects
    accounting = accounting[accounting["org"].isin(list(orgs))].reset_index(drop=True)
    if rejects is not None and len(rejects):
        rejects = rejects[rejects["file"].isin(set(accounting["file"]))].reset_index(drop=True)
    return accounting, rejects


# -- bookings by week of quarter -------------------------------------------------------------------
def _weekly(
    records: pd.DataFrame, date_column: str, calendars: Calendars, *, count_name: str, amount_name: str
) -> pd.DataFrame:
    """Counts and amounts per org × quarter × week, every week of each quarter present (zero-filled)."""
    frame = records[["org", date_column, "amount"]].copy()
    frame["amount"] = pd.to_numeric(frame["amount"]).fillna(0.0).astype(float)
    frame = annotate_by_org(frame.reset_index(drop=True), date_column, calendars)
    frame = frame[frame["quarter"].notna()]
    frame["quarter"] = frame["quarter"].astype(str)
    columns = ["org", "quarter", "week_of_quarter", "weeks_in_quarter", count_name, amount_name, "share",
               "cumulative_share"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    weekly = frame.groupby(["org", "quarter", "week_of_quarter"]).agg(
        **{count_name: ("amount", "size"), amount_name: ("amount", "sum")}
    )
    quarters = frame.groupby(["org", "quarter"], as_index=False).agg(
        weeks_in_quarter=("weeks_in_quarter", "max"), quarter_start=("quarter_start", "min")
    )
    grid = quarters.loc[quarters.index.repeat(quarters["weeks_in_quarter"].astype(int))].reset_index(drop=True)
    grid["week_of_quarter"] = grid.groupby(["org", "quarter"]).cumcount() + 1
    out = grid.merge(weekly.reset_index().astype({"week_of_quarter": int}), on=["org", "quarter", "week_of_quarter"],
                     how="left")
    out[count_name] = out[count_name].fillna(0).astype(int)
    out[amount_name] = out[amount_name].fillna(0.0)
    totals = out.groupby(["org", "quarter"])[amount_name].transform("sum")
    out["share"] = out[amount_name] / totals.where(totals > 0)
    out["cumulative_share"] = out.groupby(["org", "quarter"])["share"].cumsum()
    out = out.sort_values(["org", "quarter_start", "week_of_quarter"], ignore_index=True)
    return out[columns]


def bookings_by_week(opportunities: pd.DataFrame, calendars: Calendars) -> pd.DataFrame:
    """Won amount by the week of the fiscal quarter each deal closed in.

    Parameters
    ----------
    opportunities:
        Canonical opportunities (``org, is_won, close_date, amount``). Won
        deals without an amount count as deals with amount 0.
    calendars:
        Organisation → fiscal calendar (or calendar spec).

    Returns
    -------
    ``org, quarter, week_of_quarter, weeks_in_quarter, won_deals,
    won_amount, share`` (of the quarter's won amount) and
    ``cumulative_share`` (the hockey stick: reaches 1 in the last week), one
    row per week of every quarter with at least one won deal.
    """
    won = opportunities[opportunities["is_won"].astype(bool) & opportunities["close_date"].notna()]
    return _weekly(won, "close_date", calendars, count_name="won_deals", amount_name="won_amount")


def pipeline_created_by_week(opportunities: pd.DataFrame, calendars: Calendars) -> pd.DataFrame:
    """Opportunities (pipeline) created by week of fiscal quarter.

    Returns
    -------
    ``org, quarter, week_of_quarter, weeks_in_quarter, created,
    created_amount, share`` (of the quarter's created amount),
    ``cumulative_share``; weeks without new pipeline are zero.
    """
    return _weekly(opportunities, "created_at", calendars, count_name="created", amount_name="created_amount")


def even_month3_share(calendars: Calendars, quarters: pd.DataFrame) -> pd.DataFrame:
    """The month-3 share an evenly paced quarter would have: days in month 3 / days in the quarter.

    Parameters
    ----------
    quarters:
        Frame with ``org, quarter`` (labels from each org's calendar).

    Returns
    -------
    ``org, quarter, even_share`` (1/3 or close to it in month-based calendars,
    5/13 in a 4-4-5 calendar).
    """
    keys = quarters[["org", "quarter"]].astype(str).drop_duplicates()
    frames = []
    for org, labels in keys.groupby("org")["quarter"]:
        calendar = FiscalCalendar.from_spec(calendars.get(org))
        years = labels.str.slice(2, 6).astype(int)
        days = pd.Series(pd.date_range(f"{years.min() - 2}-01-01", f"{years.max() + 1}-12-31", freq="D"))
        features = calendar.annotate(days)
        features = features[features["quarter"].astype(str).isin(set(labels))]
        share = (features["month_of_quarter"] == 3).groupby(features["quarter"].astype(str)).mean()
        frames.append(pd.DataFrame({"org": org, "quarter": share.index, "even_share": share.to_numpy(dtype=float)}))
    if not frames:
        return pd.DataFrame(columns=["org", "quarter", "even_share"])
    return pd.concat(frames, ignore_index=True)


def month3_share(
    opportunities: pd.DataFrame,
    calendars: Calendars,
    *,
    by: Sequence[str] = ("org", "quarter"),
    weight: str = "amount",
    n_boot: int = 1000,
    ci_level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Share of each quarter's bookings that closed in the quarter's last fiscal month.

    The estimate is the ratio (won amount closed in month 3) / (won amount);
    its interval is a percentile bootstrap over deals (Poisson weights, so all
    groups are resampled at once), which respects that a few large deals can
    carry a quarter. This is the quantity the sample generator records in
    ``truth.json`` as ``month3_bookings_share``.

    Parameters
    ----------
    opportunities:
        Canonical opportunities (``org, is_won, close_date, amount``).
    calendars:
        Organisation → fiscal calendar (or calendar spec).
    by:
        Grouping of the won deals: ``("org", "quarter")`` for one estimate
        per quarter, ``("org",)`` for one pooled estimate per organisation.
    weight:
        ``"amount"`` (bookings) or ``"deals"`` (count of won deals).
    n_boot, ci_level, seed:
        Bootstrap replicates, interval level and random seed.

    Returns
    -------
    ``by`` columns plus ``won_deals, month3_deals, won_amount,
    month3_amount, estimate, ci_low, ci_high, ci_level, even_share`` (the share an
    evenly paced quarter would have; averaged over quarters when pooled) and
    ``back_loaded`` (the whole interval lies above ``even_share``).
    """
    won = opportunities[opportunities["is_won"].astype(bool)]
    out = _month3_ratio(won, "close_date", calendars, by=by, weight=weight, n_boot=n_boot, ci_level=ci_level, seed=seed)
    return out.rename(columns={"records": "won_deals", "month3_records": "month3_deals", "amount": "won_amount"})


def pipeline_month3_share(
    opportunities: pd.DataFrame,
    calendars: Calendars,
    *,
    by: Sequence[str] = ("org",),
    weight: str = "amount",
    n_boot: int = 1000,
    ci_level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Share of new pipeline created in the quarter's last fiscal month (see :func:`month3_share`).

    Returns
    -------
    ``by`` columns plus ``created, month3_created, created_amount,
    month3_amount, estimate, ci_low, ci_high, ci_level, even_share, back_loaded``;
    pooled over quarters per organisation by default.
    """
    out = _month3_ratio(opportunities, "created_at", calendars, by=by, weight=weight, n_boot=n_boot, ci_level=ci_level,
                        seed=seed)
    return out.rename(columns={"records": "created", "month3_records": "month3_created", "amount": "created_amount"})


def _month3_ratio(
    records: pd.DataFrame,
    date_column: str,
    calendars: Calendars,
    *,
    by: Sequence[str],
    weight: str,
    n_boot: int,
    ci_level: float,
    seed: int,
) -> pd.DataFrame:
    """Share of ``amount`` (or of records) dated in month 3 of its quarter, per ``by`` group, with bootstrap CI."""
    if weight not in ("amount", "deals"):
        raise ValueError(f"weight must be 'amount' or 'deals', got {weight!r}")
    by = list(by)
    columns = by + ["records", "month3_records", "amount", "month3_amount", "estimate", "ci_low", "ci_high",
                    "ci_level", "even_share", "back_loaded"]
    frame = records[["org", date_column, "amount"]].reset_index(drop=True)
    frame["amount"] = pd.to_numeric(frame["amount"]).fillna(0.0).astype(float)
    frame = annotate_by_org(frame, date_column, calendars)
    frame = frame[frame["quarter"].notna()].reset_index(drop=True)
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame["quarter"] = frame["quarter"].astype(str)
    frame["in_month3"] = (frame["month_of_quarter"] == 3).astype(bool)
    frame["month3_amount"] = frame["amount"].where(frame["in_month3"], 0.0)
    frame = frame.sort_values(by, ignore_index=True)
    groups = frame.groupby(by, sort=False)
    codes = groups.ngroup().to_numpy()
    out = groups.agg(
        records=("amount", "size"),
        month3_records=("in_month3", "sum"),
        amount=("amount", "sum"),
        month3_amount=("month3_amount", "sum"),
    ).reset_index()
    value = frame["amount"].to_numpy() if weight == "amount" else np.ones(len(frame))
    numerator = value * frame["in_month3"].to_numpy()
    out["estimate"] = _group_sums(numerator[:, None], codes)[:, 0] / _positive(_group_sums(value[:, None], codes)[:, 0])
    out["ci_low"], out["ci_high"] = _bootstrap_ratio_ci(numerator, value, codes, n_boot=n_boot, ci=ci_level, seed=seed)
    out["ci_level"] = float(ci_level)
    even = even_month3_share(calendars, frame[["org", "quarter"]])
    even = frame[list(dict.fromkeys(["org", "quarter"] + by))].drop_duplicates().merge(
        even, on=["org", "quarter"], how="left"
    )
    out = out.merge(even.groupby(by, as_index=False)["even_share"].mean(), on=by, how="left")
    out["back_loaded"] = out["ci_low"] > out["even_share"]
    if "quarter" in by:
        starts = frame.groupby(by)["quarter_start"].min().rename("_start").reset_index()
        out = out.merge(starts, on=by).sort_values(["org", "_start"] if "org" in by else ["_start"])
    return out[columns].reset_index(drop=True)


def _positive(values: np.ndarray) -> np.ndarray:
    return np.where(values > 0, values, np.nan)


def _group_sums(values: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Column sums of ``values`` (rows × k) per group code (codes sorted, 0..G-1, none empty)."""
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    return np.add.reduceat(values, starts, axis=0)


def _bootstrap_ratio_ci(
    numerator: np.ndarray, denominator: np.ndarray, codes: np.ndarray, *, n_boot: int, ci: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of sum(numerator)/sum(denominator) per group, resampling rows."""
    rng = np.random.default_rng(seed)
    n_groups = int(codes.max()) + 1
    ratios = np.empty((n_groups, n_boot))
    # Poisson(1) weights resample every group at once; chunks keep the weight matrix small.
    chunk = max(1, min(n_boot, 2_000_000 // max(1, len(codes))))
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        weights = rng.poisson(1.0, size=(len(codes), stop - start))
        top = _group_sums(weights * numerator[:, None], codes)
        bottom = _group_sums(weights * denominator[:, None], codes)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratios[:, start:stop] = np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1.0), np.nan)
    tail = (1 - ci) / 2
    with np.errstate(all="ignore"):
        low = np.nanquantile(ratios, tail, axis=1)
        high = np.nanquantile(ratios, 1 - tail, axis=1)
    return low, high


# -- funnel ----------------------------------------------------------------------------------------
def stage_order(opportunities: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """Each organisation's open-pipeline stages in the order its deals typically reach them.

    Stage names are the CRM's own, so every organisation gets its own list.
    Open stages are those deals leave (an ``old_value`` of a history stage
    change) or sit in while open; stages closed deals end in, and stages no
    deal ever leaves, are closed and left out. Stages are ordered by the
    median number of days from an opportunity's creation to the first time
    it reached the stage.

    Returns
    -------
    ``org, stage, position`` (0-based), sorted by org and position.
    """
    reached = _stages_reached(opportunities, history)
    changes = history[history["field"] == "stage"] if len(history) else history
    open_deals = opportunities[~opportunities["is_closed"].astype(bool)]
    left = pd.concat([
        changes[["org", "old_value"]].rename(columns={"old_value": "stage"}) if len(changes) else None,
        open_deals[["org", "stage"]],
    ]).dropna().astype(str).drop_duplicates()
    closed = opportunities.loc[opportunities["is_closed"].astype(bool), ["org", "stage"]].dropna().astype(str)
    open_keys = pd.MultiIndex.from_frame(left).difference(pd.MultiIndex.from_frame(closed.drop_duplicates()))
    reached = reached[pd.MultiIndex.from_frame(reached[["org", "stage"]].astype(str)).isin(open_keys)]
    order = reached.groupby(["org", "stage"], as_index=False)["days"].median()
    order = order.sort_values(["org", "days", "stage"], kind="stable", ignore_index=True)
    order["position"] = order.groupby("org").cumcount()
    return order[["org", "stage", "position"]]


def _stages_reached(opportunities: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """``org, opportunity_id, stage, days`` (first time reached, days after creation), one row per deal × stage."""
    opps = opportunities[["org", "opportunity_id", "created_at", "stage"]]
    changes = history[history["field"] == "stage"] if len(history) else history
    parts = [opps.assign(days=np.nan)[["org", "opportunity_id", "stage", "days"]]]
    if len(changes):
        changes = changes.merge(opps[["org", "opportunity_id", "created_at"]], on=["org", "opportunity_id"])
        days = (changes["changed_at"] - changes["created_at"]).dt.total_seconds() / 86400
        parts.append(pd.DataFrame({"org": changes["org"], "opportunity_id": changes["opportunity_id"],
                                   "stage": changes["new_value"], "days": days}))
        # The stage a deal was created in is the old value of its first change.
        first = changes.sort_values("changed_at").drop_duplicates(["org", "opportunity_id"])
        parts.append(pd.DataFrame({"org": first["org"], "opportunity_id": first["opportunity_id"],
                                   "stage": first["old_value"], "days": 0.0}))
    reached = pd.concat(parts, ignore_index=True).dropna(subset=["stage"])
    reached["stage"] = reached["stage"].astype(str)
    # A deal whose current stage never appears in its history has sat there since creation.
    reached["days"] = reached["days"].fillna(
        reached.groupby(["org", "opportunity_id"])["days"].transform("max").fillna(0.0)
    )
    return reached.groupby(["org", "opportunity_id", "stage"], as_index=False)["days"].min()


def funnel_counts(
    opportunities: pd.DataFrame,
    leads: pd.DataFrame,
    history: pd.DataFrame,
    calendars: Calendars,
) -> pd.DataFrame:
    """How far what was created in each quarter got, per organisation.

    Cohort counts: leads and opportunities are placed in the quarter they
    were *created* in; later steps count how many of that cohort got there
    (by the data's as-of date, so recent quarters still have open deals).
    Whether a deal was *qualified* is the qualification module's question,
    not this one's.

    Parameters
    ----------
    opportunities, leads, history:
        Canonical tables (history's ``stage`` changes give the stages reached).
    calendars:
        Organisation → fiscal calendar (or calendar spec).

    Returns
    -------
    Long frame ``org, quarter, step_order, step, count``. Steps, in order:
    ``leads created``, ``leads converted``, ``opportunities created``,
    ``reached <stage>`` for each of the organisation's open stages (see
    :func:`stage_order`), ``won``, ``lost``, ``still open``. Every step of an
    organisation is present for each of its quarters (zero when none).
    """
    columns = ["org", "quarter", "step_order", "step", "count"]
    lead_frame = annotate_by_org(leads[["org", "created_at", "converted_at"]].reset_index(drop=True), "created_at",
                                 calendars)
    lead_counts = lead_frame.groupby(["org", "quarter"]).agg(
        **{"leads created": ("created_at", "size"), "leads converted": ("converted_at", "count")}
    )
    opps = opportunities[["org", "opportunity_id", "created_at", "is_closed", "is_won"]].reset_index(drop=True)
    opps = annotate_by_org(opps, "created_at", calendars)
    closed, won = opps["is_closed"].astype(bool), opps["is_won"].astype(bool)
    opp_counts = opps.assign(won=won, lost=closed & ~won, still_open=~closed).groupby(["org", "quarter"]).agg(
        **{"opportunities created": ("opportunity_id", "size"), "won": ("won", "sum"), "lost": ("lost", "sum"),
           "still open": ("still_open", "sum")}
    )
    fixed = pd.concat([lead_counts, opp_counts], axis=1).fillna(0)
    fixed.index = fixed.index.set_names(["org", "quarter"])
    long = fixed.reset_index().melt(id_vars=["org", "quarter"], var_name="step", value_name="count")
    if long.empty:
        return pd.DataFrame(columns=columns)
    first, last = ["leads created", "leads converted", "opportunities created"], ["won", "lost", "still open"]

    stages = stage_order(opportunities, history)
    n_stages = stages.groupby("org")["position"].max().add(1)
    reached = _stages_reached(opportunities, history).merge(stages, on=["org", "stage"])
    reached = reached.merge(opps[["org", "opportunity_id", "quarter"]], on=["org", "opportunity_id"])
    stage_counts = reached.groupby(["org", "quarter", "stage", "position"], as_index=False).size()
    quarters = long[["org", "quarter"]].drop_duplicates()
    stage_grid = quarters.merge(stages, on="org").merge(stage_counts, on=["org", "quarter", "stage", "position"],
                                                        how="left")
    stage_grid["step"] = "reached " + stage_grid["stage"]
    stage_grid["count"] = stage_grid["size"].fillna(0)
    stage_grid["step_order"] = len(first) + stage_grid["position"]

    order = {step: i for i, step in enumerate(first)}
    long["step_order"] = long["step"].map(order)
    after = long["step_order"].isna()
    long.loc[after, "step_order"] = (len(first) + long.loc[after, "org"].map(n_stages).fillna(0)
                                     + long.loc[after, "step"].map({s: i for i, s in enumerate(last)}))
    out = pd.concat([long, stage_grid[["org", "quarter", "step", "count", "step_order"]]], ignore_index=True)
    out = out.dropna(subset=["quarter"])
    out = out.astype({"quarter": str, "step": str, "count": int, "step_order": int})
    return out.sort_values(["org", "quarter", "step_order"], ignore_index=True)[columns]


def funnel_table(funnel: pd.DataFrame) -> pd.DataFrame:
    """:func:`funnel_counts` as a wide table: one row per org × quarter, one column per step, in order.

    A stage another organisation's CRM does not have is empty (``<NA>``), not zero.
    """
    steps = funnel.groupby("step")["step_order"].mean().sort_values(kind="stable").index.tolist()
    for fixed in ("won", "lost", "still open"):
        if fixed in steps:
            steps.append(steps.pop(steps.index(fixed)))
    wide = funnel.pivot_table(index=["org", "quarter"], columns="step", values="count", aggfunc="sum")
    return wide.reindex(columns=steps).astype("Int64")


def funnel_rates(funnel: pd.DataFrame) -> pd.DataFrame:
    """:func:`funnel_counts` pooled over quarters, each step as a share of its cohort.

    Lead steps are shares of ``leads created``, opportunity steps shares of
    ``opportunities created``.

    Returns
    -------
    ``org, step_order, step, count, base, rate``.
    """
    pooled = funnel.groupby(["org", "step_order", "step"], as_index=False)["count"].sum()
    lead_step = pooled["step"].str.startswith("leads ")
    base_step = np.where(lead_step, "leads created", "opportunities created")
    bases = pooled.set_index(["org", "step"])["count"]
    pooled["base"] = bases.reindex(pd.MultiIndex.from_arrays([pooled["org"], base_step])).to_numpy()
    pooled["rate"] = pooled["count"] / pooled["base"].where(pooled["base"] > 0)
    return pooled.sort_values(["org", "step_order"], ignore_index=True)


def weekly_profile(weekly: pd.DataFrame, value: str = "share", *, low: float = 0.1, high: float = 0.9) -> pd.DataFrame:
    """The typical quarter of a weekly table: mean of ``value`` per org × week and its spread across quarters.

    Parameters
    ----------
    weekly:
        :func:`bookings_by_week` or :func:`pipeline_created_by_week` rows.
    value:
        Column to summarise (``share``, ``cumulative_share``, ...).
    low, high:
        Quantiles across quarters drawn as the band.

    Returns
    -------
    ``org, week_of_quarter, mean, low, high, quarters``.
    """
    grouped = weekly.dropna(subset=[value]).groupby(["org", "week_of_quarter"])[value]
    out = pd.DataFrame({
        "mean": grouped.mean(), "low": grouped.quantile(low), "high": grouped.quantile(high),
        "quarters": grouped.size(),
    }).reset_index()
    return out
