"""Did the change work? Before/after estimates around a change an organisation (or a segment) made.

For every change of ``params["changes"]`` (:class:`quarterpanic.params.Change`), every measured
finding metric and the panic index become a series over complete quarters, and two estimates
are made of what the change did to its level:

* **before/after** (an interrupted time series): ``value_q = a + b·after_q (+ c·t_q)``
  over the changed group's quarters, ``after_q`` = 1 for quarters that begin on or after
  the change date, ``t_q`` the quarters since the change (the optional pre-trend,
  ``pre_trend: true``), the quarter that contains the date left out. Weighted least squares
  with weights 1/SE² (each quarter's standard error read back from its interval: a
  precise quarter counts more), heteroskedasticity-robust (HC3) standard errors and a t
  interval on the residual degrees of freedom; the panic index has no interval and is fitted
  unweighted. ``b`` is the level change.
* **difference-in-differences**, where another group did not change (other segments of
  the same organisation for a segment's change, else the other organisations): the changed
  and the control series stacked, a level per group, a shared after-effect and
  ``d·changed·after``; ``d`` is the change net of whatever moved the controls too (a
  market-wide shock), and the controls are named.

Ratio metrics (``unit == "ratio"``) are fitted on the log scale and reported as a factor
(after / before); the others as a difference in their own unit. Fewer than
:data:`MIN_QUARTERS` usable quarters on either side gives ``insufficient data`` with the
counts, never a number. Every test of a run is one Benjamini–Hochberg family
(``q_value``, ``significant`` at ``alpha``). Numbers only: the words are in
:mod:`quarterpanic.report.words`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats

# The detectors register their metrics when imported: a metric's unit decides the scale it is fitted on.
import quarterpanic.analysis.detect  # noqa: F401
from quarterpanic.analysis.findings import (
    ALL_SEGMENTS, AWAY_FROM_PANIC, INSUFFICIENT, METRICS, NEITHER, OK, TOWARD_PANIC, benjamini_hochberg,
)
from quarterpanic.analysis.inputs import quarter_bounds, quarter_coverage
from quarterpanic.dataset import changes_to_judge
from quarterpanic.params import defaults

#: The panic index as a quantity beside the finding metrics.
INDEX = "panic_index"
#: Fewest usable quarters before and after the change (each side) for an estimate.
MIN_QUARTERS = 3
ITS, DID = "before/after", "difference-in-differences"
CHANGED, CONTROL = "changed", "control"
BEFORE, AFTER, TRANSITION = "before", "after", "transition"
# Quarters are about 91.3 days: the pre-trend's time unit.
DAYS_PER_QUARTER = 365.25 / 4
ESTIMATE_COLUMNS = [
    "change", "label", "org", "segment", "change_date", "quantity", "method", "scale", "control", "n_before", "n_after",
    "n_control_before", "n_control_after", "before", "after", "estimate", "ci_low", "ci_high", "ci_level", "p_value",
    "q_value", "significant", "direction", "pre_trend", "status",
]
SERIES_COLUMNS = [
    "change", "org", "segment", "quantity", "role", "quarter", "quarter_start", "period", "estimate", "ci_low",
    "ci_high", "value", "se",
]


@dataclass(frozen=True)
class ChangeResult:
    """What :func:`assess_changes` returns.

    ``estimates``: one row per change × quantity × method (:data:`ESTIMATE_COLUMNS`).
    ``series``: the quarters each estimate rests on, changed group and controls (:data:`SERIES_COLUMNS`).
    """

    estimates: pd.DataFrame
    series: pd.DataFrame


def quarter_dates(dataset: Any, frame: pd.DataFrame) -> pd.DataFrame:
    """First and last day of every ``org`` × ``quarter`` of ``frame`` and whether the quarter is complete.

    Returns columns ``org``, ``quarter``, ``quarter_start``, ``quarter_end``, ``complete``
    (each organisation's calendar; :func:`quarterpanic.analysis.inputs.quarter_coverage`).
    """
    pairs = frame[["org", "quarter"]].astype(str).drop_duplicates().reset_index(drop=True)
    bounds = quarter_bounds(dataset, pairs["org"], pairs["quarter"])
    coverage = quarter_coverage(dataset, pairs["org"], bounds["quarter_start"], bounds["quarter_end"])
    return pd.concat([pairs, bounds, coverage[["complete"]]], axis=1)


def quarter_series(findings: pd.DataFrame, index: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every measured metric of ``findings`` and the panic index as one long frame on the fitting scale.

    Columns ``org``, ``segment``, ``quarter``, ``quantity``, ``value`` (log for ratio metrics),
    ``se`` (from the interval: half its width over the quantile of its ``ci_level``, t with the
    finding's ``df`` where recorded; NaN for the index), and ``estimate``, ``ci_low``,
    ``ci_high`` as reported. Only ``ok`` findings with an estimate, of metrics measured quarter by
    quarter (``Metric.per_quarter``); every index row (NaN where the quarter has no index).
    """
    # A metric pooled over the quarters (sell or do) has no series to split at the date.
    per_quarter = findings["metric"].map(lambda m: METRICS[m].per_quarter if m in METRICS else True).astype(bool)
    rows = findings[(findings["status"] == OK) & findings["estimate"].notna() & per_quarter].copy()
    # A metric with several rows a quarter (one per department: department_field_gap) has no one series.
    rows = rows[~rows.duplicated(["org", "segment", "quarter", "metric"], keep=False)]
    level = pd.to_numeric(rows["ci_level"], errors="coerce") if "ci_level" in rows else pd.Series(np.nan, rows.index)
    dof = pd.to_numeric(rows["df"], errors="coerce") if "df" in rows else pd.Series(np.nan, rows.index)
    quantile = stats.t.ppf((1 + level.fillna(defaults()["ci_level"]).to_numpy(float)) / 2,
                           dof.fillna(np.inf).to_numpy(float))
    logged = rows["metric"].map(lambda m: METRICS[m].unit == "ratio" if m in METRICS else False).astype(bool)
    estimate, low, high = (rows[c].to_numpy(float) for c in ("estimate", "ci_low", "ci_high"))
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(logged, np.log(np.where(estimate > 0, estimate, np.nan)), estimate)
        width = np.where(logged, np.log(high) - np.log(low), high - low)
    se = width / (2 * quantile)
    metrics = pd.DataFrame({
        "org": rows["org"].astype(str), "segment": rows["segment"].astype(str), "quarter": rows["quarter"].astype(str),
        "quantity": rows["metric"].astype(str), "value": value, "se": np.where(se > 0, se, np.nan),
        "estimate": estimate, "ci_low": low, "ci_high": high,
    })
    frames = [metrics[np.isfinite(metrics["value"])]]  # a ratio of 0 has no log: not a usable quarter
    if index is not None and not index.empty:
        column = INDEX if INDEX in index else "index"  # the index frame's value column, by either name
        # Quarters without an index stay (as no value): a group whose index could never be computed still gets
        # its "insufficient data" row, with the counts.
        known = index
        frames.append(pd.DataFrame({
            "org": known["org"].astype(str), "segment": known["segment"].astype(str),
            "quarter": known["quarter"].astype(str), "quantity": INDEX, "value": known[column].astype(float),
            "se": np.nan, "estimate": known[column].astype(float), "ci_low": np.nan, "ci_high": np.nan,
        }))
    return pd.concat(frames, ignore_index=True)


def assess_changes(
    findings: pd.DataFrame,
    index: pd.DataFrame | None,
    changes: Sequence[Mapping[str, Any]],
    dates: pd.DataFrame,
    *,
    alpha: float = 0.05,
    ci_level: float = 0.95,
) -> ChangeResult:
    """Before/after and difference-in-differences estimates of each change, for every quantity.

    Parameters
    ----------
    findings:
        A findings frame (columns ``org``, ``segment``, ``quarter``, ``metric``, ``estimate``,
        ``ci_low``, ``ci_high``, ``ci_level``, ``status``) over every quarter, not only those shown.
    index:
        The panic index frame (``org``, ``segment``, ``quarter``, ``panic_index``), or None.
    changes:
        ``params["changes"]``: mappings with ``org``, ``segment`` (None: the whole org), ``date``,
        ``label`` and ``pre_trend``.
    dates:
        :func:`quarter_dates`: ``org``, ``quarter``, ``quarter_start``, ``quarter_end`` and
        ``complete`` (only complete quarters are used).
    alpha, ci_level:
        False discovery rate of ``significant`` and level of the intervals.

    Returns
    -------
    A :class:`ChangeResult`.
    """
    series = quarter_series(findings, index)
    dates = dates.astype({"org": str, "quarter": str})
    if "complete" in dates:
        dates = dates[dates["complete"].astype(bool)]
    series = series.merge(dates[["org", "quarter", "quarter_start", "quarter_end"]], on=["org", "quarter"])
    changed_groups = {(str(c["org"]), str(c.get("segment") or ALL_SEGMENTS)) for c in changes}
    estimates, used = [], []
    for change in changes:
        org, segment = str(change["org"]), str(change.get("segment") or ALL_SEGMENTS)
        date = pd.Timestamp(change["date"])
        # One name per change, unique across organisations and segments: it keys the estimates to their series.
        name = f"{_group_name(org, segment)}: {change.get('label') or 'change'} from {date:%Y-%m-%d}"
        trend = bool(change.get("pre_trend", False))
        timed = series.assign(
            period=np.select([series["quarter_end"] < date, series["quarter_start"] >= date], [BEFORE, AFTER],
                             TRANSITION),
            t=(series["quarter_start"] - date).dt.days / DAYS_PER_QUARTER,
        )
        mine = timed[(timed["org"] == org) & (timed["segment"] == segment)]
        controls = control_groups(timed, org, segment, changed_groups)
        # The index always has its row, so that a change with nothing to judge says so (with its counts).
        quantities = set(mine["quantity"]) | ({INDEX} if index is not None else set())
        for quantity in ordered_quantities(list(quantities)):
            treated = mine[mine["quantity"] == quantity]
            control = controls[controls["quantity"] == quantity]
            common = {"change": name, "label": change.get("label"), "org": org, "segment": segment,
                      "change_date": date, "quantity": quantity, "scale": scale_of(quantity),
                      "ci_level": float(ci_level), "pre_trend": trend}
            estimates.append({**common, "method": ITS, **before_after(treated, trend, ci_level)})
            used.append(treated.assign(change=name, role=CHANGED))
            if not control.empty:
                did = difference_in_differences(treated, control, trend, ci_level)
                estimates.append({**common, "method": DID, **did})
                kept = control.assign(_name=[_group_name(o, s) for o, s in zip(control["org"], control["segment"])])
                used.append(kept[kept["_name"].isin(str(did["control"]).split(", "))].drop(columns="_name")
                            .assign(change=name, role=CONTROL))
    return ChangeResult(_finish(estimates, alpha), _series_frame(used))


def changes_from_dataset(
    dataset: Any, findings: pd.DataFrame, index: pd.DataFrame | None, params: Mapping[str, Any] | None = None
) -> ChangeResult:
    """:func:`assess_changes` on a dataset's findings (every quarter) and index, for the changes to judge:
    ``params["changes"]`` and the organisations' ``org.yaml`` changes (:func:`quarterpanic.dataset.changes_to_judge`)."""
    params = {**defaults(), **(params or {})}
    return assess_changes(findings, index, changes_to_judge(dataset, params), quarter_dates(dataset, findings),
                          alpha=float(params["alpha"]), ci_level=float(params["ci_level"]))


def control_groups(series: pd.DataFrame, org: str, segment: str, changed: set[tuple[str, str]]) -> pd.DataFrame:
    """The rows of the groups that can stand for "no change" beside ``org`` × ``segment``.

    A segment's change: the organisation's other segments; when it has none, and for a
    whole organisation's change, the other organisations' ``all`` rows. Groups that
    themselves changed are never controls, nor is an organisation any part of which changed.
    """
    unchanged = ~pd.Series([(o, s) in changed for o, s in zip(series["org"], series["segment"])],
                           index=series.index, dtype=bool)
    if segment != ALL_SEGMENTS:
        siblings = series[(series["org"] == org) & (series["segment"] != ALL_SEGMENTS)
                          & (series["segment"] != segment) & unchanged]
        if not siblings.empty:
            return siblings
    touched = {o for o, _ in changed}
    return series[~series["org"].isin(touched) & (series["segment"] == ALL_SEGMENTS)]


def _rank(name: str) -> int:
    metric = METRICS.get(name)
    return 0 if name == INDEX else 1 if metric is not None and metric.component == name else 2


def ordered_quantities(quantities: Sequence[str]) -> list[str]:
    """The index first, then the main findings (metric = component), then the other metrics, each alphabetical."""
    return sorted(quantities, key=lambda name: (_rank(name), name))


def main_estimates(estimates: pd.DataFrame) -> pd.DataFrame:
    """The estimates of the panic index and the main findings (what pages and tables show; the rest is in JSON)."""
    return estimates[estimates["quantity"].map(_rank) < 2]


def scale_of(quantity: str) -> str:
    """``ratio`` for ratio metrics (fitted on the log scale, reported as after / before), else ``difference``."""
    metric = METRICS.get(quantity)
    return "ratio" if metric is not None and metric.unit == "ratio" else "difference"


def before_after(rows: pd.DataFrame, trend: bool, ci_level: float) -> dict[str, Any]:
    """The interrupted-time-series level change of one group's series (``value``, ``se``, ``period``, ``t``)."""
    rows = _usable(rows)
    counts = _counts(rows)
    if min(counts["n_before"], counts["n_after"]) < MIN_QUARTERS + int(trend):
        return {**counts, "status": INSUFFICIENT}
    design = pd.DataFrame({"const": 1.0, "after": (rows["period"] == AFTER).astype(float)}, index=rows.index)
    if trend:
        design["t"] = rows["t"]
    fit = _fit(rows, design)
    return {**counts, **_effect(fit, "after", ci_level, {"const": 1.0}, rows)}


def difference_in_differences(treated: pd.DataFrame, control: pd.DataFrame, trend: bool,
                              ci_level: float) -> dict[str, Any]:
    """The changed group's level change net of the controls' (a level per group, shared after-effect and trend).

    Only controls with :data:`MIN_QUARTERS` quarters on each side take part (without both sides a group's
    level and the change cannot be told apart); ``control`` names them, ``n_control_before`` and
    ``n_control_after`` count their quarters.
    """
    treated, control = _usable(treated), _usable(control)
    need = MIN_QUARTERS + int(trend)
    sides = pd.crosstab([control["org"], control["segment"]], control["period"]).reindex(
        columns=[BEFORE, AFTER], fill_value=0)
    enough = sides[(sides[BEFORE] >= need) & (sides[AFTER] >= need)].index
    control = control[pd.MultiIndex.from_frame(control[["org", "segment"]]).isin(enough)]
    control_counts = _counts(control)
    counts = {**_counts(treated), "n_control_before": control_counts["n_before"],
              "n_control_after": control_counts["n_after"],
              "control": ", ".join(_group_name(org, segment) for org, segment in enough) or None}
    if min(counts["n_before"], counts["n_after"]) < need or control.empty:
        return {**counts, "status": INSUFFICIENT}
    rows = pd.concat([treated.assign(_group="*changed*"),
                      control.assign(_group=control["org"] + "|" + control["segment"])], ignore_index=True)
    design = pd.get_dummies(rows["_group"], dtype=float)
    after = (rows["period"] == AFTER).astype(float)
    design["after"] = after
    design["changed_after"] = after * (rows["_group"] == "*changed*")
    if trend:
        design["t"] = rows["t"]
    fit = _fit(rows, design)
    return {**counts, **_effect(fit, "changed_after", ci_level, {"*changed*": 1.0, "after": 0.0}, rows)}


def _usable(rows: pd.DataFrame) -> pd.DataFrame:
    """Quarters either side of the change with a value; weighted fits need every quarter's SE."""
    rows = rows[(rows["period"] != TRANSITION) & np.isfinite(rows["value"])]
    if rows["se"].notna().any():
        rows = rows[rows["se"].notna()]
    return rows


def _counts(rows: pd.DataFrame) -> dict[str, int]:
    return {"n_before": int((rows["period"] == BEFORE).sum()), "n_after": int((rows["period"] == AFTER).sum())}


def _fit(rows: pd.DataFrame, design: pd.DataFrame) -> Any:
    weights = 1 / rows["se"].to_numpy(float) ** 2 if rows["se"].notna().all() else np.ones(len(rows))
    # HC3: robust to quarters varying more than their own SEs say, and the small-sample choice among the HC family.
    return sm.WLS(rows["value"].to_numpy(float), design, weights=weights).fit(cov_type="HC3", use_t=True)


def _effect(fit: Any, term: str, ci_level: float, before_terms: Mapping[str, float], rows: pd.DataFrame) -> dict:
    """The fitted change ``term`` with its interval and the fitted levels before and after, on the reported scale."""
    logged = scale_of(str(rows["quantity"].iloc[0])) == "ratio"
    low, high = fit.conf_int(alpha=1 - ci_level).loc[term]
    effect = float(fit.params[term])
    before = float(sum(fit.params[name] * weight for name, weight in before_terms.items()))
    if not np.isfinite(fit.bse[term]):
        return {"status": INSUFFICIENT}
    out = {"estimate": effect, "ci_low": float(low), "ci_high": float(high), "p_value": float(fit.pvalues[term]),
           "before": before, "after": before + effect, "status": OK}
    if logged:
        out.update({key: float(np.exp(out[key])) for key in ("estimate", "ci_low", "ci_high", "before", "after")})
    return out


def _group_name(org: str, segment: str) -> str:
    return org if segment == ALL_SEGMENTS else f"{org} ({segment})"


def _finish(records: list[dict[str, Any]], alpha: float) -> pd.DataFrame:
    """The estimates frame: BH across every test of the run, and which way each change went."""
    out = pd.DataFrame(records, columns=ESTIMATE_COLUMNS)
    tests = out.assign(_p=pd.to_numeric(out["p_value"], errors="coerce").where(out["status"] == OK))
    out["significant"], out["q_value"] = benjamini_hochberg(tests, "_p", (), alpha)
    out["direction"] = [_direction(row) for row in out.to_dict("records")]
    for column in ("n_before", "n_after", "n_control_before", "n_control_after"):
        out[column] = pd.array(pd.to_numeric(out[column], errors="coerce"), dtype="Int64")
    out["pre_trend"] = out["pre_trend"].astype(bool)
    return out


def _direction(row: Mapping[str, Any]) -> str | None:
    """``toward panic`` when the interval lies wholly on the side that means more panic, ``away from panic`` on
    the other, ``neither`` when it covers no change; None without an estimate."""
    if row["status"] != OK or pd.isna(row["estimate"]):
        return None
    metric = METRICS.get(row["quantity"])
    sign = 1 if metric is None else metric.direction
    null = 1.0 if row["scale"] == "ratio" else 0.0
    low, high = sign * (row["ci_low"] - null), sign * (row["ci_high"] - null)
    if min(low, high) > 0:
        return TOWARD_PANIC
    if max(low, high) < 0:
        return AWAY_FROM_PANIC
    return NEITHER


def _series_frame(frames: list[pd.DataFrame]) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame(columns=SERIES_COLUMNS)
    out = pd.concat(frames, ignore_index=True)
    return out[SERIES_COLUMNS].sort_values(["change", "quantity", "role", "org", "segment", "quarter_start"],
                                           ignore_index=True)
