"""Onset weeks from segmented (step) fits profiled over candidate weeks.

A quarter's weekly series is modelled as one level before the onset week and
another from it on; the onset is the candidate week whose step model has the
highest likelihood. Both likelihoods have closed forms (two binomial
proportions, or two Poisson rates), so every candidate of every group is
profiled at once with cumulative sums — no model is fitted per week. The
detector then fits its regression once per group, at the chosen onset.

Choosing the onset by looking at the data makes the test at that onset
optimistic; :func:`selection_adjusted` Bonferroni-corrects its p-value by the
number of candidates, which keeps calm quarters from being flagged more often
than the nominal rate.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy.special import xlogy


def _binomial_loglik(successes: np.ndarray, trials: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(trials > 0, successes / np.where(trials > 0, trials, 1), 0.0)
    return xlogy(successes, p) + xlogy(trials - successes, 1 - p)


def _poisson_loglik(counts: np.ndarray, exposure: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(exposure > 0, counts / np.where(exposure > 0, exposure, 1), 0.0)
    return xlogy(counts, rate) - counts


def profile_step(
    weekly: pd.DataFrame,
    group_cols: Sequence[str],
    *,
    week_col: str = "week_of_quarter",
    events: str,
    base: str,
    kind: str = "binomial",
    candidates: Sequence[int] = tuple(range(5, 13)),
    min_each_side: float = 1,
    direction: int = 0,
) -> pd.DataFrame:
    """Profile a one-step model over candidate onset weeks, for every group at once.

    Parameters
    ----------
    weekly:
        One row per group × week with the event count and its base.
    group_cols:
        Columns that identify a series (e.g. ``["org", "quarter"]``).
    events, base:
        For ``kind="binomial"`` the successes and trials of each week; for
        ``kind="poisson"`` the count and the exposure (e.g. working days).
    candidates:
        Onset weeks to try; onset ``k`` splits the series into weeks ``< k``
        and weeks ``>= k``.
    min_each_side:
        A candidate needs at least this much base on each side.
    direction:
        ``-1`` keeps only steps down (a decay), ``+1`` only steps up (a surge),
        ``0`` either.

    Returns
    -------
    One row per group: the group columns, ``onset_week`` (``<NA>`` when no
    candidate qualifies), ``lr_stat`` (twice the log-likelihood gain of the
    step over a flat series), ``n_candidates`` (how many were compared),
    ``events_before``, ``base_before``, ``events_after``, ``base_after``.
    """
    loglik = {"binomial": _binomial_loglik, "poisson": _poisson_loglik}[kind]
    group_cols = list(group_cols)
    keys = weekly[group_cols].drop_duplicates().reset_index(drop=True)
    if keys.empty:
        return _empty_profile(group_cols)
    max_week = int(max(weekly[week_col].max(), max(candidates)))
    weeks = np.arange(1, max_week + 1)
    sums = weekly.groupby(group_cols + [week_col], observed=True)[[events, base]].sum()
    full = pd.MultiIndex.from_tuples(
        [tuple(k) + (w,) for k in keys.itertuples(index=False) for w in weeks], names=group_cols + [week_col]
    )
    sums = sums.reindex(full, fill_value=0)
    shape = (len(keys), len(weeks))
    cum_events = sums[events].to_numpy(dtype=float).reshape(shape).cumsum(axis=1)
    cum_base = sums[base].to_numpy(dtype=float).reshape(shape).cumsum(axis=1)
    total_events, total_base = cum_events[:, -1:], cum_base[:, -1:]

    candidates = np.asarray(sorted(candidates), dtype=int)
    before_events = cum_events[:, candidates - 2]
    before_base = cum_base[:, candidates - 2]
    after_events = total_events - before_events
    after_base = total_base - before_base
    flat = loglik(total_events, total_base)
    step = loglik(before_events, before_base) + loglik(after_events, after_base)

    valid = (before_base >= min_each_side) & (after_base >= min_each_side)
    if direction:
        with np.errstate(divide="ignore", invalid="ignore"):
            change = after_events / after_base - before_events / before_base
        valid &= np.sign(change) == np.sign(direction)
    step = np.where(valid, step, -np.inf)
    best = np.argmax(step, axis=1)
    rows = np.arange(len(keys))
    has_candidate = valid.any(axis=1)

    out = keys.copy()
    out["onset_week"] = pd.array(np.where(has_candidate, candidates[best], 0), dtype="Int64")
    out.loc[~has_candidate, "onset_week"] = pd.NA
    out["lr_stat"] = np.where(has_candidate, 2 * (step[rows, best] - flat[:, 0]), np.nan)
    out["n_candidates"] = valid.sum(axis=1)
    for name, values in (
        ("events_before", before_events),
        ("base_before", before_base),
        ("events_after", after_events),
        ("base_after", after_base),
    ):
        out[name] = np.where(has_candidate, values[rows, best], np.nan)
    return out


def _empty_profile(group_cols: list[str]) -> pd.DataFrame:
    columns = group_cols + [
        "onset_week", "lr_stat", "n_candidates", "events_before", "base_before", "events_after", "base_after"
    ]
    return pd.DataFrame(columns=columns)


def selection_adjusted(p_value: np.ndarray | pd.Series | float, n_candidates: np.ndarray | pd.Series | int):
    """Bonferroni-correct a p-value for having chosen the best of ``n_candidates`` onsets."""
    return np.minimum(1.0, np.asarray(p_value, dtype=float) * np.maximum(1, np.asarray(n_candidates, dtype=float)))
