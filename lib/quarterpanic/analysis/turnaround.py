"""How long sales-ops requests take, with the open ones counted honestly.

A request still open at ``as_of`` has taken *at least* until ``as_of``: it is
right-censored, not missing. Dropping it (the naive median of resolved
requests) makes every slow period look fast — worst for the latest weeks, the
ones a quarter-end review cares about. Every figure here is a Kaplan–Meier
estimate (statsmodels ``SurvfuncRight``) on all requests, open ones censored.

Turnaround stretch (the secondary metric ``turnaround_stretch`` of the
reactive order-taking detector) is the ratio of the late window's median to
the early window's, each request's time first divided by the typical time of
its request type (:func:`standardised_durations`). Without that step a
window heavy in quick rush quotes would look fast even when every type of
request slowed down.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.duration.survfunc import SurvfuncRight

from quarterpanic.analysis.findings import INSUFFICIENT, OK, register_metric

METRIC = "turnaround_stretch"
COMPONENT = "reactive_order_taking"
MIN_PER_WINDOW = 10  # requests needed in each window for a stretch verdict

register_metric(
    METRIC,
    component=COMPONENT,
    null=1.0,
    direction=+1,
    unit="ratio",
    sided="one-sided",  # p-values are one-sided in the panic direction
    description="the median time to resolve a request (type for type), late weeks vs earlier, ran at",
)


def turnaround_times(
    requests: pd.DataFrame,
    as_of: Any,
    *,
    created_column: str = "created_at",
    resolved_column: str = "resolved_at",
) -> pd.DataFrame:
    """Time to resolve each request in hours, open requests censored at ``as_of``.

    Returns a copy of ``requests`` with ``duration_hours`` (resolution time, or
    time open so far) and ``resolved`` (False = censored).
    """
    out = requests.copy()
    as_of = pd.Timestamp(as_of)
    created = pd.to_datetime(out[created_column])
    resolved = pd.to_datetime(out[resolved_column])
    # A resolution after as_of was not known at as_of.
    known = resolved.notna() & (resolved <= as_of)
    end = resolved.where(known, as_of)
    out["duration_hours"] = ((end - created).dt.total_seconds() / 3600).clip(lower=0).astype(float)
    out["resolved"] = known.astype(bool)
    return out


def standardised_durations(
    times: pd.DataFrame,
    *,
    by: Sequence[str] = ("org", "request_type"),
    reference: pd.Series | None = None,
    duration: str = "duration_hours",
    event: str = "resolved",
) -> pd.DataFrame:
    """Durations divided by the typical (Kaplan–Meier median) time of their request type.

    Parameters
    ----------
    times:
        Output of :func:`turnaround_times` with the ``by`` columns.
    reference:
        Boolean mask of the requests that define "typical" (e.g. the early
        weeks of complete quarters). It must be the same for the windows
        compared: then, when every type slows by the same factor, the
        standardised medians of the two windows differ by exactly that factor
        whatever their mix of types. Types with no reference request fall back
        to all their requests. None = all requests.

    Returns
    -------
    A copy of ``times`` with ``type_median_hours`` and ``duration_std`` (1.0 =
    a typical request of its type). A type whose median cannot be estimated
    (fewer than half resolved) gets NaN.
    """
    by = list(by)
    medians = km_summary(times, by, duration=duration, event=event, with_ci=False).set_index(by)["median"]
    if reference is not None:
        typical = km_summary(times[reference.reindex(times.index, fill_value=False).astype(bool)], by,
                             duration=duration, event=event, with_ci=False).set_index(by)["median"]
        medians = typical.reindex(medians.index).fillna(medians)
    medians = medians.rename("type_median_hours").reset_index()
    out = times.merge(medians, on=by, how="left")
    out.index = times.index
    out["duration_std"] = out[duration] / out["type_median_hours"].where(out["type_median_hours"] > 0)
    return out


def km_summary(
    times: pd.DataFrame,
    by: Sequence[str],
    *,
    duration: str = "duration_hours",
    event: str = "resolved",
    ci_level: float = 0.95,
    with_ci: bool = True,
) -> pd.DataFrame:
    """Kaplan–Meier median and 90th percentile per group, open requests censored.

    Parameters
    ----------
    times:
        Output of :func:`turnaround_times` (or any frame with a duration and an
        event flag).
    by:
        Group columns, e.g. ``["org", "quarter", "window"]``.

    Returns
    -------
    One row per group: ``n``, ``n_open`` (censored), ``median``, ``p90`` and,
    with ``with_ci``, their ``ci_level`` intervals (``median_low``,
    ``median_high``, ``p90_low``, ``p90_high``; Brookmeyer–Crowley by test
    inversion, the upper limit infinite when the data do not reach it), and
    ``naive_median`` (the median of resolved requests only, biased low when
    many are open — shown for contrast, never used). A quantile the curve
    never reaches (too many still open) is NaN.
    """
    rows = []
    for key, group in times.dropna(subset=[duration]).groupby(list(by), sort=True, observed=True):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        row.update(_km_row(group[duration].to_numpy(float), group[event].to_numpy(bool), ci_level, with_ci))
        rows.append(row)
    columns = list(by) + ["n", "n_open", "median", "p90"]
    if with_ci:
        columns += ["median_low", "median_high", "p90_low", "p90_high", "naive_median"]
    return pd.DataFrame(rows, columns=columns)


def _km_row(duration: np.ndarray, event: np.ndarray, ci_level: float, with_ci: bool) -> dict:
    row: dict[str, Any] = {"n": len(duration), "n_open": int((~event).sum())}
    if not event.any():
        return row | {"median": np.nan, "p90": np.nan}
    fit = SurvfuncRight(duration, event.astype(float))
    row["median"], row["p90"] = fit.quantile(0.5), fit.quantile(0.9)
    if with_ci:
        row["median_low"], row["median_high"] = _quantile_ci(fit, 0.5, ci_level)
        row["p90_low"], row["p90_high"] = _quantile_ci(fit, 0.9, ci_level)
        row["naive_median"] = float(np.median(duration[event]))
    return row


def _quantile_ci(fit: SurvfuncRight, p: float, ci_level: float) -> tuple[float, float]:
    with np.errstate(divide="ignore", invalid="ignore"):
        low, high = fit.quantile_ci(p, alpha=1 - ci_level)
    return float(low), float(high)


def km_curves(
    times: pd.DataFrame,
    by: Sequence[str],
    *,
    duration: str = "duration_hours",
    event: str = "resolved",
    ci_level: float = 0.95,
) -> pd.DataFrame:
    """Kaplan–Meier curves as a tidy frame for plotting.

    Returns one row per group × distinct event time: ``by`` columns,
    ``duration`` (named as the input column), ``survival`` (share still open),
    ``ci_low``, ``ci_high`` (pointwise, log-log), ``n`` of the group. Each
    curve starts at duration 0 with survival 1.
    """
    z = float(stats.norm.ppf((1 + ci_level) / 2))
    frames = []
    for key, group in times.dropna(subset=[duration]).groupby(list(by), sort=True, observed=True):
        key = key if isinstance(key, tuple) else (key,)
        fit = SurvfuncRight(group[duration].to_numpy(float), group[event].to_numpy(float))
        surv, se = np.asarray(fit.surv_prob), np.asarray(fit.surv_prob_se)
        with np.errstate(divide="ignore", invalid="ignore"):
            # The log(-log S) interval stays inside (0, 1).
            spread = z * se / (surv * np.abs(np.log(surv)))
            low = surv ** np.exp(spread)
            high = surv ** np.exp(-spread)
        curve = pd.DataFrame(
            {duration: np.r_[0.0, fit.surv_times], "survival": np.r_[1.0, surv],
             "ci_low": np.r_[1.0, np.nan_to_num(low, nan=0.0)], "ci_high": np.r_[1.0, np.nan_to_num(high, nan=1.0)]}
        )
        for name, value in zip(by, key):
            curve[name] = value
        curve["n"] = len(group)
        frames.append(curve)
    if not frames:
        return pd.DataFrame(columns=list(by) + [duration, "survival", "ci_low", "ci_high", "n"])
    return pd.concat(frames, ignore_index=True)[list(by) + [duration, "survival", "ci_low", "ci_high", "n"]]


#: The level of the median intervals a standard error is read off (a method constant, not the level shown).
SE_LEVEL = 0.95


def turnaround_stretch(
    times: pd.DataFrame,
    *,
    group_cols: Sequence[str] = ("org", "quarter"),
    window: str = "window",
    duration: str = "duration_std",
    event: str = "resolved",
    min_per_window: int = MIN_PER_WINDOW,
    ci_level: float = 0.95,
) -> pd.DataFrame:
    """Late-window median turnaround over the early window's, per group, with a ``ci_level`` interval.

    Parameters
    ----------
    times:
        Requests with ``duration`` (by default the type-standardised time of
        :func:`standardised_durations`), ``event`` and ``window``
        (``"early"`` / ``"late"``; other rows are ignored).

    Returns
    -------
    One row per group: ``median_early``, ``median_late``, ``estimate`` (their
    ratio), ``ci_low``, ``ci_high``, ``p_value`` (one-sided: late slower),
    ``n`` (requests in both windows), ``n_open`` and ``status``. The interval
    combines the two medians' log-scale standard errors, read off their
    Brookmeyer–Crowley 95% intervals (always 95%: the standard error, hence
    the p-value, must not change with the level of the interval shown). Fewer than ``min_per_window`` requests in a
    window, or a median the data do not reach, is ``insufficient data``.
    """
    group_cols = list(group_cols)
    data = times[times[window].isin(["early", "late"])]
    summary = km_summary(data, group_cols + [window], duration=duration, event=event, ci_level=SE_LEVEL)
    with np.errstate(divide="ignore", invalid="ignore"):
        summary["log_se"] = (np.log(summary["median_high"]) - np.log(summary["median_low"])) / (
            2 * stats.norm.ppf((1 + SE_LEVEL) / 2))
    wide = summary.pivot_table(
        index=group_cols, columns=window, values=["median", "log_se", "n", "n_open"], aggfunc="first", observed=True
    )
    wide.columns = [f"{name}_{side}" for name, side in wide.columns]
    wide = wide.reset_index()
    for column in ("median_early", "median_late", "log_se_early", "log_se_late", "n_early", "n_late",
                   "n_open_early", "n_open_late"):
        if column not in wide:
            wide[column] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = np.log(wide["median_late"]) - np.log(wide["median_early"])
        se = np.sqrt(wide["log_se_early"] ** 2 + wide["log_se_late"] ** 2)
    enough = (
        (wide["n_early"] >= min_per_window)
        & (wide["n_late"] >= min_per_window)
        & np.isfinite(log_ratio)
        & np.isfinite(se)
        & (se > 0)
    )
    out = wide[group_cols + ["median_early", "median_late"]].copy()
    z = float(stats.norm.ppf((1 + ci_level) / 2))
    out["estimate"] = np.where(enough, np.exp(log_ratio), np.nan)
    out["ci_low"] = np.where(enough, np.exp(log_ratio - z * se), np.nan)
    out["ci_high"] = np.where(enough, np.exp(log_ratio + z * se), np.nan)
    out["p_value"] = np.where(enough, stats.norm.sf(log_ratio / se), np.nan)
    out["n"] = (wide["n_early"].fillna(0) + wide["n_late"].fillna(0)).astype(int)
    out["n_open"] = (wide["n_open_early"].fillna(0) + wide["n_open_late"].fillna(0)).astype(int)
    out["status"] = np.where(enough, OK, INSUFFICIENT)
    return out
