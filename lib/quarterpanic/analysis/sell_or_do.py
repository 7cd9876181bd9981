"""Sell or do: whether new selling stops while the firm delivers what it just won.

A small firm that wins a large job pulls everyone onto delivery, and new pipeline
dries up until the job ships; at quarter end the same happens in the delivery
crunch. This component measures both against the organisation's own baseline,
for every organisation (the report stresses it for small firms).

**Weeks and days after a win.** Each complete fiscal quarter
(:func:`quarterpanic.analysis.inputs.quarter_coverage`) is cut into its fiscal weeks
(the last one a little shorter or longer). A large win is a won deal whose amount is
at least ``large_win_amount`` (default: the organisation's
:data:`LARGE_WIN_QUANTILE` quantile of won amounts); the ``large_win_weeks`` × 7
days after its close date are *post-win* days (the generator's definition: the
weeks after the win, not after its week). Each week is split into its post-win
days and its other days; a part's count is the opportunities created on its days
(for ``sell_or_do_leads``, the leads logged), its exposure its days weighted by
the organisation's weekday pattern (a firm that never logs deals at weekends
gets no exposure there). The *crunch* weeks are the last ``crunch_weeks`` weeks of
each quarter.

**Model.** Poisson GLMs of the parts' counts with a log link and the exposure
as offset; ``exp(coefficient) − 1`` is the relative change in the rate. The
post-win effect has a fixed effect per quarter (growth and seasons between
quarters are not mistaken for an effect) and per week of quarter: large wins
cluster at quarter end, so the days after them are early-quarter days, and a
within-quarter rhythm would otherwise pass for a stop in selling. The crunch
effect *is* a within-quarter rhythm, so its model has the quarter effects and
the post-win indicator. Weekly counts are overdispersed and a week's two parts
share its ups and downs, so standard errors are cluster-robust by week
(statsmodels' sandwich with its small-sample correction), with t quantiles on
one degree of freedom fewer than the weeks. Intervals are Wald intervals on the
log scale at ``ci_level``, transformed; one-sided p-values in the panic
direction (the rate falls).

Findings (one row per organisation, pooled over its complete quarters and filed
under the last of them; ``since_quarter`` names the first, ``win_amount`` the
threshold in the organisation's most frequent ``currency``, ``weeks_after`` the weeks after a win that count,
``post_weeks`` the post-win days in weeks):

* ``sell_or_do`` (main): relative change of new-pipeline creation in post-win weeks;
* ``sell_or_do_crunch``: the same in the quarter's crunch weeks;
* ``sell_or_do_leads``: relative change of leads logged in post-win weeks (where a leads table exists).

``insufficient data`` below :data:`MIN_QUARTERS` complete quarters holding a record of the kind counted
(an extract cut by creation date has later quarters with closes and no creation; they are left out),
:data:`MIN_POST_WEEKS` weeks of post-win days or :data:`MIN_CREATED` records.
"""
from __future__ import annotations

import warnings
from typing import Any, Mapping

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats
from statsmodels.tools.sm_exceptions import PerfectSeparationError, PerfectSeparationWarning

from quarterpanic.analysis.findings import (
    ALL_SEGMENTS, INSUFFICIENT, NOT_MEASURED, OK, apply_fdr_of, empty_findings, make_findings, register_metric,
)
from quarterpanic.analysis.inputs import input_presence, missing_inputs, quarter_coverage
from quarterpanic.dataset import Dataset
from quarterpanic.params import defaults

COMPONENT = "sell_or_do"
CRUNCH = "sell_or_do_crunch"
LEADS = "sell_or_do_leads"
#: The metrics this component reports, main first.
METRIC_NAMES = (COMPONENT, CRUNCH, LEADS)
LARGE_WIN_QUANTILE = 0.9  # default threshold of a large win: this quantile of the organisation's won amounts
MIN_QUARTERS = 2  # complete quarters, so that post-win weeks have same-quarter weeks to compare with
MIN_POST_WEEKS = 4
MIN_CREATED = 30

register_metric(COMPONENT, component=COMPONENT, null=0.0, direction=-1, unit="relative", sided="one-sided",
                per_quarter=False, description="new-pipeline creation in the weeks after a large win changed by")
register_metric(CRUNCH, component=COMPONENT, null=0.0, direction=-1, unit="relative", sided="one-sided",
                per_quarter=False, description="new-pipeline creation in the quarter-end crunch weeks changed by")
register_metric(LEADS, component=COMPONENT, null=0.0, direction=-1, unit="relative", sided="one-sided",
                per_quarter=False, description="leads logged in the weeks after a large win changed by")


def week_units(calendar: Any, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """The fiscal weeks of every quarter overlapping ``[start, end]``, in order.

    Returns ``quarter, quarter_start, quarter_end, week_of_quarter, week_start, days`` (the last week of a
    quarter runs to its end: 89-92 day quarters have 13 weeks of 7 ± a few days).
    """
    quarters = calendar.quarters(start, end)
    frames = []
    for row in quarters.itertuples(index=False):
        weeks = np.arange(1, int(row.weeks_in_quarter) + 1)
        week_start = row.quarter_start + pd.to_timedelta(7 * (weeks - 1), unit="D")
        days = np.full(len(weeks), 7)
        days[-1] = int(row.days_in_quarter) - 7 * (len(weeks) - 1)
        frames.append(pd.DataFrame({"quarter": str(row.quarter), "quarter_start": row.quarter_start,
                                    "quarter_end": row.quarter_end, "week_of_quarter": weeks,
                                    "week_start": week_start, "days": days}))
    return pd.concat(frames, ignore_index=True)


def _day_index(first_day: pd.Timestamp, stamps: pd.Series) -> np.ndarray:
    """Days since ``first_day`` of each timestamp."""
    return ((pd.to_datetime(stamps).dt.normalize() - first_day) // pd.Timedelta(days=1)).to_numpy(dtype=int)


def large_win_threshold(won_amounts: pd.Series, amount: float | None) -> float:
    """The amount from which a win is large: ``amount`` if given, else the :data:`LARGE_WIN_QUANTILE` quantile."""
    if amount is not None:
        return float(amount)
    values = pd.to_numeric(won_amounts, errors="coerce").dropna()
    return float(values.quantile(LARGE_WIN_QUANTILE)) if len(values) else np.nan


def weekday_weights(days: pd.DatetimeIndex, counts: np.ndarray, basis: np.ndarray | None = None) -> np.ndarray:
    """Each day's expected share of a week's records by its weekday (mean 1 over a week).

    The weekday pattern is read from the days ``basis`` marks (default: all). An organisation that never
    logs deals at weekends has weekend weight 0, so a part of a week made of weekend days carries no
    exposure; without records, every day weighs 1.
    """
    basis = np.ones(len(days), dtype=bool) if basis is None else basis
    by_weekday = np.bincount(days.day_of_week[basis], weights=counts[basis], minlength=7)
    if by_weekday.sum() == 0:
        return np.ones(len(days))
    return (7 * by_weekday / by_weekday.sum())[days.day_of_week]


def weekly_activity(dataset: Dataset, org: str, params: Mapping[str, Any]) -> pd.DataFrame:
    """One organisation's weeks, each split into its post-win days and its other days, as the model reads them.

    A day is post-win when it falls in the ``large_win_weeks`` × 7 days after a large win's close date.
    Returns one row per week and part with the :func:`week_units` columns plus ``week`` (position of the
    week), ``post_win`` and ``crunch`` (bool), ``complete`` (the quarter is complete), ``part_days``, ``created`` and
    ``leads`` (records created on the part's days) and ``exposure_created`` / ``exposure_leads`` (the
    part's days weighted by weekday, :func:`weekday_weights`); parts without days are left out. The
    frame's ``attrs`` hold ``win_amount`` (the large-win threshold) and ``large_wins`` (their number).
    """
    opps = dataset.opportunities[dataset.opportunities["org"].astype(str) == org]
    leads = dataset.leads[dataset.leads["org"].astype(str) == org]
    first = pd.concat([opps["created_at"], leads["created_at"]]).min()
    units = week_units(dataset.calendar(org), first, dataset.as_of)
    units["week"] = np.arange(len(units))
    units["crunch"] = units["week_of_quarter"] > units.groupby("quarter")["week_of_quarter"].transform("max") - int(
        params["crunch_weeks"])
    coverage = quarter_coverage(dataset, pd.Series(org, index=units.index), units["quarter_start"],
                                units["quarter_end"])
    units["complete"] = coverage["complete"].to_numpy()
    first_day = units["week_start"].iloc[0]
    days = pd.date_range(first_day, units["quarter_end"].iloc[-1], freq="D")
    week_of_day = np.repeat(units["week"].to_numpy(), units["days"].to_numpy())
    complete_day = units["complete"].to_numpy()[week_of_day]
    won = opps[opps["is_won"].astype(bool) & opps["close_date"].notna()]
    threshold = large_win_threshold(won["amount"], params.get("large_win_amount"))
    large = won[pd.to_numeric(won["amount"], errors="coerce") >= threshold]
    post = np.zeros(len(days), dtype=bool)
    span = 7 * int(params["large_win_weeks"])
    for day in np.unique(_day_index(first_day, large["close_date"])):
        post[max(day, 0): max(day + span, 0)] = True
    daily = pd.DataFrame({"week": week_of_day, "post_win": post, "part_days": 1})
    for name, table in (("created", opps), ("leads", leads)):
        index = _day_index(first_day, table["created_at"].dropna())
        counts = np.bincount(index[(index >= 0) & (index < len(days))], minlength=len(days)).astype(float)
        daily[name] = counts
        daily[f"exposure_{name}"] = weekday_weights(days, counts, basis=complete_day)
    parts = daily.groupby(["week", "post_win"], as_index=False).sum()
    parts = parts.merge(units, on="week", how="left")
    parts.attrs.update(win_amount=threshold, large_wins=len(large))
    return parts


NO_ESTIMATE = {"estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan}


def _poisson_effect(parts: pd.DataFrame, count: str, effect: str, controls: list[pd.DataFrame],
                    ci_level: float) -> dict[str, float]:
    """Relative change exp(β) − 1 of ``count``'s rate where ``effect`` holds, given the ``controls``' columns.

    Standard errors are clustered by week (a week's two parts share its ups and downs), with t quantiles
    on one degree of freedom fewer than the weeks: a sandwich from ~100 clusters is a little too small.
    """
    design = pd.concat(controls + [parts[[effect]].astype(float)], axis=1)
    model = sm.GLM(parts[count].to_numpy(dtype=float), design, family=sm.families.Poisson(),
                   offset=np.log(parts[f"exposure_{count}"].to_numpy(dtype=float)))
    with warnings.catch_warnings():
        # A cell of zero counts (no record at all on the post-win or crunch days) has no finite estimate:
        # that is "insufficient data", not a number and a warning on the user's screen.
        warnings.simplefilter("error", PerfectSeparationWarning)
        try:
            fit = model.fit(cov_type="cluster", cov_kwds={"groups": parts["week"].to_numpy()})
        except (PerfectSeparationWarning, PerfectSeparationError, np.linalg.LinAlgError):
            return dict(NO_ESTIMATE)
    t = stats.t(df=parts["week"].nunique() - 1)
    beta, se = float(fit.params[effect]), float(fit.bse[effect])
    if not (np.isfinite(beta) and np.isfinite(se) and se > 0):
        return dict(NO_ESTIMATE)
    half = t.ppf((1 + ci_level) / 2) * se
    return {"estimate": np.expm1(beta), "ci_low": np.expm1(beta - half), "ci_high": np.expm1(beta + half),
            "p_value": float(t.cdf(beta / se))}


def rate_change(parts: pd.DataFrame, count: str, ci_level: float) -> dict[str, dict[str, float]]:
    """Relative change of the ``count`` rate on post-win days and in crunch weeks (Poisson GLMs).

    ``parts`` is :func:`weekly_activity`'s frame (its complete quarters). The post-win effect is estimated
    with a fixed effect per quarter *and* per week of quarter: large wins cluster at quarter end, so the
    days after them are early-quarter days, and any within-quarter rhythm would otherwise pass for an
    effect. The crunch effect is a within-quarter rhythm itself, so its model has quarter effects and the
    post-win indicator. Returns ``{"post_win": {...}, "crunch": {...}}``, each with ``estimate``
    (exp(β) − 1), ``ci_low``, ``ci_high`` and a one-sided ``p_value`` that the rate fell (all NaN for an
    indicator that never varies: no large win at all).
    """
    parts = parts[parts[f"exposure_{count}"] > 0]
    # A quarter without a single record of this kind lies outside what the export holds (an extract cut
    # by creation date still has later quarters' closes): its fixed effect would be -inf, and it says
    # nothing about a stop in selling.
    parts = parts[parts.groupby("quarter")[count].transform("sum") > 0]
    quarter = pd.get_dummies(parts["quarter"], prefix="q", dtype=float)
    week = pd.get_dummies(parts["week_of_quarter"], prefix="w", dtype=float, drop_first=True)
    varies = {name: parts[name].nunique() > 1 for name in ("post_win", "crunch")}
    out = {name: dict(NO_ESTIMATE) for name in varies}
    if varies["post_win"]:
        out["post_win"] = _poisson_effect(parts, count, "post_win", [quarter, week], ci_level)
    if varies["crunch"]:
        controls = [quarter, parts[["post_win"]].astype(float)] if varies["post_win"] else [quarter]
        out["crunch"] = _poisson_effect(parts, count, "crunch", controls, ci_level)
    return out


def detect_sell_or_do(dataset: Dataset, params: Mapping[str, Any] | None = None, *,
                      cache: bool = False) -> pd.DataFrame:
    """Findings of the sell-or-do component (the ``detect`` registry entry).

    ``cache`` is accepted for the registry's signature; one small GLM per organisation needs none.
    """
    params = {**defaults(), **(params or {})}
    ci_level = float(params.get("ci_level", 0.95))
    present = input_presence(dataset)
    orgs = sorted(set(dataset.opportunities["org"].astype(str)))
    if params.get("orgs"):
        orgs = [org for org in orgs if org in set(params["orgs"])]
    opps = dataset.opportunities
    currencies = opps.groupby(opps["org"].astype(str))["currency"].agg(
        lambda c: c.mode().iloc[0] if c.notna().any() else "").to_dict()
    records: list[dict[str, Any]] = []
    for org in orgs:
        weeks = weekly_activity(dataset, org, params)
        judged = weeks[weeks["complete"]].reset_index(drop=True)
        if judged.empty:
            continue
        quarters = judged["quarter"].unique()
        post_days = judged.loc[judged["post_win"], "part_days"].sum()
        base = {"org": org, "quarter": quarters[-1], "segment": ALL_SEGMENTS, "component": COMPONENT,
                "quarter_complete": True, "since_quarter": quarters[0],
                "win_amount": weeks.attrs["win_amount"], "currency": currencies.get(org, ""),
                "weeks_after": int(params["large_win_weeks"]), "post_weeks": round(float(post_days) / 7, 1)}
        records.extend(_org_findings(base, judged, present.get(org, set()), ci_level))
    if not records:
        return empty_findings()
    findings = make_findings(pd.DataFrame(records)).assign(ci_level=ci_level)
    return apply_fdr_of(findings, params)


def _org_findings(base: dict, weeks: pd.DataFrame, present: set[str], ci_level: float) -> list[dict[str, Any]]:
    """The three findings of one organisation from its complete quarters' weeks."""
    out = []
    enough_weeks = weeks["quarter"].nunique() >= MIN_QUARTERS and base["post_weeks"] >= MIN_POST_WEEKS
    for metric, count, effect in ((COMPONENT, "created", "post_win"), (CRUNCH, "created", "crunch"),
                                  (LEADS, "leads", "post_win")):
        row = {**base, "metric": metric, "n": int(weeks[count].sum())}
        needs = missing_inputs(metric, present)
        if needs:
            out.append({**row, "status": NOT_MEASURED, "needs": needs})
            continue
        recorded = weeks[weeks.groupby("quarter")[count].transform("sum") > 0]
        enough_quarters = recorded["quarter"].nunique() >= MIN_QUARTERS
        enough = enough_quarters if effect == "crunch" else enough_quarters and enough_weeks
        if not enough or row["n"] < MIN_CREATED:
            out.append({**row, "status": INSUFFICIENT})
            continue
        estimate = rate_change(weeks, count, ci_level)[effect]
        out.append({**row, **estimate, "status": OK if np.isfinite(estimate["estimate"]) else INSUFFICIENT})
    return out
