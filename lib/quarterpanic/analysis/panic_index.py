"""The panic index: one number per organisation × quarter from the detector findings.

**What it measures: how big, not how sure.** Five findings measure the four
symptoms of quarter-end panic:

===========================  =========================  ================================  ======  =====
component (findings metric)  symptom                    panic-side value                  weight  floor
===========================  =========================  ================================  ======  =====
``qualification_decay``      qualification decay        the probability drop               1/4    0.03
``win_rate_ratio``           outcome decay              −log(late / early win rate)        1/8    0.10
``discount_uplift``          outcome decay              extra discount (fraction points)   1/8    0.01
``reactive_order_taking``    reactive order-taking      log(late / early request rate)     1/4    0.10
``bookings_backloading``     bookings back-loading      month-3 share of bookings          1/4    0.03
===========================  =========================  ================================  ======  =====

(``bookings_backloading`` reads the ``month3_bookings_share`` finding, the
share itself, which the baseline below compares with the other quarters'.)
Every value is oriented so that panic is positive (ratios on the log scale,
so a doubling and a halving are equally far from 1). Each is turned into an
*effect size* ``z = (value − centre) / tau``: how far the quarter sits from
the organisation's usual quarter, in units of how much its quarters really
vary when calm — not in units of the quarter's own standard error. A small
firm's confirmed 3× surge is as big as an enterprise's; it is only less sure,
and the interval says so.

**A leave-one-out baseline.** Each quarter is compared with the same
organisation's (and segment's) *other* complete quarters
(``params["baseline_quarters"]`` when given, else all of them), never with a
set chosen by this run's flags, so flipping one quarter's flag cannot move any
baseline. Panic only raises panic-side values, and raises every symptom at
once, so the calm quarters among the others are chosen on all components
together (:func:`joint_calm_quarters`): each component's values are
standardised against its calm quarters (``u = (v − centre) / sqrt(tau² +
median se²)``, starting from each component's own panic-side trim,
:func:`calm_members`), combined into one score per quarter
``s = Σ w u / sqrt(Σ w²)`` (in calm SDs), and a forward search from the lower
half of the scores keeps those within :data:`TRIM_SDS` calm SDs of the kept
set's median (the spread estimated on the kept set, never below 1); the
components' moments are re-estimated on the kept quarters and the search
repeated until the set is stable. An organisation that panics in half its
quarters still has a calm baseline, and a quarter that is a little high on
every component stands out where no single component does. On the kept
quarters with a value, ``centre`` is the median; the calm variation ``tau`` is
the between-quarter standard deviation net of sampling noise, a robust
method-of-moments estimate: ``tau² = max(s² − median(se²), 0)`` with
``s = 1.4826 ×`` the median calm-side deviation (below the centre) and ``se``
their standard errors, never below the component's ``floor`` (the smallest
variation that counts as a real difference, so that an organisation whose
quarters agree perfectly does not turn every wiggle into an extreme). A
component with fewer than :data:`MIN_BASELINE` calm quarters with a value falls
back on its own trim (:func:`calm_variation`); one with fewer than
:data:`MIN_BASELINE` other quarters with a value is ``insufficient baseline``.

**Standard errors.** A finding's ``se`` column is used where a detector
reports one (bookings back-loading does: its score intervals are asymmetric);
otherwise the standard error is read off the interval as off a 95% interval
(its quantile — normal, t with the finding's ``df``, or the ``critical_value``
an interval widened for an onset search records — taken out), so the index
never moves with the ``ci_level`` shown.

**The index is in calm SDs of the composite**: ``index = Σ weight × z`` over
the available effect sizes, the weights in the table's proportions scaled so
that their squares sum to one over the components a quarter has
(``contribution = weight × z``; the contributions sum to the index). Each
true effect size has calm SD 1, so their weighted sum, components taken as
independent, has calm SD 1 too: ``watch`` = 2 means two calm standard
deviations of the composite, as a component's 2 means two of its own. (A
plain weighted mean, weights summing to one, has a calm SD of about 0.47, so
its 2 was about four calm SDs of the composite.) An organisation measured on
fewer components is judged on those, and a component calmer than usual
honestly pulls the index down.

**Its interval.** ``index_se² = Σ weight² × (se² + var(centre)) / tau²``:
each component's sampling error and the error of its baseline median
(``π/2 × (tau² + median se²) / n`` over the n calm quarters), components taken
as independent and ``tau`` as known. ``index_low``/``index_high`` are the 95%
interval of the true index (fixed, like the standard errors, so levels never
move with ``ci_level``). It says how big the quarter's departure may be; it
does not decide the level (the tests below do).

**Levels** (``params["index_thresholds"]``): ``panic`` when the index is at
least ``panic`` *and* the quarter is confirmed; ``watch`` likewise from
``watch``; ``calm`` below ``watch``; ``insufficient data`` when the point
reaches ``watch`` but nothing confirms it (a large effect size the data cannot
confirm, such as a small firm's noisy estimate against a small calm
variation), or no component could be standardised; ``not enough evidence``
when no component could be measured from the data at all. *Confirmed*: a
component that pushes the index up is flagged toward panic by its own
detector (under the run's false-discovery control), or the detectors' tests
of the quarter's components together reject calm
(:func:`combined_evidence`: their one-sided p-values combined by weighted
Stouffer, ``Σ w Φ⁻¹(1 − p) / sqrt(Σ w²)``, Benjamini–Hochberg at
``params["alpha"]`` across the organisation × segment's complete quarters).
``evidence_p`` is that combined p-value, ``confirmed`` whether either held.
Only complete quarters get an index: the open quarter is judged by
:mod:`quarterpanic.analysis.early_warning`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from quarterpanic.analysis.features import opportunity_features
from quarterpanic.analysis.findings import (
    ALL_SEGMENTS, AWAY_FROM_PANIC, DEFAULT_CI_LEVEL, NEITHER, NOT_MEASURED, OK, benjamini_hochberg, ci_level_of, main_findings,
    z_of,
)
from quarterpanic.analysis.inputs import quarter_bounds, quarter_coverage
from quarterpanic.params import defaults
from quarterpanic.util import finite_or_none

CALM, WATCH, PANIC, INSUFFICIENT_LEVEL = "calm", "watch", "panic", "insufficient data"
# No component of the quarter could be measured from the data (their inputs are absent): no level at all.
NOT_ENOUGH_EVIDENCE = "not enough evidence"
LEVELS = (CALM, WATCH, PANIC, INSUFFICIENT_LEVEL, NOT_ENOUGH_EVIDENCE)
INSUFFICIENT_BASELINE = "insufficient baseline"
MIN_BASELINE = 3  # other quarters with a value a component needs for its baseline
MAD_TO_SD = 1.4826  # MAD of a normal sample × this = its standard deviation
INDEX_LEVEL = 0.95  # the index interval's level, fixed so that levels never move with the ci_level shown
# A quarter more than this many calm SDs above the rest is left out of the calm baseline (calm_variation).
TRIM_SDS = 2.0
# Large-sample variance of a sample median relative to a mean's (normal data).
MEDIAN_EFFICIENCY = np.pi / 2
KEYS = ["org", "quarter", "segment"]


@dataclass(frozen=True)
class Component:
    """One finding metric in the index.

    ``direction`` is +1 when panic makes the estimate larger, ``log_scale``
    says the estimate is a ratio (compared on the log scale), ``floor`` is the
    smallest calm variation ``tau`` (in panic-side units) an effect is ever
    measured in. ``source`` is the findings metric the values are read from
    when it is not ``metric`` itself.
    """

    metric: str
    symptom: str
    weight: float
    direction: int
    log_scale: bool
    floor: float
    source: str = ""

    @property
    def finding_metric(self) -> str:
        """The findings metric this component reads."""
        return self.source or self.metric


# Each symptom a quarter of the weight, the outcome symptom's split between its two metrics.
COMPONENTS: tuple[Component, ...] = (
    Component("qualification_decay", "qualification decay", 1 / 4, +1, False, 0.03),
    Component("win_rate_ratio", "outcome decay", 1 / 8, -1, True, 0.10),
    Component("discount_uplift", "outcome decay", 1 / 8, +1, False, 0.01),
    Component("reactive_order_taking", "reactive order-taking", 1 / 4, +1, True, 0.10),
    # The month-3 share itself: the index compares it with the other quarters' median share, as it does
    # every component (the finding ``bookings_backloading`` already subtracts the other quarters' share).
    Component("bookings_backloading", "bookings back-loading", 1 / 4, +1, False, 0.03,
              source="month3_bookings_share"),
)
# The components whose flags make a quarter unfit for the early warning's calm baseline (baseline_quarters).
MAIN_COMPONENTS = ("qualification_decay", "reactive_order_taking")
SCORE_COLUMNS = [
    "org", "quarter", "segment", "component", "symptom", "estimate", "ci_low", "ci_high", "ci_level", "onset_week",
    "flagged", "value", "se", "centre", "scale", "n_baseline", "z", "weight", "contribution", "status", "baseline",
    "needs", "signals", "reference", "centre_se", "z_se", "confirmed", "p_value",
]
INDEX_COLUMNS = [
    "org", "quarter", "segment", "size_class", "panic_index", "level", "n_components", "top_component", "baseline",
    "rests_on", "not_measured", "index_se", "index_low", "index_high", "evidence_p", "confirmed",
]


# -- which quarters are complete, which are calm -----------------------------------------------------
def complete_quarters(findings: pd.DataFrame, dataset: Any = None) -> pd.DataFrame:
    """Every org × quarter of ``findings`` and whether it is complete.

    With ``dataset`` a quarter is complete when its last day is over by
    ``dataset.as_of`` and the data cover it from its first week (each
    organisation's calendar; :func:`quarterpanic.analysis.inputs.quarter_coverage`);
    otherwise the findings' ``quarter_complete`` column decides (rows without
    it count as complete).

    Returns columns ``org``, ``quarter``, ``quarter_complete``.
    """
    pairs = findings[["org", "quarter"]].drop_duplicates().astype(str).reset_index(drop=True)
    if dataset is not None:
        bounds = quarter_bounds(dataset, pairs["org"], pairs["quarter"])
        coverage = quarter_coverage(dataset, pairs["org"], bounds["quarter_start"], bounds["quarter_end"])
        pairs["quarter_complete"] = coverage["complete"].to_numpy()
    elif "quarter_complete" in findings:
        flags = findings.assign(_c=findings["quarter_complete"].astype("boolean").fillna(True).astype(bool))
        complete = flags.groupby(["org", "quarter"])["_c"].all().rename("quarter_complete").reset_index()
        pairs = pairs.merge(complete.astype({"org": str, "quarter": str}), on=["org", "quarter"], how="left")
    else:
        pairs["quarter_complete"] = True
    pairs["quarter_complete"] = pairs["quarter_complete"].astype("boolean").fillna(True).astype(bool)
    return pairs


def quarter_ends(dataset: Any, pairs: pd.DataFrame) -> pd.Series:
    """The last day of each ``org`` × ``quarter`` label of ``pairs``, by the organisation's calendar."""
    ends = pd.Series(pd.NaT, index=pairs.index, dtype="datetime64[ns]")
    for org, rows in pairs.groupby("org").groups.items():
        calendar = dataset.calendar(org)
        table = calendar.quarters(dataset.as_of - pd.Timedelta(days=366 * 12), dataset.as_of + pd.Timedelta(days=400))
        lookup = dict(zip(table["quarter"], table["quarter_end"]))
        ends.loc[rows] = pairs.loc[rows, "quarter"].map(lookup).to_numpy(dtype="datetime64[ns]")
    return ends


def baseline_quarters(
    findings: pd.DataFrame, params: Mapping[str, Any] | None = None, complete: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Which complete org × quarter × segment is a calm baseline quarter.

    Parameters
    ----------
    findings:
        Findings of :func:`quarterpanic.analysis.detect.detect` (flags set).
    params:
        Uses ``baseline_quarters``: quarter labels that are the baseline of
        every organisation; None = each organisation's complete quarters none
        of whose main findings is flagged.
    complete:
        :func:`complete_quarters` (default: from ``findings`` alone).

    Returns
    -------
    One row per ``org`` × ``quarter`` × ``segment`` with ``quarter_complete``
    and ``baseline`` (bool).
    """
    params = {**defaults(), **(params or {})}
    complete = complete_quarters(findings) if complete is None else complete
    main = main_findings(findings)
    main = main[main["component"].isin(MAIN_COMPONENTS)]
    keys = findings[KEYS].drop_duplicates().astype(str)
    flagged = main.assign(flagged=main["flagged"].astype(bool)).astype({c: str for c in KEYS})
    flagged = flagged.groupby(KEYS)["flagged"].any().rename("any_flagged").reset_index()
    table = keys.merge(complete, on=["org", "quarter"], how="left").merge(flagged, on=KEYS, how="left")
    table["quarter_complete"] = table["quarter_complete"].astype("boolean").fillna(True).astype(bool)
    if params.get("baseline_quarters"):
        chosen = table["quarter"].isin([str(q) for q in params["baseline_quarters"]])
    else:
        chosen = ~table["any_flagged"].astype("boolean").fillna(False).astype(bool)
    table["baseline"] = (chosen & table["quarter_complete"]).astype(bool)
    return table.drop(columns="any_flagged").reset_index(drop=True)


# -- component z-scores -------------------------------------------------------------------------------
def panic_side(estimate: pd.Series | np.ndarray, component: Component) -> np.ndarray:
    """An estimate on the panic side of zero: ``direction × estimate`` (log first for ratios)."""
    values = np.asarray(estimate, dtype=float)
    if component.log_scale:
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.log(np.where(values > 0, values, np.nan))
    return component.direction * values


def _quantile(ci_level: pd.Series | np.ndarray, df: pd.Series) -> np.ndarray:
    """The quantile each interval was built with: t with ``df`` degrees of freedom (normal when missing or infinite)."""
    level = pd.to_numeric(pd.Series(np.asarray(ci_level)), errors="coerce").fillna(DEFAULT_CI_LEVEL).to_numpy(float)
    dof = pd.to_numeric(pd.Series(np.asarray(df)), errors="coerce").fillna(np.inf).to_numpy(float)
    return stats.t.ppf((1 + level) / 2, dof)


def component_scores(
    findings: pd.DataFrame,
    params: Mapping[str, Any] | None = None,
    *,
    dataset: Any = None,
    components: Sequence[Component] = COMPONENTS,
) -> pd.DataFrame:
    """Every component of every complete org × quarter × segment as an effect size against its other quarters.

    Parameters
    ----------
    findings:
        Findings (:func:`quarterpanic.analysis.detect.detect`) of every
        quarter (run the detectors with ``quarters=None``), optionally with an
        ``se`` column (used where finite).
    params:
        Uses ``baseline_quarters`` (None: each quarter against all the
        organisation's other complete quarters).
    dataset:
        The :class:`~quarterpanic.dataset.Dataset` the findings came from
        (decides which quarters are complete); optional.
    components:
        The index components (default :data:`COMPONENTS`).

    Returns
    -------
    The tidy frame :data:`SCORE_COLUMNS`: one row per ``org`` × ``quarter``
    × ``segment`` × ``component`` with the finding (``estimate``, ``ci_low``,
    ``ci_high``, ``onset_week``, ``flagged``, ``reference``), its panic-side
    ``value`` and ``se``, its leave-one-out baseline ``centre`` (with
    ``centre_se``), ``scale`` (the calm variation ``tau``) and
    ``n_baseline``, the effect size ``z`` with its standard error ``z_se``,
    the renormalised ``weight`` and ``contribution`` (``weight × z``, zero
    weight when ``z`` is missing), ``status`` (``ok``, ``insufficient data``,
    ``insufficient baseline``, ``not measured``) and whether the quarter is a
    ``baseline`` quarter (one the other quarters are compared with).
    """
    params = {**defaults(), **(params or {})}
    if findings.empty:
        return pd.DataFrame(columns=SCORE_COLUMNS)
    complete = complete_quarters(findings, dataset)
    roles = findings[KEYS].drop_duplicates().astype(str).merge(complete, on=["org", "quarter"], how="left")
    roles = roles[roles["quarter_complete"].astype("boolean").fillna(True).astype(bool)]
    explicit = [str(q) for q in params.get("baseline_quarters") or []]
    roles = roles.assign(baseline=roles["quarter"].isin(explicit) if explicit else True)
    by_metric = {c.metric: c for c in components}
    sources = {c.finding_metric: c.metric for c in components}
    rows = findings[findings["metric"].isin(sources)].astype({c: str for c in KEYS})
    rows = rows.drop_duplicates(KEYS + ["metric"]).assign(metric=lambda f: f["metric"].map(sources))
    for column, missing in (("ci_level", DEFAULT_CI_LEVEL), ("df", np.inf), ("se", np.nan), ("reference", np.nan),
                            ("critical_value", np.nan),
                            ("needs", None), ("signals", None)):
        if column not in rows:
            rows = rows.assign(**{column: missing})
    grid = roles[KEYS + ["baseline"]].merge(pd.DataFrame({"component": list(by_metric)}), how="cross")
    cols = ["estimate", "ci_low", "ci_high", "ci_level", "df", "critical_value", "se", "onset_week", "flagged", "status", "needs",
            "signals", "reference"]
    scores = grid.merge(rows[KEYS + ["metric"] + cols].rename(columns={"metric": "component", "se": "_se"}),
                        on=KEYS + ["component"], how="left")
    not_measured = (scores["status"] == NOT_MEASURED).to_numpy()
    scores["symptom"] = scores["component"].map({c.metric: c.symptom for c in components})
    scores["flagged"] = scores["flagged"].astype("boolean").fillna(False).astype(bool)
    value = np.full(len(scores), np.nan)
    se = np.full(len(scores), np.nan)
    for name, idx in scores.groupby("component").groups.items():
        at = scores.index.get_indexer(idx)
        value[at], se[at] = panic_side_with_se(scores.loc[idx], by_metric[name])
    usable = (scores["status"] == OK).to_numpy() & np.isfinite(value) & np.isfinite(se)
    scores["value"] = np.where(usable, value, np.nan)
    scores["se"] = np.where(usable, se, np.nan)
    scores = scores.drop(columns="_se").join(_leave_one_out(scores, by_metric))
    scores["z"] = (scores["value"] - scores["centre"]) / scores["scale"]
    scores["z_se"] = np.sqrt(scores["se"] ** 2 + scores["centre_se"] ** 2) / scores["scale"]
    scores["status"] = np.where(
        ~usable, np.where(not_measured, NOT_MEASURED, "insufficient data"),
        np.where(scores["z"].notna(), OK, INSUFFICIENT_BASELINE),
    )
    raw_weight = scores["component"].map({c.metric: c.weight for c in components}).astype(float).where(
        scores["z"].notna(), 0.0)
    # Weights scaled so that their squares sum to one: a weighted sum of independent effect sizes, each of
    # calm SD 1, then has calm SD 1 itself, and the thresholds are calm SDs of the index.
    total = np.sqrt((raw_weight ** 2).groupby([scores[k] for k in KEYS]).transform("sum"))
    scores["weight"] = np.where(total > 0, raw_weight / total.where(total > 0, 1.0), 0.0)
    scores["contribution"] = np.where(scores["weight"] > 0, scores["weight"] * scores["z"], 0.0)
    scores["confirmed"], scores["p_value"] = _detector_tests(scores, findings, components)
    order = {c.metric: i for i, c in enumerate(components)}
    scores = scores.assign(_order=scores["component"].map(order)).sort_values(KEYS + ["_order"])
    return scores[SCORE_COLUMNS].reset_index(drop=True)


def _detector_tests(scores: pd.DataFrame, findings: pd.DataFrame,
                    components: Sequence[Component]) -> tuple[np.ndarray, np.ndarray]:
    """Per score, whether its component's effect is confirmed by the detector's own test, and that test's
    one-sided p-value toward panic.

    Confirmed: a finding of the component (its index metric, or the finding the index reads) is flagged
    toward panic in that org × quarter × segment, under the run's false-discovery control. Back-loading's
    index value is the month-3 share, a level with no test; its flag and p-value are those of the comparison
    with the organisation's other quarters (``bookings_backloading``). A two-sided p-value is halved on the
    panic side of the metric's null (and ``1 − p/2`` on the other side).
    """
    names = {c.metric: c.metric for c in components} | {c.finding_metric: c.metric for c in components}
    rows = findings[findings["metric"].isin(names)].astype({c: str for c in KEYS})
    flagged = rows["flagged"].astype("boolean").fillna(False).astype(bool)
    if "direction" in rows:  # a two-sided test can flag an effect away from panic; that confirms nothing here
        flagged &= ~rows["direction"].isin([AWAY_FROM_PANIC, NEITHER]).to_numpy()
    p_value = pd.to_numeric(rows.get("p_value", pd.Series(np.nan, index=rows.index)), errors="coerce")
    p_value = p_value.where(rows["status"] == OK)
    # The panic side of each component's null (0 on the panic-side scale: no change, a ratio of 1).
    panic_ward = np.zeros(len(rows), dtype=bool)
    for component in components:
        for name in {component.metric, component.finding_metric}:
            mine = (rows["metric"] == name).to_numpy()
            panic_ward[mine] = panic_side(pd.to_numeric(rows["estimate"][mine], errors="coerce"), component) > 0
    two_sided = rows.get("p_sided", pd.Series("one-sided", index=rows.index)) == "two-sided"
    p_value = p_value.where(~two_sided, np.where(panic_ward, p_value / 2, 1 - p_value / 2))
    tests = rows.assign(component=rows["metric"].map(names), _confirmed=flagged, _p=p_value,
                        _own=rows["metric"].isin([c.metric for c in components]))
    keys = pd.MultiIndex.from_frame(scores[KEYS + ["component"]].astype(str))
    confirmed = tests.groupby(KEYS + ["component"])["_confirmed"].any().reindex(keys).fillna(False)
    # The p-value of the component's own test (back-loading: the comparison, not the share).
    own = tests[tests["_own"] & tests["_p"].notna()].drop_duplicates(KEYS + ["component"])
    p_values = own.set_index(KEYS + ["component"])["_p"].reindex(keys)
    return confirmed.to_numpy(dtype=bool), p_values.to_numpy(dtype=float)


def panic_side_with_se(rows: pd.DataFrame, component: Component) -> tuple[np.ndarray, np.ndarray]:
    """The panic-side values of one component's rows and their standard errors.

    The standard error is the finding's own (``_se``) where finite (on the log
    scale for ratios: divided by the estimate, the delta method); otherwise
    its interval's half-width over the quantile it was built with (normal, t
    with ``df``, or its ``critical_value``), put on a 95% footing so that it does not depend on the
    ``ci_level`` shown.
    """
    value = panic_side(rows["estimate"], component)
    spread = np.abs(panic_side(rows["ci_high"], component) - panic_side(rows["ci_low"], component))
    # A simultaneous interval (over a searched onset) records the quantile it was built with.
    critical = pd.to_numeric(rows["critical_value"], errors="coerce").to_numpy(dtype=float)
    quantile = np.where(np.isfinite(critical), critical, _quantile(rows["ci_level"], rows["df"]))
    from_interval = spread / (2 * quantile) * (_quantile(np.full(len(rows), 0.95), rows["df"]) / z_of(0.95))
    own = pd.to_numeric(rows["_se"], errors="coerce").to_numpy(dtype=float)
    if component.log_scale:
        with np.errstate(divide="ignore", invalid="ignore"):
            own = own / np.abs(rows["estimate"].to_numpy(dtype=float))
    return value, np.where(np.isfinite(own), own, from_interval)


def _leave_one_out(scores: pd.DataFrame, components: Mapping[str, Component]) -> pd.DataFrame:
    """Per row, the baseline of its org × segment × component without the row's own quarter.

    The calm quarters among the others are chosen on all components together (:func:`joint_calm_quarters`),
    then each component's ``centre``, ``centre_se`` and ``scale`` (``tau``) are estimated on those of them
    that have a value (:func:`_robust_moments`). Returns them with ``n_baseline`` (other quarters with a
    value), indexed like ``scores``; NaN with fewer than :data:`MIN_BASELINE` other values.
    """
    n_baseline = np.zeros(len(scores), dtype=int)
    numbers = np.full((len(scores), 3), np.nan)  # centre, centre_se, scale
    position = pd.Series(np.arange(len(scores)), index=scores.index)
    names = list(components)
    floors = np.array([components[name].floor for name in names])
    weights = np.array([components[name].weight for name in names])
    for _, part in scores.groupby(["org", "segment"], sort=False):
        pool = part[part["baseline"].to_numpy(dtype=bool)]
        values = pool.pivot_table(index="quarter", columns="component", values="value", aggfunc="first")
        values = values.reindex(columns=names)
        variances = pool.pivot_table(index="quarter", columns="component", values="se", aggfunc="first")
        variances = variances.reindex(index=values.index, columns=names) ** 2
        matrix, noise, quarters = values.to_numpy(float), variances.to_numpy(float), values.index.to_numpy()
        for quarter, rows in part.groupby("quarter", sort=False):
            others = quarters != quarter
            baseline = joint_baseline(matrix[others], noise[others], floors, weights)
            for name, at in zip(rows["component"], position[rows.index].to_numpy()):
                column = names.index(name)
                n_baseline[at] = int(np.isfinite(matrix[others, column]).sum())
                if n_baseline[at] >= MIN_BASELINE:
                    numbers[at] = baseline[column]
    return pd.DataFrame({"n_baseline": n_baseline, "centre": numbers[:, 0], "centre_se": numbers[:, 1],
                         "scale": numbers[:, 2]}, index=scores.index)


def joint_baseline(values: np.ndarray, variances: np.ndarray, floors: np.ndarray,
                   weights: np.ndarray) -> np.ndarray:
    """``(centre, centre_se, tau)`` per component (rows) of baseline quarters ``values`` (quarters × components).

    The calm quarters are chosen on all components at once (:func:`joint_calm_quarters`); each component's
    moments are then those of its values in the calm quarters (:func:`_robust_moments`), or of its own
    panic-side trim (:func:`calm_variation`) when fewer than :data:`MIN_BASELINE` calm quarters have a value.
    NaN for a component with fewer than :data:`MIN_BASELINE` values.
    """
    out = np.full((values.shape[1], 3), np.nan)
    calm = joint_calm_quarters(values, variances, floors, weights)
    for column in range(values.shape[1]):
        has = np.isfinite(values[:, column]) & np.isfinite(variances[:, column])
        if has.sum() < MIN_BASELINE:
            continue
        kept = has & calm
        if kept.sum() < MIN_BASELINE:
            out[column] = calm_variation(values[has, column], variances[has, column], floors[column])
            continue
        out[column] = _baseline_moments(values[kept, column], variances[kept, column], floors[column])
    return out


def joint_calm_quarters(values: np.ndarray, variances: np.ndarray, floors: np.ndarray,
                        weights: np.ndarray) -> np.ndarray:
    """Which baseline quarters (rows of ``values``, quarters × components) are calm, judged on all components.

    Panic raises every symptom at once, so a quarter's components standardised against the calm quarters
    (``u = (v − centre) / sqrt(tau² + median se²)``) are combined into one score,
    ``s = Σ w u / sqrt(Σ w²)`` over the components it has (about one calm SD when they are independent),
    which stands further from calm than any one component does. A forward search on ``s``, as in
    :func:`calm_members`, keeps the quarters within :data:`TRIM_SDS` of the kept set's median; the components'
    moments are re-estimated on the kept set and the search repeated until the set is stable. It starts
    from each component's own panic-side trim (:func:`calm_members`).
    """
    n, k = values.shape
    usable = np.isfinite(values) & np.isfinite(variances)
    active = usable.sum(axis=0) >= MIN_BASELINE
    moments = np.full((k, 3), np.nan)  # centre, tau, noise
    for column in np.flatnonzero(active):
        has = usable[:, column]
        keep = calm_members(values[has, column], variances[has, column], floors[column])
        moments[column] = _robust_moments(values[has, column][keep], variances[has, column][keep], floors[column])
    calm = np.ones(n, dtype=bool)
    for _ in range(n):
        with np.errstate(invalid="ignore"):
            u = (values - moments[:, 0]) / np.sqrt(moments[:, 1] ** 2 + moments[:, 2])
        present = usable & active & np.isfinite(u)
        w = np.where(present, weights, 0.0)
        norm = np.sqrt((w ** 2).sum(axis=1))
        score = np.where(norm > 0, (w * np.where(present, u, 0.0)).sum(axis=1) / np.where(norm > 0, norm, 1.0),
                         np.nan)
        scored = np.isfinite(score)
        if scored.sum() < MIN_BASELINE:
            return calm
        # The score is in calm SDs (each u is standardised by its total SD) and carries no sampling variance of
        # its own; its spread on the kept set may exceed 1 (components move together) but is never taken below
        # it (a spread from three or four values would trim real calm variation).
        keep = calm_members(score[scored], np.zeros(scored.sum()), 1.0)
        chosen = np.zeros(n, dtype=bool)
        chosen[np.flatnonzero(scored)[keep]] = True
        chosen |= ~scored  # a quarter with no score says nothing about calm; its values are absent anyway
        if (chosen == calm).all():
            break
        calm = chosen
        for column in np.flatnonzero(active):
            kept = usable[:, column] & calm
            if kept.sum() >= MIN_BASELINE:
                moments[column] = _robust_moments(values[kept, column], variances[kept, column], floors[column])
    return calm


def calm_variation(values: np.ndarray, variances: np.ndarray, floor: float) -> tuple[float, float, float]:
    """``(centre, centre_se, tau)`` of baseline ``values`` with sampling ``variances``, trimmed on the panic side.

    Panic only ever raises a panic-side value, so the calm quarters are the
    lower cluster of an organisation's quarters, and an organisation may
    panic in half of them (a plain median would then sit among the panic
    quarters). The calm set is found by a forward search from the lower half:
    starting with the lower half of the values, it keeps every value no
    further above the set's median than :data:`TRIM_SDS` total standard
    deviations (``sqrt(tau² + median variance)``) and repeats until the set is
    stable. A calm organisation's set grows to (nearly) all its quarters; the
    panic quarters of one that panics often stay out. Then ``centre`` is the
    set's median; ``tau² = max((1.4826 MAD)² − median variance, 0)``, the MAD
    taken over the deviations below the centre (the
    between-quarter variance net of sampling noise, a robust method-of-moments
    estimate), ``tau`` at least ``floor``; ``centre_se`` the median's standard
    error, ``sqrt(π/2 × (tau² + median variance) / n)``.
    """
    keep = calm_members(values, variances, floor)
    return _baseline_moments(values[keep], variances[keep], floor)


def _baseline_moments(values: np.ndarray, variances: np.ndarray, floor: float) -> tuple[float, float, float]:
    """``(centre, centre_se, tau)`` of calm baseline ``values``: :func:`_robust_moments` and the median's
    standard error ``sqrt(π/2 × (tau² + median variance) / n)``."""
    centre, tau, noise = _robust_moments(values, variances, floor)
    return centre, float(np.sqrt(MEDIAN_EFFICIENCY * (tau ** 2 + noise) / len(values))), tau


def calm_members(values: np.ndarray, variances: np.ndarray, floor: float) -> np.ndarray:
    """Which of ``values`` the forward search of :func:`calm_variation` keeps as calm (a mask in their order)."""
    order = np.argsort(values, kind="stable")
    ranked, ranked_variances = values[order], variances[order]
    keep = np.arange(len(ranked)) < max(MIN_BASELINE, int(np.ceil(len(ranked) / 2)))
    for _ in range(len(ranked)):
        centre, tau, noise = _robust_moments(ranked[keep], ranked_variances[keep], floor)
        wider = ranked <= centre + TRIM_SDS * np.sqrt(tau ** 2 + noise)
        wider[:MIN_BASELINE] = True
        if (wider == keep).all():
            break
        keep = wider
    mask = np.zeros(len(values), dtype=bool)
    mask[order[keep]] = True
    return mask


def _robust_moments(values: np.ndarray, variances: np.ndarray, floor: float) -> tuple[float, float, float]:
    """Median, calm SD net of noise (floored) and median sampling variance of ``values``."""
    centre = float(np.median(values))
    # Deviations on the calm side only: a panic quarter left in the set sits above the centre and would
    # widen a two-sided MAD; for a symmetric calm spread both sides estimate the same thing.
    below = values[values < centre]
    spread = MAD_TO_SD * float(np.median(centre - below if len(below) else np.abs(values - centre)))
    noise = float(np.median(variances))
    return centre, max(float(np.sqrt(max(spread ** 2 - noise, 0.0))), floor), noise


# -- the index ----------------------------------------------------------------------------------------
def level_of(index: pd.Series | np.ndarray | float, thresholds: Mapping[str, float],
             low: pd.Series | np.ndarray | float | None = None,
             confirmed: pd.Series | np.ndarray | bool | None = None) -> np.ndarray:
    """``calm`` / ``watch`` / ``panic`` by ``thresholds`` (``insufficient data`` where the index is missing).

    With ``low`` (the index interval's lower end), ``watch`` and ``panic`` also need ``low > 0`` (the
    interval excludes the calm centre); with ``confirmed``, they also need it True (a component pushing
    the index up is flagged by its detector). A point at ``watch`` or above that misses either is
    ``insufficient data``.
    """
    values = np.atleast_1d(np.asarray(index, dtype=float))
    watch, panic = float(thresholds["watch"]), float(thresholds["panic"])
    out = np.where(values >= panic, PANIC, np.where(values >= watch, WATCH, CALM)).astype(object)
    if low is not None:
        lows = np.broadcast_to(np.atleast_1d(np.asarray(low, dtype=float)), values.shape)
        out[(values >= watch) & ~(lows > 0)] = INSUFFICIENT_LEVEL
    if confirmed is not None:
        sure = np.broadcast_to(np.atleast_1d(np.asarray(confirmed, dtype=bool)), values.shape)
        out[(values >= watch) & ~sure] = INSUFFICIENT_LEVEL
    out[~np.isfinite(values)] = INSUFFICIENT_LEVEL
    return out


def panic_index(
    scores: pd.DataFrame,
    params: Mapping[str, Any] | None = None,
    *,
    size_classes: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """The panic index and level of every org × quarter × segment.

    Parameters
    ----------
    scores:
        :func:`component_scores`.
    params:
        Uses ``index_thresholds`` (``{"watch": 2.0, "panic": 3.0}``).
    size_classes:
        ``{org: size class}`` (``Dataset.size_classes``), copied to the rows.

    Returns
    -------
    :data:`INDEX_COLUMNS`: ``panic_index`` (sum of the contributions, the
    weighted sum of effect sizes in calm SDs of the composite; NaN when no
    component has one), its standard error ``index_se`` and 95% interval
    ``index_low``/``index_high``, ``evidence_p`` (:func:`combined_evidence`),
    ``confirmed`` (a pushing component flagged by its detector, or the
    combined test rejecting), ``level`` (:func:`level_of` with ``confirmed``;
    ``not enough evidence`` when no component could be measured from the data),
    ``rests_on`` (the components with a z-score), ``not_measured`` (the
    components whose inputs are absent),
    ``n_components`` (components with a z-score), ``top_component`` (largest
    contribution) and ``baseline`` (a calm baseline quarter), sorted by org,
    segment and quarter.
    """
    params = {**defaults(), **(params or {})}
    if scores.empty:
        return pd.DataFrame(columns=INDEX_COLUMNS)
    has_z = scores["z"].notna()
    variance = np.where(has_z, scores["weight"] ** 2 * scores["z_se"] ** 2, 0.0)
    grouped = scores.assign(_has=has_z, _var=variance).groupby(KEYS, sort=False)
    table = grouped.agg(
        panic_index=("contribution", "sum"), n_components=("_has", "sum"), baseline=("baseline", "first"),
        _var=("_var", "sum"),
    ).reset_index()
    ranked = scores[has_z].sort_values("contribution", ascending=False).drop_duplicates(KEYS)
    table = table.merge(ranked[KEYS + ["component"]].rename(columns={"component": "top_component"}), on=KEYS, how="left")
    table["panic_index"] = table["panic_index"].where(table["n_components"] > 0)
    table["index_se"] = np.sqrt(table.pop("_var")).where(table["panic_index"].notna())
    half = z_of(INDEX_LEVEL) * table["index_se"]
    table["index_low"], table["index_high"] = table["panic_index"] - half, table["panic_index"] + half
    # A level above calm also needs the quarter confirmed: a component that pushes the index up flagged toward
    # panic by its own detector, or the detectors' tests combined: a noisy estimate measured against a small
    # calm variation is a large effect size the data cannot confirm, not a panic.
    pushing = scores[has_z & (scores["contribution"] > 0) & scores["confirmed"].astype(bool)]
    confirmed = pushing[KEYS].drop_duplicates().assign(_confirmed=True)
    table = table.merge(confirmed, on=KEYS, how="left")
    table = table.merge(combined_evidence(scores, float(params["alpha"])), on=KEYS, how="left")
    table["confirmed"] = table.pop("_confirmed").fillna(False).astype(bool) | table.pop("evidence").fillna(False)
    table["level"] = level_of(table["panic_index"], params["index_thresholds"], None, table["confirmed"])
    rests = scores[has_z].groupby(KEYS, sort=False)["component"].agg(list).rename("rests_on")
    absent = scores[scores["status"] == NOT_MEASURED].groupby(KEYS, sort=False)["component"].agg(list)
    table = table.merge(rests.reset_index(), on=KEYS, how="left").merge(
        absent.rename("not_measured").reset_index(), on=KEYS, how="left")
    for column in ("rests_on", "not_measured"):
        table[column] = [v if isinstance(v, list) else [] for v in table[column]]
    # Nothing measured at all (every component lacks its input): refuse a level rather than call it calm.
    nothing = (table["n_components"] == 0) & table["not_measured"].map(len).gt(0) & table["rests_on"].map(len).eq(0)
    measured_any = scores[scores["status"] != NOT_MEASURED].groupby(KEYS, sort=False).size().rename("_measured")
    table = table.merge(measured_any.reset_index(), on=KEYS, how="left")
    nothing &= table["_measured"].fillna(0).eq(0).to_numpy()
    table.loc[nothing, "level"] = NOT_ENOUGH_EVIDENCE
    table = table.drop(columns="_measured")
    table["size_class"] = table["org"].map(dict(size_classes or {}))
    table["n_components"] = table["n_components"].astype(int)
    table["baseline"] = table["baseline"].astype(bool)
    return table.sort_values(["org", "segment", "quarter"])[INDEX_COLUMNS].reset_index(drop=True)


def combined_evidence(scores: pd.DataFrame, alpha: float, components: Sequence[Component] = COMPONENTS) -> pd.DataFrame:
    """Whether the detectors' tests of a quarter's components, taken together, reject calm.

    Per org × quarter × segment of ``scores``: the components' one-sided p-values toward panic (``p_value``)
    combined by weighted Stouffer, ``Σ w Φ⁻¹(1 − p) / sqrt(Σ w²)`` with the components' weights over those
    with a p-value (the tests are taken as independent), and Benjamini–Hochberg at ``alpha`` across the
    organisation × segment's complete quarters: the family an organisation's reader asks about. Several
    components each a little toward panic can confirm a quarter no single detector flags. Returns ``org``,
    ``quarter``, ``segment``, ``evidence_p`` (the combined p-value; NaN without any) and ``evidence``.
    """
    weights = scores["component"].map({c.metric: c.weight for c in components}).astype(float)
    p = scores["p_value"].astype(float)
    has = p.notna() & weights.notna()
    z = stats.norm.isf(p.clip(1e-15, 1 - 1e-15))
    parts = scores.assign(_wz=np.where(has, weights * z, 0.0), _w2=np.where(has, weights ** 2, 0.0))
    table = parts.groupby(KEYS, sort=False).agg(_wz=("_wz", "sum"), _w2=("_w2", "sum")).reset_index()
    stouffer = table["_wz"] / np.sqrt(table["_w2"].where(table["_w2"] > 0))
    table["evidence_p"] = stats.norm.sf(stouffer)
    table["evidence"] = benjamini_hochberg(table, "evidence_p", ("org", "segment"), alpha)[0]
    return table[KEYS + ["evidence_p", "evidence"]]


def index_from_findings(
    findings: pd.DataFrame, params: Mapping[str, Any] | None = None, dataset: Any = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(scores, index)``: :func:`component_scores` and :func:`panic_index` in one call."""
    scores = component_scores(findings, params, dataset=dataset)
    sizes = dataset.size_classes if dataset is not None else None
    return scores, panic_index(scores, params, size_classes=sizes)


def quarter_records(scores: pd.DataFrame, index: pd.DataFrame, quarters: Sequence[str] | None = None) -> list[dict]:
    """The ``"quarters"`` entries of ``quarterpanic detect --json``.

    One dict per org × quarter × segment (only ``quarters`` when given):
    ``org``, ``quarter``, ``segment``, ``panic_index`` with its 95% interval
    (``index_low``, ``index_high``), ``level``,
    ``rests_on`` (the components the index weighs), ``not_measured`` and
    ``components`` — ``{component: {"z", "weight", "contribution",
    "estimate", "status", "needs", "signals"}}`` (``signals``: the
    qualification signals a component was measured on); missing numbers are
    ``None``.
    """
    records = []
    shown = index if not quarters else index[index["quarter"].isin(list(quarters))]
    by_key = {key: part for key, part in scores.groupby(KEYS, sort=False)}
    for row in shown.itertuples(index=False):
        part = by_key.get((row.org, row.quarter, row.segment))
        components = {}
        if part is not None:
            for item in part.itertuples(index=False):
                components[item.component] = {
                    "z": finite_or_none(item.z), "weight": finite_or_none(item.weight), "contribution": finite_or_none(item.contribution),
                    "estimate": finite_or_none(item.estimate), "status": item.status,
                    "needs": item.needs if isinstance(item.needs, list) else None,
                    "signals": item.signals if isinstance(item.signals, list) else None,
                }
        records.append(
            {
                "org": row.org, "quarter": row.quarter, "segment": row.segment,
                "panic_index": finite_or_none(row.panic_index), "index_low": finite_or_none(row.index_low),
                "index_high": finite_or_none(row.index_high), "level": row.level,
                "rests_on": list(row.rests_on), "not_measured": list(row.not_measured), "components": components,
            }
        )
    return records


# -- comparisons --------------------------------------------------------------------------------------
SIZE_ORDER = ("small", "mid", "enterprise")


def by_size_class(index: pd.DataFrame, size_classes: Mapping[str, str] | None = None, *,
                  ci_level: float = DEFAULT_CI_LEVEL) -> pd.DataFrame:
    """The index compared across organisation size classes (org-wide rows only).

    Returns one row per size class: ``orgs``, ``quarters`` (with an index),
    ``panic_quarters``, ``watch_quarters``, ``panic_share`` with its Wilson
    interval at ``ci_level`` (``panic_share_low``, ``panic_share_high``,
    ``ci_level``), ``median_index`` and ``max_index``.
    """
    table = index[(index["segment"] == ALL_SEGMENTS) & index["panic_index"].notna()].copy()
    if size_classes is not None:
        table["size_class"] = table["org"].map(dict(size_classes))
    table["size_class"] = table["size_class"].fillna("unknown")
    out = (
        table.assign(_panic=table["level"] == PANIC, _watch=table["level"] == WATCH)
        .groupby("size_class")
        .agg(
            orgs=("org", "nunique"), quarters=("quarter", "size"), panic_quarters=("_panic", "sum"),
            watch_quarters=("_watch", "sum"), median_index=("panic_index", "median"), max_index=("panic_index", "max"),
        )
        .reset_index()
    )
    if out.empty:
        return out.assign(panic_share=[], panic_share_low=[], panic_share_high=[], ci_level=[])
    out["panic_share"] = out["panic_quarters"] / out["quarters"]
    low, high = proportion_confint(out["panic_quarters"], out["quarters"], alpha=1 - ci_level, method="wilson")
    out["panic_share_low"], out["panic_share_high"] = np.asarray(low), np.asarray(high)
    out["ci_level"] = float(ci_level)
    rank = {name: i for i, name in enumerate(SIZE_ORDER)}
    out = out.assign(_rank=out["size_class"].map(rank).fillna(len(rank))).sort_values("_rank").drop(columns="_rank")
    return out.reset_index(drop=True)


# -- what the discounting cost ------------------------------------------------------------------------
DISCOUNT_COST_COLUMNS = [
    "org", "quarter", "level", "onset_week", "currency", "won_deals", "won_amount", "discount_uplift",
    "cost", "cost_low", "cost_high", "ci_level",
]


def discount_cost(
    dataset: Any, scores: pd.DataFrame, index: pd.DataFrame | None = None, params: Mapping[str, Any] | None = None,
    *, cache: bool = False,
) -> pd.DataFrame:
    """Estimated revenue given away by quarter-end discounting, per org × quarter.

    For every org-wide quarter whose ``discount_uplift`` could be measured:
    the amount of the deals won in that quarter from its onset week on (by
    close week: the deals the uplift was measured on) times the uplift, with
    the uplift's interval carried over at its ``ci_level`` (the won amount is
    known, not estimated). The amounts are taken as booked: when an export's amount is
    already net of discount, the cost measured against list price would be
    larger by 1 / (1 − discount).

    Returns :data:`DISCOUNT_COST_COLUMNS` (``level`` from ``index`` when
    given); the ``currency`` is the organisation's most frequent one. With
    ``cache``, the opportunity features of an earlier run are reused
    (:mod:`quarterpanic.store.results`).
    """
    uplift = scores[(scores["component"] == "discount_uplift") & (scores["segment"] == ALL_SEGMENTS)]
    uplift = uplift[uplift["estimate"].notna() & uplift["onset_week"].notna()]
    if uplift.empty:
        return pd.DataFrame(columns=DISCOUNT_COST_COLUMNS)
    features = opportunity_features(dataset, params, cache=cache)
    won = features[(features["outcome"] == "won") & features["close_quarter"].notna()]
    won = won.assign(close_quarter=won["close_quarter"].astype(str))
    currency = dataset.opportunities.groupby("org")["currency"].agg(
        lambda values: values.mode().iloc[0] if values.notna().any() else ""
    )
    records = []
    for row in uplift.itertuples(index=False):
        window = won[(won["org"] == row.org) & (won["close_quarter"] == row.quarter) & (won["close_week"] >= row.onset_week)]
        amount = float(window["amount"].sum())
        records.append(
            {
                "org": row.org, "quarter": row.quarter, "onset_week": int(row.onset_week),
                "currency": currency.get(row.org, ""), "won_deals": len(window), "won_amount": amount,
                "discount_uplift": row.estimate, "cost": row.estimate * amount,
                "cost_low": row.ci_low * amount, "cost_high": row.ci_high * amount, "ci_level": row.ci_level,
            }
        )
    out = pd.DataFrame(records)
    levels = index[index["segment"] == ALL_SEGMENTS][["org", "quarter", "level"]] if index is not None else None
    out = out.merge(levels, on=["org", "quarter"], how="left") if levels is not None else out.assign(level=None)
    return out[DISCOUNT_COST_COLUMNS]


def discount_cost_totals(costs: pd.DataFrame) -> pd.DataFrame:
    """:func:`discount_cost` summed per organisation (and currency).

    The interval of a sum treats the quarters' estimates as independent
    (standard errors from their intervals, added in quadrature), at the
    costs' ``ci_level``. Returns ``org``, ``currency``, ``quarters``,
    ``won_amount``, ``cost``, ``cost_low``, ``cost_high``, ``ci_level``.
    """
    if costs.empty:
        return pd.DataFrame(columns=["org", "currency", "quarters", "won_amount", "cost", "cost_low", "cost_high",
                                     "ci_level"])
    level = ci_level_of(costs)
    se = (costs["cost_high"] - costs["cost_low"]) / (2 * z_of(level))
    out = (
        costs.assign(_var=se**2)
        .groupby(["org", "currency"], sort=True)
        .agg(quarters=("quarter", "size"), won_amount=("won_amount", "sum"), cost=("cost", "sum"), _var=("_var", "sum"))
        .reset_index()
    )
    half = z_of(level) * np.sqrt(out.pop("_var"))
    out["cost_low"], out["cost_high"] = out["cost"] - half, out["cost"] + half
    out["ci_level"] = level
    return out


# -- the deals behind a panic ---------------------------------------------------------------------------
LATE_DEAL_COLUMNS = [
    "org", "quarter", "onset_week", "opportunity_id", "name", "account", "owner", "week_of_quarter", "amount",
    "currency", "outcome",
]


def late_unqualified_deals(
    dataset: Any, scores: pd.DataFrame, index: pd.DataFrame, params: Mapping[str, Any] | None = None,
    *, n: int = 5, cache: bool = False,
) -> pd.DataFrame:
    """The largest deals behind each organisation's latest panic quarter: the ``n`` largest (by amount) created
    from its qualification-decay onset week on that did not meet the qualification rule.

    Uses the org-wide ``panic`` quarters of ``index`` and the ``onset_week`` of their ``qualification_decay``
    row in ``scores``; a quarter without an onset has no rows. Returns :data:`LATE_DEAL_COLUMNS`, one row per
    deal, organisations in order and each quarter's deals largest first; ``name``, ``account`` and ``owner``
    are the opportunity's as in ``dataset`` (pseudonyms when it was pseudonymised). With ``cache``, the
    opportunity features of an earlier run are reused (:mod:`quarterpanic.store.results`).
    """
    panic = index[(index["segment"] == ALL_SEGMENTS) & (index["level"] == PANIC)]
    latest = panic.sort_values("quarter").groupby("org", sort=True).tail(1)[["org", "quarter"]]
    decay = scores[(scores["component"] == "qualification_decay") & (scores["segment"] == ALL_SEGMENTS)]
    onsets = latest.merge(decay[["org", "quarter", "onset_week"]], on=["org", "quarter"], how="inner")
    onsets = onsets[onsets["onset_week"].notna()]
    if onsets.empty:
        return pd.DataFrame(columns=LATE_DEAL_COLUMNS)
    features = opportunity_features(dataset, params, cache=cache)
    deals = features.merge(onsets, on=["org", "quarter"], how="inner")
    deals = deals[(deals["week_of_quarter"] >= deals["onset_week"]) & ~deals["qualified"].astype(bool)]
    deals = deals.sort_values(["org", "amount"], ascending=[True, False], na_position="last", kind="stable")
    deals = deals.groupby("org", sort=True).head(n)
    names = dataset.opportunities[["org", "opportunity_id", "name", "account", "currency"]].astype(
        {"opportunity_id": str})
    deals = deals.merge(names, on=["org", "opportunity_id"], how="left")
    deals["onset_week"] = deals["onset_week"].astype(int)
    deals["currency"] = deals["currency"].fillna("")
    return deals[LATE_DEAL_COLUMNS].reset_index(drop=True)
