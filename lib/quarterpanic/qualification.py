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
   closed form over the candidate weeks (:func:`quarterpanic.onset.profile_step`).
4. :func:`decay_findings` — one binomial GLM per organisation × quarter at its
   onset; the drop is the average marginal effect of "created at or after the
   onset" on the probability of being qualified, with owner-clustered
   delta-method intervals, and a p-value corrected for the onset search by
   the maximum over the candidate splits
   (:func:`quarterpanic.onset.max_t_adjusted`).

:func:`detect_qualification_decay` runs them all and adds the outcome-side
metrics of :mod:`quarterpanic.outcomes`.
"""
from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from statsmodels.genmod.families import Binomial
from statsmodels.genmod.generalized_linear_model import GLM
from scipy.special import expit
from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationError, PerfectSeparationWarning

from quarterpanic import outcomes, results_cache
from quarterpanic.calendar import fiscal_features_by_org
from quarterpanic.dataset import Dataset
from quarterpanic.findings import ALL_SEGMENTS, INSUFFICIENT, OK, make_findings, register_metric
from quarterpanic.onset import max_t_adjusted, profile_step
from quarterpanic.params import defaults
from quarterpanic.words import describe, pct, points

COMPONENT = "qualification_decay"
BANT_COLUMNS = ("bant_budget", "bant_authority", "bant_need", "bant_timeline")
STAGE_ORDER = ("Prospecting", "Qualification", "Needs Analysis", "Proposal", "Negotiation", "Closed")
CONTROLS = ("segment", "lead_source")
UNKNOWN = "Unknown"

register_metric(
    COMPONENT,
    component=COMPONENT,
    null=0.0,
    direction=+1,
    unit="share",
    description="the share of new deals meeting the qualification rule fell by",
)


# -- the rule -------------------------------------------------------------------------------------
def rule_for(org: str, rule: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None) -> dict:
    """The qualification rule of one organisation: defaults, then ``rule``, then its override."""
    base = dict(defaults()["qualification_rule"])
    base.update(rule or {})
    base.update((overrides or {}).get(org) or {})
    return base


def qualified_at_creation(
    opportunities: pd.DataFrame,
    rule: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    org_column: str = "org",
    bant_columns: Sequence[str] = BANT_COLUMNS,
    next_step_column: str = "next_step",
    lead_score_column: str = "lead_score",
) -> pd.Series:
    """Whether each opportunity met the qualification rule.

    Parameters
    ----------
    opportunities:
        Canonical opportunities (BANT flags, ``next_step``, ``lead_score``).
    rule:
        ``{"min_bant": 3, "require_next_step": True, "min_lead_score": None}``
        (missing keys take the defaults of :data:`quarterpanic.params.DEFAULTS`).
    overrides:
        ``{org: {key: value}}`` rule changes for single organisations.

    Returns
    -------
    Boolean Series named ``qualified``, indexed like ``opportunities``. A
    missing BANT flag counts as not met (unknown is not confirmed); a blank
    next step is no next step; with ``min_lead_score`` set, a missing score
    fails.
    """
    codes, orgs = pd.factorize(opportunities[org_column].astype(str))
    rules = [rule_for(org, rule, overrides) for org in orgs]

    def per_row(key: str, convert) -> pd.Series:
        """The rule's ``key`` of each row's organisation: converted once per organisation, gathered by code."""
        values = convert(pd.Series([r.get(key) for r in rules], dtype=object)).to_numpy()
        return pd.Series(values[codes], index=opportunities.index)

    flags = pd.DataFrame({c: opportunities[c].astype("boolean").fillna(False).astype(bool) for c in bant_columns})
    enough_bant = flags.sum(axis=1) >= per_row("min_bant", lambda v: v.astype(float))
    next_step = opportunities[next_step_column].astype("string").str.strip().fillna("").ne("").astype(bool)
    needs_step = per_row("require_next_step", lambda v: v.fillna(False).astype(bool))
    has_step = ~needs_step | next_step
    min_score = per_row("min_lead_score", lambda v: pd.to_numeric(v, errors="coerce").astype(float))
    score = pd.to_numeric(opportunities[lead_score_column], errors="coerce")
    score_ok = min_score.isna() | (score >= min_score).fillna(False)
    return (enough_bant & has_step & score_ok).astype(bool).rename("qualified")


# -- stage paths ----------------------------------------------------------------------------------
def _stage_key(names: pd.Series) -> pd.Series:
    """Stage names compared without case, spaces, hyphens or underscores ("Closed Won" == "closedwon")."""
    codes, distinct = pd.factorize(names.astype("string"))
    keys = pd.Series(distinct, dtype="string").str.casefold().str.replace(r"[\s_\-]+", "", regex=True)
    return pd.Series(pd.array(keys.to_numpy(dtype=object)[codes], dtype="string"), index=names.index).where(codes >= 0)


def stage_rank(stages: pd.Series, stage_order: Sequence[str] = STAGE_ORDER) -> pd.Series:
    """Position of each stage name in ``stage_order`` (0-based; ``<NA>`` when unknown).

    Names match without regard to case, spaces, hyphens and underscores; any
    ``Closed ...`` stage (``Closed Won``, ``Closed Lost``, HubSpot's
    ``closedwon``) takes the position of the last stage.
    """
    keys = _stage_key(stages)
    closed = _stage_key(pd.Series([stage_order[-1]])).iloc[0]
    keys = keys.where(~keys.str.startswith(closed).fillna(False), closed)
    ranks = dict(zip(_stage_key(pd.Series(list(stage_order))), range(len(stage_order))))
    return pd.Series(pd.array(keys.map(ranks), dtype="Int64"), index=stages.index)


def stage_skips(history: pd.DataFrame, *, stage_order: Sequence[str] = STAGE_ORDER) -> pd.DataFrame:
    """Whether each opportunity's stage path skipped a stage of ``stage_order``.

    A move forward by more than one position skips the stages in between
    (``Prospecting → Needs Analysis`` skips ``Qualification``; ``Proposal →
    Closed Won`` skips ``Negotiation``). A move into a *lost* stage never
    counts — deals are lost from any stage — and neither does a move back.

    Parameters
    ----------
    history:
        Canonical opportunity history; its ``field == "stage"`` rows are used.

    Returns
    -------
    One row per ``org`` × ``opportunity_id`` with a stage change:
    ``stage_changes``, ``stages_skipped`` (stages jumped over) and
    ``stage_skipped`` (bool).
    """
    stage = (history["field"] == "stage").to_numpy(dtype=bool)
    # A history has a handful of distinct stage names over millions of rows: rank each name once, gather by code.
    old_codes, old_names = pd.factorize(history["old_value"][stage])
    new_codes, new_names = pd.factorize(history["new_value"][stage])
    old_rank = _with_missing(stage_rank(pd.Series(old_names, dtype="string"), stage_order).astype(float))
    new_rank = _with_missing(stage_rank(pd.Series(new_names, dtype="string"), stage_order).astype(float))
    lost = _with_missing(_stage_key(pd.Series(new_names, dtype="string")).str.contains("lost").fillna(False)
                         .astype(float))
    jumped = new_rank[new_codes] - old_rank[old_codes] - 1
    jumped = np.where(np.isnan(jumped) | (lost[new_codes] > 0), 0, np.maximum(jumped, 0)).astype(int)
    orgs, opportunities = history["org"][stage], history["opportunity_id"][stage]
    org_codes, _ = pd.factorize(orgs)
    opportunity_codes, _ = pd.factorize(opportunities)
    keep = (org_codes >= 0) & (opportunity_codes >= 0)  # as group-by, rows without keys are left out
    pair = org_codes.astype(np.int64) * (int(opportunity_codes.max(initial=0)) + 1) + opportunity_codes
    groups, _ = pd.factorize(pair[keep])  # in order of first appearance, as groupby(sort=False)
    first = np.full(groups.max(initial=-1) + 1, len(groups), dtype=np.int64)
    np.minimum.at(first, groups, np.arange(len(groups)))
    rows = np.flatnonzero(keep)[first]
    out = pd.DataFrame(
        {
            "org": orgs.iloc[rows].reset_index(drop=True),
            "opportunity_id": opportunities.iloc[rows].reset_index(drop=True),
            "stage_changes": np.bincount(groups, minlength=len(first)).astype(np.int64),
            "stages_skipped": np.bincount(groups, weights=jumped[keep], minlength=len(first)).astype(np.int64),
        }
    )
    out["stage_skipped"] = out["stages_skipped"] > 0
    return out


def _with_missing(values: pd.Series) -> np.ndarray:
    """``values`` as floats with NaN appended, so that the code -1 of a missing name gathers NaN."""
    return np.append(values.to_numpy(dtype=float, na_value=np.nan), np.nan)


# -- one row per opportunity ----------------------------------------------------------------------
FEATURE_COLUMNS = [
    "org", "opportunity_id", "quarter", "quarter_start", "quarter_end", "week_of_quarter", "weeks_in_quarter",
    "quarter_complete", "created_at", "segment", "team", "owner", "lead_source", "qualified", "lead_score",
    "stage_skipped", "outcome", "won", "amount", "discount", "close_date", "close_quarter", "close_week",
    "close_weeks_in_quarter",
]


def opportunity_features(dataset: Dataset, params: Mapping[str, Any] | None = None, *,
                         cache: bool = False) -> pd.DataFrame:
    """One row per opportunity with everything the detector and its charts use.

    Parameters
    ----------
    dataset:
        The canonical tables and calendars.
    params:
        Analysis parameters; uses ``qualification_rule``,
        ``qualification_overrides``, ``orgs`` and ``segment``.
    cache:
        Reuse the features of an earlier run on the same data, parameters and
        code (:mod:`quarterpanic.results_cache`).

    Returns
    -------
    :data:`FEATURE_COLUMNS`: the creation ``quarter`` label, ``week_of_quarter``
    and ``quarter_complete`` (quarter ended before ``dataset.as_of``) by the
    organisation's fiscal calendar; ``qualified`` (the rule at creation);
    ``stage_skipped`` (``<NA>`` for an organisation without stage history);
    ``outcome`` ``won`` / ``lost`` / ``open`` and ``won`` (1.0 / 0.0, NaN while
    open: an open deal is censored, not lost); ``close_date`` (the expected
    one while open); for closed deals only, ``close_quarter`` and
    ``close_week`` of their close date.
    """
    params = {**defaults(), **(params or {})}
    return results_cache.cached("quarterpanic.qualification.opportunity_features",
                                lambda: _opportunity_features(dataset, params), dataset, params, use=cache)


def _opportunity_features(dataset: Dataset, params: Mapping[str, Any]) -> pd.DataFrame:
    opps = dataset.opportunities
    if params.get("orgs"):
        opps = opps[opps["org"].isin(params["orgs"])]
    if params.get("segment"):
        opps = opps[opps["segment"] == params["segment"]]
    calendars = {org: dataset.calendar(org) for org in opps["org"].unique()}
    created = fiscal_features_by_org(opps, "created_at", calendars)
    closed = opps["is_closed"].astype(bool)
    close = fiscal_features_by_org(opps.assign(closed_on=opps["close_date"].where(closed)), "closed_on", calendars,
                                   prefix="close_")
    won = opps["is_won"].astype(bool)
    out = pd.DataFrame(
        {
            "org": opps["org"].astype(str),
            "opportunity_id": opps["opportunity_id"].astype(str),
            "quarter": created["quarter"].astype(str),
            "quarter_start": created["quarter_start"],
            "quarter_end": created["quarter_end"],
            "week_of_quarter": created["week_of_quarter"].astype(int),
            "weeks_in_quarter": created["weeks_in_quarter"].astype(int),
            "quarter_complete": (created["quarter_end"] + pd.Timedelta(days=1) <= dataset.as_of).astype(bool),
            "created_at": opps["created_at"],
            "segment": _label(opps["segment"]),
            "team": _label(opps["team"]),
            "owner": _label(opps["owner"]),
            "lead_source": _label(opps["lead_source"]),
            "qualified": qualified_at_creation(opps, params["qualification_rule"], params["qualification_overrides"]),
            "lead_score": pd.to_numeric(opps["lead_score"], errors="coerce").astype(float),
            "outcome": np.where(won, "won", np.where(closed, "lost", "open")),
            "won": np.where(closed, won.astype(float), np.nan),
            "amount": pd.to_numeric(opps["amount"], errors="coerce").astype(float),
            "discount": pd.to_numeric(opps["discount"], errors="coerce").astype(float),
            "close_date": opps["close_date"],
            "close_quarter": close["close_quarter"],
            "close_week": close["close_week_of_quarter"],
            "close_weeks_in_quarter": close["close_weeks_in_quarter"],
        },
        index=opps.index,
    )
    skips = stage_skips(dataset.history[dataset.history["org"].isin(out["org"].unique())])
    out = out.merge(skips[["org", "opportunity_id", "stage_skipped"]], on=["org", "opportunity_id"], how="left")
    # A deal without stage changes skipped nothing, unless its organisation exported no stage history at all.
    has_history = out["org"].isin(skips["org"].unique())
    out["stage_skipped"] = out["stage_skipped"].astype("boolean").fillna(False).where(has_history, pd.NA)
    return out[FEATURE_COLUMNS].reset_index(drop=True)


def _label(values: pd.Series) -> pd.Series:
    """Category labels with missing values spelt out (so they stay in group-bys)."""
    labels = values.astype("string").str.strip()
    return labels.where(labels.notna() & labels.ne(""), UNKNOWN).astype(str)


# -- which quarters ------------------------------------------------------------------------------
def quarter_roles(features: pd.DataFrame, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The role of every organisation × quarter: shown and judged, open, baseline.

    Returns one row per ``org`` × ``quarter`` with ``quarter_start``,
    ``quarter_complete``, ``shown`` (in ``params["quarters"]``, or every
    quarter when that is None), ``judged`` (shown and complete: only complete
    quarters get a p-value and can be flagged) and ``baseline`` (complete and
    in ``params["baseline_quarters"]``; None = the complete quarters not
    shown, or every complete quarter when all are shown).
    """
    params = {**defaults(), **(params or {})}
    table = (
        features.groupby(["org", "quarter"], sort=False)
        .agg(quarter_start=("quarter_start", "first"), quarter_complete=("quarter_complete", "first"))
        .reset_index()
        .sort_values(["org", "quarter_start"])
        .reset_index(drop=True)
    )
    shown = table["quarter"].isin(params["quarters"]) if params.get("quarters") else pd.Series(True, index=table.index)
    table["shown"] = shown.to_numpy()
    table["judged"] = table["shown"] & table["quarter_complete"]
    if params.get("baseline_quarters"):
        baseline = table["quarter"].isin(params["baseline_quarters"])
    elif params.get("quarters"):
        baseline = ~table["shown"]
    else:
        baseline = pd.Series(True, index=table.index)
    table["baseline"] = (baseline & table["quarter_complete"]).to_numpy()
    return table


# -- weekly curves --------------------------------------------------------------------------------
def qualification_rate_by_week(
    features: pd.DataFrame,
    *,
    by: Sequence[str] = ("org", "quarter"),
    week: str = "week_of_quarter",
    method: str = "wilson",
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Weekly share of new opportunities meeting the rule, with Wilson (or exact, ``"beta"``) intervals.

    Add ``"segment"``, ``"team"`` or ``"lead_source"`` to ``by`` for finer
    curves. Returns ``by`` × ``week`` rows with ``events`` (qualified), ``n``
    (created), ``rate``, ``ci_low``, ``ci_high``.
    """
    return outcomes.weekly_proportion(features, "qualified", by=by, week=week, method=method, alpha=alpha)


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
        :func:`quarterpanic.outcomes.weekly_mean` (a ``functools.partial``).
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
    (:func:`quarterpanic.onset.profile_step`, ``direction=-1``). Only
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
    alpha: float = 0.05,
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

    A control level with fewer than :data:`quarterpanic.outcomes.MIN_LEVEL_N` rows, or whose
    outcome never varies, is pooled with the reference level. When the GLM
    cannot be used — fewer than :data:`quarterpanic.outcomes.MIN_CLUSTERS` sellers, separation, no
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
            return {**info, **outcomes.wald_interval(-effect, se, alpha, df), "method": "glm"}
    effect, se = _two_proportion(y, late)
    return {**info, **outcomes.wald_interval(effect, se, alpha, None), "method": f"two-proportion ({reason})"}


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
    (:func:`quarterpanic.onset.max_t_adjusted`, ``alternative="two-sided"``):
    the p-value is matched to the normal ``|z|`` of the same tail
    probability, and the adjusted one is P(max_k |Z_k| >= |z|), the splits'
    correlation taken from their shares of the quarter's opportunities. The
    interval is not adjusted. Groups without a
    candidate week that has ``min_n`` opportunities on each side get status
    ``insufficient data`` and no estimate. The open quarter is estimated on
    the weeks seen so far but gets no p-value, so it is never flagged (flags
    are for complete quarters); the ``quarter_complete`` column says which is
    which. Flags are not set here: :func:`quarterpanic.findings.apply_fdr`
    does that across the whole run.

    Returns
    -------
    A findings frame (:data:`quarterpanic.findings.FINDING_COLUMNS`) plus
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
        estimate = decay_estimate(frame, int(row.onset_week), controls=controls, alpha=float(params["alpha"]))
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
        code (:mod:`quarterpanic.results_cache`).

    Returns
    -------
    A findings frame, flags not yet set (:func:`quarterpanic.detect.detect`
    applies Benjamini–Hochberg across the whole run).
    """
    params = {**defaults(), **(params or {})}
    return results_cache.cached("quarterpanic.qualification.detect_qualification_decay",
                                lambda: _detect_qualification_decay(dataset, params, features), dataset, params,
                                use=cache)


def _detect_qualification_decay(dataset: Dataset, params: Mapping[str, Any],
                                features: pd.DataFrame | None) -> pd.DataFrame:
    features = opportunity_features(dataset, params) if features is None else features
    if features.empty:
        return make_findings(pd.DataFrame(columns=["org"]))
    roles = quarter_roles(features, params)
    main = decay_findings(features, params, roles=roles)
    secondary = outcomes.outcome_findings(
        features, dataset, main, params, candidates=candidate_weeks(params), roles=roles
    )
    return make_findings(pd.concat([main, secondary], ignore_index=True))


# -- for reports ----------------------------------------------------------------------------------
def chart_roles(
    features: pd.DataFrame,
    params: Mapping[str, Any] | None = None,
    *,
    recent: int = 2,
    findings: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """:func:`quarter_roles` for charts: recent quarters against a calm baseline.

    With ``params["quarters"]`` set, those quarters are shown. Otherwise each
    organisation shows its last ``recent`` complete quarters and its open
    one (organisations have their own fiscal calendars, so one list of labels
    would not fit them all). The baseline is ``params["baseline_quarters"]``,
    else the other complete quarters — without those flagged in
    ``findings``, when given, so that the baseline is calm.
    """
    params = {**defaults(), **(params or {})}
    if params.get("quarters"):
        roles = quarter_roles(features, params)
    else:
        roles = quarter_roles(features, {**params, "baseline_quarters": None})
        complete = roles["quarter_complete"]
        from_last = roles[complete].groupby("org").cumcount(ascending=False).reindex(roles.index)
        roles["shown"] = ~complete | (from_last < recent)
        roles["judged"] = roles["shown"] & complete
        if params.get("baseline_quarters"):
            roles["baseline"] = complete & roles["quarter"].isin(params["baseline_quarters"])
        else:
            roles["baseline"] = complete & ~roles["shown"]
    if findings is not None and not params.get("baseline_quarters"):
        flagged = _judged_main(findings)
        flagged = set(map(tuple, flagged.loc[flagged["flagged"], ["org", "quarter"]].to_numpy()))
        hot = pd.Series([(o, q) in flagged for o, q in zip(roles["org"], roles["quarter"])], index=roles.index)
        roles["baseline"] &= ~hot
    return roles


def _judged_main(findings: pd.DataFrame) -> pd.DataFrame:
    main = findings[(findings["metric"] == COMPONENT) & (findings["segment"] == ALL_SEGMENTS)]
    return main[(main["status"] == OK) & main["p_value"].notna()]


def decay_headline(findings: pd.DataFrame, org: str, quarters: Sequence[str] | None = None) -> str:
    """One sentence on an organisation's qualification decay, for a chart title.

    Names the latest flagged quarter (among ``quarters``, when given) with
    its rates before and after the onset; else says that none was flagged,
    or that there was too little data to judge.
    """
    judged = _judged_main(findings[findings["org"] == org])
    if judged.empty:
        return f"{org}: too few new deals per quarter to judge qualification"
    flagged = judged[judged["flagged"]]
    named = flagged if quarters is None else flagged[flagged["quarter"].isin(list(quarters))]
    count = f"{len(flagged)} of {len(judged)} quarters flagged"
    if named.empty:
        where = "" if quarters is None else " in the quarters shown"
        return f"{org}: no significant late-quarter drop in qualification{where} ({count})"
    last = named.iloc[-1]
    return (
        f"{org}: in {last['quarter']} qualification fell from {pct(last['rate_before'])} to "
        f"{pct(last['rate_after'])} from week {int(last['onset_week'])} on ({count})"
    )


def heatmap_headline(findings: pd.DataFrame, org: str) -> str:
    """Title of a quarter × week heatmap: which quarters fell late, and the usual level of the others."""
    judged = _judged_main(findings[findings["org"] == org])
    if judged.empty:
        return f"{org}: too few new deals per quarter to judge qualification"
    overall = (judged["rate_before"] * judged["n_before"] + judged["rate_after"] * judged["n_after"]) / (
        judged["n_before"] + judged["n_after"])
    flagged = judged["flagged"].astype(bool)
    usual = f"{pct(overall[~flagged].mean())} qualified" if (~flagged).any() else ""
    if not flagged.any():
        return f"{org}: no quarter fell late; new deals are {usual} week after week"
    text = f"{org}: qualification falls late in {', '.join(judged.loc[flagged, 'quarter'])}"
    return text + (f"; the other quarters stay near {usual}" if usual else "")


def forest_headline(findings: pd.DataFrame) -> str:
    """Title of the forest plot of decay estimates: how many quarters were flagged, and the largest drop."""
    judged = _judged_main(findings)
    if judged.empty:
        return "Too few new deals to judge qualification in any complete quarter"
    flagged = judged[judged["flagged"]]
    text = f"Qualification decay flagged in {len(flagged)} of {len(judged)} complete quarters"
    if len(flagged):
        top = flagged.loc[flagged["estimate"].idxmax()]
        text += f"; the largest drop was {points(top['estimate'])} ({top['org']}, {top['quarter']})"
    return text


def summary_headline(findings: pd.DataFrame) -> str:
    """One sentence on the whole run: how many complete quarters were flagged, and which."""
    judged = _judged_main(findings)
    flagged = judged[judged["flagged"]]
    thin = _thin_complete(findings)
    text = f"Qualification decay was flagged in {len(flagged)} of {len(judged)} complete quarters judged"
    if len(flagged):
        text += " (" + "; ".join(
            f"{org}: {', '.join(rows['quarter'])}" for org, rows in flagged.groupby("org", sort=True)) + ")"
    if thin:
        text += f"; {thin} more had too few new deals to judge"
    return text


def _thin_complete(findings: pd.DataFrame) -> int:
    """How many complete quarters had too little data for a qualification verdict."""
    main = findings[(findings["metric"] == COMPONENT) & (findings["segment"] == ALL_SEGMENTS)]
    return int(((main["status"] == INSUFFICIENT) & main["quarter_complete"].astype(bool)).sum())


def findings_in_words(findings: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """The findings as plain sentences (:func:`quarterpanic.words.describe`), one row each.

    Returns ``org``, ``quarter``, ``segment``, ``metric``, ``flagged`` and
    ``finding`` (the sentence); only the ``metrics`` given, if any.
    """
    rows = findings if metrics is None else findings[findings["metric"].isin(list(metrics))]
    sentences = [describe(row) for row in rows.to_dict("records")]
    return rows[["org", "quarter", "segment", "metric", "flagged"]].assign(finding=sentences).reset_index(drop=True)


def summary_figures(findings: pd.DataFrame) -> dict[str, Any]:
    """Key figures of a run for :func:`quarterpanic.artifacts.save_summary`.

    ``quarters_judged``, ``quarters_flagged``, ``quarters_insufficient``
    (complete quarters with too little data),
    ``flagged_quarters`` (org → labels), ``decay`` (the main findings) and
    ``outcome_means`` (metric → mean estimate in flagged and other quarters).
    """
    main = findings[(findings["metric"] == COMPONENT) & (findings["segment"] == ALL_SEGMENTS)]
    judged = _judged_main(findings)
    columns = [c for c in ["org", "quarter", "estimate", "ci_low", "ci_high", "p_value", "q_value", "onset_week",
                           "flagged", "status", "n", "method", "quarter_complete"] if c in main]
    return {
        "quarters_judged": len(judged),
        "quarters_flagged": int(judged["flagged"].sum()),
        "quarters_insufficient": _thin_complete(findings),
        "flagged_quarters": {org: list(rows["quarter"]) for org, rows in judged[judged["flagged"]].groupby("org")},
        "decay": main[columns],
        "outcome_means": {
            metric: outcomes.flagged_contrast(findings, metric) for metric in outcomes.ONSET_METRICS + outcomes.QUARTER_END_METRICS
        },
    }
