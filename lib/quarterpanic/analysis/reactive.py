"""The reactive order-taking detector.

Reactive order-taking is the second symptom of quarter-end panic: as the
quarter closes, sales operations stop doing planned work and take orders —
rush quotes, discount approvals, expedites — from deals that must close now.
The detector works in steps, each a function a notebook can call on its own:

1. :mod:`quarterpanic.analysis.workload` — requests classified (unplanned, urgent,
   exception, planned, after hours) and counted per organisation × quarter ×
   week of quarter, with each week's *working days* as exposure (Mon–Fri less
   the organisation's public holidays and shutdown days:
   :class:`quarterpanic.calendar.WorkingCalendar`).
2. :func:`estimate_surge` — the onset week of each quarter, profiled in closed
   form over the candidate weeks for all quarters at once
   (:func:`quarterpanic.analysis.onset.profile_step`), then **one quasi-Poisson GLM per
   organisation**: weekly unplanned counts with log(working days) as offset,
   quarter fixed effects and a quarter-specific late-window indicator at each
   quarter's onset. ``exp(coef)`` of the indicator is the ratio of the daily
   rate from the onset on to the same quarter's earlier weeks.
3. Secondary metrics at that window: ``planned_work_deferral`` (the same
   model on planned requests), ``turnaround_stretch``
   (:mod:`quarterpanic.analysis.turnaround`), ``after_hours_shift`` and wasted effort
   (:func:`share_change` on :func:`deal_links`: requests spent on deals
   finally lost, or unqualified when created). The shifts are late-window
   share minus early-window share (in a sample's ``truth.json``,
   ``after_hours_share`` is the late-window level, so the shift's truth is
   that minus the calm level).
4. :func:`detect_reactive_order_taking` — the findings table
   (:func:`analyse_reactive` keeps every intermediate table for the notebook).

Why quasi-Poisson: the point estimate is the Poisson maximum-likelihood rate
ratio — exactly the ratio of the two daily rates, the quantity the question
asks about — while the Pearson dispersion, estimated across all the weeks of
the organisation, widens the intervals when weekly counts vary more than
Poisson (bursty teams, holiday weeks). A negative binomial would estimate the
same ratio with an extra shape parameter per organisation that ~100 weekly
counts pin down poorly. The dispersion is never taken below 1: an estimate
below 1 is mostly noise, and the onset search has already made the residuals
look too good (each searched onset is counted as a parameter).

p-values are **one-sided in the metric's panic direction** (the question is
directional: did unplanned work *rise*?). The main metric's onset was chosen
to make the rise look largest, so its p-value is corrected for that search
by the maximum of the candidate split statistics
(:func:`quarterpanic.analysis.onset.max_t_adjusted`, one-sided: P(max_k Z_k >= z)
with the splits' correlation from their shares of working days). Adjacent
splits share most weeks, so with eight candidates this multiplies a small
p-value by about 4 to 6 rather than Bonferroni's 8, and still keeps calm
quarters at the nominal rate.
The interval pays for the same search, in two stages. Until the adjusted
p-value confirms a step (below ``(1 - ci_level) / 2``) it is ``± z``
standard errors about the log rate ratio with ``z`` the one-sided max-T
critical value over all the candidates at ``(1 - ci_level) / 2`` (2.56 for
weeks 5-12 of a 13-week quarter where the plain interval uses 1.96), so it
holds 1; once a step is confirmed, ``z`` is the max-T critical value over the
onsets the data cannot tell from the chosen one (a likelihood confidence set
for the onset, :func:`plausible_onset_fractions`): 1.96 for a sharp surge
whose onset is not in doubt, more for a ramp or a weak step. Either way the
interval lies above 1 exactly when the adjusted p-value is below 0.025 — the
relation of a plain 95% interval to a one-sided p-value — calm quarters'
intervals hold 1 about 95% of the time (the plain 1.96 interval held it
85-87% of the time), and clear panic quarters are not given the whole
search's width for an onset that is not in doubt (which held their truth
99.5% of the time; the chosen onset and its two neighbours, 98-99%). The
estimate stays the centre of its interval on the log scale.
Secondary metrics reuse that onset as a fixed window; it was chosen on a
different series, so their p-values are not corrected.

Only complete quarters (the last day over by ``as_of``) are judged. The open
quarter is described (its weeks count only the working days up to
``as_of``) but gets no finding: :mod:`quarterpanic.analysis.panic_index` warns inside
a quarter. Nor is a quarter the exports start in the middle of: its early
weeks would look empty.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import optimize, stats
from scipy.special import xlogy
from statsmodels.genmod.families import Poisson
from statsmodels.genmod.generalized_linear_model import GLM
from statsmodels.tools.sm_exceptions import PerfectSeparationWarning

from quarterpanic.analysis import turnaround
from quarterpanic.analysis.findings import (
    ALL_SEGMENTS, INSUFFICIENT, OK, PARTIAL, apply_fdr_of, empty_findings, make_findings, register_metric,
)
from quarterpanic.analysis.inputs import mark_not_measured, qualification_signals, quarter_coverage
from quarterpanic.analysis.onset import max_t_adjusted, profile_step, weekly_matrix
from quarterpanic.analysis.workload import deal_links, request_features, week_grid, weekly_requests
from quarterpanic.dataset import Dataset
from quarterpanic.params import defaults
from quarterpanic.store import results as results_cache

COMPONENT = "reactive_order_taking"
MIN_WEEKS_EACH_SIDE = 2
MIN_CLUSTERS = 20  # fewer clusters than this and cluster-robust errors are not trusted

register_metric(
    COMPONENT,
    component=COMPONENT,
    null=1.0,
    direction=+1,
    unit="ratio",
    sided="one-sided",  # p-values are one-sided in the panic direction
    description="unplanned sales-ops requests per working day, relative to the quarter's earlier weeks, ran at",
)
register_metric(
    "planned_work_deferral",
    component=COMPONENT,
    null=1.0,
    direction=-1,
    unit="ratio",
    sided="one-sided",  # p-values are one-sided in the panic direction
    description="planned sales-ops work per working day, relative to the quarter's earlier weeks, ran at",
)
register_metric(
    "after_hours_shift",
    component=COMPONENT,
    null=0.0,
    direction=+1,
    unit="share",
    sided="one-sided",  # p-values are one-sided in the panic direction
    description="the share of requests raised outside 08:00-18:00 changed, late weeks vs earlier, by",
)
register_metric(
    "wasted_effort_lost",
    component=COMPONENT,
    null=0.0,
    direction=+1,
    unit="share",
    sided="one-sided",  # p-values are one-sided in the panic direction
    description="the share of deal requests spent on deals finally lost changed, late weeks vs earlier, by",
)
register_metric(
    "wasted_effort_unqualified",
    component=COMPONENT,
    null=0.0,
    direction=+1,
    unit="share",
    sided="one-sided",  # p-values are one-sided in the panic direction
    description="the share of deal requests spent on deals unqualified at creation changed, late weeks vs earlier, by",
)

# -- the surge: onset, then one count model per organisation ----------------------------------
SURGE_COLUMNS = [
    "onset_week", "n_candidates", "events", "weeks_before", "weeks_after", "events_before", "exposure_before",
    "events_after", "exposure_after", "rate_before", "rate_after", "estimate", "ci_low", "ci_high", "critical_value",
    "p_value", "p_unadjusted", "dispersion", "status",
]


def candidate_weeks(onset_weeks: Sequence[int], weeks_in_quarter: pd.Series | int = 13) -> list[int]:
    """Candidate onset weeks ``onset_weeks[0]..onset_weeks[1]`` that leave two weeks on each side."""
    shortest = int(np.min(weeks_in_quarter)) if np.size(weeks_in_quarter) else 13
    low, high = int(onset_weeks[0]), int(onset_weeks[1])
    return [w for w in range(low, high + 1) if MIN_WEEKS_EACH_SIDE < w <= shortest - MIN_WEEKS_EACH_SIDE + 1]


def estimate_surge(
    weekly: pd.DataFrame,
    *,
    events: str = "unplanned",
    exposure: str = "working_days",
    group_cols: Sequence[str] = ("org", "quarter"),
    model_by: Sequence[str] = ("org",),
    candidates: Sequence[int] = tuple(range(5, 13)),
    onsets: pd.DataFrame | None = None,
    direction: int = +1,
    min_events: int = 20,
    ci_level: float = 0.95,
) -> pd.DataFrame:
    """Rate ratio of ``events`` per unit of ``exposure`` from each quarter's onset on, vs before.

    Parameters
    ----------
    weekly:
        One row per group × ``week_of_quarter`` (:func:`weekly_requests`),
        only the quarters to judge.
    events, exposure:
        Count column and its exposure (working days).
    group_cols:
        Columns of one series (one org × quarter).
    model_by:
        Columns of one model fit: one quasi-Poisson GLM per organisation, with
        a fixed effect and a late-window indicator per quarter.
    candidates:
        Onset weeks tried when ``onsets`` is None.
    onsets:
        ``group_cols`` + ``onset_week`` to use instead of searching (the
        window found on another series); p-values are then not adjusted.
    direction:
        ``+1`` looks for a rise (the onset search keeps only steps up when
        there are any, and the p-value is one-sided upwards), ``-1`` a fall.
    min_events:
        Fewer events in the quarter — or fewer than two weeks, or no event, on
        either side of the onset — is ``insufficient data``.

    Returns
    -------
    One row per group: ``group_cols`` + :data:`SURGE_COLUMNS`. ``estimate``
    is ``exp(coef)`` of the quarter's late-window indicator (the rate ratio),
    ``ci_low``/``ci_high`` its Wald interval on the log scale with the
    organisation's Pearson dispersion (at least 1) — when the onset was
    searched, ``± z`` standard errors with ``z`` the simultaneous max-T
    critical value (:func:`simultaneous_critical_value`) over all the
    candidates, or, once ``p_value < (1 - ci_level) / 2`` confirms the step,
    over the onsets the data leave plausible (:func:`plausible_onset_fractions`);
    so the interval lies beyond
    1 in the panic direction exactly when ``p_value < (1 - ci_level) / 2``.
    At a given onset it is the plain ``ci_level`` interval. ``critical_value`` is
    the ``z`` each interval used (the findings carry it, so a reader turns an
    interval back into its standard error) — ``p_value`` one-sided in
    ``direction`` and, when the onset was searched, max-T adjusted over the
    ``n_candidates`` candidates with working days on both sides
    (:func:`quarterpanic.analysis.onset.max_t_adjusted`; ``p_unadjusted`` is the
    p-value at the chosen onset alone).
    """
    group_cols, model_by = list(group_cols), list(model_by)
    data = weekly[weekly[exposure] > 0]
    keys = data[group_cols].drop_duplicates().reset_index(drop=True)
    if keys.empty:
        return pd.DataFrame(columns=group_cols + SURGE_COLUMNS)
    searched = onsets is None
    if searched:
        candidates = list(candidates)
        found = _search_onsets(data, group_cols, events, exposure, candidates, direction)
    else:
        found = keys.merge(onsets[group_cols + ["onset_week"]], on=group_cols, how="left")
        found["n_candidates"] = 1
        found["candidate_fractions"] = [()] * len(found)
    data = data.merge(found[group_cols + ["onset_week"]], on=group_cols, how="left")
    data["late"] = (data["week_of_quarter"] >= data["onset_week"]).fillna(False).astype(bool)
    sides = _side_totals(data, group_cols, events, exposure)
    out = keys.merge(
        found[group_cols + ["onset_week", "n_candidates", "candidate_fractions"]], on=group_cols, how="left"
    ).merge(sides, on=group_cols, how="left")
    enough = (
        out["onset_week"].notna()
        & (out["events"] >= min_events)
        & (out["weeks_before"] >= MIN_WEEKS_EACH_SIDE)
        & (out["weeks_after"] >= MIN_WEEKS_EACH_SIDE)
        & (out["events_before"] > 0)
        & (out["events_after"] > 0)
    )
    out["status"] = np.where(enough, OK, INSUFFICIENT)
    ok_keys = out.loc[enough, group_cols]
    fits = _fit_late_effects(
        data.merge(ok_keys, on=group_cols, how="inner"), group_cols, model_by, events, exposure,
        n_searched=1 if searched else 0,
    )
    out = out.merge(fits, on=group_cols, how="left")
    out[["coef", "se", "dispersion"]] = out[["coef", "se", "dispersion"]].astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["rate_before"] = out["events_before"] / out["exposure_before"]
        out["rate_after"] = out["events_after"] / out["exposure_after"]
        out["p_unadjusted"] = stats.norm.sf(np.sign(direction) * out["coef"] / out["se"])
    out["p_value"] = out["p_unadjusted"]
    z = np.full(len(out), float(stats.norm.isf((1 - ci_level) / 2)))
    if searched:
        fractions = [f if isinstance(f, tuple) else () for f in out["candidate_fractions"]]
        alternative = "greater" if direction > 0 else "less"
        out["p_value"] = max_t_adjusted(out["p_unadjusted"], fractions, alternative=alternative)
        # Two stages: until the search-adjusted test confirms a step, the interval pays for the whole search;
        # once it does, it pays for a search over the onsets the data cannot tell from the chosen one.
        confirmed = (out["p_value"] < (1 - ci_level) / 2).to_numpy()
        plausible = plausible_onset_fractions(data, out[group_cols + ["onset_week", "dispersion"]], group_cols,
                                              events, exposure, candidates, ci_level)
        z = np.array([simultaneous_critical_value(near if sure else f, ci_level)
                      for f, near, sure in zip(fractions, plausible, confirmed)])
    out["estimate"] = np.exp(out["coef"])
    out["critical_value"] = np.where(out["se"].notna(), z, np.nan)
    out["ci_low"] = np.exp(out["coef"] - z * out["se"])
    out["ci_high"] = np.exp(out["coef"] + z * out["se"])
    out["onset_week"] = pd.array(out["onset_week"], dtype="Int64")
    return out[group_cols + SURGE_COLUMNS]


def plausible_onset_fractions(
    data: pd.DataFrame, chosen: pd.DataFrame, group_cols: list[str], events: str, exposure: str,
    candidates: Sequence[int], ci_level: float = 0.95,
) -> list[tuple[float, ...]]:
    """Per row of ``chosen``, the base fractions of the candidate onsets the data cannot tell from the chosen one.

    A candidate is plausible when the step there fits the quarter's weekly
    counts almost as well as the step at the chosen ``onset_week``: twice the
    Poisson log-likelihood it loses, over the organisation's ``dispersion``,
    is within the chi-square(1) quantile at ``ci_level`` (a likelihood
    confidence set for the onset). A sharp surge leaves the chosen onset
    alone (its interval is then the plain one); a ramp or a weak step leaves
    several weeks, and the interval pays for a search over them.
    """
    keys, matrices = weekly_matrix(data, group_cols, week_col="week_of_quarter", columns=(events, exposure),
                                   last_week=max(candidates))
    weeks = np.asarray(sorted(candidates), dtype=int)
    cum_events, cum_base = matrices[events].cumsum(axis=1), matrices[exposure].cumsum(axis=1)
    before_events, before_base = cum_events[:, weeks - 2], cum_base[:, weeks - 2]
    after_events, after_base = cum_events[:, -1:] - before_events, cum_base[:, -1:] - before_base
    with np.errstate(divide="ignore", invalid="ignore"):
        step = (xlogy(before_events, before_events / before_base) + xlogy(after_events, after_events / after_base))
        fractions = before_base / cum_base[:, -1:]
    enough = (before_base >= 1) & (after_base >= 1)
    rows = chosen.merge(keys.reset_index(), on=group_cols, how="left")
    cutoff = float(stats.chi2.ppf(ci_level, 1))
    out = []
    for row, onset, dispersion in zip(rows["index"], rows["onset_week"], rows["dispersion"]):
        if pd.isna(row) or pd.isna(onset) or int(onset) not in weeks:
            out.append(())
            continue
        row, at = int(row), int(np.flatnonzero(weeks == int(onset))[0])
        scale = float(dispersion) if np.isfinite(dispersion) else 1.0
        near = enough[row] & (2 * (step[row, at] - step[row]) / scale <= cutoff)
        near[at] = True
        out.append(tuple(fractions[row, near].tolist()))
    return out


def simultaneous_critical_value(fractions: Sequence[float], ci_level: float = 0.95) -> float:
    """The ``z`` that the largest of the candidate split statistics exceeds with probability ``(1 - ci_level) / 2``.

    The one-sided max-T critical value of :func:`quarterpanic.analysis.onset.max_t_adjusted`
    at half the interval's error rate, as 1.96 is the plain normal one: an
    interval of ``± z`` standard errors about the estimate at the searched
    onset lies beyond the null exactly when the search-adjusted one-sided
    p-value is below ``(1 - ci_level) / 2``, so interval and p-value agree the
    way a plain 95% interval and a one-sided p-value do. ``fractions`` are the
    candidates' base fractions; with fewer than two there was no search and
    this is the normal quantile.
    """
    kept = np.asarray(fractions, dtype=float).ravel()
    kept = np.unique(kept[np.isfinite(kept) & (kept > 0) & (kept < 1)])
    return _critical_value(tuple(kept.tolist()), float(ci_level))


@lru_cache(maxsize=4096)
def _critical_value(fractions: tuple[float, ...], ci_level: float) -> float:
    alpha = (1 - ci_level) / 2
    plain = float(stats.norm.isf(alpha))
    if len(fractions) < 2:
        return plain
    # The adjusted p-value lies between the plain one and Bonferroni's, which brackets the root.
    bonferroni = float(stats.norm.isf(alpha / len(fractions)))

    def excess(z: float) -> float:
        return max_t_adjusted(float(stats.norm.sf(z)), fractions, alternative="greater") - alpha

    return float(optimize.brentq(excess, plain, bonferroni, xtol=1e-10)) if excess(bonferroni) < 0 else bonferroni


def _search_onsets(
    data: pd.DataFrame, group_cols: list[str], events: str, exposure: str, candidates: list[int], direction: int
) -> pd.DataFrame:
    """Closed-form onset per group: the best step in ``direction``, else the best step at all."""
    common = dict(events=events, base=exposure, kind="poisson", candidates=candidates)
    steered = profile_step(data, group_cols, direction=direction, **common)
    either = profile_step(data, group_cols, direction=0, **common)
    found = either[group_cols + ["onset_week", "n_candidates", "candidate_fractions"]].merge(
        steered[group_cols + ["onset_week"]].rename(columns={"onset_week": "steered"}), on=group_cols
    )
    # A quarter whose every split goes the other way gets its best split anyway: an estimate on the
    # calm side of 1 says "no surge" more plainly than a blank.
    found["onset_week"] = found["steered"].fillna(found["onset_week"])
    return found.drop(columns="steered")


def _side_totals(data: pd.DataFrame, group_cols: list[str], events: str, exposure: str) -> pd.DataFrame:
    side = np.where(data["late"], "after", "before")
    totals = (
        data.assign(side=side, weeks=1)
        .pivot_table(index=group_cols, columns="side", values=[events, exposure, "weeks"], aggfunc="sum",
                     fill_value=0, observed=True)
    )
    out = pd.DataFrame(index=totals.index)
    for side_name in ("before", "after"):
        for source, name in ((events, "events"), (exposure, "exposure"), ("weeks", "weeks")):
            column = (source, side_name)
            out[f"{name}_{side_name}"] = totals[column] if column in totals.columns else 0
    out["events"] = out["events_before"] + out["events_after"]
    return out.reset_index()


def _fit_late_effects(
    data: pd.DataFrame, group_cols: list[str], model_by: list[str], events: str, exposure: str, *, n_searched: int
) -> pd.DataFrame:
    """One Poisson GLM per ``model_by`` group; late-window coefficients with quasi-Poisson errors."""
    rows = []
    for _, frame in data.groupby(model_by, sort=False):
        codes, uniques = pd.factorize(pd.MultiIndex.from_frame(frame[group_cols]))
        n_series = len(uniques)
        design = np.zeros((len(frame), 2 * n_series))
        design[np.arange(len(frame)), codes] = 1.0
        design[np.arange(len(frame)), n_series + codes] = frame["late"].to_numpy(dtype=float)
        with warnings.catch_warnings():
            # Counts a step fits exactly (a regular series) trip statsmodels' separation check; the fit is fine.
            warnings.simplefilter("ignore", PerfectSeparationWarning)
            result = GLM(
                frame[events].to_numpy(dtype=float),
                design,
                family=Poisson(),
                offset=np.log(frame[exposure].to_numpy(dtype=float)),
            ).fit(scale=1.0)
        # Each searched onset is one more parameter the residuals were fitted with.
        df = result.df_resid - n_searched * n_series
        dispersion = max(1.0, result.pearson_chi2 / df) if df > 0 else 1.0
        coef = np.asarray(result.params)[n_series:]
        se = np.asarray(result.bse)[n_series:] * np.sqrt(dispersion)
        fitted = pd.DataFrame(list(uniques), columns=group_cols)
        fitted["coef"], fitted["se"], fitted["dispersion"] = coef, se, dispersion
        rows.append(fitted)
    if not rows:
        return pd.DataFrame(columns=group_cols + ["coef", "se", "dispersion"])
    return pd.concat(rows, ignore_index=True)


# -- shares that shift late in the quarter: after hours, wasted effort --------------------------
SHARE_COLUMNS = ["share_early", "share_late", "n_early", "n_late", "estimate", "ci_low", "ci_high", "p_value", "status"]


def share_change(
    items: pd.DataFrame,
    *,
    flag: str,
    group_cols: Sequence[str] = ("org", "quarter"),
    model_by: Sequence[str] = ("org",),
    window: str = "window",
    cluster: str | None = None,
    direction: int = +1,
    min_each_side: int = 10,
    ci_level: float = 0.95,
) -> pd.DataFrame:
    """Late-window minus early-window share of ``flag``, per group, with cluster-robust errors.

    Parameters
    ----------
    items:
        One row per request with ``flag`` (1/0/True/False; missing rows are
        left out, e.g. requests on deals still open), ``window``
        (``"early"`` / ``"late"``) and ``group_cols``.
    model_by:
        One linear-probability model per organisation: quarter fixed effects
        plus a quarter-specific late indicator, whose coefficient is exactly
        the difference of the two shares. The model is saturated, so it is
        solved in closed form; the errors are statsmodels' ``cov_type="cluster"``
        (CR1) ones, computed directly (tests check they agree).
    cluster:
        Column whose values share errors (the deal for wasted effort, the
        requester for after-hours work). Rows without a value are their own
        cluster; with fewer than :data:`MIN_CLUSTERS` clusters every row is
        its own (HC1), since a handful of clusters gives wilder errors than
        ignoring them. None = HC1.
    direction:
        Panic direction of the change: the p-value is one-sided that way.

    Returns
    -------
    One row per group: ``group_cols`` + :data:`SHARE_COLUMNS`. Fewer than
    ``min_each_side`` items in a window is ``insufficient data``.
    """
    group_cols, model_by = list(group_cols), list(model_by)
    data = items.loc[items[window].isin(["early", "late"]), group_cols + [window]].copy()
    data["_y"] = pd.to_numeric(items.loc[data.index, flag].astype("Float64"), errors="coerce").astype(float)
    data["_late"] = data[window] == "late"
    if cluster is not None:
        labels = items.loc[data.index, cluster].astype("string")
        data["_cluster"] = labels.where(labels.notna(), "_row" + pd.Series(data.index, index=data.index).astype(str))
    data = data[data["_y"].notna()]
    sides = group_cols + ["_late"]
    stats_by_side = data.groupby(sides, observed=True)["_y"].agg(["size", "mean"])
    table = stats_by_side.unstack("_late")
    out = pd.DataFrame(index=table.index)
    for side, value in (("early", False), ("late", True)):
        out[f"n_{side}"] = table[("size", value)] if ("size", value) in table else 0
        out[f"share_{side}"] = table[("mean", value)] if ("mean", value) in table else np.nan
    out = out.reset_index()
    out[["n_early", "n_late"]] = out[["n_early", "n_late"]].fillna(0).astype(int)
    enough = (out["n_early"] >= min_each_side) & (out["n_late"] >= min_each_side)
    out["status"] = np.where(enough, OK, INSUFFICIENT)
    out["estimate"] = np.where(enough, out["share_late"] - out["share_early"], np.nan)

    # Each row's pull on its quarter's coefficient: +residual/n_late late, -residual/n_early early.
    fitted = data.merge(out.loc[enough, group_cols], on=group_cols, how="inner")
    side = fitted.groupby(sides, observed=True)["_y"]
    residual = fitted["_y"] - side.transform("mean")
    fitted["_pull"] = np.where(fitted["_late"], 1.0, -1.0) * residual / side.transform("size")
    own_cluster = "_row" + pd.Series(fitted.index, index=fitted.index).astype(str)
    if cluster is None:
        fitted["_cluster"] = own_cluster
    else:
        n_clusters = fitted.groupby(model_by, observed=True)["_cluster"].transform("nunique")
        fitted["_cluster"] = fitted["_cluster"].where(n_clusters >= MIN_CLUSTERS, own_cluster)
    models = fitted.groupby(model_by, observed=True)
    rows, clusters = models.size(), models["_cluster"].nunique()
    params = 2 * fitted[group_cols].drop_duplicates().groupby(model_by, observed=True).size()
    with np.errstate(divide="ignore", invalid="ignore"):
        # statsmodels' small-sample factor for cluster-robust (CR1) errors.
        correction = (clusters / (clusters - 1) * (rows - 1) / (rows - params)).rename("_correction")
    sums = fitted.groupby(group_cols + ["_cluster"], observed=True)["_pull"].sum()
    variance = (sums**2).groupby(level=list(range(len(group_cols)))).sum().rename("_variance").reset_index()
    variance = variance.merge(correction.reset_index(), on=model_by, how="left")
    out = out.merge(variance[group_cols + ["_variance", "_correction"]], on=group_cols, how="left")
    se = np.sqrt(out["_variance"] * out["_correction"])
    z = float(stats.norm.ppf((1 + ci_level) / 2))
    out["ci_low"] = out["estimate"] - z * se
    out["ci_high"] = out["estimate"] + z * se
    with np.errstate(divide="ignore", invalid="ignore"):
        statistic = np.sign(direction) * out["estimate"] / se
    # No variation at all in either window: no evidence of a change.
    statistic = statistic.where(se > 0, np.where(out["estimate"].abs() > 0, np.nan, 0.0))
    out["p_value"] = np.where(enough, stats.norm.sf(statistic), np.nan)
    return out[group_cols + SHARE_COLUMNS]


# -- the detector ----------------------------------------------------------------------------------
@dataclass
class ReactiveAnalysis:
    """Everything the detector computed, for the notebook's tables and charts.

    Attributes
    ----------
    grid:
        :func:`week_grid`.
    requests:
        :func:`request_features` plus, per request, its quarter's
        ``onset_week`` and ``window`` (``early`` / ``late``; NA where the
        quarter got no verdict), ``duration_hours`` / ``resolved``
        (:func:`quarterpanic.analysis.turnaround.turnaround_times`), ``duration_std``
        and the deal columns of :func:`deal_links`.
    weekly:
        :func:`weekly_requests` per organisation × quarter × week, with
        ``role``: ``shown``, ``baseline`` or ``open``.
    surge, deferral:
        :func:`estimate_surge` of unplanned and planned requests.
    stretch:
        :func:`quarterpanic.analysis.turnaround.turnaround_stretch`.
    shares:
        :func:`share_change` results keyed by metric name.
    findings:
        All findings of the component, flagged under Benjamini–Hochberg.
    """

    params: dict
    as_of: pd.Timestamp
    segment: str
    grid: pd.DataFrame
    requests: pd.DataFrame
    weekly: pd.DataFrame
    surge: pd.DataFrame
    deferral: pd.DataFrame
    stretch: pd.DataFrame
    shares: dict[str, pd.DataFrame]
    findings: pd.DataFrame


def analyse_reactive(
    dataset: Dataset,
    params: Mapping[str, Any] | None = None,
    *,
    segment: str = ALL_SEGMENTS,
    secondary: bool = True,
    cache: bool = False,
) -> ReactiveAnalysis:
    """Run every step of the detector on ``dataset`` (already filtered to ``segment``).

    Parameters
    ----------
    dataset:
        The canonical tables, calendars and ``as_of``.
    params:
        Analysis parameters (:data:`quarterpanic.params.DEFAULTS`): ``orgs``,
        ``quarters``, ``baseline_quarters``, the request-type lists,
        ``urgent_priorities``, ``onset_weeks``, ``min_requests``, ``alpha``, ``ci_level``,
        ``qualification_rule`` / ``qualification_overrides``.
    secondary:
        False computes only the main metric (the surge) and skips turnaround,
        wasted effort and after-hours work — for simulations.
    cache:
        Reuse the analysis of an earlier run on the same data, parameters and
        code (:mod:`quarterpanic.store.results`).
    """
    params = {**defaults(), **(params or {})}
    # Parameters no detector reads are not part of the key: the entry keeps none, the caller gets its own.
    analysis = results_cache.cached(
        "quarterpanic.analysis.reactive.analyse_reactive",
        lambda: replace(_analyse_reactive(dataset, params, segment, secondary), params={}),
        dataset, params, extra={"segment": segment, "secondary": secondary}, use=cache,
    )
    return replace(analysis, params=params)


def _analyse_reactive(dataset: Dataset, params: dict[str, Any], segment: str, secondary: bool) -> ReactiveAnalysis:
    group = ["org", "quarter"]
    grid = week_grid(dataset, params)
    requests = request_features(dataset, params)
    calendars = {org: dataset.calendar(org) for org in grid["org"].unique()}
    weekly = weekly_requests(
        requests, grid, as_of=dataset.as_of, calendars=calendars,
        opportunities=dataset.opportunities if secondary else None,
    )
    # astype(bool): the columns of an empty grid are untyped.
    complete, judged, baseline = (weekly[c].astype(bool).to_numpy() for c in ("quarter_complete", "judged", "baseline"))
    weekly["role"] = np.select([~complete, judged, baseline], ["open", "shown", "baseline"], "other")
    ci_level = float(params["ci_level"])
    if weekly.empty:
        # No quarter to look at (no opportunity or request): an analysis with no rows, not an error.
        return ReactiveAnalysis(
            params=params, as_of=dataset.as_of, segment=segment, grid=grid, requests=requests, weekly=weekly,
            surge=pd.DataFrame(columns=group + SURGE_COLUMNS), deferral=pd.DataFrame(columns=group),
            stretch=pd.DataFrame(columns=group), shares={}, findings=empty_findings().assign(ci_level=ci_level),
        )
    judged = weekly[weekly["judged"]]
    candidates = candidate_weeks(params["onset_weeks"], judged["weeks_in_quarter"])
    min_requests = int(params["min_requests"])
    surge = estimate_surge(judged, events="unplanned", candidates=candidates, min_events=min_requests,
                           ci_level=ci_level)
    onsets = surge.loc[surge["status"] == OK, group + ["onset_week"]]
    requests = requests.merge(onsets, on=group, how="left")
    with np.errstate(invalid="ignore"):  # no onset (NaN) is no window, not a comparison to warn about
        late = requests["week_of_quarter"] >= requests["onset_week"]
    requests["window"] = pd.Series(np.where(late.fillna(False), "late", "early"), index=requests.index).where(
        requests["onset_week"].notna()
    )
    deferral = stretch = pd.DataFrame(columns=group)
    shares: dict[str, pd.DataFrame] = {}
    if secondary:
        deferral = estimate_surge(judged, events="planned", onsets=onsets, direction=-1, min_events=min_requests,
                                  ci_level=ci_level)
        requests = turnaround.turnaround_times(requests, dataset.as_of)
        requests = turnaround.standardised_durations(requests, reference=requests["window"] == "early")
        requests = deal_links(requests, dataset.opportunities, params, history=dataset.history,
                              signals=qualification_signals(dataset, params))
        stretch = turnaround.turnaround_stretch(requests, group_cols=group, ci_level=ci_level)
        shares = {
            "after_hours_shift": share_change(requests, flag="is_after_hours", cluster="requester", ci_level=ci_level),
            "wasted_effort_lost": share_change(requests, flag="deal_lost", cluster="opportunity_id", ci_level=ci_level),
            "wasted_effort_unqualified": share_change(
                requests, flag="deal_unqualified", cluster="opportunity_id", ci_level=ci_level),
        }
    partial = _partial_rows(dataset, weekly, params, METRIC_ORDER if secondary else (COMPONENT,))
    findings = _findings(surge, deferral if secondary else None, stretch if secondary else None, shares, segment,
                         partial)
    findings["ci_level"] = ci_level
    findings = apply_fdr_of(mark_not_measured(findings, dataset, params), params)
    return ReactiveAnalysis(
        params=params, as_of=dataset.as_of, segment=segment, grid=grid, requests=requests, weekly=weekly,
        surge=surge, deferral=deferral, stretch=stretch, shares=shares, findings=findings,
    )


METRIC_ORDER = (
    COMPONENT, "planned_work_deferral", "turnaround_stretch", "after_hours_shift", "wasted_effort_lost",
    "wasted_effort_unqualified",
)


def _findings(
    surge: pd.DataFrame,
    deferral: pd.DataFrame | None,
    stretch: pd.DataFrame | None,
    shares: Mapping[str, pd.DataFrame],
    segment: str,
    partial: pd.DataFrame,
) -> pd.DataFrame:
    keys = ["org", "quarter"]
    main = surge[keys + ["onset_week", "status"]].rename(columns={"status": "main_status"})
    tables = {COMPONENT: surge.assign(n=surge["events"])}
    if deferral is not None:
        tables["planned_work_deferral"] = deferral.assign(n=deferral["events"])
    if stretch is not None:
        tables["turnaround_stretch"] = stretch
    tables.update({name: table.assign(n=table["n_early"] + table["n_late"]) for name, table in shares.items()})
    value_columns = ["estimate", "ci_low", "ci_high", "critical_value", "p_value", "n", "status"]
    frames = []
    for metric, table in tables.items():
        if "critical_value" not in table:  # a plain interval: readers take the normal quantile of its level
            table = table.assign(critical_value=np.nan)
        frame = main.merge(table[keys + value_columns], on=keys, how="left").assign(metric=metric)
        # A quarter without a main verdict has no window, so none of its metrics can be judged.
        ok = (frame["main_status"] == OK) & (frame["status"] == OK)
        frame["status"] = np.where(ok, OK, INSUFFICIENT)
        frame.loc[~ok, ["estimate", "ci_low", "ci_high", "critical_value", "p_value"]] = np.nan
        frame["onset_week"] = frame["onset_week"].where(frame["main_status"] == OK)
        frames.append(frame.drop(columns="main_status"))
    table = pd.concat(frames, ignore_index=True)
    table["n"] = pd.to_numeric(table["n"], errors="coerce").fillna(0)
    if not partial.empty:
        # Every other row is of a complete quarter (only those are judged); a bool column keeps the cache exact.
        table = pd.concat([table.assign(quarter_complete=True), partial], ignore_index=True)
        table["quarter_complete"] = table["quarter_complete"].astype(bool)
    findings = make_findings(table.assign(component=COMPONENT, segment=segment))
    findings["_order"] = findings["metric"].map({name: i for i, name in enumerate(METRIC_ORDER)})
    return findings.sort_values(["org", "quarter", "_order"]).drop(columns="_order").reset_index(drop=True)


def _partial_rows(dataset: Dataset, weekly: pd.DataFrame, params: Mapping[str, Any],
                  metrics: Sequence[str]) -> pd.DataFrame:
    """``partial`` rows of ``metrics`` for the shown quarters that are over but that the data only partly cover.

    Such a quarter gets no verdict (its early weeks would look empty) but is shown as partial, as every
    detector shows it (:func:`quarterpanic.analysis.inputs.mark_partial`); it never enters a false-discovery
    family or the index (status not ``ok``, ``quarter_complete`` False).
    """
    quarters = weekly.drop_duplicates(["org", "quarter"]).reset_index(drop=True)
    if params.get("quarters"):
        quarters = quarters[quarters["quarter"].isin(params["quarters"])].reset_index(drop=True)
    coverage = quarter_coverage(dataset, quarters["org"], quarters["quarter_start"], quarters["quarter_end"])
    partial = quarters.loc[coverage["partial"].to_numpy(), ["org", "quarter"]]
    rows = partial.merge(pd.DataFrame({"metric": list(metrics)}), how="cross")
    return rows.assign(status=PARTIAL, quarter_complete=False)


def detect_reactive_order_taking(dataset: Dataset, params: Mapping[str, Any] | None = None, *,
                                 cache: bool = False) -> pd.DataFrame:
    """Findings of the reactive order-taking component (the ``detect`` registry entry).

    One main finding per organisation × complete quarter (``metric ==
    "reactive_order_taking"``: the rate ratio of unplanned requests per
    working day from the onset week on, vs the quarter's earlier weeks),
    then ``planned_work_deferral``, ``turnaround_stretch``,
    ``after_hours_shift``, ``wasted_effort_lost`` and — with the
    qualification rule — ``wasted_effort_unqualified``. With
    ``params["segment"]`` only that segment is analysed (requests follow
    their deal's segment); with ``params["by_segment"]`` each segment is
    analysed too. ``cache`` as in :func:`analyse_reactive`.
    """
    params = {**defaults(), **(params or {})}
    runs = []
    if params.get("segment"):
        runs.append((str(params["segment"]), dataset.filter(segment=params["segment"])))
    else:
        runs.append((ALL_SEGMENTS, dataset))
        if params.get("by_segment"):
            segments = sorted(dataset.opportunities["segment"].dropna().astype(str).unique())
            runs.extend((name, dataset.filter(segment=name)) for name in segments)
    frames = [analyse_reactive(data, params, segment=name, cache=cache).findings for name, data in runs]
    return apply_fdr_of(make_findings(pd.concat(frames, ignore_index=True)), params)
