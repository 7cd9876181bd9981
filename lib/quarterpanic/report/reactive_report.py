"""Charts, headlines and key figures of the reactive order-taking notebook.

Each ``plot_*`` function takes a :class:`quarterpanic.analysis.reactive.ReactiveAnalysis`
(and, for one-quarter charts, an organisation and a quarter), draws on ``ax``
and returns it, with a title that states what the numbers say. Quarter-level
charts show each organisation's *focus quarter* (:func:`focus_quarters`)
against its calm baseline: the baseline quarters without a flagged surge.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from statsmodels.stats.proportion import proportion_confint

from quarterpanic.analysis import turnaround
from quarterpanic.analysis.findings import METRICS, NOT_MEASURED, OK, PARTIAL, main_findings
from quarterpanic.analysis.reactive import COMPONENT, ReactiveAnalysis
from quarterpanic.analysis.workload import share_by_week, wasted_effort, weekly_requests
from quarterpanic.report import plots, words
from quarterpanic.report.plots import _axes, chart_text
from quarterpanic.report.safe import escape_text
from quarterpanic.report.words import findings_in_words  # for notebook 03

FOCUS_LABEL_WIDTH = 40
PANEL_TITLE_SIZE = 11
PLANNED_LABEL = "planned work"


# -- which quarter each chart shows ----------------------------------------------------------------
def focus_quarters(analysis: ReactiveAnalysis) -> pd.DataFrame:
    """One quarter per organisation for the quarter-level charts.

    The latest judged quarter with a flagged surge, or else the latest judged
    quarter. Returns ``org``, ``quarter``, ``onset_week`` (``<NA>`` without a
    verdict), ``flagged`` and ``estimate``.
    """
    main = main_findings(analysis.findings)
    starts = analysis.grid.drop_duplicates(["org", "quarter"])[["org", "quarter", "quarter_start"]]
    main = main.merge(starts, on=["org", "quarter"], how="left").sort_values(["org", "quarter_start"])
    rows = []
    for org, frame in main.groupby("org", sort=True):
        flagged = frame[frame["flagged"]]
        rows.append((flagged if len(flagged) else frame).iloc[-1])
    columns = ["org", "quarter", "onset_week", "flagged", "estimate"]
    return pd.DataFrame(rows, columns=main.columns)[columns].reset_index(drop=True) if rows else pd.DataFrame(columns=columns)


def calm_baseline(analysis: ReactiveAnalysis, org: str, exclude: Sequence[str] = ()) -> list[str]:
    """The baseline quarters of ``org`` whose surge was not flagged (minus ``exclude``)."""
    weekly = analysis.weekly
    baseline = set(weekly.loc[(weekly["org"] == org) & weekly["baseline"], "quarter"])
    main = main_findings(analysis.findings)
    flagged = set(main.loc[(main["org"] == org) & main["flagged"], "quarter"])
    return sorted(baseline - flagged - set(exclude))


def org_panels(
    draw: Callable[..., plt.Axes],
    analysis: ReactiveAnalysis,
    focus: pd.DataFrame | None = None,
    *,
    width: float = 5.2,
    height: float = 4.2,
    sharey: bool = False,
    **kwargs: Any,
) -> plt.Figure:
    """One panel per organisation: ``draw(analysis, org, quarter, ax=ax, **kwargs)`` on each."""
    focus = focus_quarters(analysis) if focus is None else focus
    fig, axes = plt.subplots(1, max(1, len(focus)), figsize=(width * max(1, len(focus)), height), squeeze=False,
                             sharey=sharey)
    for ax, row in zip(axes[0], focus.itertuples()):
        draw(analysis, row.org, row.quarter, ax=ax, **kwargs)
    fig.tight_layout()
    return fig


def _surge_row(analysis: ReactiveAnalysis, org: str, quarter: str, metric: str = COMPONENT) -> pd.Series | None:
    rows = analysis.findings[
        (analysis.findings["org"] == org) & (analysis.findings["quarter"] == quarter) & (analysis.findings["metric"] == metric)
    ]
    return rows.iloc[0] if len(rows) else None


def _onset(analysis: ReactiveAnalysis, org: str, quarter: str) -> int | None:
    row = _surge_row(analysis, org, quarter)
    if row is None or pd.isna(row["onset_week"]) or row["status"] != OK:
        return None
    return int(row["onset_week"])


def _title(ax: plt.Axes, text: str, *, x: str, y: str) -> plt.Axes:
    plots.label_axes(ax, title=chart_text(text, FOCUS_LABEL_WIDTH), x=x, y=y)
    ax.title.set_fontsize(PANEL_TITLE_SIZE)
    return ax


def _week_axis(ax: plt.Axes, weeks: pd.Series, onset: int | None) -> None:
    last = int(weeks.max()) if len(weeks) else 13
    plots.week_ticks(ax, range(1, last + 1))
    if onset is not None:
        plots.shade_window(ax, onset, last, label=f"from week {onset}")


def _ci_level(analysis: ReactiveAnalysis) -> float:
    """The confidence level of every interval drawn for ``analysis``."""
    return float(analysis.params.get("ci_level", words.DEFAULT_CI_LEVEL))


# -- volume -----------------------------------------------------------------------------------------
def surge_headline(analysis: ReactiveAnalysis, org: str, quarter: str) -> str:
    """'<org> <quarter>: unplanned requests per day 3.1× from week 9' (or why there is no verdict)."""
    row = _surge_row(analysis, org, quarter)
    if row is None or row["status"] != OK:
        return f"{org} {quarter}: too few unplanned requests to judge"
    size = (f"{row['estimate']:.1f}× from week {int(row['onset_week'])} "
            f"({words.ci_label(words.ci_level_of(row))} {row['ci_low']:.1f}–{row['ci_high']:.1f})")
    if row["flagged"]:
        return f"{org} {quarter}: unplanned requests per day ran {size}"
    return f"{org} {quarter}: no significant surge of unplanned requests ({size})"


def plot_volume_by_type(
    analysis: ReactiveAnalysis, org: str, quarter: str, *, ax: plt.Axes | None = None, top: int = 6
) -> plt.Axes:
    """Requests per working day in each week of the quarter: unplanned ones stacked by type, planned work in grey."""
    ax = _axes(ax)
    requests = analysis.requests[(analysis.requests["org"] == org) & (analysis.requests["quarter"] == quarter)]
    grid = analysis.grid[(analysis.grid["org"] == org) & (analysis.grid["quarter"] == quarter)]
    kind = requests["request_type"].astype(str).where(requests["is_unplanned"], PLANNED_LABEL)
    # Rare types fold into one so the legend stays readable.
    totals = kind[kind != PLANNED_LABEL].value_counts()
    kind = kind.where(kind.isin(set(totals.index[:top]) | {PLANNED_LABEL}), "other unplanned")
    by_kind = weekly_requests(requests.assign(kind=kind), grid, by=["kind"])
    table = by_kind.pivot_table(index="week_of_quarter", columns="kind", values="requests", aggfunc="sum",
                                observed=True).fillna(0)
    days = grid.set_index("week_of_quarter")["working_days"].reindex(table.index).replace(0, np.nan)
    per_day = table.div(days, axis=0)
    unplanned = [t for t in list(totals.index[:top]) + ["other unplanned"] if t in per_day.columns]
    colors = dict(zip(unplanned, sns.color_palette("colorblind", n_colors=max(1, len(unplanned)))))
    colors[PLANNED_LABEL] = "#c8c8c8"
    bottom = np.zeros(len(per_day))
    for name in [PLANNED_LABEL] + unplanned:
        if name not in per_day.columns:
            continue
        values = per_day[name].fillna(0).to_numpy()
        ax.bar(per_day.index, values, bottom=bottom, color=colors[name], label=name, width=0.8)
        bottom += values
    _week_axis(ax, grid["week_of_quarter"], _onset(analysis, org, quarter))
    ax.legend(fontsize=7, loc="upper left", ncols=2)
    ax.set_ylim(0, max(1.0, float(np.nanmax(bottom, initial=0))) * 1.35)
    return _title(ax, surge_headline(analysis, org, quarter), x="Week of fiscal quarter", y="Requests per working day")


# -- shares against the calm baseline ----------------------------------------------------------------
def share_against_baseline(analysis: ReactiveAnalysis, org: str, quarter: str, events: str) -> pd.DataFrame:
    """Weekly share of ``events`` in the quarter and in the calm baseline, with Wilson intervals.

    ``role`` is the quarter label or ``calm baseline (n quarters)``.
    """
    weekly = analysis.weekly[analysis.weekly["org"] == org]
    baseline = calm_baseline(analysis, org, exclude=[quarter])
    label = f"calm baseline ({len(baseline)} quarters)"
    rows = weekly[(weekly["quarter"] == quarter) | weekly["quarter"].isin(baseline)].copy()
    rows["role"] = np.where(rows["quarter"] == quarter, quarter, label)
    return share_by_week(rows, events=events, by=["role"], ci_level=_ci_level(analysis))


def _window_share(table: pd.DataFrame, role: str, onset: int | None) -> float:
    rows = table[table["role"] == role]
    if onset is not None:
        rows = rows[rows["week_of_quarter"] >= onset]
    return float(rows["events"].sum() / rows["total"].sum()) if rows["total"].sum() else float("nan")


def plot_share_vs_baseline(
    analysis: ReactiveAnalysis, org: str, quarter: str, *, events: str = "urgent", ax: plt.Axes | None = None,
    what: str | None = None,
) -> plt.Axes:
    """Weekly share of ``events`` (``urgent``, ``planned``, ``exception``, ...) with ``ci_level`` bands vs the calm baseline."""
    ax = _axes(ax)
    what = what or f"{events.replace('_', ' ')} requests"
    table = share_against_baseline(analysis, org, quarter, events)
    roles = list(dict.fromkeys([quarter] + sorted(set(table["role"]) - {quarter})))
    palette = {quarter: plots.PANIC_COLOR, **{r: plots.BASELINE_COLOR for r in roles if r != quarter}}
    plots.band_plot(table, x="week_of_quarter", y="share", low="ci_low", high="ci_high", hue="role", ax=ax,
                    percent=True, palette=palette)
    onset = _onset(analysis, org, quarter)
    _week_axis(ax, table["week_of_quarter"], onset)
    ax.legend(fontsize=8)
    base_role = next((r for r in roles if r != quarter), None)
    here = _window_share(table, quarter, onset)
    there = _window_share(table, base_role, onset) if base_role else float("nan")
    since = f"from week {onset}" if onset else "over the quarter"
    text = f"{org} {quarter}: {words.pct(here)} of requests were {what} {since}, vs {words.pct(there)} in calm quarters"
    return _title(ax, text, x="Week of fiscal quarter", y=f"Share {what}")


# -- turnaround ------------------------------------------------------------------------------------------
def plot_turnaround_curves(
    analysis: ReactiveAnalysis, org: str, quarter: str, *, ax: plt.Axes | None = None
) -> plt.Axes:
    """Kaplan–Meier curves of time to resolve, early weeks vs from the onset on (open requests censored)."""
    ax = _axes(ax)
    requests = analysis.requests[
        (analysis.requests["org"] == org) & (analysis.requests["quarter"] == quarter) & analysis.requests["window"].notna()
    ]
    curves = turnaround.km_curves(requests, ["window"], duration="duration_hours", ci_level=_ci_level(analysis))
    onset = _onset(analysis, org, quarter)
    labels = {"early": f"weeks 1–{onset - 1}" if onset else "early", "late": f"weeks {onset}+" if onset else "late"}
    colors = {"early": plots.CALM_COLOR, "late": plots.PANIC_COLOR}
    for window, curve in curves.groupby("window"):
        hours = curve["duration_hours"].clip(lower=0.25)
        ax.step(hours, curve["survival"], where="post", color=colors[window],
                label=f"{labels[window]} (n = {int(curve['n'].iloc[0])})")
        ax.fill_between(hours, curve["ci_low"], curve["ci_high"], step="post", color=colors[window], alpha=0.15,
                        linewidth=0)
    ax.set_xscale("log")
    ax.axhline(0.5, color=plots.BASELINE_COLOR, linestyle=":", linewidth=1)
    plots.percent_axis(ax)
    if len(curves):
        ax.legend(fontsize=8)
    row = _surge_row(analysis, org, quarter, "turnaround_stretch")
    if row is not None and row["status"] == OK:
        text = (f"{org} {quarter}: requests raised from week {onset} took {row['estimate']:.1f}× as long to resolve, "
                f"type for type ({words.ci_label(words.ci_level_of(row))} {row['ci_low']:.1f}–{row['ci_high']:.1f})")
    else:
        text = f"{org} {quarter}: too few requests to compare turnaround"
    return _title(ax, text, x="Hours since the request was raised (log scale)", y="Share still open")


# -- backlog ---------------------------------------------------------------------------------------------
def plot_backlog(analysis: ReactiveAnalysis, org: str, quarter: str, *, ax: plt.Axes | None = None) -> plt.Axes:
    """Open requests at each week's end: the quarter vs the calm baseline's range and median."""
    ax = _axes(ax)
    weekly = analysis.weekly[analysis.weekly["org"] == org]
    baseline = weekly[weekly["quarter"].isin(calm_baseline(analysis, org, exclude=[quarter]))]
    here = weekly[weekly["quarter"] == quarter].sort_values("week_of_quarter")
    if len(baseline):
        spread = baseline.groupby("week_of_quarter")["backlog"].agg(["median", "min", "max"]).reset_index()
        ax.fill_between(spread["week_of_quarter"], spread["min"], spread["max"], color=plots.BASELINE_COLOR, alpha=0.2,
                        linewidth=0, label="calm quarters (range)")
        ax.plot(spread["week_of_quarter"], spread["median"], color=plots.BASELINE_COLOR, linestyle="--",
                label="calm quarters (median)")
    ax.plot(here["week_of_quarter"], here["backlog"], color=plots.PANIC_COLOR, marker="o", markersize=3, label=quarter)
    _week_axis(ax, weekly["week_of_quarter"], _onset(analysis, org, quarter))
    ax.legend(fontsize=8)
    if len(here):
        peak = here.loc[here["backlog"].idxmax()]
        typical = baseline.loc[baseline["week_of_quarter"] == peak["week_of_quarter"], "backlog"].median()
        text = (f"{org} {quarter}: the backlog peaked at {int(peak['backlog'])} open requests in week "
                f"{int(peak['week_of_quarter'])}" + (f", vs {typical:.0f} in calm quarters" if pd.notna(typical) else ""))
    else:
        text = f"{org} {quarter}: no requests"
    return _title(ax, text, x="Week of fiscal quarter", y="Open requests at week's end")


# -- wasted effort ---------------------------------------------------------------------------------------
def surge_quarters(analysis: ReactiveAnalysis, *, only_flagged: bool = True) -> pd.DataFrame:
    """``org``, ``quarter`` of the judged quarters with a flagged surge (all judged ones of an org without any)."""
    main = main_findings(analysis.findings)
    chosen = []
    for _, frame in main[main["status"] == OK].groupby("org"):
        flagged = frame[frame["flagged"]] if only_flagged else frame.iloc[0:0]
        chosen.append((flagged if len(flagged) else frame)[["org", "quarter"]])
    return pd.concat(chosen, ignore_index=True) if chosen else pd.DataFrame(columns=["org", "quarter"])


def wasted_effort_by_window(analysis: ReactiveAnalysis, *, surge_quarters_only: bool = True) -> pd.DataFrame:
    """Shares of deal requests spent on lost and on unqualified deals, early vs late, per organisation.

    Pools the judged quarters with a flagged surge (all judged quarters of an
    organisation without one, or with ``surge_quarters_only=False``). Returns
    ``org``, ``window``, ``measure`` (``deals finally lost`` / ``deals
    unqualified at creation``), ``events``, ``total``, ``estimate``,
    ``ci_low``, ``ci_high`` (Wilson) and ``quarters`` (how many were pooled).
    """
    requests = analysis.requests.merge(surge_quarters(analysis, only_flagged=surge_quarters_only), on=["org", "quarter"])
    requests = requests[requests["window"].notna()]
    if requests.empty:
        return pd.DataFrame(columns=["org", "window", "measure", "events", "total", "estimate", "ci_low", "ci_high",
                                     "quarters"])
    rows = []
    for measure, column in (("deals finally lost", "deal_lost"), ("deals unqualified at creation", "deal_unqualified")):
        counted = requests[requests[column].notna()]
        table = counted.groupby(["org", "window"])[column].agg(events="sum", total="size").reset_index()
        table["measure"] = measure
        rows.append(table)
    out = pd.concat(rows, ignore_index=True)
    out = out[out["total"] > 0].reset_index(drop=True)
    out["estimate"] = out["events"] / out["total"]
    low, high = proportion_confint(out["events"], out["total"], alpha=1 - _ci_level(analysis), method="wilson")
    out["ci_low"], out["ci_high"] = np.asarray(low), np.asarray(high)
    out["quarters"] = out["org"].map(requests.groupby("org")["quarter"].nunique())
    return out


LOST, UNQUALIFIED = "deals finally lost", "deals unqualified at creation"


def plot_wasted_effort(analysis: ReactiveAnalysis, measure: str = LOST, *, ax: plt.Axes | None = None) -> plt.Axes:
    """Share of deal requests spent on lost (or unqualified) deals, before vs from the onset, per organisation.

    ``measure`` is ``"deals finally lost"`` or ``"deals unqualified at creation"``
    (see :func:`wasted_effort_by_window`); whiskers are Wilson intervals at ``ci_level``.
    """
    table = wasted_effort_by_window(analysis)
    table = table[table["measure"] == measure]
    ax = _axes(ax)
    if table.empty:
        return _title(ax, f"No requests on {measure} in the quarters judged", x="", y="")
    windows = {"early": "before the onset", "late": "from the onset on"}
    table = table.assign(window=table["window"].map(windows))
    plots.interval_plot(table, x="org", hue="window", ax=ax, percent=True, order=sorted(table["org"].unique()))
    shares = table.pivot_table(index="org", columns="window", values="estimate")
    if set(windows.values()) <= set(shares.columns) and shares.notna().all(axis=1).any():
        change = (shares[windows["late"]] - shares[windows["early"]]).dropna()
        org = change.abs().idxmax()
        text = (f"At {org}, {words.pct(shares.loc[org, windows['late']])} of late-quarter deal requests went to "
                f"{measure}, vs {words.pct(shares.loc[org, windows['early']])} earlier")
    else:
        text = f"Too few requests to compare the share spent on {measure}"
    ax.legend(fontsize=8)
    return _title(ax, text, x="", y="Share of deal requests")


# -- all quarters at once --------------------------------------------------------------------------------
def forest_headline(findings: pd.DataFrame) -> str:
    """'3 of 24 complete quarters show a significant surge of unplanned requests (up to 3.4×)'."""
    main = main_findings(findings)
    judged = main[main["status"] == OK]
    flagged = judged[judged["flagged"]]
    absent = main[main["status"] == NOT_MEASURED]
    if judged.empty and len(absent):
        needs = next((n for n in absent["needs"] if isinstance(n, list) and n), ["its inputs"])
        return f"Reactive order-taking not measured: the data have no {'; '.join(needs)}"
    # Quarters without a verdict (too thin, or not measured) were not judged: they are not in the count.
    text = f"{len(flagged)} of {len(judged)} complete quarters judged show a significant surge of unplanned requests"
    if len(flagged):
        text += f" (up to {flagged['estimate'].max():.1f}× the earlier daily rate)"
    return text


def plot_surge_forest(analysis: ReactiveAnalysis, *, ax: plt.Axes | None = None) -> plt.Axes:
    """Every judged quarter's rate ratio with its ``ci_level`` interval; flagged quarters in the panic colour."""
    main = main_findings(analysis.findings)
    main = main[main["status"] == OK]
    starts = analysis.grid.drop_duplicates(["org", "quarter"])[["org", "quarter", "quarter_start"]]
    main = main.merge(starts, on=["org", "quarter"], how="left").sort_values(["org", "quarter_start"])
    main["label"] = [chart_text(f"{org} · {quarter} (wk {onset})") for org, quarter, onset in
                     zip(main["org"], main["quarter"], main["onset_week"])]
    ax = plots.forest_plot(main, label="label", null=1.0, log_scale=True, ax=ax)
    low, high = ax.get_xlim()
    ticks = [t for t in (0.125, 0.25, 0.5, 1, 2, 4, 8, 16) if low <= t <= high]
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}×"))
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.tick_params(axis="y", labelsize=8)
    return plots.label_axes(ax, title=chart_text(forest_headline(analysis.findings), 60),
                            x="Unplanned requests per working day, from the onset week vs earlier weeks", y="")


# -- words and key figures -------------------------------------------------------------------------------
def summary_figures(analysis: ReactiveAnalysis) -> dict[str, Any]:
    """The notebook's key figures for ``artifacts.save_summary``."""
    findings = analysis.findings
    main = main_findings(findings)
    partial = main["status"] == PARTIAL  # over, but the data cover only part of it: shown, never judged
    main = main[~partial]
    ok = main[main["status"] == OK]
    columns = ["org", "quarter", "estimate", "ci_low", "ci_high", "p_value", "onset_week", "flagged", "n", "status"]
    secondary = findings[findings["metric"] != COMPONENT]
    return {
        "as_of": analysis.as_of,
        "segment": analysis.segment,
        "orgs": sorted(main_findings(findings)["org"].unique()),
        "quarters_judged": int(len(main)),
        "quarters_with_verdict": int(len(ok)),
        "quarters_flagged": int(ok["flagged"].sum()),
        "quarters_partial": int(partial.sum()),
        "headline": forest_headline(findings),
        "surge": main[columns],
        "flagged_surges": main.loc[main["flagged"], ["org", "quarter", "estimate", "ci_low", "ci_high", "onset_week"]],
        "secondary_flagged": {
            name: int(secondary.loc[secondary["metric"] == name, "flagged"].sum())
            for name in sorted(secondary["metric"].unique())
        },
        "metrics": {name: METRICS[name].description for name in findings["metric"].unique() if name in METRICS},
        "findings": findings[columns + ["metric"]],
    }


# -- tables ------------------------------------------------------------------------------------------------
def turnaround_table(analysis: ReactiveAnalysis, focus: pd.DataFrame | None = None) -> pd.DataFrame:
    """Median and 90th-percentile hours to resolve, early vs late, in each focus quarter (open requests censored).

    Kaplan–Meier figures in hours with ``ci_level`` intervals
    (:func:`quarterpanic.analysis.turnaround.km_summary`); ``naive_median`` (resolved
    requests only) is shown for contrast, and ``median_vs_typical`` is the
    median of each request's time over the typical time of its type (1.0 =
    typical), which a change in the mix of request types does not move.
    """
    focus = focus_quarters(analysis) if focus is None else focus
    requests = analysis.requests.merge(focus[["org", "quarter"]], on=["org", "quarter"])
    requests = requests[requests["window"].notna()]
    keys = ["org", "quarter", "window"]
    table = turnaround.km_summary(requests, keys, duration="duration_hours", ci_level=_ci_level(analysis))
    typical = turnaround.km_summary(requests, keys, duration="duration_std", with_ci=False)
    table = table.merge(typical[keys + ["median"]].rename(columns={"median": "median_vs_typical"}), on=keys, how="left")
    columns = ["median", "median_low", "median_high", "p90", "p90_low", "p90_high", "naive_median"]
    table[columns] = table[columns].round(1)
    table["median_vs_typical"] = table["median_vs_typical"].round(2)
    return table


def wasted_effort_table(analysis: ReactiveAnalysis) -> pd.DataFrame:
    """:func:`quarterpanic.analysis.workload.wasted_effort` per organisation × window, pooled as in :func:`surge_quarters`."""
    requests = analysis.requests.merge(surge_quarters(analysis), on=["org", "quarter"])
    table = wasted_effort(requests[requests["window"].notna()], by=["org", "window"])
    shares = ["lost_share", "unqualified_share", "lost_hours_share", "unqualified_hours_share"]
    table[shares] = table[shares].round(3)
    return table


# -- Markdown -------------------------------------------------------------------------------------
NOTHING_FLAGGED = "Nothing was flagged."


def intro(as_of: pd.Timestamp, analysis: ReactiveAnalysis, focus: pd.DataFrame, segment: str | None = None) -> str:
    """The page's first line (Markdown, CRM text escaped): the as-of time, how many requests, the organisations
    (``focus``'s) and the segment, when one was chosen."""
    where = f" (segment **{escape_text(segment)}**)" if segment else ""
    return (f"As of **{as_of:%Y-%m-%d %H:%M}**, {len(analysis.requests):,} sales-ops requests of "
            f"{words.bold_names(focus['org'])}{where}.")
