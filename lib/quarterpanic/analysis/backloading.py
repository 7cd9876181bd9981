"""Bookings back-loading: how much of each complete quarter's bookings land in its last weeks.

A ``detect`` component (:data:`quarterpanic.analysis.detect.COMPONENTS`) and a
component of the panic index.

The "hockey stick" is the one panic signal every CRM export holds: it needs only
close dates and won flags (amounts when the export has them, deal counts
otherwise). Per organisation × complete fiscal quarter this component reports

* ``bookings_backloading`` (main): the quarter's month-3 share of bookings minus
  the share the organisation's *other* complete quarters booked in their month 3
  (percentage points; panic makes it larger). Calm quarters have a hockey stick
  of their own, so an even pace is no null for a verdict: the organisation's own
  quarters are. One-sided p-value, Benjamini–Hochberg in the run's false-discovery family
  like every metric;
* ``month3_bookings_share``: the month-3 share itself (a level, the quantity the
  sample generator records in ``truth.json``), with its interval;
* ``month3_share_above_even``: that share minus an evenly paced quarter's month-3
  share (the days of month 3 over the days of the quarter), one-sided;
* ``last_two_weeks_share_above_even``: the same for the quarter's last two weeks.

**Intervals honest for small counts.** Each deal is weighted by its amount (or
by one), so a share is a weighted proportion; its uncertainty is that of a
proportion with Kish's effective sample size ``n_eff = (Σw)² / Σw²`` (a few large
deals carry a quarter: ``n_eff`` is then small). Levels get Wilson score
intervals, which never collapse to 100–100% on three deals; differences get
Newcombe's hybrid score interval and a score test (statsmodels'
``confint_proportions_2indep`` / ``test_proportions_2indep``). A quarter with
fewer than :data:`MIN_WON_DEALS` won deals is ``insufficient data``.

**For the words and the index.** Each row with a number also carries
``reference`` (the share it is compared with: the organisation's other quarters'
month-3 share, or an even pace's share; NaN for the level) and ``se``, a
standard error that does not depend on ``ci_level``: the average half-width
of the 95% score interval over 1.96. Score intervals are asymmetric, so a
standard error read back from an interval at another level would move with
that level; the panic index uses ``se`` instead.

**Which quarters are judged.** Only complete quarters whose bookings the export
covers (:func:`judged_quarters`); other ended quarters get status ``partial``
and no numbers.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    test_proportions_2indep,
)

from quarterpanic.analysis.findings import (
    ALL_SEGMENTS,
    INSUFFICIENT,
    OK,
    PARTIAL,
    apply_fdr_of,
    empty_findings,
    make_findings,
    register_metric,
)
from quarterpanic.analysis.inputs import quarter_coverage
from quarterpanic.analysis.overview import COMPLETE, won_cycle_days
from quarterpanic.calendar import FiscalCalendar, annotate_by_org
from quarterpanic.dataset import Dataset
from quarterpanic.params import defaults

COMPONENT = "bookings_backloading"
MIN_WON_DEALS = 10  # fewest won deals in a quarter for a verdict on where its bookings landed
LAST_WEEKS = 2
# The ``se`` column is read off the 95% interval whatever the run's ci_level, so the index does not move with it.
SE_LEVEL = 0.95
SE_Z = float(stats.norm.ppf((1 + SE_LEVEL) / 2))

register_metric(COMPONENT, component=COMPONENT, null=0.0, direction=+1, unit="share", sided="one-sided",
                description="month-3 share of bookings above the organisation's other quarters")
register_metric("month3_bookings_share", component=COMPONENT, null=np.nan, direction=+1, unit="proportion",
                description="share of the quarter's bookings closed in its third month")
register_metric("month3_share_above_even", component=COMPONENT, null=0.0, direction=+1, unit="share",
                sided="one-sided", description="month-3 share of bookings above an evenly paced quarter")
register_metric("last_two_weeks_share_above_even", component=COMPONENT, null=0.0, direction=+1, unit="share",
                sided="one-sided", description="last-two-weeks share of bookings above an evenly paced quarter")


def won_deals_by_quarter(dataset: Dataset) -> pd.DataFrame:
    """Won deals with their close quarter and weight.

    Returns ``org, quarter, weight, in_month3, in_last_weeks`` per won deal;
    ``weight`` is the amount where the organisation's deals carry amounts that
    vary, else 1 (and the ``weighting`` attribute of the frame maps org → ``"amount"``
    or ``"deals"``).
    """
    opps = dataset.opportunities
    won = opps[opps["is_won"].astype(bool) & opps["close_date"].notna()]
    columns = ["org", "quarter", "weight", "in_month3", "in_last_weeks"]
    if won.empty:
        out = pd.DataFrame(columns=columns)
        out.attrs["weighting"] = {}
        return out
    frame = won[["org", "close_date", "amount"]].reset_index(drop=True)
    frame = annotate_by_org(frame, "close_date", dataset.calendars)
    amount = pd.to_numeric(frame["amount"], errors="coerce")
    by_org = amount.groupby(frame["org"].astype(str))
    has_amounts = (by_org.nunique() >= 2) & (by_org.apply(lambda a: a.notna().mean()) >= 0.9)
    weighting = {org: ("amount" if has_amounts.get(org, False) else "deals") for org in frame["org"].astype(str).unique()}
    uses_amount = frame["org"].astype(str).map(weighting).eq("amount")
    weight = np.where(uses_amount, amount.fillna(0.0).clip(lower=0.0), 1.0)
    out = pd.DataFrame({
        "org": frame["org"].astype(str),
        "quarter": frame["quarter"].astype(str),
        "weight": weight.astype(float),
        "in_month3": (frame["month_of_quarter"] == 3).to_numpy(),
        "in_last_weeks": (frame["days_to_quarter_end"] < 7 * LAST_WEEKS).to_numpy(),
    })
    out = out[out["weight"] > 0].reset_index(drop=True)
    out.attrs["weighting"] = weighting
    return out


def even_shares(calendars: Mapping[str, Any], quarters: pd.DataFrame) -> pd.DataFrame:
    """An evenly paced quarter's month-3 and last-two-weeks shares (share of its days) per org × quarter."""
    records = []
    for org, rows in quarters.groupby("org"):
        calendar = FiscalCalendar.from_spec(calendars.get(org))
        for row in rows.itertuples(index=False):
            days = pd.Series(pd.date_range(row.quarter_start, row.quarter_end, freq="D"))
            features = calendar.annotate(days)
            records.append({"org": org, "quarter": row.quarter,
                            "even_month3": float((features["month_of_quarter"] == 3).mean()),
                            "even_last_weeks": float((features["days_to_quarter_end"] < 7 * LAST_WEEKS).mean())})
    return pd.DataFrame(records, columns=["org", "quarter", "even_month3", "even_last_weeks"])


def _effective(weights: np.ndarray, hits: np.ndarray) -> tuple[float, float, float]:
    """(share, effective successes, effective n) of a weighted proportion (Kish's effective sample size)."""
    total = weights.sum()
    share = float((weights * hits).sum() / total)
    n_eff = float(total ** 2 / np.square(weights).sum())
    return share, share * n_eff, n_eff


def _level(share: float, count: float, nobs: float, ci_level: float) -> tuple[float, float]:
    """Wilson score interval of a weighted proportion (``share`` is ``count / nobs``)."""
    low, high = proportion_confint(count, nobs, alpha=1 - ci_level, method="wilson")
    return float(low), float(high)


def _above(count: float, nobs: float, null: float, ci_level: float) -> tuple[float, float, float]:
    """Interval of ``share - null`` (Wilson, shifted) and a one-sided score-test p-value against ``null``."""
    share = count / nobs
    low, high = _level(share, count, nobs, ci_level)
    se0 = np.sqrt(null * (1 - null) / nobs)
    p = float(stats.norm.sf((share - null) / se0)) if se0 > 0 else np.nan
    return low - null, high - null, p


def _against_rest(q: tuple[float, float, float], rest: tuple[float, float, float],
                  ci_level: float) -> tuple[float, float, float]:
    """Interval of ``share_q - share_rest`` (Newcombe) and a one-sided score test that it is larger."""
    _, count1, nobs1 = q
    _, count2, nobs2 = rest
    low, high = confint_proportions_2indep(count1, nobs1, count2, nobs2, method="newcomb", compare="diff",
                                           alpha=1 - ci_level)
    test = test_proportions_2indep(count1, nobs1, count2, nobs2, method="score", compare="diff",
                                   alternative="larger")
    return float(low), float(high), float(test.pvalue)


def judged_quarters(dataset: Dataset) -> pd.DataFrame:
    """Every org × quarter up to as-of with whether this component may judge it.

    A quarter is judged (``complete``) when it is complete by the one rule every
    analysis uses (:func:`quarterpanic.analysis.inputs.quarter_coverage`) *and* the
    records this component reads cover it: the organisation's first closed deal
    closes on or before the quarter's start, and the quarter starts at least one
    typical won-deal cycle after the first record (before that, deals created
    before the export began are missing, so the quarter looks more back-loaded
    than it was). Other ended quarters are ``partial``; the running one is ``open``.

    Returns ``org, quarter, quarter_start, quarter_end, status``.
    """
    columns = ["org", "quarter", "quarter_start", "quarter_end", "status"]
    opps = dataset.opportunities
    if opps.empty or pd.isna(dataset.as_of):
        return pd.DataFrame(columns=columns)
    frames = []
    for org, rows in opps.groupby(opps["org"].astype(str), sort=True):
        quarters = dataset.calendar(org).quarters(rows["created_at"].min(), dataset.as_of)
        frames.append(quarters.assign(org=org, quarter=quarters["quarter"].astype(str)))
    grid = pd.concat(frames, ignore_index=True)
    grid = grid[grid["quarter_start"] <= dataset.as_of].reset_index(drop=True)
    coverage = quarter_coverage(dataset, grid["org"], grid["quarter_start"], grid["quarter_end"])
    closed = opps[opps["is_closed"].astype(bool) & opps["close_date"].notna()]
    first_close = closed.groupby(closed["org"].astype(str))["close_date"].min()
    # reindex, not map: an organisation whose pipeline is all open has no close, and mapping through an
    # empty date Series fails in pandas.
    closes_covered = grid["quarter_start"].to_numpy() >= first_close.reindex(grid["org"]).fillna(
        pd.Timestamp.max).to_numpy()
    first_record = grid["org"].map(opps.groupby(opps["org"].astype(str))["created_at"].min())
    cycle = pd.to_timedelta(grid["org"].map(won_cycle_days(opps)).fillna(0.0), unit="D")
    warmed_up = grid["quarter_start"] >= first_record.dt.normalize() + cycle
    judged = coverage["complete"] & closes_covered & warmed_up
    ended = coverage["complete"] | coverage["partial"]
    grid["status"] = np.select([judged, ended], [COMPLETE, PARTIAL], default="open")
    return grid[columns]


def detect_bookings_backloading(dataset: Dataset, params: Mapping[str, Any] | None = None, *,
                                cache: bool = False) -> pd.DataFrame:
    """Findings of the bookings back-loading component (the ``detect`` registry entry).

    ``cache`` is accepted for the registry's signature; the computation is a few
    group sums and needs none.
    """
    params = {**defaults(), **(params or {})}
    ci_level = float(params.get("ci_level", 0.95))
    quarters = judged_quarters(dataset)
    if quarters.empty:
        return empty_findings()
    if params.get("orgs"):
        quarters = quarters[quarters["org"].isin(list(params["orgs"]))]
    deals = won_deals_by_quarter(dataset)
    weighting = deals.attrs.get("weighting", {})
    evens = even_shares(dataset.calendars, quarters[quarters["status"] != "open"])
    records: list[dict[str, Any]] = []
    for org, org_quarters in quarters[quarters["status"] != "open"].groupby("org", sort=True):
        org_deals = deals[deals["org"] == org]
        judged = org_quarters.loc[org_quarters["status"] == COMPLETE, "quarter"].tolist()
        signal = ["won amount"] if weighting.get(org) == "amount" else ["won deal count"]
        for row in org_quarters.itertuples(index=False):
            base = {"org": org, "quarter": row.quarter, "segment": ALL_SEGMENTS, "component": COMPONENT,
                    "quarter_complete": row.status == COMPLETE, "signals": signal}
            if row.status != COMPLETE:
                records.extend({**base, "metric": m, "status": PARTIAL} for m in METRIC_NAMES)
                continue
            in_q = org_deals[org_deals["quarter"] == row.quarter]
            if len(in_q) < MIN_WON_DEALS:
                records.extend({**base, "metric": m, "status": INSUFFICIENT, "n": len(in_q)} for m in METRIC_NAMES)
                continue
            records.extend(_quarter_findings(base, in_q, org_deals[org_deals["quarter"].isin(judged)
                                                                   & (org_deals["quarter"] != row.quarter)],
                                             evens, ci_level))
    if not records:
        return empty_findings()
    findings = make_findings(pd.DataFrame(records)).assign(ci_level=ci_level)
    return apply_fdr_of(findings, params)


#: The metrics this component reports, main first.
METRIC_NAMES = (COMPONENT, "month3_bookings_share", "month3_share_above_even", "last_two_weeks_share_above_even")


def _quarter_findings(base: dict, in_q: pd.DataFrame, rest: pd.DataFrame, evens: pd.DataFrame,
                      ci_level: float) -> list[dict[str, Any]]:
    weights = in_q["weight"].to_numpy()
    month3 = _effective(weights, in_q["in_month3"].to_numpy())
    last = _effective(weights, in_q["in_last_weeks"].to_numpy())
    even = evens[(evens["org"] == base["org"]) & (evens["quarter"] == base["quarter"])].iloc[0]
    n = len(in_q)
    out = []
    if len(rest) >= MIN_WON_DEALS:
        other = _effective(rest["weight"].to_numpy(), rest["in_month3"].to_numpy())
        low, high, p = _against_rest(month3, other, ci_level)
        out.append({**base, "metric": COMPONENT, "estimate": month3[0] - other[0], "ci_low": low, "ci_high": high,
                    "p_value": p, "n": n, "status": OK, "reference": other[0],
                    "se": _se(*_against_rest(month3, other, SE_LEVEL)[:2])})
    else:
        out.append({**base, "metric": COMPONENT, "status": INSUFFICIENT, "n": n})
    low, high = _level(*month3, ci_level)
    out.append({**base, "metric": "month3_bookings_share", "estimate": month3[0], "ci_low": low, "ci_high": high,
                "n": n, "status": OK, "se": _se(*_level(*month3, SE_LEVEL))})
    for metric, (share, count, nobs), null in (("month3_share_above_even", month3, float(even["even_month3"])),
                                               ("last_two_weeks_share_above_even", last,
                                                float(even["even_last_weeks"]))):
        low, high, p = _above(count, nobs, null, ci_level)
        out.append({**base, "metric": metric, "estimate": share - null, "ci_low": low, "ci_high": high,
                    "p_value": p, "n": n, "status": OK, "reference": null,
                    "se": _se(*_level(share, count, nobs, SE_LEVEL))})
    return out


def _se(low95: float, high95: float) -> float:
    """A standard error from a 95% score interval: its average half-width over 1.96.

    The average rather than one side because a share at 0 or 1 has no room on one side (a one-sided
    half-width of zero would claim certainty that three deals do not give).
    """
    return float((high95 - low95) / (2 * SE_Z))
