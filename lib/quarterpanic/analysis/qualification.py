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
   closed form over the candidate weeks (:func:`quarterpanic.analysis.onset.profile_step`).
4. :func:`decay_findings` — one binomial GLM per organisation × quarter at its
   onset; the drop is the average marginal effect of "created at or after the
   onset" on the probability of being qualified, with owner-clustered
   delta-method intervals, and a p-value corrected for the onset search by
   the maximum over the candidate splits
   (:func:`quarterpanic.analysis.onset.max_t_adjusted`).

:func:`detect_qualification_decay` runs them all and adds the outcome-side
metrics of :mod:`quarterpanic.analysis.outcomes`.
"""
from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.special import expit
from statsmodels.genmod.families import Binomial
from statsmodels.genmod.generalized_linear_model import GLM
from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationError, PerfectSeparationWarning

from quarterpanic.analysis import outcomes
from quarterpanic.analysis.features import opportunity_features, quarter_roles
from quarterpanic.analysis.findings import ALL_SEGMENTS, INSUFFICIENT, OK, make_findings, register_metric
from quarterpanic.analysis.inputs import mark_not_measured, mark_partial
from quarterpanic.analysis.onset import max_t_adjusted, profile_step
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
    """The drop in the qualification rate from week ``onset`` on, in one quarter.

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


# -- findings -------------------------------------------------------------------------------------
def decay_findings(
    features: pd.DataFrame,
    params: Mapping[str, Any] | None = None,
    *,
    roles: pd.DataFrame | None = None,
    by_segment: bool | None = None,
) -> pd.DataFrame:
    """The main ``qualification_decay`` finding of every shown organisation × quarter (× segment).

    Onsets are profiled for all groups at once (:func:`qualification_onsets`),
    then :func:`decay_estimate` fits one model per group at its onset. Its
    p-value stays two-sided, as :func:`decay_estimate` defines it (flags are
    only ever set on the decay side), and is corrected for the onset search
    by the maximum over the ``n_candidates`` candidate splits
    (:func:`quarterpanic.analysis.onset.max_t_adjusted`, ``alternative="two-sided"``):
    the p-value is matched to the normal ``|z|`` of the same tail
    probability, and the adjusted one is P(max_k |Z_k| >= |z|), the splits'
    correlation taken from their shares of the quarter's opportunities. The
    interval is not adjusted. Groups without a
    candidate week that has ``min_n`` opportunities on each side get status
    ``insufficient data`` and no estimate. The open quarter is estimated on
    the weeks seen so far but gets no p-value, so it is never flagged (flags
    are for complete quarters); the ``quarter_complete`` column says which is
    which. Flags are not set here: :func:`quarterpanic.analysis.findings.apply_fdr`
    does that in each false-discovery family.

    Returns
    -------
    A findings frame (:data:`quarterpanic.analysis.findings.FINDING_COLUMNS`) plus
    ``quarter_complete``, ``method``, ``n_before``, ``n_after``,
    ``rate_before``, ``rate_after`` and ``n_candidates``.
    """
    params = {**defaults(), **(params or {})}
    roles = quarter_roles(features, params) if roles is None else roles
    shown = features.merge(roles.loc[roles["shown"], ["org", "quarter"]], on=["org", "quarter"], how="inner")
    by_segment = params["by_segment"] if by_segment is None else by_segment
    groupings = [["org", "quarter"]] + ([["org", "quarter", "segment"]] if by_segment else [])
    frames = [_group_findings(shown, params, grouping) for grouping in groupings]
    return make_findings(pd.concat(frames, ignore_index=True))


def _group_findings(shown: pd.DataFrame, params: Mapping[str, Any], grouping: list[str]) -> pd.DataFrame:
    onsets = qualification_onsets(shown, params, by=grouping)
    controls = [c for c in CONTROLS if c not in grouping]
    by_group = dict(iter(shown.groupby(grouping, sort=False)))
    records = []
    for row in onsets.itertuples(index=False):
        key = tuple(getattr(row, c) for c in grouping)
        frame = by_group[key if len(key) > 1 else key[0]]
        record = dict(zip(grouping, key))
        record.update(
            component=COMPONENT, metric=COMPONENT, quarter_complete=bool(frame["quarter_complete"].iloc[0]),
            n=len(frame), n_candidates=int(row.n_candidates),
        )
        if pd.isna(row.onset_week):
            records.append({**record, "status": INSUFFICIENT, "method": "none"})
            continue
        estimate = decay_estimate(frame, int(row.onset_week), controls=controls, ci_level=float(params["ci_level"]))
        estimate["p_value"] = max_t_adjusted(estimate["p_value"], row.candidate_fractions, alternative="two-sided")
        if not record["quarter_complete"]:
            estimate["p_value"] = np.nan
        records.append(
            {
                **record, **estimate, "onset_week": int(row.onset_week), "status": OK,
                "rate_before": row.rate_before, "rate_after": row.rate_after,
            }
        )
    out = pd.DataFrame(records)
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
