"""Headlines of the pipeline overview: coverage, row accounting, month-3 bookings, pipeline pace, the funnel."""
from __future__ import annotations

import numpy as np
import pandas as pd

from quarterpanic.analysis.overview import COMPLETE, OPEN, accounting_totals, funnel_table, quarter_status


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
    """E.g. "Globex creates 41% of its new pipeline in the quarter's last month (95% CI ...; even pace: 34%)".

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
            f"(95% CI {_pct(top['ci_low'])} to {_pct(top['ci_high'])}; even pace: {_pct(top['even_share'])})")


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
