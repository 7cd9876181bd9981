"""Onset weeks from segmented (step) fits profiled over candidate weeks.

A quarter's weekly series is modelled as one level before the onset week and
another from it on; the onset is the candidate week whose step model has the
highest likelihood. Both likelihoods have closed forms (two binomial
proportions, or two Poisson rates), so every candidate of every group is
profiled at once with cumulative sums — no model is fitted per week. The
detector then fits its regression once per group, at the chosen onset.

Choosing the onset by looking at the data makes the test at that onset
optimistic: in a calm quarter the best of eight splits looks like a step far
more often than one split fixed in advance. :func:`max_t_adjusted` corrects the
p-value for that search by the distribution of the *maximum* of the candidate
split statistics (a max-T adjustment, as in Hothorn, Bretz & Westfall's
``multcomp`` and the classic change-point max statistic). Adjacent splits share
most of their data, so their statistics are strongly correlated and the
maximum of eight is far less extreme than eight independent draws: the
Bonferroni bound (:func:`selection_adjusted`, p × candidates) pays for
independent tests and so throws away power; max-T pays only for the search
actually made, and keeps calm quarters at the nominal rate.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.special import ndtr, xlogy
from scipy.stats import norm, t as student_t


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
    ``candidate_fractions``, ``events_before``, ``base_before``,
    ``events_after``, ``base_after``.

    ``candidate_fractions`` is a tuple per group: for every candidate with
    ``min_each_side`` base on both sides, the fraction of the group's base
    that lies before it — what :func:`max_t_adjusted` needs to correct a test
    at the chosen onset for the search. It ignores ``direction``: which way a
    split goes depends on the data, so any of these candidates could have been
    chosen (with ``direction=0`` there are ``n_candidates`` of them).
    """
    loglik = {"binomial": _binomial_loglik, "poisson": _poisson_loglik}[kind]
    group_cols = list(group_cols)
    if weekly.empty:
        return _empty_profile(group_cols)
    keys, matrices = weekly_matrix(weekly, group_cols, week_col=week_col, columns=(events, base),
                                   last_week=max(candidates))
    cum_events = matrices[events].cumsum(axis=1)
    cum_base = matrices[base].cumsum(axis=1)
    total_events, total_base = cum_events[:, -1:], cum_base[:, -1:]

    candidates = np.asarray(sorted(candidates), dtype=int)
    before_events = cum_events[:, candidates - 2]
    before_base = cum_base[:, candidates - 2]
    after_events = total_events - before_events
    after_base = total_base - before_base
    flat = loglik(total_events, total_base)
    step = loglik(before_events, before_base) + loglik(after_events, after_base)

    enough = (before_base >= min_each_side) & (after_base >= min_each_side)
    valid = enough.copy()
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
    with np.errstate(divide="ignore", invalid="ignore"):
        fractions = before_base / total_base
    out["candidate_fractions"] = [tuple(f[keep].tolist()) for f, keep in zip(fractions, enough)]
    for name, values in (
        ("events_before", before_events),
        ("base_before", before_base),
        ("events_after", after_events),
        ("base_after", after_base),
    ):
        out[name] = np.where(has_candidate, values[rows, best], np.nan)
    return out


def weekly_matrix(
    weekly: pd.DataFrame, group_cols: Sequence[str], *, week_col: str, columns: Sequence[str], last_week: int = 0
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Weekly sums as one groups × weeks array per column (weeks 1 to the last seen or ``last_week``).

    Returns the groups' keys (in order of first appearance) and, for each of
    ``columns``, an array whose row ``i`` holds group ``i``'s sum in weeks
    1, 2, ... (0 where a week has no row) — the shape every closed-form
    profile over candidate onsets works on.
    """
    group_cols = list(group_cols)
    keys = weekly[group_cols].drop_duplicates().reset_index(drop=True)
    weeks = np.arange(1, int(max(weekly[week_col].max(), last_week)) + 1)
    sums = weekly.groupby(group_cols + [week_col], observed=True)[list(columns)].sum()
    full = pd.MultiIndex.from_tuples(
        [tuple(k) + (w,) for k in keys.itertuples(index=False) for w in weeks], names=group_cols + [week_col]
    )
    sums = sums.reindex(full, fill_value=0)
    shape = (len(keys), len(weeks))
    return keys, {c: sums[c].to_numpy(dtype=float).reshape(shape) for c in columns}


def _empty_profile(group_cols: list[str]) -> pd.DataFrame:
    columns = group_cols + [
        "onset_week", "lr_stat", "n_candidates", "candidate_fractions", "events_before", "base_before",
        "events_after", "base_after",
    ]
    return pd.DataFrame(columns=columns)


def selection_adjusted(p_value: np.ndarray | pd.Series | float, n_candidates: np.ndarray | pd.Series | int):
    """Bonferroni-correct a p-value for having chosen the best of ``n_candidates`` onsets.

    Valid whatever the candidates, but conservative when their statistics are
    correlated, as split statistics are; the detectors use
    :func:`max_t_adjusted`, which this bounds from above.
    """
    return np.minimum(1.0, np.asarray(p_value, dtype=float) * np.maximum(1, np.asarray(n_candidates, dtype=float)))


def split_fractions(weeks: np.ndarray | pd.Series, candidates: Sequence[int], min_each_side: float = 1) -> tuple:
    """Fraction of rows before each candidate onset, for :func:`max_t_adjusted`.

    Parameters
    ----------
    weeks:
        The week of each row that a metric's test compares (rows before the
        onset against rows from it on); every row weighs the same.
    candidates:
        Onset weeks that could have been chosen.
    min_each_side:
        A candidate needs at least this many rows on each side.

    Returns
    -------
    A tuple with the fraction of rows in weeks ``< k``, for each candidate
    ``k`` with enough rows on both sides.
    """
    weeks = np.asarray(weeks, dtype=float)
    weeks = weeks[np.isfinite(weeks)]
    before = (weeks[:, None] < np.asarray(list(candidates), dtype=float)[None, :]).sum(axis=0)
    keep = (before >= min_each_side) & (len(weeks) - before >= min_each_side)
    return tuple((before[keep] / len(weeks)).tolist()) if len(weeks) else ()


ALTERNATIVES = ("greater", "less", "two-sided")
_GRID_STEP = 0.05  # cell width of the recursion, in standard deviations (error ~0.1% of the p-value, upwards)
_GRID_FLOOR = -9.0  # below this a standard normal has no mass worth tracking
_GRID_CEILING = 7.0  # beyond this (p < 1e-12) cell masses lose precision; Bonferroni is as good there


def max_t_adjusted(
    p_value: np.ndarray | pd.Series | float,
    fractions: Sequence[float] | Sequence[Sequence[float]],
    *,
    alternative: str = "greater",
) -> np.ndarray | float:
    """Correct the p-value of a test at a searched onset by the maximum over the candidates.

    Why: the onset is the candidate split that makes the step look largest,
    so the statistic ``z`` at it is the largest of the candidates', and its
    own p-value is too small. The honest p-value is P(max_k Z_k >= z) in a
    calm series. Under no change the standardised split statistics ``Z_k``
    (weeks before candidate ``k`` against weeks from it on) are
    asymptotically jointly normal with

        corr(Z_k, Z_l) = sqrt(t_k (1 - t_l) / (t_l (1 - t_k))),  t_k <= t_l,

    where ``t_k`` is the fraction of the series' base (trials, exposure,
    rows) before split ``k`` — the correlation of a standardised Brownian
    bridge. Adjacent splits share most of their data (correlations of
    about 0.8 for neighbouring weeks of a 13-week quarter), so the maximum of eight is much less
    extreme than Bonferroni's eight independent tests assume.

    How: that correlation makes the ``Z_k`` a Gaussian Markov chain, ``Z_l =
    rho Z_k + sqrt(1 - rho^2) e`` for consecutive splits, so P(all Z_k < z)
    is a one-dimensional recursion: the chain's distribution is carried on a
    grid of cells of width 0.05 (exact normal cell probabilities, so nearly
    coincident splits need no special care) and the probability of first
    crossing ``z`` at each split is summed. It agrees with Genz's integration
    (``scipy.stats.multivariate_normal.cdf``) to about 0.1% of the p-value,
    errs upwards, is deterministic and takes milliseconds. The result is
    clamped between ``p_value`` and the Bonferroni bound ``K * p_value``, so
    numerical error can never make it smaller than the unadjusted p-value or
    larger than Bonferroni's; p-values below about 1e-12, far past any
    threshold, simply get the Bonferroni bound.

    Parameters
    ----------
    p_value:
        Unadjusted p-value(s) of the statistic at the chosen onset, of the
        sidedness ``alternative`` says; it is turned back into the normal
        ``z`` with that tail probability (a t-based p-value is matched to the
        normal quantile of the same tail probability).
    fractions:
        For one p-value, the base fractions ``t_k`` of the candidates that
        could have been chosen (``profile_step``'s ``candidate_fractions``,
        or :func:`split_fractions`); for an array of p-values, one such
        sequence per p-value. Order does not matter; fractions outside
        (0, 1) are ignored and equal ones (the same split) count once.
    alternative:
        ``"greater"`` or ``"less"``: ``p_value`` is one-sided and the
        adjustment is P(max_k Z_k >= z) (the two are the same computation:
        flipping the statistic's sign leaves the correlations alone).
        ``"two-sided"``: ``p_value`` is two-sided and the adjustment is
        P(max_k |Z_k| >= |z|).

    Returns
    -------
    The adjusted p-value(s), a float for a scalar ``p_value``, else an array
    (NaN where ``p_value`` is NaN). With fewer than two candidates there was
    no search and the p-value is returned unchanged.
    """
    if np.ndim(p_value) == 0:
        return max_t_adjusted_chain(p_value, bridge_correlations(fractions), alternative=alternative)
    return max_t_adjusted_chain(p_value, [bridge_correlations(f) for f in fractions], alternative=alternative)


def bridge_correlations(fractions: Sequence[float] | None) -> np.ndarray:
    """Correlations of consecutive split statistics of a calm series, from the splits' base fractions.

    The split statistics at base fractions ``t_k <= t_l`` have the Brownian-bridge
    correlation ``sqrt(t_k (1 - t_l) / (t_l (1 - t_k)))``; this returns it for
    each consecutive pair of the distinct fractions in (0, 1), sorted — the
    ``correlations`` that :func:`max_t_adjusted_chain` and
    :func:`max_t_critical_value` take.
    """
    t = np.asarray(fractions if fractions is not None else (), dtype=float).ravel()
    t = np.unique(t[np.isfinite(t) & (t > 0) & (t < 1)])
    odds = t / (1 - t)
    return np.sqrt(odds[:-1] / odds[1:])


def _max_t_chain_one(p_value: float, rhos: np.ndarray, two_sided: bool) -> float:
    if np.isnan(p_value):
        return np.nan
    rhos = np.asarray(rhos, dtype=float).ravel()
    if len(rhos) < 1 or p_value <= 0 or p_value >= 1:
        return float(min(max(p_value, 0.0), 1.0))
    bonferroni = min(1.0, (len(rhos) + 1) * p_value)
    z = norm.isf(p_value / 2) if two_sided else norm.isf(p_value)
    if not _GRID_FLOOR + 1 < z < _GRID_CEILING:
        return bonferroni
    return float(np.clip(_crossing_chain(z, rhos, two_sided), p_value, bonferroni))


def max_t_adjusted_chain(
    p_value: np.ndarray | pd.Series | float,
    correlations: Sequence[float] | Sequence[Sequence[float]],
    *,
    alternative: str = "greater",
) -> np.ndarray | float:
    """:func:`max_t_adjusted` for candidate statistics given by their consecutive correlations.

    Any search whose candidate statistics form a Gaussian Markov chain (each
    depends on the earlier ones only through its neighbour) is covered: the
    splits of one series (:func:`bridge_correlations`), or a quarter's weeks
    from each candidate onset on against a fixed baseline (nested tails:
    correlation ``sqrt(n_later / n_earlier)``). Searches that are not a chain
    (several shapes per onset) need :func:`max_t_simulated`. ``correlations``
    holds, for one p-value, the ``K - 1`` correlations of candidates ``k`` and
    ``k + 1`` in search order; for an array of p-values, one such sequence
    each. Fewer than one correlation (a single candidate) leaves the p-value
    unchanged.
    """
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, not {alternative!r}")
    scalar = np.ndim(p_value) == 0
    p_values = np.atleast_1d(np.asarray(p_value, dtype=float))
    groups = [correlations] if scalar else list(correlations)
    if len(groups) != len(p_values):
        raise ValueError(f"{len(p_values)} p-values but {len(groups)} sets of correlations")
    two_sided = alternative == "two-sided"
    adjusted = np.array([_max_t_chain_one(p, np.asarray(r, dtype=float), two_sided) for p, r in zip(p_values, groups)],
                        dtype=float)
    return float(adjusted[0]) if scalar else adjusted


def max_t_critical_value(
    correlations: Sequence[float],
    *,
    ci_level: float = 0.95,
    alternative: str = "two-sided",
    df: float | None = None,
) -> float:
    """The quantile that makes intervals at every candidate onset hold at once (simultaneous max-T intervals).

    Why: an interval ``estimate ± 1.96 se`` at the onset the search chose
    inherits the search's optimism (it excludes the null in calm quarters as
    often as the unadjusted p-value is below 0.05). The critical value ``c``
    with P(max_k |Z_k| >= c) = 1 - ``ci_level`` under no change makes
    ``estimate ± c se`` cover at ``ci_level`` whichever candidate is chosen,
    and it is the exact inverse of :func:`max_t_adjusted_chain`: the interval
    excludes the null if and only if the adjusted p-value is below
    ``1 - ci_level`` (same clamp between the unadjusted and the Bonferroni
    p-value, so the two never disagree).

    Parameters
    ----------
    correlations:
        Consecutive correlations of the candidate statistics
        (:func:`bridge_correlations` for splits of one series). Empty: one
        candidate, no search, the ordinary quantile.
    ci_level:
        Simultaneous coverage.
    alternative:
        ``"two-sided"`` (max |Z_k|) or ``"greater"``/``"less"`` (one-sided max).
    df:
        When the statistic is referred to a t distribution with ``df``
        degrees of freedom (the p-value is matched to the normal quantile of
        the same tail probability, as :func:`max_t_adjusted` does), the
        returned quantile is on that t scale.

    Returns
    -------
    The critical value ``c`` (≥ the unadjusted quantile, ≤ Bonferroni's).
    """
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, not {alternative!r}")
    two_sided = alternative == "two-sided"
    alpha = round(1.0 - float(ci_level), 12)  # 1 - 0.95 is 0.05000000000000004 in floating point
    rhos = np.asarray(correlations, dtype=float).ravel()
    sides = 2 if two_sided else 1

    def adjusted_at(z: float) -> float:
        return _max_t_chain_one(float(sides * norm.sf(z)), rhos, two_sided)

    low, high = norm.isf(alpha / sides), norm.isf(alpha / sides / (len(rhos) + 1))
    z = low if len(rhos) < 1 else brentq(lambda v: adjusted_at(v) - alpha, low, high, xtol=1e-10)
    if not df:
        return float(z)
    return float(student_t.isf(norm.sf(z), df))


def _crossing_probability(z: float, fractions: np.ndarray, two_sided: bool) -> float:
    """P(max_k Z_k >= z) (or max |Z_k|) for the Brownian-bridge split statistics at sorted ``fractions``."""
    return _crossing_chain(z, bridge_correlations(fractions), two_sided)


def _crossing_chain(z: float, rhos: np.ndarray, two_sided: bool) -> float:
    """P(max_k Z_k >= z) (or max |Z_k|) for a standard Gaussian Markov chain with consecutive correlations ``rhos``."""
    lower = -z if two_sided else _GRID_FLOOR
    edges = np.linspace(lower, z, max(int(np.ceil((z - lower) / _GRID_STEP)), 8) + 1)
    middles = (edges[1:] + edges[:-1]) / 2
    mass = np.diff(ndtr(edges))  # Z_1, still below z (and above -z), by cell
    crossed = ndtr(-z) * (2 if two_sided else 1)
    for rho in rhos:
        # Given Z_k in a cell, Z_(k+1) is normal around rho times the cell's middle.
        rho = min(max(float(rho), -1.0), 1.0)
        mean, spread = rho * middles, max(np.sqrt(1 - rho * rho), 1e-12)
        crossed += mass @ ndtr((mean - z) / spread)
        if two_sided:
            crossed += mass @ ndtr((-z - mean) / spread)
        mass = mass @ np.diff(ndtr((edges[None, :] - mean[:, None]) / spread), axis=1)
    return float(crossed)


SIMULATION_DRAWS = 20000  # Monte Carlo error of an adjusted p-value near 0.05: about 0.0015
_SIMULATION_SEED = 20240101  # fixed, so that the same data always give the same p-value and interval


def max_t_simulated(
    z: float, covariance: np.ndarray, *, ci_level: float = 0.95, draws: int = SIMULATION_DRAWS,
    alternative: str = "two-sided",
) -> tuple[float, float]:
    """Max-T adjusted p-value and simultaneous critical value for any set of candidate statistics.

    For searches whose statistics are not a Markov chain (several shapes per
    onset week, as the decay detector's steps and ramps), P(max_k |Z_k| >=
    |z|) under no change is taken from ``draws`` simulated normal vectors with
    the candidates' null ``covariance`` (any positive semi-definite matrix;
    it is scaled to correlations). The draws are fixed (a fixed seed), so a
    result is reproducible.

    The p-value and the critical value come from the same draws and the same
    clamps, so ``|z| > critical`` exactly when ``p < 1 - ci_level``: the
    p-value lies between the unadjusted two-sided one and Bonferroni's, and
    is at least ``1 / draws``; the critical value between the unadjusted
    quantile and Bonferroni's.

    With ``alternative="greater"`` the p-value is one-sided, P(max_k Z_k >=
    z) for the signed ``z`` (a search for a change in one direction), and
    the critical value is the one-sided max-T quantile at ``(1 - ci_level)
    / 2``: ``estimate ± critical · se`` is then a two-sided simultaneous
    interval (each tail at most ``(1 - ci_level) / 2``) whose lower end is
    above the null exactly when the one-sided p-value is below ``(1 -
    ci_level) / 2`` — the relation a plain interval has to a one-sided test.

    Returns
    -------
    ``(p_adjusted, critical_value)``.
    """
    if alternative not in ("two-sided", "greater"):
        raise ValueError(f"alternative must be 'two-sided' or 'greater', not {alternative!r}")
    two_sided = alternative == "two-sided"
    covariance = np.atleast_2d(np.asarray(covariance, dtype=float))
    k = len(covariance)
    level = round(1.0 - float(ci_level), 12)  # 1 - 0.95 is 0.05000000000000004 in floating point
    # The p-value at the critical value: 1 - ci_level for max |Z|, half of it for the maximum of one tail.
    alpha = level if two_sided else level / 2
    tail = alpha / 2 if two_sided else alpha  # the same, for one normal tail
    p_raw = float(2 * norm.sf(abs(z))) if two_sided else float(norm.sf(z))
    single, bonferroni = norm.isf(tail), norm.isf(tail / k)
    if k < 2:
        return p_raw, float(single)
    scale = np.sqrt(np.diag(covariance))
    correlation = covariance / np.outer(scale, scale)
    values, vectors = np.linalg.eigh(correlation)
    root = vectors * np.sqrt(np.clip(values, 0.0, None))
    normals = _standard_normals(draws, k)
    statistics = normals @ root.T
    maxima = np.abs(statistics).max(axis=1) if two_sided else statistics.max(axis=1)
    exceed = int(np.count_nonzero(maxima >= (abs(z) if two_sided else z)))
    p_adjusted = max(p_raw, min(max(exceed, 1) / draws, min(1.0, k * p_raw)))
    # The ceil(alpha * draws)-th largest maximum: z above it exactly when fewer than alpha * draws exceed z.
    rank = draws - int(np.ceil(alpha * draws))
    simulated = np.partition(maxima, rank)[rank]
    return float(p_adjusted), float(max(single, min(simulated, bonferroni)))


@lru_cache(maxsize=8)
def _standard_normals(draws: int, k: int) -> np.ndarray:
    return np.random.default_rng(_SIMULATION_SEED).standard_normal((draws, k))
