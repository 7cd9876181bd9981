"""Sell or do: whether new selling stops while the firm delivers what it just won.

A small firm that wins a large job pulls everyone onto delivery, and new pipeline
dries up until the job ships; at quarter end the same happens in the delivery
crunch. This component measures both against the organisation's own baseline,
for every organisation (the report stresses it for small firms).

**Weeks.** Each complete fiscal quarter (:func:`quarterpanic.analysis.inputs.quarter_coverage`)
is cut into its fiscal weeks (the last one a little shorter or longer); a week's
count is the opportunities created in it (and, for ``sell_or_do_leads``, the leads
logged in it), its exposure the days it has.

**Large wins and the weeks after them.** A large win is a won deal whose amount is
at least ``large_win_amount`` (default: the organisation's
:data:`LARGE_WIN_QUANTILE` quantile of won amounts). Weeks 1 to
``large_win_weeks`` after the week a large win closed are *post-win* weeks (the
win's own week is not: part of it came before the win). The *crunch* weeks are
the last ``crunch_weeks`` weeks of each quarter.

**Model.** A Poisson GLM of the weekly counts with a log link, the week's days
as exposure, a fixed effect per quarter (so growth and seasons between quarters
are not mistaken for an effect) and two indicators, post-win and crunch:
``exp(coefficient) − 1`` is the relative change in the creation rate in those
weeks against the same quarter's other weeks. Weekly counts are overdispersed
and a post-win run spans consecutive weeks, so standard errors are
heteroskedasticity- and autocorrelation-consistent (Newey–West, lag
:data:`HAC_LAGS`), with the quarters' fixed effects taken out. Intervals are
Wald intervals on the log scale at ``ci_level``, transformed. One-sided
p-values in the panic direction (the rate falls).

Findings (one row per organisation, pooled over its complete quarters and filed
under the last of them; ``since_quarter`` names the first, ``win_amount`` the
threshold in the organisation's most frequent ``currency``, ``weeks_after`` the weeks after a win that count,
``post_weeks`` the number of post-win weeks):

* ``sell_or_do`` (main): relative change of new-pipeline creation in post-win weeks;
* ``sell_or_do_crunch``: the same in the quarter's crunch weeks;
* ``sell_or_do_leads``: relative change of leads logged in post-win weeks (where a leads table exists).

``insufficient data`` below :data:`MIN_QUARTERS` complete quarters,
:data:`MIN_POST_WEEKS` post-win weeks or :data:`MIN_CREATED` records.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats

from quarterpanic.analysis.findings import (
    ALL_SEGMENTS, INSUFFICIENT, NOT_MEASURED, OK, apply_fdr, empty_findings, make_findings, register_metric,
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
HAC_LAGS = 2  # a post-win run lasts a few weeks: neighbouring weeks' noise is allowed to correlate

register_metric(COMPONENT, component=COMPONENT, null=0.0, direction=-1, unit="relative", sided="one-sided",
                description="new-pipeline creation in the weeks after a large win changed by")
register_metric(CRUNCH, component=COMPONENT, null=0.0, direction=-1, unit="relative", sided="one-sided",
                description="new-pipeline creation in the quarter-end crunch weeks changed by")
register_metric(LEADS, component=COMPONENT, null=0.0, direction=-1, unit="relative", sided="one-sided",
                description="leads logged in the weeks after a large win changed by")


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


def _unit_of(units: pd.DataFrame, stamps: pd.Series) -> np.ndarray:
    """Position in ``units`` of the week holding each timestamp (-1 before the first week)."""
    starts = units["week_start"].to_numpy(dtype="datetime64[ns]")
    days = pd.to_datetime(stamps).dt.normalize().to_numpy(dtype="datetime64[ns]")
    return np.searchsorted(starts, days, side="right") - 1


def large_win_threshold(won_amounts: pd.Series, amount: float | None) -> float:
    """The amount from which a win is large: ``amount`` if given, else the :data:`LARGE_WIN_QUANTILE` quantile."""
    if amount is not None:
        return float(amount)
    values = pd.to_numeric(won_amounts, errors="coerce").dropna()
    return float(values.quantile(LARGE_WIN_QUANTILE)) if len(values) else np.nan


def weekly_activity(dataset: Dataset, org: str, params: Mapping[str, Any]) -> pd.DataFrame:
    """One organisation's weeks with the counts and indicators the model reads.

    Returns the :func:`week_units` columns plus ``complete`` (the quarter is complete), ``created``
    (opportunities created), ``leads`` (leads logged), ``post_win`` and ``crunch`` (bool); the frame's
    ``attrs`` hold ``win_amount`` (the large-win threshold) and ``large_wins`` (their number).
    """
    opps = dataset.opportunities[dataset.opportunities["org"].astype(str) == org]
    leads = dataset.leads[dataset.leads["org"].astype(str) == org]
    first = pd.concat([opps["created_at"], leads["created_at"]]).min()
    units = week_units(dataset.calendar(org), first, dataset.as_of)
    coverage = quarter_coverage(dataset, pd.Series(org, index=units.index), units["quarter_start"],
                                units["quarter_end"])
    units["complete"] = coverage["complete"].to_numpy()
    units["created"] = np.bincount(_unit_of(units, opps["created_at"].dropna()).clip(0),
                                   minlength=len(units))[: len(units)]
    units["leads"] = (np.bincount(_unit_of(units, leads["created_at"].dropna()).clip(0), minlength=len(units))
                      [: len(units)] if len(leads) else 0)
    won = opps[opps["is_won"].astype(bool) & opps["close_date"].notna()]
    threshold = large_win_threshold(won["amount"], params.get("large_win_amount"))
    large = won[pd.to_numeric(won["amount"], errors="coerce") >= threshold]
    win_weeks = np.unique(_unit_of(units, large["close_date"]))
    post = np.zeros(len(units), dtype=bool)
    for week in win_weeks[win_weeks >= 0]:
        post[week + 1: week + 1 + int(params["large_win_weeks"])] = True
    units["post_win"] = post
    units["crunch"] = units["week_of_quarter"] > units.groupby("quarter")["week_of_quarter"].transform("max") - int(
        params["crunch_weeks"])
    units.attrs.update(win_amount=threshold, large_wins=len(large))
    return units


def rate_change(weeks: pd.DataFrame, count: str, ci_level: float) -> dict[str, dict[str, float]]:
    """Relative change of the weekly ``count`` rate in post-win and crunch weeks (Poisson GLM, quarter effects).

    Returns ``{"post_win": {...}, "crunch": {...}}``, each with ``estimate`` (exp(β) − 1), ``ci_low``,
    ``ci_high`` and a one-sided ``p_value`` that the rate fell (all NaN for an indicator that never varies).
    """
    design = pd.get_dummies(weeks["quarter"], prefix="q", dtype=float)
    # An indicator that never varies (no large win at all) has no effect to estimate, and would make the fit singular.
    effects = [name for name in ("post_win", "crunch") if weeks[name].nunique() > 1]
    for name in effects:
        design[name] = weeks[name].astype(float).to_numpy()
    model = sm.GLM(weeks[count].to_numpy(dtype=float), design, family=sm.families.Poisson(),
                   offset=np.log(weeks["days"].to_numpy(dtype=float)))
    fit = model.fit(cov_type="HAC", cov_kwds={"maxlags": HAC_LAGS})
    z = stats.norm.ppf((1 + ci_level) / 2)
    out = {name: {"estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan}
           for name in ("post_win", "crunch")}
    for name in effects:
        beta, se = float(fit.params[name]), float(fit.bse[name])
        out[name] = {"estimate": np.expm1(beta), "ci_low": np.expm1(beta - z * se),
                     "ci_high": np.expm1(beta + z * se), "p_value": float(stats.norm.cdf(beta / se))}
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
        base = {"org": org, "quarter": quarters[-1], "segment": ALL_SEGMENTS, "component": COMPONENT,
                "quarter_complete": True, "since_quarter": quarters[0],
                "win_amount": weeks.attrs["win_amount"], "currency": currencies.get(org, ""),
                "weeks_after": int(params["large_win_weeks"]), "post_weeks": int(judged["post_win"].sum())}
        records.extend(_org_findings(base, judged, present.get(org, set()), ci_level))
    if not records:
        return empty_findings()
    findings = make_findings(pd.DataFrame(records)).assign(ci_level=ci_level)
    return apply_fdr(findings, alpha=float(params["alpha"]))


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
        enough = weeks["quarter"].nunique() >= MIN_QUARTERS if effect == "crunch" else enough_weeks
        if not enough or row["n"] < MIN_CREATED:
            out.append({**row, "status": INSUFFICIENT})
            continue
        out.append({**row, **rate_change(weeks, count, ci_level)[effect], "status": OK})
    return out
