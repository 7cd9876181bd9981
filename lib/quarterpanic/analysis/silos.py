"""Mid-size silos: sales-ops requests handed between departments, and waiting on them, late in the quarter.

A mid-size company works in functional silos: a discount approval, a contract
redline or a delivery date needs legal, finance or delivery, each pulled in as
needed. From the ticket system's changelog (the ``request_history`` table), each
request's path through the departments is rebuilt:

* it starts with **sales** (:data:`~quarterpanic.ingest.schemas.HOME_DEPARTMENT`,
  the sales-operations team that raised it);
* every change whose value names a department (``department``, from
  ``org.yaml``'s ``departments:``) moves it there; a change naming none leaves it
  where it was;
* a **handoff** is a move to a different department; the **wait on other
  departments** is the time spent with any department but sales, until the next
  move, the request's resolution, or ``as_of`` for a request still open (a lower
  bound: it is still waiting).

Per organisation × complete quarter, requests created in the quarter's last
:data:`LATE_WEEKS` weeks are compared with those created earlier in it:

* ``mid_size_silos`` (the main metric): mean handoffs per request, late over early;
* ``silo_wait_stretch``: mean hours waiting on other departments per request, late
  over early.

Each ratio of means is the Poisson quasi-likelihood estimate with a late-window
indicator (exp of its coefficient equals the ratio of the two sample means), its
interval from the sandwich variance on the log scale (the delta method:
Var log m = s² / (n m²) per window), so counts that are over- or under-dispersed
and waits that are continuous and skewed are covered alike. The p-value is
one-sided (more handoffs, longer waits late). Fewer than :data:`MIN_PER_WINDOW`
requests in a window, or no handoff (no wait) at all in one, is ``insufficient data``.
An organisation without request history gets no rows here; ``detect`` marks it
``not measured`` with the need "request history (ticket changelog)".
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from quarterpanic.analysis.findings import (
    ALL_SEGMENTS,
    INSUFFICIENT,
    OK,
    detect_in_segment,
    empty_findings,
    make_findings,
    register_metric,
)
from quarterpanic.analysis.inputs import mark_not_measured, quarter_coverage
from quarterpanic.dataset import Dataset
from quarterpanic.params import defaults
from quarterpanic.store import results as results_cache

COMPONENT = "mid_size_silos"
WAIT_METRIC = "silo_wait_stretch"
#: Requests created in the quarter's last this many weeks are "late".
LATE_WEEKS = 4
MIN_PER_WINDOW = 10
#: The department a request starts with; the same name as quarterpanic.ingest.schemas.HOME_DEPARTMENT (analysis
#: reads no ingest module).
HOME_DEPARTMENT = "sales"

register_metric(
    COMPONENT,
    component=COMPONENT,
    null=1.0,
    direction=+1,
    unit="ratio",
    sided="one-sided",
    description="handoffs between departments per sales-ops request, late weeks vs earlier, ran at",
)
register_metric(
    WAIT_METRIC,
    component=COMPONENT,
    null=1.0,
    direction=+1,
    unit="ratio",
    sided="one-sided",
    description="time a sales-ops request waits on legal, finance or delivery, late weeks vs earlier, ran at",
)


def request_paths(requests: pd.DataFrame, request_history: pd.DataFrame, as_of: Any) -> pd.DataFrame:
    """Handoffs and hours waiting on other departments, per request.

    Args:
        requests: canonical requests (``org``, ``request_id``, ``created_at``, ``resolved_at``).
        request_history: canonical request history (``org``, ``request_id``, ``changed_at``, ``department``).
        as_of: the data's moment: an open request's current wait runs until then.

    Returns:
        ``requests`` with ``handoffs`` (moves to a different department) and ``wait_hours``
        (time with a department other than sales). A request without history has 0 of both.
    """
    as_of = pd.Timestamp(as_of)
    out = requests.copy()
    moves = request_history.loc[request_history["department"].notna(),
                                ["org", "request_id", "changed_at", "department"]]
    moves = moves.sort_values(["org", "request_id", "changed_at"], kind="stable")
    keys = ["org", "request_id"]
    previous = moves.groupby(keys, sort=False)["department"].shift().fillna(HOME_DEPARTMENT)
    moves = moves[moves["department"].astype(str).to_numpy() != previous.astype(str).to_numpy()].copy()
    ends = out.set_index(keys)["resolved_at"]
    resolved = pd.to_datetime(moves.set_index(keys).index.map(ends))
    last_end = np.where(pd.notna(resolved) & (resolved <= as_of), resolved, as_of)
    following = moves.groupby(keys, sort=False)["changed_at"].shift(-1)
    end = following.where(following.notna(), pd.Series(last_end, index=moves.index, dtype="datetime64[ns]"))
    hours = ((end - moves["changed_at"]).dt.total_seconds() / 3600).clip(lower=0)
    moves["wait_hours"] = hours.where(moves["department"] != HOME_DEPARTMENT, 0.0)
    per_request = moves.groupby(keys).agg(handoffs=("department", "size"), wait_hours=("wait_hours", "sum"))
    out = out.merge(per_request.reset_index(), on=keys, how="left")
    out["handoffs"] = out["handoffs"].fillna(0).astype(int)
    out["wait_hours"] = out["wait_hours"].fillna(0.0).astype(float)
    out.index = requests.index
    return out


def ratio_of_means(values: pd.Series, late: pd.Series, ci_level: float = 0.95,
                   min_per_window: int = MIN_PER_WINDOW) -> dict[str, Any]:
    """Mean of ``values`` where ``late`` over where not, with a sandwich (delta-method) interval on the log scale.

    Returns ``estimate``, ``ci_low``, ``ci_high``, ``p_value`` (one-sided: larger late), ``n``,
    ``n_early``, ``n_late``, ``mean_early``, ``mean_late`` and ``status``.
    """
    late = late.astype(bool).to_numpy()
    x = values.to_numpy(dtype=float)
    early_x, late_x = x[~late], x[late]
    row: dict[str, Any] = {"n": len(x), "n_early": len(early_x), "n_late": len(late_x),
                           "mean_early": early_x.mean() if len(early_x) else np.nan,
                           "mean_late": late_x.mean() if len(late_x) else np.nan,
                           "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan,
                           "status": INSUFFICIENT}
    if min(len(early_x), len(late_x)) < min_per_window or not (early_x.any() and late_x.any()):
        return row
    log_ratio = np.log(row["mean_late"]) - np.log(row["mean_early"])
    se = np.sqrt(late_x.var(ddof=1) / (len(late_x) * row["mean_late"] ** 2)
                 + early_x.var(ddof=1) / (len(early_x) * row["mean_early"] ** 2))
    z = float(stats.norm.ppf((1 + ci_level) / 2))
    return row | {"estimate": float(np.exp(log_ratio)), "ci_low": float(np.exp(log_ratio - z * se)),
                  "ci_high": float(np.exp(log_ratio + z * se)), "p_value": float(stats.norm.sf(log_ratio / se)),
                  "status": OK}


def silo_requests(dataset: Dataset) -> pd.DataFrame:
    """The requests of organisations with request history, with their paths and fiscal weeks.

    Adds to :func:`request_paths` ``quarter``, ``week_of_quarter``, ``weeks_in_quarter``,
    ``late`` (created in the last :data:`LATE_WEEKS` weeks) and ``quarter_complete``.
    """
    history = dataset.request_history
    orgs = sorted(history["org"].astype(str).unique())
    requests = dataset.requests[dataset.requests["org"].astype(str).isin(orgs)]
    if requests.empty:
        return pd.DataFrame()
    paths = request_paths(requests, history, dataset.as_of)
    frames = []
    for org, rows in paths.groupby(paths["org"].astype(str), sort=True):
        weeks = dataset.calendar(org).annotate(rows["created_at"])
        frames.append(rows.assign(quarter=weeks["quarter"].astype(str), week_of_quarter=weeks["week_of_quarter"],
                                  weeks_in_quarter=weeks["weeks_in_quarter"], quarter_start=weeks["quarter_start"],
                                  quarter_end=weeks["quarter_end"]))
    out = pd.concat(frames)
    out["late"] = out["week_of_quarter"] > out["weeks_in_quarter"] - LATE_WEEKS
    coverage = quarter_coverage(dataset, out["org"], out["quarter_start"], out["quarter_end"])
    out["quarter_complete"] = coverage["complete"]
    return out


def analyse_silos(dataset: Dataset, params: Mapping[str, Any] | None = None, *, segment: str = ALL_SEGMENTS,
                  cache: bool = False) -> pd.DataFrame:
    """Findings of both silo metrics per organisation × complete quarter (before multiple-testing control)."""
    params = {**defaults(), **(params or {})}
    return results_cache.cached(
        "quarterpanic.analysis.silos.analyse_silos", lambda: _analyse_silos(dataset, params, segment),
        dataset, params, extra={"segment": segment}, use=cache,
    )


def _analyse_silos(dataset: Dataset, params: dict[str, Any], segment: str) -> pd.DataFrame:
    def measure(rows: pd.DataFrame):
        for metric, column in ((COMPONENT, "handoffs"), (WAIT_METRIC, "wait_hours")):
            result = ratio_of_means(rows[column], rows["late"], ci_level)
            yield metric, {}, {k: result[k] for k in ("estimate", "ci_low", "ci_high", "p_value", "n", "status")}

    ci_level = float(params["ci_level"])
    return late_window_findings(silo_requests(dataset), measure, component=COMPONENT, segment=segment,
                                dataset=dataset, params=params)


def late_window_findings(frame: pd.DataFrame, measure: Callable[[pd.DataFrame], Iterable[tuple]], *,
                         component: str, segment: str, dataset: Dataset, params: Mapping[str, Any]) -> pd.DataFrame:
    """Findings per organisation × complete quarter of a frame split into its last :data:`LATE_WEEKS` weeks.

    ``frame`` has one row per request or deal with ``org``, ``quarter``, ``weeks_in_quarter``, ``late``
    and ``quarter_complete``. ``measure(rows)`` yields ``(metric, labels, statistics)`` for one quarter's
    rows; ``labels`` (e.g. the department) come before the onset in the record, as findings columns.
    The silo and the department-fields detectors both read their quarters this way.
    """
    ci_level = float(params["ci_level"])
    if frame.empty:
        return empty_findings().assign(ci_level=ci_level)
    records = []
    complete = frame[frame["quarter_complete"].astype(bool)]
    for (org, quarter), rows in complete.groupby(["org", "quarter"], sort=True):
        onset = int(rows["weeks_in_quarter"].max()) - LATE_WEEKS + 1
        for metric, labels, statistics in measure(rows):
            records.append({"org": org, "quarter": quarter, "segment": segment, "component": component,
                            "metric": metric, **labels, "onset_week": onset, "quarter_complete": True,
                            **statistics})
    findings = make_findings(records) if records else empty_findings()
    findings["ci_level"] = ci_level
    return mark_not_measured(findings, dataset, params)


def detect_mid_size_silos(dataset: Dataset, params: Mapping[str, Any] | None = None, *,
                          cache: bool = False) -> pd.DataFrame:
    """Findings of the silos component (the ``detect`` registry entry).

    One main finding per organisation with request history × complete quarter (``metric ==
    "mid_size_silos"``: handoffs per request, late weeks over earlier), then ``silo_wait_stretch``.
    With ``params["segment"]`` only that segment's requests are analysed (a request follows its
    deal's segment).
    """
    return detect_in_segment(analyse_silos, dataset, {**defaults(), **(params or {})}, cache)
