"""The pipeline overview's words and charts: coverage, row accounting, month-3 bookings, pipeline pace, the funnel."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from quarterpanic.analysis.findings import ci_level_of
from quarterpanic.analysis.overview import COMPLETE, OPEN, accounting_totals, funnel_table, quarter_status
from quarterpanic.report import plots
from quarterpanic.report.plots import chart_text
from quarterpanic.report.safe import escape_text
from quarterpanic.report.words import bold_names, ci_label, markdown_lines


# -- headlines -------------------------------------------------------------------------------------
def _pct(value: float) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{100 * value:.0f}%"


def coverage_headline(coverage: pd.DataFrame) -> str:
    """What the exports cover, in one line.

    One organisation: "Globex: 10 complete quarters (FY2024-Q2 to FY2026-Q3); FY2026-Q4 is still open".
    Several (their fiscal calendars may differ, so dates, not labels):
    "3 organisations, 8 complete quarters each, Jul 2023 to Sep 2025; the current quarter is still open".
    """
    status = quarter_status(coverage)
    if status.empty:
        return "No dated records were found"
    complete = status[status["status"] == COMPLETE]
    orgs = status["org"].unique()
    per_org = complete.groupby("org").size().reindex(orgs, fill_value=0)
    counts = f"{per_org.min()}" if per_org.min() == per_org.max() else f"{per_org.min()}-{per_org.max()}"
    quarters = "quarter" if counts == "1" else "quarters"
    open_quarters = status[status["status"] == OPEN]
    if len(orgs) == 1:
        text = f"{orgs[0]}: {counts} complete {quarters}"
        if len(complete):
            first, last = complete["quarter"].iloc[0], complete["quarter"].iloc[-1]
            text += f" ({first})" if first == last else f" ({first} to {last})"
        if len(open_quarters):
            text += f"; {open_quarters['quarter'].iloc[0]} is still open"
        return text
    text = f"{len(orgs)} organisations, {counts} complete {quarters} each"
    if len(complete):
        text += f", {complete['quarter_start'].min():%b %Y} to {complete['quarter_end'].max():%b %Y}"
    if open_quarters["org"].nunique() == len(orgs):
        text += "; the current quarter is still open"
    return text


def accounting_headline(accounting: pd.DataFrame, reasons: pd.DataFrame | None = None) -> str:
    """E.g. "99.2% of 48,113 rows read were accepted; the commonest rejection: close_date not a date"."""
    totals = accounting_totals(accounting)
    if totals["read"] == 0:
        return "No export rows were read"
    # Rounded down, so that a few rejected rows never read as "100%".
    share = np.floor(1000 * totals["accepted"] / totals["read"]) / 10
    text = f"{share:.1f}% of {totals['read']:,} rows read were accepted"
    if totals["rejected"] == 0:
        return text + "; none rejected"
    text += f"; {totals['rejected']:,} rejected"
    if reasons is not None and len(reasons):
        top = reasons.iloc[0]
        text += f", most often {top['reason']}"
    return text


def month3_headline(org: str, shares: pd.DataFrame) -> str:
    """E.g. "Globex books 64% of each quarter in its last month (even pace: 33%)".

    ``shares`` holds :func:`month3_share` rows per quarter; the typical
    quarter is the median of their estimates.
    """
    rows = shares[shares["org"] == org]
    if rows.empty or not rows["won_deals"].sum():
        return f"{org}: no won deals in the quarters shown"
    if rows["estimate"].isna().all():
        # Won deals without amounts: the share of won *deals* is what the data can say.
        counts = _count_shares(rows)
        each = "each quarter's" if len(rows) > 1 else f"{rows['quarter'].iloc[0]}'s"
        return (f"{org} closes {_pct(float(counts.median()))} of {each} won deals in its last month "
                f"(by count: the export has no amounts; even pace: {_pct(float(rows['even_share'].median()))})")
    typical = float(rows["estimate"].median())
    even = float(rows["even_share"].median())
    each = "each quarter" if len(rows) > 1 else rows["quarter"].iloc[0]
    return f"{org} books {_pct(typical)} of {each} in its last month (even pace: {_pct(even)})"


def month3_spread_headline(shares: pd.DataFrame) -> str:
    """E.g. "The most back-loaded quarter: Globex FY2025-Q4, 78% booked in month 3"."""
    rows = shares.dropna(subset=["estimate"])
    by_count = ""
    if rows.empty:
        rows = shares[shares["won_deals"] > 0]
        if rows.empty:
            return "No won deals in the quarters shown"
        # No amounts in the export: rank the quarters by the share of won deals instead, and say so.
        rows = rows.assign(estimate=_count_shares(rows))
        by_count = " (by count of won deals: the export has no amounts)"
    top = rows.loc[rows["estimate"].idxmax()]
    low = rows.loc[rows["estimate"].idxmin()]
    verb = "of won deals closed" if by_count else "booked"
    text = f"The most back-loaded quarter: {top['org']} {top['quarter']}, {_pct(top['estimate'])} {verb} in month 3"
    if len(rows) > 1:
        text += f"; the least: {low['org']} {low['quarter']}, {_pct(low['estimate'])}"
    return text + by_count


def _count_shares(rows: pd.DataFrame) -> pd.Series:
    """Share of won deals (not amount) that closed in month 3, per row of :func:`month3_share`."""
    return rows["month3_deals"] / rows["won_deals"].where(rows["won_deals"] > 0)


def month3_quarter_sentence(row: pd.Series | dict) -> str:
    """One quarter's month-3 bookings, e.g. "Globex FY2025-Q4: 64% of 1,234,000 booked in month 3 (95% CI 55%
    to 71%; 88 won deals)"; by count, and saying so, when the export has no amounts."""
    where = f"{row['org']} {row['quarter']}"
    if not row["won_deals"]:
        return f"{where}: no won deals"
    if row["estimate"] is None or not np.isfinite(row["estimate"]):
        share = row["month3_deals"] / row["won_deals"]
        return (f"{where}: {row['month3_deals']} of {row['won_deals']} won deals ({_pct(share)}) closed in month 3 "
                f"(by count: the export has no amounts)")
    return (f"{where}: {_pct(row['estimate'])} of {row['won_amount']:,.0f} booked in month 3 "
            f"(95% CI {_pct(row['ci_low'])} to {_pct(row['ci_high'])}; {row['won_deals']} won deals)")


def pipeline_headline(pipeline_shares: pd.DataFrame) -> str:
    """E.g. "Globex creates 41% of its new pipeline in the quarter's last month (95% CI ...; even pace: 34%)",
    the interval labelled with its ``ci_level``.

    ``pipeline_shares`` holds :func:`pipeline_month3_share` rows per
    organisation; the sentence names the one furthest above an even pace,
    or says the pace is even when no interval lies above it.
    """
    rows = pipeline_shares.dropna(subset=["estimate"])
    if rows.empty:
        return "No pipeline was created in the quarters shown"
    top = rows.loc[(rows["estimate"] - rows["even_share"]).idxmax()]
    if not rows["back_loaded"].any():
        return (f"New pipeline arrives at an even pace: no organisation creates significantly more of it in the "
                f"quarter's last month (at most {_pct(top['estimate'])}; even pace: {_pct(top['even_share'])})")
    return (f"{top['org']} creates {_pct(top['estimate'])} of its new pipeline in the quarter's last month "
            f"({ci_label(ci_level_of(top))} {_pct(top['ci_low'])} to {_pct(top['ci_high'])}; "
            f"even pace: {_pct(top['even_share'])})")


def funnel_headline(funnel: pd.DataFrame) -> str:
    """The win rate of closed deals, per the cohorts shown: "Globex wins 31% of the deals it closes; Initech 24%"."""
    wide = funnel_table(funnel).groupby(level="org").sum()
    closed = wide.get("won", 0) + wide.get("lost", 0)
    rate = (wide.get("won", 0) / closed.where(closed > 0)).dropna().sort_values(ascending=False)
    if rate.empty:
        return "No deals created in the quarters shown have closed yet"
    parts = [f"{org} wins {_pct(r)} of the deals it closes" if i == 0 else f"{org} {_pct(r)}"
             for i, (org, r) in enumerate(rate.items())]
    return "; ".join(parts)


def month3_count_headline(org: str, shares: pd.DataFrame) -> str:
    """E.g. "Globex: 4 of 10 quarters booked significantly more than an even pace in month 3"."""
    rows = shares[shares["org"] == org]
    return (f"{org}: {int(rows['back_loaded'].sum())} of {len(rows)} quarters booked significantly more than an "
            f"even pace in month 3")


def reject_reason_headline(reasons: pd.DataFrame) -> str:
    """E.g. "Most rejected rows: close_date not a date (1,204 rows)"; ``reasons`` is not empty."""
    top = reasons.iloc[0]
    return f"Most rejected rows: {top['reason']} ({top['rows']:,} rows)"


# -- Markdown -------------------------------------------------------------------------------------
def intro(data_folder: str | Path, as_of: pd.Timestamp, orgs: Sequence[str]) -> str:
    """The page's first line (Markdown, CRM text escaped): the data folder, the as-of time, the organisations."""
    return f"Data folder {escape_text(data_folder)}, as of **{as_of:%Y-%m-%d %H:%M}**: {bold_names(orgs)}."


def month3_lines(shares: pd.DataFrame) -> str:
    """Every quarter's month-3 share with its interval (labelled with its ``ci_level``), as a Markdown bullet list
    (CRM text escaped)."""
    label = ci_label(ci_level_of(shares))
    return markdown_lines(shares, lambda row: (
        f"- **{escape_text(row.org)} {escape_text(row.quarter)}**: {row.estimate:.0%} of {row.won_amount:,.0f} booked "
        f"in month 3 ({label} {row.ci_low:.0%} to {row.ci_high:.0%}; {row.won_deals} won deals)"
        + (" — back-loaded" if row.back_loaded else "")
    ), "No won deals in the quarters shown.")


# -- charts ---------------------------------------------------------------------------------------
def _max_week(weeks: pd.Series, default: int = 13) -> int:
    return int(weeks.max()) if len(weeks) else default


def plot_coverage(coverage: pd.DataFrame, orgs: Sequence[str]) -> list[plt.Axes]:
    """One table × quarter heatmap of record counts per organisation, titled by its :func:`coverage_headline`."""
    axes = []
    for org in orgs:
        rows = coverage[coverage["org"] == org]
        ax = plots.count_heatmap(rows, row="table", column="label", value="rows",
                                 column_order=rows.drop_duplicates("label")["label"])
        axes.append(plots.label_axes(ax, title=chart_text(coverage_headline(rows), 80), x="Fiscal quarter", y=""))
    return axes


def plot_reject_reasons(reasons: pd.DataFrame) -> plt.Axes | None:
    """Bars of the commonest reject reasons (:func:`top_reject_reasons`); nothing is drawn when none was rejected."""
    if reasons.empty:
        return None
    ax = plots.bar_plot(reasons, label="reason", value="rows")
    return plots.label_axes(ax, title=chart_text(reject_reason_headline(reasons)), x="Rejected source rows", y="")


def plot_hockey_sticks(weekly: pd.DataFrame, shares: pd.DataFrame, orgs: Sequence[str]) -> plt.Figure:
    """One panel per organisation: the cumulative share of each quarter's bookings by week, back-loaded quarters red.

    ``weekly`` is :func:`bookings_by_week`, ``shares`` :func:`month3_share` (its ``back_loaded`` quarters are
    highlighted); each panel is titled by :func:`month3_headline`.
    """
    fig, axes = plt.subplots(1, len(orgs), figsize=(4.2 * len(orgs), 4.6), squeeze=False, sharey=True)
    for ax, org in zip(axes[0], orgs):
        org_weeks = weekly[weekly["org"] == org]
        hot = shares.loc[(shares["org"] == org) & shares["back_loaded"], "quarter"]
        weeks = _max_week(org_weeks["weeks_in_quarter"])
        plots.cumulative_plot(org_weeks, x="week_of_quarter", y="cumulative_share", hue="quarter", ax=ax,
                              highlight=hot, even_pace=weeks if len(org_weeks) else None)
        plots.week_ticks(ax, range(1, weeks + 1))
        plots.label_axes(ax, title=chart_text(month3_headline(org, shares), 34),
                         x="Week of fiscal quarter", y="Share of the quarter's bookings")
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def plot_month3_shares(shares: pd.DataFrame, orgs: Sequence[str]) -> plt.Figure:
    """One row per organisation: each quarter's month-3 share with its interval against the even pace."""
    fig, axes = plt.subplots(len(orgs), 1, figsize=(10, 3.4 * len(orgs)), squeeze=False, sharey=True)
    for ax, org in zip(axes[:, 0], orgs):
        org_shares = shares[shares["org"] == org]
        plots.interval_plot(org_shares, x="quarter", order=org_shares["quarter"], ax=ax, percent=True,
                            reference=org_shares["even_share"].median() if len(org_shares) else None,
                            reference_label="even pace")
        plots.label_axes(ax, title=chart_text(month3_count_headline(org, shares)),
                         x="Fiscal quarter", y="Bookings in month 3")
    fig.suptitle(chart_text(month3_spread_headline(shares), 100), x=0.01, ha="left", fontsize=11)
    fig.tight_layout()
    return fig


def plot_funnel(funnel: pd.DataFrame, rates: pd.DataFrame) -> plt.Axes:
    """Bars of the opportunity steps' rates (:func:`funnel_rates`) per organisation,
    titled by :func:`funnel_headline`."""
    opportunity_steps = rates[~rates["step"].str.startswith("leads ")]
    ax = plots.bar_plot(opportunity_steps, label="step", value="rate", hue="org", percent=True)
    return plots.label_axes(ax, title=chart_text(funnel_headline(funnel), 80),
                            x="Share of opportunities created in the quarters shown", y="")


def plot_pipeline_profile(profile_by_week: pd.DataFrame, pipeline_shares: pd.DataFrame) -> plt.Axes:
    """The average quarter's new pipeline by week with its middle-80% band, per organisation
    (:func:`weekly_profile`), titled by :func:`pipeline_headline`."""
    ax = plots.band_plot(profile_by_week, x="week_of_quarter", y="mean", low="low", high="high", hue="org",
                         percent=True)
    plots.week_ticks(ax, range(1, _max_week(profile_by_week["week_of_quarter"]) + 1))
    return plots.label_axes(ax, title=chart_text(pipeline_headline(pipeline_shares), 80),
                            x="Week of fiscal quarter", y="Share of the quarter's new pipeline")


# -- key figures ----------------------------------------------------------------------------------
def summary_figures(
    *, as_of: pd.Timestamp, orgs: Sequence[str], accounting: pd.DataFrame, reasons: pd.DataFrame,
    coverage: pd.DataFrame, shares: pd.DataFrame, funnel: pd.DataFrame, pipeline_shares: pd.DataFrame,
) -> dict[str, Any]:
    """Key figures of the overview for :func:`quarterpanic.report.artifacts.save_summary`."""
    totals = accounting_totals(accounting)
    status = quarter_status(coverage)
    return {
        "as_of": as_of,
        "orgs": list(orgs),
        "files": totals["files"],
        "rows_read": totals["read"],
        "rows_accepted": totals["accepted"],
        "rows_rejected": totals["rejected"],
        "top_reject_reasons": reasons[["table", "reason", "rows"]],
        "complete_quarters": {org: sorted(rows["quarter"].unique())
                              for org, rows in status[status["status"] == COMPLETE].groupby("org")},
        "month3_share": shares[["org", "quarter", "estimate", "ci_low", "ci_high", "even_share", "back_loaded",
                                "won_deals", "won_amount"]],
        "month3_share_median": shares.groupby("org")["estimate"].median().to_dict(),
        "funnel": funnel[["org", "quarter", "step", "count"]],
        "pipeline_month3_share": pipeline_shares[["org", "estimate", "ci_low", "ci_high", "even_share"]],
    }
