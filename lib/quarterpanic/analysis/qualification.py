"""The qualification rule and the qualification-decay detector.

Qualification decay is the first symptom of quarter-end panic: as the quarter
closes, sellers open deals that would not have passed the qualification rule
a month earlier. The detector works in four steps, each a function a notebook
can call on its own:

1. :func:`opportunity_features` — one row per opportunity: its creation
   quarter and week (each organisation's fiscal calendar), whether it met the
   qualification rule when it was created (:func:`qualified_at_creation`),
   whether its stage path skipped a stage (:func:`stage_skips`), and its
   outcome (open deals are *censored*, not lost).
2. :func:`qualification_rate_by_week` — weekly qualification rates with
   Wilson intervals per organisation × quarter, and pooled baselines.
3. :func:`qualification_onsets` — the onset week of each quarter, profiled in
   closed form over the candidate weeks (:func:`quarterpanic.analysis.onset.profile_step`),
   for the weekly curves and the notebooks.
4. :func:`decay_findings` — :func:`pooled_decay`: one closed-form fit per run
   of a step or ramp drop at every candidate onset of every quarter, the
   level before it pooled with the organisation's other quarters (empirical
   Bayes); the best-fitting candidate's drop, with a one-sided p-value max-T
   adjusted for the search over onsets and shapes and a simultaneous interval
   that agrees with it (:func:`quarterpanic.analysis.onset.max_t_simulated`),
   and also the onset averaged over the best-fitting shape's candidates by
   their fit. :func:`oracle_decay_p_value` and the candidate at the true
   onset and shape (:func:`decay_candidates`) are the yardsticks the
   statistical tests hold it to. ``docs/METHODS.md`` ("Qualification decay") has the details.

:func:`detect_qualification_decay` runs them all and adds the outcome-side
metrics of :mod:`quarterpanic.analysis.outcomes`.
"""
from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.special import expit
from scipy.stats import norm
from statsmodels.genmod.families import Binomial
from statsmodels.genmod.generalized_linear_model import GLM
from statsmodels.stats.meta_analysis import combine_effects
from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationError, PerfectSeparationWarning

from quarterpanic.analysis import outcomes
from quarterpanic.analysis.features import opportunity_features, quarter_roles
from quarterpanic.analysis.findings import ALL_SEGMENTS, INSUFFICIENT, OK, make_findings, register_metric
from quarterpanic.analysis.inputs import mark_not_measured, mark_partial
from quarterpanic.analysis.onset import (
    max_t_simulated, profile_step, weekly_matrix,
)
from quarterpanic.dataset import Dataset
from quarterpanic.params import defaults
from quarterpanic.store import results as results_cache

COMPONENT = "qualification_decay"
CONTROLS = ("segment", "lead_source")
register_metric(
    COMPONENT,
    component=COMPONENT,
    null=0.0,
    direction=+1,
    unit="share",
    description="the share of new deals meeting the qualification rule fell by",
    sided="one-sided",
)


# -- weekly curves --------------------------------------------------------------------------------
def qualification_rate_by_week(
    features: pd.DataFrame,
    *,
    by: Sequence[str] = ("org", "quarter"),
    week: str = "week_of_quarter",
    method: str = "wilson",
    ci_level: float = 0.95,
) -> pd.DataFrame:
    """Weekly share of new opportunities meeting the rule, with Wilson (or exact, ``"beta"``) intervals.

    Add ``"segment"``, ``"team"`` or ``"lead_source"`` to ``by`` for finer
    curves. Returns ``by`` × ``week`` rows with ``events`` (qualified), ``n``
    (created), ``rate``, ``ci_low``, ``ci_high``.
    """
    return outcomes.weekly_proportion(features, "qualified", by=by, week=week, method=method, ci_level=ci_level)


def with_baseline(
    features: pd.DataFrame,
    roles: pd.DataFrame,
    curve: Any,
    *,
    by: Sequence[str] = ("org", "quarter"),
    quarter: str = "quarter",
    label: str = "baseline",
    **kwargs: Any,
) -> pd.DataFrame:
    """A weekly curve for every shown quarter plus the baseline quarters pooled.

    Parameters
    ----------
    features:
        :func:`opportunity_features` (or any frame with ``org`` and ``quarter``).
    roles:
        :func:`quarter_roles` (its ``shown`` and ``baseline`` columns pick the rows).
    curve:
        A curve function such as :func:`qualification_rate_by_week` or
        :func:`quarterpanic.analysis.outcomes.weekly_mean` (a ``functools.partial``).
    quarter:
        The quarter column the roles apply to (``"close_quarter"`` for curves
        by close week).

    Returns
    -------
    The curve's rows; the pooled baseline has ``quarter == label`` and a
    ``series`` column says ``"quarter"`` or ``"baseline"``.
    """
    role = roles.rename(columns={"quarter": quarter})[["org", quarter, "shown", "baseline"]]
    tagged = features.merge(role, on=["org", quarter], how="inner")
    shown = curve(tagged[tagged["shown"]], by=by, **kwargs).assign(series="quarter")
    pooled_by = [c for c in by if c != quarter]
    baseline = curve(tagged[tagged["baseline"]], by=pooled_by, **kwargs).assign(series="baseline")
    baseline[quarter] = label
    return pd.concat([shown, baseline[shown.columns]], ignore_index=True)


# -- onset ----------------------------------------------------------------------------------------
def candidate_weeks(params: Mapping[str, Any] | None = None) -> list[int]:
    """The onset weeks tried: ``params["onset_weeks"]`` first to last, inclusive."""
    first, last = ({**defaults(), **(params or {})})["onset_weeks"]
    return list(range(int(first), int(last) + 1))


def qualification_onsets(
    features: pd.DataFrame,
    params: Mapping[str, Any] | None = None,
    *,
    by: Sequence[str] = ("org", "quarter"),
    outcome: str = "qualified",
    week: str = "week_of_quarter",
) -> pd.DataFrame:
    """The onset week of the qualification step in every group, all groups at once.

    The onset is the candidate week whose step-down model of the weekly
    qualification rate has the highest binomial likelihood
    (:func:`quarterpanic.analysis.onset.profile_step`, ``direction=-1``). Only
    candidates with at least ``params["min_n"]`` opportunities on each side
    count. A group whose rate only ever rises gets the best step either way
    (its estimate will show a rise, not a decay).

    Returns
    -------
    One row per group: ``onset_week`` (``<NA>`` when no candidate has enough
    data: insufficient), ``n_candidates`` (candidates with enough data, the
    search the p-value is corrected for), ``candidate_fractions`` (the share
    of the group's opportunities created before each of them), ``lr_stat``,
    ``n_before``, ``n_after``, ``rate_before``, ``rate_after``.
    """
    params = {**defaults(), **(params or {})}
    by = list(by)
    weekly = (
        features.assign(_event=features[outcome].astype(float))
        .groupby(by + [week], observed=True)["_event"]
        .agg(events="sum", n="size")
        .reset_index()
    )
    common = dict(
        week_col=week, events="events", base="n", kind="binomial",
        candidates=candidate_weeks(params), min_each_side=float(params["min_n"]),
    )
    down = profile_step(weekly, by, direction=-1, **common)
    either = profile_step(weekly, by, direction=0, **common)  # same groups, same order
    no_decay = down["onset_week"].isna().to_numpy()
    out = down[by].copy()
    for column in ("onset_week", "lr_stat", "events_before", "base_before", "events_after", "base_after"):
        values = np.where(no_decay, either[column].astype(float), down[column].astype(float))
        out[column] = values
    out["n_candidates"] = either["n_candidates"].to_numpy()
    out["candidate_fractions"] = list(either["candidate_fractions"])
    out["onset_week"] = pd.array(out["onset_week"].round(), dtype="Int64")
    out["n_before"], out["n_after"] = out.pop("base_before"), out.pop("base_after")
    with np.errstate(divide="ignore", invalid="ignore"):
        out["rate_before"] = out.pop("events_before") / out["n_before"]
        out["rate_after"] = out.pop("events_after") / out["n_after"]
    return out


# -- the estimate ---------------------------------------------------------------------------------
ESTIMATE_KEYS = ["estimate", "ci_low", "ci_high", "p_value", "n", "n_before", "n_after", "n_clusters", "method"]


def decay_estimate(
    frame: pd.DataFrame,
    onset: int,
    *,
    outcome: str = "qualified",
    week: str = "week_of_quarter",
    controls: Sequence[str] = CONTROLS,
    cluster: str = "owner",
    ci_level: float = 0.95,
) -> dict[str, Any]:
    """The drop in the qualification rate from week ``onset`` on, in one quarter, by a GLM on that quarter alone.

    A second opinion for a notebook at a known onset; the findings come from
    :func:`pooled_decay`, which pools the level across quarters and adjusts
    the interval for the onset search (this one is not adjusted).

    Fits one binomial GLM (logit link) of ``outcome`` on ``late`` (week ≥
    ``onset``) plus dummies of ``controls``, with errors clustered by
    ``cluster`` (sellers differ in how they qualify, so their deals are not
    independent). The estimate is the average marginal effect of ``late`` on
    the probability scale, sign-flipped so a decay is positive; its interval
    and p-value use the delta method and the t distribution with (clusters
    − 1) degrees of freedom: seller-clustered variances from a dozen sellers
    are noisy, and normal quantiles would make the test too eager (about 8%
    of calm quarters below p = 0.05 with 12 sellers, in simulation).

    A control level with fewer than :data:`quarterpanic.analysis.outcomes.MIN_LEVEL_N` rows, or whose
    outcome never varies, is pooled with the reference level. When the GLM
    cannot be used — fewer than :data:`quarterpanic.analysis.outcomes.MIN_CLUSTERS` sellers, separation, no
    convergence — the estimate falls back to the difference of the two raw
    proportions with its normal (Wald) interval, and ``method`` says so.

    Returns
    -------
    :data:`ESTIMATE_KEYS`: ``estimate`` (drop, probability scale),
    ``ci_low``, ``ci_high``, ``p_value`` (two-sided, *not* corrected for
    the onset search), ``n``, ``n_before``, ``n_after``, ``n_clusters``,
    ``method`` (``"glm"`` or ``"two-proportion"``, with the reason).
    """
    y = frame[outcome].to_numpy(dtype=float)
    late = (frame[week].to_numpy(dtype=int) >= int(onset)).astype(float)
    clusters = pd.factorize(frame[cluster])[0]
    n_clusters = int(len(np.unique(clusters)))
    info = {"n": len(y), "n_before": int((late == 0).sum()), "n_after": int((late == 1).sum()), "n_clusters": n_clusters}
    if info["n_before"] == 0 or info["n_after"] == 0:
        return {**info, "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan, "method": "none"}
    reason = None
    if n_clusters < outcomes.MIN_CLUSTERS:
        reason = f"only {n_clusters} seller(s)"
    elif outcomes.constant(y[late == 1]) or outcomes.constant(y[late == 0]):
        reason = "qualification constant on one side of the onset"
    else:
        fit = _glm_average_effect(y, late, outcomes.control_dummies(frame, controls, y), clusters)
        if fit is None:
            reason = "the GLM did not converge"
        else:
            effect, se = fit
            df = n_clusters - 1
            return {**info, **outcomes.wald_interval(-effect, se, ci_level, df), "method": "glm"}
    effect, se = _two_proportion(y, late)
    return {**info, **outcomes.wald_interval(effect, se, ci_level, None), "method": f"two-proportion ({reason})"}


def _glm_average_effect(
    y: np.ndarray, late: np.ndarray, dummies: np.ndarray, clusters: np.ndarray
) -> tuple[float, float] | None:
    """Average marginal effect of ``late`` (probability scale) and its delta-method SE, or None."""
    exog = np.column_stack([np.ones_like(late), late, dummies])
    with warnings.catch_warnings():
        # Separation, non-convergence and overflow make the fit unusable; other warnings do not.
        for category in (PerfectSeparationWarning, ConvergenceWarning, RuntimeWarning):
            warnings.simplefilter("error", category)
        try:
            result = GLM(y, exog, family=Binomial()).fit(
                cov_type="cluster", cov_kwds={"groups": clusters}
            )
        except (PerfectSeparationWarning, PerfectSeparationError, ConvergenceWarning, RuntimeWarning, ValueError,
                np.linalg.LinAlgError):
            return None
    params, cov = np.asarray(result.params), np.asarray(result.cov_params())
    if not (np.all(np.isfinite(params)) and np.all(np.isfinite(cov))):
        return None
    after, before = exog.copy(), exog.copy()
    after[:, 1], before[:, 1] = 1.0, 0.0
    p_after, p_before = expit(after @ params), expit(before @ params)
    effect = float(np.mean(p_after - p_before))
    gradient = ((p_after * (1 - p_after))[:, None] * after - (p_before * (1 - p_before))[:, None] * before).mean(axis=0)
    variance = float(gradient @ cov @ gradient)
    return (effect, np.sqrt(variance)) if variance > 0 else None


def _two_proportion(y: np.ndarray, late: np.ndarray) -> tuple[float, float]:
    """Rate before minus rate after, and its unpooled standard error (pooled when that is zero)."""
    before, after = y[late == 0], y[late == 1]
    p_before, p_after = before.mean(), after.mean()
    se = np.sqrt(p_before * (1 - p_before) / len(before) + p_after * (1 - p_after) / len(after))
    if se == 0:
        pooled = y.mean()
        se = np.sqrt(pooled * (1 - pooled) * (1 / len(before) + 1 / len(after)))
    return float(p_before - p_after), float(se)


# -- the pooled model -----------------------------------------------------------------------------
MIN_BASELINE_QUARTERS = 3  # other calm-reference quarters needed before an org's baseline is pooled
POOLED = "pooled baseline"
SHAPES = ("step", "ramp")
OWN_QUARTER = "own quarter"


def pooled_decay(
    features: pd.DataFrame,
    params: Mapping[str, Any] | None = None,
    *,
    by: Sequence[str] = ("org", "quarter"),
    baseline: pd.DataFrame | None = None,
    outcome: str = "qualified",
    week: str = "week_of_quarter",
    quarter: str = "quarter",
    shapes: Sequence[str] = SHAPES,
) -> pd.DataFrame:
    """Onset, shape, drop, simultaneous interval and search-adjusted p-value of every group, all at once.

    Model: in a group (organisation × quarter) the weekly share qualified is
    ``level - d * s(week)``, where ``s`` is 0 before a candidate onset ``k``
    and from it on either 1 (a step) or rising linearly to 1 at week 13 (a
    ramp, :func:`decay_intensity`). ``level`` is informed by the quarter's
    own weeks and by the organisation's other ``baseline`` quarters' weeks
    before the first candidate (which no onset can reach), weighted by their
    sampling variance plus ``tau2``, the between-quarter variance of the
    early-week share (DerSimonian–Laird, via
    ``statsmodels.stats.meta_analysis.combine_effects``): an empirical-Bayes
    pooling of the quarter's level that trusts the other quarters as much as
    they agree. Pooling needs :data:`MIN_BASELINE_QUARTERS` other quarters
    (``method`` says whether it was used). Each candidate (onset × shape) is
    fitted by weighted least squares in closed form; the estimate is the
    average drop over the deals created from the onset on, ``d`` times their
    mean ``s`` — the generator's truth, whatever the shape.

    The chosen candidate is the best-fitting change either way (the largest
    ``|estimate|`` in null standard errors, which with fixed weights is the
    largest reduction of the weighted squares) among onsets with at least
    ``params["min_n"]`` of the quarter's own deals on each side; choosing
    either way keeps calm quarters' estimates centred on 0 (preferring drops
    would bias them upwards by the selection). Its p-value is one-sided (a
    drop: the oracle's question and its false-alarm budget) and max-T
    adjusted for the search over every onset and shape, P(max_k Z_k >= z);
    its interval is ``estimate ± c se`` with ``c`` the one-sided max-T
    critical value at ``(1 - ci_level) / 2``, a two-sided simultaneous
    interval over all candidates, both from the candidates' exact null
    covariance (:func:`quarterpanic.analysis.onset.max_t_simulated`): the
    interval lies above 0 exactly when the adjusted p-value is below ``(1 -
    ci_level) / 2`` (as a plain 95% interval and a one-sided test do), and
    the estimate is its centre. ``onset_week`` is the chosen candidate's
    (where the estimate's window starts, and the window the outcome-side
    metrics use); ``averaged_onset_week`` is the likelihood-weighted
    average of the candidates of the chosen shape (:func:`averaged_onset`),
    which places ramps nearer their start, its weights widened by
    ``dispersion``, the Pearson dispersion of the weekly shares about each
    quarter's best fit, pooled over the organisation's quarters (at least 1).

    Parameters
    ----------
    features:
        :func:`opportunity_features` rows of the groups to judge.
    params:
        ``onset_weeks``, ``min_n``, ``ci_level``.
    by:
        The group columns; ``quarter`` must be one of them, the others say
        whose quarters are pooled (the organisation, or organisation × segment).
    baseline:
        Rows of the calm-reference quarters (:func:`quarter_roles`'s
        ``baseline``); None pools nothing.
    shapes:
        The shapes tried at every onset (``"step"``, ``"ramp"``).

    Returns
    -------
    One row per group: ``by``, ``onset_week`` (``<NA>`` without a candidate:
    insufficient data), ``averaged_onset_week``, ``shape``, ``n_candidates``
    (onset × shape pairs searched), ``estimate``, ``se``, ``critical_value``,
    ``ci_low``, ``ci_high``, ``p_unadjusted``, ``p_value`` (adjusted,
    one-sided), ``n``, ``n_before``, ``n_after`` (split at
    ``onset_week``), ``rate_before`` (the fitted level before it),
    ``rate_after`` (its average after), ``baseline_n`` (deals of the other
    quarters pooled), ``tau2``, ``dispersion``, ``method``.
    """
    params = {**defaults(), **(params or {})}
    by = list(by)
    pool_by = [c for c in by if c != quarter]
    fit = _fit_candidates(features, params, by, baseline, outcome, week, quarter, shapes)
    if fit is None:
        return pd.DataFrame(columns=by + ["onset_week", "estimate", "p_value"])
    keys, deals, ext_n, tau2, ext_var = fit["keys"], fit["deals"], fit["ext_n"], fit["tau2"], fit["ext_var"]
    cand_onset, cand_shape, valid, z, estimate, se = (
        fit[k] for k in ("cand_onset", "cand_shape", "valid", "z", "estimate", "se"))
    coef_week, coef_ext, null_week_var, level = (fit[k] for k in ("coef_week", "coef_ext", "null_week_var", "level"))
    n_pre, n_post, residual_ss = fit["n_pre"], fit["n_post"], fit["residual_ss"]
    best = np.nanargmax(np.where(np.isfinite(z), np.abs(z), -1.0), axis=1)
    fitted_any = np.isfinite(z).any(axis=1)
    best_ss = np.where(fitted_any, residual_ss[np.arange(len(keys)), best], np.nan)
    dispersion = _pooled_dispersion(keys, pool_by, best_ss, (deals > 0).sum(axis=1) - 2.0)

    rows = []
    level_ci = float(params["ci_level"])
    for i in range(len(keys)):
        keep = valid[i] & np.isfinite(z[i])
        record = {"n": int(deals[i].sum()), "n_candidates": int(keep.sum()), "baseline_n": int(ext_n[i]),
                  "tau2": float(tau2[i]), "dispersion": float(dispersion[i]),
                  "method": POOLED if ext_n[i] > 0 else OWN_QUARTER}
        if not keep.any():
            rows.append({**record, "onset_week": pd.NA, "averaged_onset_week": pd.NA})
            continue
        j = int(np.nanargmax(np.where(keep, np.abs(z[i]), np.nan)))
        chosen = coef_week[i][keep]
        covariance = (chosen * null_week_var[i]) @ chosen.T
        if ext_n[i] > 0:
            covariance = covariance + np.outer(coef_ext[i][keep], coef_ext[i][keep]) * ext_var[i]
        p_adjusted, critical = max_t_simulated(z[i, j], covariance, ci_level=level_ci, alternative="greater")
        record.update(
            onset_week=int(cand_onset[j]),
            averaged_onset_week=averaged_onset(z[i][keep], cand_onset[keep], cand_shape[keep], dispersion[i]),
            shape=cand_shape[j], estimate=float(estimate[i, j]), se=float(se[i, j]),
            critical_value=critical, ci_low=float(estimate[i, j] - critical * se[i, j]),
            ci_high=float(estimate[i, j] + critical * se[i, j]), p_unadjusted=float(norm.sf(z[i, j])),
            p_value=p_adjusted, n_before=int(n_pre[i, j]), n_after=int(n_post[i, j]),
            rate_before=float(level[i, j]), rate_after=float(level[i, j] - estimate[i, j]),
        )
        rows.append(record)
    out = pd.concat([keys, pd.DataFrame(rows)], axis=1)
    for column in ("onset_week", "averaged_onset_week"):
        out[column] = pd.array(out[column], dtype="Int64")
    return out


def _fit_candidates(
    features: pd.DataFrame, params: Mapping[str, Any], by: list[str], baseline: pd.DataFrame | None,
    outcome: str, week: str, quarter: str, shapes: Sequence[str],
) -> dict[str, Any] | None:
    """:func:`pooled_decay`'s closed-form fit of every candidate (onset × shape) of every group, as arrays
    (groups × candidates, or × weeks); None without deals."""
    pool_by = [c for c in by if c != quarter]
    onsets = np.asarray(candidate_weeks(params), dtype=int)
    weekly = _weekly_counts(features, by, outcome, week)
    if weekly.empty:
        return None
    keys, sums = weekly_matrix(weekly, by, week_col=week, columns=("events", "n"), last_week=int(onsets.max()))
    events, deals = sums["events"], sums["n"]
    external = _external_baseline(keys, baseline, pool_by, quarter, outcome, week, int(onsets.min()))
    ext_events, ext_n, tau2 = (external[c].to_numpy(dtype=float) for c in ("ext_events", "ext_n", "tau2"))

    weeks = np.arange(1, deals.shape[1] + 1)
    cand_onset = np.repeat(onsets, len(shapes))
    cand_shape = np.tile(np.asarray(shapes, dtype=object), len(onsets))
    intensity = np.stack([decay_intensity(weeks, k, shape) for k, shape in zip(cand_onset, cand_shape)])  # C x W
    n_pre = np.stack([deals[:, weeks < k].sum(axis=1) for k in cand_onset], axis=1)  # G x C
    n_post = deals.sum(axis=1, keepdims=True) - n_pre
    valid = (n_pre >= float(params["min_n"])) & (n_post >= float(params["min_n"]))

    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(deals > 0, events / np.where(deals > 0, deals, 1), 0.0)  # G x W
        ext_rate = np.where(ext_n > 0, ext_events / np.where(ext_n > 0, ext_n, 1), 0.0)
        # One null rate per group weights the fit, so every candidate is a fixed linear contrast of the
        # weekly shares and the baseline share, and the candidates' null covariance is exact.
        p_null = (events.sum(axis=1) + ext_events + 1) / (deals.sum(axis=1) + ext_n + 2)
        unit = p_null * (1 - p_null)
        ext_var = np.where(ext_n > 0, unit / np.where(ext_n > 0, ext_n, 1) + tau2, np.inf)
        weight_week = deals / unit[:, None]  # G x W
        weight_ext = np.where(np.isfinite(ext_var), 1 / ext_var, 0.0)  # G
        s = intensity[None, :, :]  # 1 x C x W
        uw = weight_week[:, None, :]  # G x 1 x W
        a11 = uw.sum(axis=2) + weight_ext[:, None]
        a12 = -(uw * s).sum(axis=2)
        a22 = (uw * s * s).sum(axis=2)
        det = a11 * a22 - a12 * a12
        mean_post = (deals[:, None, :] * s).sum(axis=2) / n_post  # mean intensity of the deals from the onset on
        # The row of the inverse normal matrix that gives d, times the weights: d = sum(coef * share).
        coef_week = mean_post[:, :, None] * uw * (-a12[:, :, None] - a11[:, :, None] * s) / det[:, :, None]
        coef_ext = mean_post * weight_ext[:, None] * (-a12) / det
        estimate = (coef_week * rate[:, None, :]).sum(axis=2) + coef_ext * ext_rate[:, None]
        level = (a22 * ((uw * rate[:, None, :]).sum(axis=2) + weight_ext[:, None] * ext_rate[:, None])
                 - a12 * (-(uw * s * rate[:, None, :]).sum(axis=2))) / det
        # Standard errors from the null rate (a score-type test): a Wald variance from each side's own rate
        # is smaller on the side nearer 0 or 1, which made rises look surer than drops of the same size
        # (about 9% of calm quarters' intervals excluded 0, in simulation).
        null_week_var = np.where(deals > 0, unit[:, None] / deals, 0.0)
        se = np.sqrt((coef_week**2 * null_week_var[:, None, :]).sum(axis=2)
                     + coef_ext**2 * np.where(np.isfinite(ext_var), ext_var, 0.0)[:, None])
        # With fixed weights, |z| orders the candidates by the weighted squares they explain: the best fit.
        z = np.where(valid & (se > 0), estimate / se, np.nan)
        residual_ss = ((uw * (rate[:, None, :] - level[:, :, None]
                              + (estimate / np.where(mean_post > 0, mean_post, np.nan))[:, :, None] * s) ** 2)
                       .sum(axis=2))  # G x C: the weighted squares each candidate leaves
    return {"keys": keys, "deals": deals, "ext_n": ext_n, "tau2": tau2, "ext_var": ext_var, "cand_onset": cand_onset,
            "cand_shape": cand_shape, "valid": valid, "z": z, "estimate": estimate, "se": se, "coef_week": coef_week,
            "coef_ext": coef_ext, "null_week_var": null_week_var, "level": level, "n_pre": n_pre, "n_post": n_post,
            "residual_ss": residual_ss}


def decay_candidates(
    features: pd.DataFrame, params: Mapping[str, Any] | None = None, *, roles: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Every candidate :func:`decay_findings` searches in each shown organisation × quarter, fitted as before
    the search: one row per group × onset × shape with ``onset_week``, ``shape``, ``estimate``, ``se``,
    ``z`` (NaN where the onset lacks ``min_n`` deals on a side) and ``p_unadjusted`` (one-sided, a drop).

    The candidate at the true onset and shape is the pooled oracle the statistical tests hold the search
    to: the detector's own test, level pooled as it is, told when and how the drop happened.
    """
    params = {**defaults(), **(params or {})}
    shown, baseline = _shown_and_baseline(features, params, roles)
    by = ["org", "quarter"]
    fit = _fit_candidates(shown, params, by, baseline, "qualified", "week_of_quarter", "quarter", SHAPES)
    if fit is None:
        return pd.DataFrame(columns=by + ["onset_week", "shape", "estimate", "se", "z", "p_unadjusted"])
    n_groups, n_candidates = fit["z"].shape
    out = fit["keys"].loc[np.repeat(np.arange(n_groups), n_candidates)].reset_index(drop=True)
    out["onset_week"] = np.tile(fit["cand_onset"], n_groups)
    out["shape"] = np.tile(fit["cand_shape"], n_groups)
    out["estimate"], out["se"], out["z"] = fit["estimate"].ravel(), fit["se"].ravel(), fit["z"].ravel()
    out["p_unadjusted"] = norm.sf(out["z"])
    return out


def averaged_onset(z: np.ndarray, onsets: np.ndarray, shapes: np.ndarray | None = None,
                   dispersion: float = 1.0) -> int:
    """The onset week averaged over the best-fitting shape's candidates, weighted by how well they fit.

    With the fit's fixed weights, candidate ``c`` raises the quasi-log-likelihood
    over no change by ``z_c**2 / (2 * dispersion)``, so with every candidate
    equally likely beforehand its posterior weight is proportional to
    ``exp(z_c**2 / (2 * dispersion))`` (Bayesian model averaging); the
    dispersion (:func:`_pooled_dispersion`, at least 1) widens the posterior
    by as much as the weekly shares scatter beyond binomial noise (sellers
    differ, and each week's mix of sellers with it). The average is taken
    over the candidates of the best fit's shape (``shapes``): a ramp starting
    weeks earlier fits a step almost as well, and mixing it in pulls a step's
    onset early; among ramps, the average places a ramp nearer its start than
    the best fit alone (a ramp's first weeks carry almost none of the drop, so
    one starting a few weeks later fits about as well). Half weeks round up.
    """
    z = np.asarray(z, dtype=float)
    onsets = np.asarray(onsets, dtype=float)
    if shapes is not None:
        shapes = np.asarray(shapes, dtype=object)
        same = shapes == shapes[int(np.argmax(np.abs(z)))]
        z, onsets = z[same], onsets[same]
    weight = np.exp(0.5 * (z**2 - np.max(z**2)) / max(float(dispersion), 1.0))
    return int(np.floor(np.sum(weight * onsets) / np.sum(weight) + 0.5))


def _pooled_dispersion(keys: pd.DataFrame, pool_by: list[str], residual_ss: np.ndarray,
                       df: np.ndarray) -> np.ndarray:
    """Each group's Pearson dispersion of its weekly shares about their best fit, pooled over the groups that
    share ``pool_by`` (the organisation's quarters), never below 1; 1 without residual degrees of freedom."""
    usable = np.isfinite(residual_ss) & (df > 0)
    pool = (keys.groupby(pool_by, sort=False, observed=True).ngroup().to_numpy() if pool_by
            else np.zeros(len(keys), dtype=int))
    ss = np.bincount(pool, weights=np.where(usable, residual_ss, 0.0))[pool]
    total_df = np.bincount(pool, weights=np.where(usable, df, 0.0))[pool]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = ss / total_df
    return np.where(np.isfinite(ratio), np.maximum(ratio, 1.0), 1.0)


def decay_intensity(weeks: np.ndarray, onset: int, shape: str = "step") -> np.ndarray:
    """Each week's share of the full drop: 0 before ``onset``; from it on 1 (``"step"``) or rising
    linearly to 1 at week 13 (``"ramp"``: ``(week - onset + 1) / (14 - onset)``)."""
    weeks = np.asarray(weeks, dtype=float)
    if shape == "step":
        return (weeks >= onset).astype(float)
    if shape == "ramp":
        return np.clip((weeks - onset + 1) / (14 - onset), 0.0, 1.0)
    raise ValueError(f"shape must be one of {SHAPES}, not {shape!r}")


def _weekly_counts(features: pd.DataFrame, by: list[str], outcome: str, week: str) -> pd.DataFrame:
    return (
        features.assign(_event=features[outcome].astype(float))
        .groupby(by + [week], observed=True)["_event"]
        .agg(events="sum", n="size")
        .reset_index()
    )


def _external_baseline(
    keys: pd.DataFrame, baseline: pd.DataFrame | None, pool_by: list[str], quarter: str, outcome: str, week: str,
    first_candidate: int,
) -> pd.DataFrame:
    """For each group: qualified and deals in the other baseline quarters' weeks before ``first_candidate``, and tau2."""
    out = keys.assign(ext_events=0.0, ext_n=0.0, tau2=0.0)
    if baseline is None or baseline.empty:
        return out
    early = baseline[baseline[week] < first_candidate]
    per_quarter = _weekly_counts(early.assign(_all=1), pool_by + [quarter], outcome, "_all").drop(columns="_all")
    per_quarter = per_quarter[per_quarter["n"] > 0]
    totals = per_quarter.groupby(pool_by, observed=True)[["events", "n"]].sum().rename(
        columns={"events": "tot_events", "n": "tot_n"})
    counts = per_quarter.groupby(pool_by, observed=True).size().rename("quarters")
    tau2 = per_quarter.groupby(pool_by, observed=True)[["events", "n"]].apply(_between_quarter_variance).rename("tau2")
    pooled = pd.concat([totals, counts, tau2], axis=1).reset_index()
    merged = keys.merge(pooled, on=pool_by, how="left").merge(
        per_quarter.rename(columns={"events": "own_events", "n": "own_n"}), on=pool_by + [quarter], how="left")
    own_events, own_n = merged["own_events"].fillna(0.0), merged["own_n"].fillna(0.0)
    others = merged["quarters"].fillna(0) - (own_n > 0)
    enough = (others >= MIN_BASELINE_QUARTERS).to_numpy()
    out["ext_events"] = np.where(enough, merged["tot_events"].fillna(0.0) - own_events, 0.0)
    out["ext_n"] = np.where(enough, merged["tot_n"].fillna(0.0) - own_n, 0.0)
    out["tau2"] = np.where(enough, merged["tau2"].fillna(0.0), 0.0)
    return out


def _between_quarter_variance(quarters: pd.DataFrame) -> float:
    """DerSimonian–Laird between-quarter variance of the early-week qualification rate (0 when none is seen)."""
    if len(quarters) < 2:
        return 0.0
    events, n = quarters["events"].to_numpy(dtype=float), quarters["n"].to_numpy(dtype=float)
    pooled = (events.sum() + 1) / (n.sum() + 2)
    with warnings.catch_warnings():
        # combine_effects also computes random-effects standard errors, which are NaN (with a warning)
        # when the untruncated DerSimonian-Laird estimate is negative; only tau2, truncated here, is used.
        warnings.simplefilter("ignore", RuntimeWarning)
        result = combine_effects(events / n, pooled * (1 - pooled) / n, method_re="dl")
    return float(max(result.tau2, 0.0))


def oracle_decay_p_value(qualified: np.ndarray, intensity: np.ndarray) -> float:
    """One-sided p-value of a decay test that knows when and how the drop happened (a testing aid).

    The yardstick of the detector's power: no detector that must find the
    onset can beat a test told the truth. ``intensity`` is each deal's share
    of the full drop (0 before the true onset; 1 after it for a step, rising
    for a ramp). The test is the score test of ``P(qualified) = p0 - d *
    intensity`` against ``d = 0``: ``z = -sum((s - mean s) y) / sqrt(p(1-p)
    sum((s - mean s)^2))``, referred to the upper normal tail. For a step it
    is the pooled one-sided two-proportion test at the true onset
    (``statsmodels.stats.proportion.proportions_ztest``).
    """
    y = np.asarray(qualified, dtype=float)
    s = np.asarray(intensity, dtype=float)
    centred = s - s.mean()
    rate = y.mean()
    scale = np.sqrt(rate * (1 - rate) * np.sum(centred**2))
    if not scale > 0:
        return np.nan
    return float(norm.sf(-np.sum(centred * y) / scale))


# -- findings -------------------------------------------------------------------------------------
def decay_findings(
    features: pd.DataFrame,
    params: Mapping[str, Any] | None = None,
    *,
    roles: pd.DataFrame | None = None,
    by_segment: bool | None = None,
) -> pd.DataFrame:
    """The main ``qualification_decay`` finding of every shown organisation × quarter (× segment).

    :func:`pooled_decay` fits every group at once; each quarter's level is
    pooled with the organisation's (× segment's) baseline quarters. The
    p-value is one-sided (a drop) and adjusted for the search over onsets and
    shapes; the interval is simultaneous over the same candidates, so it lies
    above 0 exactly when the p-value is below ``(1 - ci_level) / 2``. Groups without a
    candidate week that has ``min_n`` opportunities on each side get status
    ``insufficient data`` and no estimate. The open quarter is estimated on
    the weeks seen so far but gets no p-value, so it is never flagged (flags
    are for complete quarters); the ``quarter_complete`` column says which is
    which. Flags are not set here: :func:`quarterpanic.analysis.findings.apply_fdr`
    does that in each false-discovery family.

    Returns
    -------
    A findings frame (:data:`quarterpanic.analysis.findings.FINDING_COLUMNS`) plus
    ``quarter_complete`` and :func:`pooled_decay`'s other columns (``method``,
    ``averaged_onset_week``, ``shape``, ``se``, ``critical_value``, ``p_unadjusted``, ``n_before``,
    ``n_after``, ``rate_before``, ``rate_after``, ``n_candidates``,
    ``baseline_n``, ``tau2``, ``dispersion``).
    """
    params = {**defaults(), **(params or {})}
    shown, baseline = _shown_and_baseline(features, params, roles)
    by_segment = params["by_segment"] if by_segment is None else by_segment
    groupings = [["org", "quarter"]] + ([["org", "quarter", "segment"]] if by_segment else [])
    frames = [_group_findings(shown, params, grouping, baseline) for grouping in groupings]
    return make_findings(pd.concat(frames, ignore_index=True))


def _shown_and_baseline(
    features: pd.DataFrame, params: Mapping[str, Any], roles: pd.DataFrame | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of the quarters judged and of the calm-reference quarters (:func:`quarter_roles`)."""
    roles = quarter_roles(features, params) if roles is None else roles
    pick = ["org", "quarter"]
    shown = features.merge(roles.loc[roles["shown"], pick], on=pick, how="inner")
    return shown, features.merge(roles.loc[roles["baseline"], pick], on=pick, how="inner")


def _group_findings(
    shown: pd.DataFrame, params: Mapping[str, Any], grouping: list[str], baseline: pd.DataFrame
) -> pd.DataFrame:
    found = pooled_decay(shown, params, by=grouping, baseline=baseline)
    complete = shown.groupby(grouping, sort=False)["quarter_complete"].first().rename("quarter_complete")
    out = found.merge(complete.reset_index(), on=grouping, how="left", validate="one_to_one")
    out["quarter_complete"] = out["quarter_complete"].astype(bool)
    out.loc[~out["quarter_complete"], ["p_value", "p_unadjusted"]] = np.nan
    out["status"] = np.where(out["onset_week"].isna(), INSUFFICIENT, OK)
    out = out.assign(component=COMPONENT, metric=COMPONENT)
    if "segment" not in grouping:
        out["segment"] = ALL_SEGMENTS
    return out


def detect_qualification_decay(
    dataset: Dataset, params: Mapping[str, Any] | None = None, *, features: pd.DataFrame | None = None,
    cache: bool = False,
) -> pd.DataFrame:
    """All qualification-decay findings of a dataset: the main decay and its outcome-side metrics.

    Parameters
    ----------
    dataset:
        Canonical tables and calendars.
    params:
        Analysis parameters (:data:`quarterpanic.params.DEFAULTS`).
    features:
        :func:`opportunity_features` of ``dataset`` when already computed.
    cache:
        Reuse the findings of an earlier run on the same data, parameters and
        code (:mod:`quarterpanic.store.results`).

    Returns
    -------
    A findings frame, flags not yet set (:func:`quarterpanic.analysis.detect.detect`
    applies Benjamini–Hochberg in each false-discovery family).
    """
    params = {**defaults(), **(params or {})}
    extra = None
    if features is not None and results_cache.enabled(cache):
        # Features handed in are the detector's input: other features are another key. The dataset's own
        # features (what the notebooks hand in) share the entry of a call without them, as detect() makes.
        handed_in = results_cache.frame_fingerprint(features)
        if handed_in != results_cache.frame_fingerprint(opportunity_features(dataset, params, cache=True)):
            extra = {"features": handed_in}
    return results_cache.cached("quarterpanic.analysis.qualification.detect_qualification_decay",
                                lambda: _detect_qualification_decay(dataset, params, features), dataset, params,
                                extra=extra, use=cache)


def _detect_qualification_decay(dataset: Dataset, params: Mapping[str, Any],
                                features: pd.DataFrame | None) -> pd.DataFrame:
    features = opportunity_features(dataset, params) if features is None else features
    if features.empty:
        findings = make_findings(pd.DataFrame(columns=["org"]))
    else:
        roles = quarter_roles(features, params)
        main = decay_findings(features, params, roles=roles)
        secondary = outcomes.outcome_findings(
            features, dataset, main, params, candidates=candidate_weeks(params), roles=roles
        )
        findings = make_findings(pd.concat([main, secondary], ignore_index=True))
        findings = mark_partial(mark_not_measured(findings, dataset, params), dataset)
    return findings.assign(ci_level=float(params["ci_level"]))
