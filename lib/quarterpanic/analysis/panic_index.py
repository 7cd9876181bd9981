"""The panic index: one number per organisation × quarter from the detector findings.

Four findings measure the three symptoms of quarter-end panic:

=========================  =========================  ==============================  ======
component (findings metric) symptom                    panic-side value                weight
=========================  =========================  ==============================  ======
``qualification_decay``     qualification decay        the probability drop             1/3
``win_rate_ratio``          outcome decay              −log(late / early win rate)      1/6
``discount_uplift``         outcome decay              extra discount (fraction points) 1/6
``reactive_order_taking``   reactive order-taking      log(late / early request rate)   1/3
=========================  =========================  ==============================  ======

Every value is oriented so that panic is positive (ratios on the log scale,
so a doubling and a halving are equally far from 1).

**Standardisation against the organisation's own calm quarters.** Detectors
profile the onset week to make each quarter's effect look as large as it can,
so even calm quarters show a small positive "decay"; and organisations differ
(a studio's weekly counts are noisier than an enterprise's). Each component
is therefore turned into ``z = (value − centre) / scale`` against the same
organisation's (and segment's) *baseline quarters*: ``params["baseline_quarters"]``,
or when that is None the complete quarters none of whose main findings
(``qualification_decay``, ``reactive_order_taking``) is flagged. The centre is
the median of the baseline values; the scale is the largest of

* the MAD-based standard deviation of the baseline values (1.4826 × MAD),
* the median standard error of the baseline estimates, read off their intervals
  as off a 95% interval (half its width over 1.96) whatever their ``ci_level``:
  the quantile they were built with (normal, or t with their ``df``, or the
  ``critical_value`` an interval widened for a search records) is taken out and
  the 95% one put in, so the index does not move with the level shown,
* a small absolute floor per component (:data:`COMPONENTS`),

so that a baseline of a handful of quarters that happen to agree closely
cannot make an ordinary quarter look extreme: a difference is never measured
in units smaller than the estimates' own sampling noise. A component needs
:data:`MIN_BASELINE` baseline values, otherwise it is ``insufficient
baseline`` and left out. Baseline quarters are standardised against the
baseline they belong to (the median and MAD resist one odd quarter).

**The index is the weighted mean of the available z-scores**
(``contribution = weight × z`` with the weights renormalised over the
components a quarter has, so the contributions sum to the index). Why a mean
and not a sum of positive z-scores: it stays in the units the thresholds are
written in — *baseline standard deviations on the panic side* — whatever the
number of components a quarter could be measured on (a missing outcome metric
does not lower the index, as it would in a sum); it never drifts upwards in
calm quarters (a sum of positive parts averages 0.4 per component under pure
noise, so calm quarters with more components would look worse); and a
component that is calmer than usual honestly pulls the index down. Each
symptom gets a third of the weight, the outcome symptom's third split between
its two metrics, so when every component is measured no single one reaches
the panic threshold on thin evidence (``qualification_decay`` alone needs
z ≥ 9). The weights are renormalised over the components a quarter *has*:
an organisation measured on one component only (a small team below the
qualification detector's ``min_n``) is judged on that one, and
``n_components`` says so.

Levels come from ``params["index_thresholds"]``: ``calm`` below ``watch``,
``watch`` from ``watch``, ``panic`` from ``panic``; ``insufficient data``
when no component could be standardised. Only complete quarters get an index:
the open quarter is judged by :mod:`quarterpanic.analysis.early_warning`.
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
    ALL_SEGMENTS, DEFAULT_CI_LEVEL, NOT_MEASURED, OK, ci_level_of, main_findings, z_of,
)
from quarterpanic.analysis.inputs import quarter_bounds, quarter_coverage
from quarterpanic.params import defaults
from quarterpanic.util import finite_or_none

CALM, WATCH, PANIC, INSUFFICIENT_LEVEL = "calm", "watch", "panic", "insufficient data"
# No component of the quarter could be measured from the data (their inputs are absent): no level at all.
NOT_ENOUGH_EVIDENCE = "not enough evidence"
LEVELS = (CALM, WATCH, PANIC, INSUFFICIENT_LEVEL, NOT_ENOUGH_EVIDENCE)
INSUFFICIENT_BASELINE = "insufficient baseline"
MIN_BASELINE = 3  # baseline quarters with a value a component needs
MAD_TO_SD = 1.4826  # MAD of a normal sample × this = its standard deviation
KEYS = ["org", "quarter", "segment"]


@dataclass(frozen=True)
class Component:
    """One finding metric in the index.

    ``direction`` is +1 when panic makes the estimate larger, ``log_scale``
    says the estimate is a ratio (compared on the log scale), ``floor`` is the
    smallest scale (in panic-side units) a z-score is ever divided by.
    """

    metric: str
    symptom: str
    weight: float
    direction: int
    log_scale: bool
    floor: float


COMPONENTS: tuple[Component, ...] = (
    Component("qualification_decay", "qualification decay", 1 / 3, +1, False, 0.02),
    Component("win_rate_ratio", "outcome decay", 1 / 6, -1, True, 0.05),
    Component("discount_uplift", "outcome decay", 1 / 6, +1, False, 0.005),
    Component("reactive_order_taking", "reactive order-taking", 1 / 3, +1, True, 0.05),
)
MAIN_COMPONENTS = ("qualification_decay", "reactive_order_taking")
SCORE_COLUMNS = [
    "org", "quarter", "segment", "component", "symptom", "estimate", "ci_low", "ci_high", "ci_level", "onset_week",
    "flagged", "value", "se", "centre", "scale", "n_baseline", "z", "weight", "contribution", "status", "baseline",
    "needs", "signals",
]
INDEX_COLUMNS = [
    "org", "quarter", "segment", "size_class", "panic_index", "level", "n_components", "top_component", "baseline",
    "rests_on", "not_measured",
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
    """Every component of every complete org × quarter × segment, standardised against its own baseline.

    Parameters
    ----------
    findings:
        Findings with flags (:func:`quarterpanic.analysis.detect.detect`), including
        the baseline quarters' findings (run the detectors with
        ``quarters=None``).
    params:
        Uses ``baseline_quarters``.
    dataset:
        The :class:`~quarterpanic.dataset.Dataset` the findings came from
        (decides which quarters are complete); optional.
    components:
        The index components (default :data:`COMPONENTS`).

    Returns
    -------
    The tidy frame :data:`SCORE_COLUMNS`: one row per ``org`` × ``quarter``
    × ``segment`` × ``component`` with the finding (``estimate``, ``ci_low``,
    ``ci_high``, ``onset_week``, ``flagged``), its panic-side ``value`` and
    ``se``, the baseline ``centre``, ``scale`` and ``n_baseline``, ``z``,
    the renormalised ``weight`` and ``contribution`` (``weight × z``, zero
    weight when ``z`` is missing), ``status`` (``ok``, ``insufficient data``
    or ``insufficient baseline``) and whether the quarter is a ``baseline``
    quarter.
    """
    if findings.empty:
        return pd.DataFrame(columns=SCORE_COLUMNS)
    complete = complete_quarters(findings, dataset)
    roles = baseline_quarters(findings, params, complete)
    roles = roles[roles["quarter_complete"]]
    by_metric = {c.metric: c for c in components}
    rows = findings[findings["metric"].isin(by_metric)].astype({c: str for c in KEYS})
    rows = rows.drop_duplicates(KEYS + ["metric"])
    for column, missing in (("ci_level", DEFAULT_CI_LEVEL), ("df", np.inf), ("critical_value", np.nan)):
        if column not in rows:
            rows = rows.assign(**{column: missing})
    grid = roles[KEYS + ["baseline"]].merge(pd.DataFrame({"component": list(by_metric)}), how="cross")
    cols = ["estimate", "ci_low", "ci_high", "ci_level", "df", "critical_value", "onset_week", "flagged", "status"]
    for column in ("needs", "signals"):
        if column not in rows:
            rows = rows.assign(**{column: None})
    scores = grid.merge(
        rows[KEYS + ["metric"] + cols + ["needs", "signals"]].rename(columns={"metric": "component"}),
        on=KEYS + ["component"],
        how="left",
    )
    not_measured = (scores["status"] == NOT_MEASURED).to_numpy()
    scores["symptom"] = scores["component"].map({c.metric: c.symptom for c in components})
    scores["flagged"] = scores["flagged"].astype("boolean").fillna(False).astype(bool)
    value = np.full(len(scores), np.nan)
    se = np.full(len(scores), np.nan)
    for name, idx in scores.groupby("component").groups.items():
        component = by_metric[name]
        part = scores.loc[idx]
        value[scores.index.get_indexer(idx)] = panic_side(part["estimate"], component)
        spread = np.abs(panic_side(part["ci_high"], component) - panic_side(part["ci_low"], component))
        # A simultaneous interval (over a searched onset) records the quantile it was built with.
        critical = pd.to_numeric(part["critical_value"], errors="coerce").to_numpy(dtype=float)
        quantile = np.where(np.isfinite(critical), critical, _quantile(part["ci_level"], part["df"]))
        se[scores.index.get_indexer(idx)] = spread / (2 * quantile) * (
            _quantile(np.full(len(part), 0.95), part["df"]) / z_of(0.95))
    usable = (scores["status"] == OK).to_numpy() & np.isfinite(value)
    scores["value"] = np.where(usable, value, np.nan)
    scores["se"] = np.where(usable, se, np.nan)
    scores = scores.merge(_baseline_scales(scores, by_metric), on=["org", "segment", "component"], how="left")
    scores["z"] = (scores["value"] - scores["centre"]) / scores["scale"]
    scores["status"] = np.where(
        ~usable, np.where(not_measured, NOT_MEASURED, "insufficient data"),
        np.where(scores["z"].notna(), OK, INSUFFICIENT_BASELINE),
    )
    raw_weight = scores["component"].map({c.metric: c.weight for c in components}).where(scores["z"].notna(), 0.0)
    total = raw_weight.groupby([scores[k] for k in KEYS]).transform("sum")
    scores["weight"] = np.where(total > 0, raw_weight / total.where(total > 0, 1.0), 0.0)
    scores["contribution"] = np.where(scores["weight"] > 0, scores["weight"] * scores["z"], 0.0)
    order = {c.metric: i for i, c in enumerate(components)}
    scores = scores.assign(_order=scores["component"].map(order)).sort_values(KEYS + ["_order"])
    return scores[SCORE_COLUMNS].reset_index(drop=True)


def _baseline_scales(scores: pd.DataFrame, components: Mapping[str, Component]) -> pd.DataFrame:
    """Median, robust scale and count of the baseline values per org × segment × component."""
    base = scores[scores["baseline"] & scores["value"].notna()]
    records = []
    for (org, segment, name), part in base.groupby(["org", "segment", "component"]):
        values = part["value"].to_numpy(dtype=float)
        centre = float(np.median(values))
        mad_sd = MAD_TO_SD * float(np.median(np.abs(values - centre)))
        ses = part["se"].to_numpy(dtype=float)
        se_floor = float(np.median(ses[np.isfinite(ses)])) if np.isfinite(ses).any() else 0.0
        enough = len(values) >= MIN_BASELINE
        records.append(
            {
                "org": org, "segment": segment, "component": name, "n_baseline": len(values),
                "centre": centre if enough else np.nan,
                "scale": max(mad_sd, se_floor, components[name].floor) if enough else np.nan,
            }
        )
    columns = ["org", "segment", "component", "n_baseline", "centre", "scale"]
    out = pd.DataFrame(records, columns=columns)
    out["n_baseline"] = out["n_baseline"].astype(int)
    # With no baseline value at all (nothing measured) the frame is empty: keep the numbers numeric.
    out[["centre", "scale"]] = out[["centre", "scale"]].astype(float)
    return out


# -- the index ----------------------------------------------------------------------------------------
def level_of(index: pd.Series | np.ndarray | float, thresholds: Mapping[str, float]) -> np.ndarray:
    """``calm`` / ``watch`` / ``panic`` by ``thresholds`` (``insufficient data`` where the index is missing)."""
    values = np.atleast_1d(np.asarray(index, dtype=float))
    watch, panic = float(thresholds["watch"]), float(thresholds["panic"])
    out = np.where(values >= panic, PANIC, np.where(values >= watch, WATCH, CALM)).astype(object)
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
    weighted mean z; NaN when no component has one), ``level`` (``not enough
    evidence`` when no component could be measured from the data),
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
    grouped = scores.assign(_has=has_z).groupby(KEYS, sort=False)
    table = grouped.agg(
        panic_index=("contribution", "sum"), n_components=("_has", "sum"), baseline=("baseline", "first")
    ).reset_index()
    ranked = scores[has_z].sort_values("contribution", ascending=False).drop_duplicates(KEYS)
    table = table.merge(ranked[KEYS + ["component"]].rename(columns={"component": "top_component"}), on=KEYS, how="left")
    table["panic_index"] = table["panic_index"].where(table["n_components"] > 0)
    table["level"] = level_of(table["panic_index"], params["index_thresholds"])
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
    ``org``, ``quarter``, ``segment``, ``panic_index``, ``level``,
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
                "panic_index": finite_or_none(row.panic_index), "level": row.level,
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
