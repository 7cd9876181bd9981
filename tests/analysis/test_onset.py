import numpy as np
import pandas as pd
import pytest

from scipy.stats import norm

from quarterpanic.analysis.onset import (
    bridge_correlations, max_t_adjusted, max_t_adjusted_chain, max_t_critical_value, max_t_simulated, profile_step,
    selection_adjusted, split_fractions,
)


def weekly_binomial(rng, p_before, p_after, onset, n_per_week=60, weeks=13, group="g"):
    rows = []
    for week in range(1, weeks + 1):
        p = p_after if week >= onset else p_before
        rows.append({"group": group, "week_of_quarter": week, "qualified": rng.binomial(n_per_week, p), "n": n_per_week})
    return pd.DataFrame(rows)


def test_binomial_step_finds_the_onset_of_a_clear_drop():
    rng = np.random.default_rng(1)
    frames = [weekly_binomial(rng, 0.7, 0.3, onset, group=f"g{onset}") for onset in (6, 9, 11)]
    prof = profile_step(pd.concat(frames), ["group"], events="qualified", base="n", direction=-1)
    assert dict(zip(prof["group"], prof["onset_week"])) == {"g6": 6, "g9": 9, "g11": 11}
    assert (prof["lr_stat"] > 50).all()
    assert (prof["events_after"] / prof["base_after"] < 0.4).all()


def test_direction_constraint_ignores_steps_the_wrong_way():
    rng = np.random.default_rng(2)
    rising = weekly_binomial(rng, 0.3, 0.8, 8)
    prof = profile_step(rising, ["group"], events="qualified", base="n", direction=-1)
    # Only downward steps are allowed and every split of this series goes up.
    assert prof["onset_week"].isna().all() and prof["n_candidates"].iloc[0] == 0
    prof_any = profile_step(rising, ["group"], events="qualified", base="n", direction=0)
    assert prof_any["onset_week"].iloc[0] == 8


def test_poisson_step_finds_a_surge():
    rng = np.random.default_rng(3)
    weeks = np.arange(1, 14)
    exposure = np.full(13, 5)
    counts = rng.poisson(np.where(weeks >= 10, 30, 10) * exposure / 5)
    weekly = pd.DataFrame({"org": "a", "week_of_quarter": weeks, "requests": counts, "days": exposure})
    prof = profile_step(weekly, ["org"], events="requests", base="days", kind="poisson", direction=+1)
    assert prof["onset_week"].iloc[0] == 10
    rate_ratio = (prof["events_after"] / prof["base_after"]) / (prof["events_before"] / prof["base_before"])
    assert 2.0 < rate_ratio.iloc[0] < 4.5


def test_min_each_side_leaves_thin_series_without_onset():
    weekly = pd.DataFrame({"g": "x", "week_of_quarter": [1, 2, 3], "k": [1, 1, 0], "n": [1, 1, 1]})
    prof = profile_step(weekly, ["g"], events="k", base="n", min_each_side=5)
    assert prof["onset_week"].isna().all()
    assert prof["n_candidates"].iloc[0] == 0


def test_calm_series_rarely_show_large_gains():
    rng = np.random.default_rng(4)
    frames = [weekly_binomial(rng, 0.7, 0.7, 99, group=str(i)) for i in range(200)]
    prof = profile_step(pd.concat(frames), ["group"], events="qualified", base="n", direction=-1)
    # The max over 8 candidates of a chi-square(1) exceeds 3.84*... rarely; a loose, failing-capable bound:
    assert (prof["lr_stat"] > 12).mean() < 0.02


def test_selection_adjustment_is_bonferroni_capped_at_one():
    assert np.allclose(selection_adjusted([0.001, 0.2], [8, 8]), [0.008, 1.0])
    assert selection_adjusted(0.01, 0) == 0.01


# -- the max-T adjustment for the onset search ----------------------------------------------------
UNIFORM_FRACTIONS = tuple((week - 1) / 13 for week in range(5, 13))  # candidates 5..12 of 13 equal weeks


def bridge_correlation(fractions):
    t = np.asarray(fractions)
    low, high = np.minimum.outer(t, t), np.maximum.outer(t, t)
    return np.sqrt(low * (1 - high) / (high * (1 - low)))


def test_profile_reports_the_base_fraction_before_every_candidate_with_enough_base():
    rng = np.random.default_rng(5)
    weekly = weekly_binomial(rng, 0.7, 0.7, 99)
    for direction in (-1, 0, +1):
        prof = profile_step(weekly, ["group"], events="qualified", base="n", direction=direction)
        assert prof["candidate_fractions"].iloc[0] == pytest.approx(UNIFORM_FRACTIONS)
    # Candidates with too little base on one side are not candidates at all.
    prof = profile_step(weekly, ["group"], events="qualified", base="n", min_each_side=60 * 6)
    assert prof["candidate_fractions"].iloc[0] == pytest.approx([6 / 13, 7 / 13])
    assert prof["n_candidates"].iloc[0] <= 2


def test_split_fractions_count_rows_before_each_candidate():
    weeks = np.array([1, 1, 2, 5, 6, 6, 7, 13, np.nan])
    assert split_fractions(weeks, [2, 6, 8]) == pytest.approx((2 / 8, 4 / 8, 7 / 8))
    assert split_fractions(weeks, [2, 6, 8], min_each_side=3) == pytest.approx((4 / 8,))
    assert split_fractions([], [5, 6]) == ()


def test_max_t_with_one_candidate_is_the_unadjusted_p_value():
    for alternative in ("greater", "less", "two-sided"):
        assert max_t_adjusted(0.013, [0.4], alternative=alternative) == 0.013
        assert max_t_adjusted(0.013, [], alternative=alternative) == 0.013
        # The same split listed twice, or splits that leave a side empty, are still one candidate.
        assert max_t_adjusted(0.013, [0.4, 0.4, 0.0, 1.0], alternative=alternative) == 0.013
    assert np.isnan(max_t_adjusted(np.nan, UNIFORM_FRACTIONS))


def test_max_t_lies_between_the_p_value_and_bonferroni():
    rng = np.random.default_rng(6)
    p_values = np.concatenate([10 ** rng.uniform(-14, 0, 300), [0.0, 1.0, 0.5, 1e-300]])
    fractions = [np.sort(rng.uniform(0.05, 0.95, rng.integers(2, 13))) for _ in p_values]
    for alternative in ("greater", "two-sided"):
        adjusted = max_t_adjusted(p_values, fractions, alternative=alternative)
        bonferroni = selection_adjusted(p_values, [len(f) for f in fractions])
        assert np.all(adjusted >= p_values) and np.all(adjusted <= bonferroni)


def test_max_t_is_the_multivariate_normal_probability_of_the_maximum():
    from scipy.stats import multivariate_normal, norm

    fractions = np.array([0.2, 0.35, 0.4, 0.55, 0.7, 0.85])
    correlation = bridge_correlation(fractions)
    z = 2.7
    upper = np.full(len(fractions), z)
    one_sided = 1 - multivariate_normal.cdf(upper, cov=correlation, rng=np.random.default_rng(0))
    two_sided = 1 - multivariate_normal.cdf(upper, cov=correlation, lower_limit=-upper, rng=np.random.default_rng(0))
    assert max_t_adjusted(norm.sf(z), fractions) == pytest.approx(one_sided, rel=0.01)
    assert max_t_adjusted(norm.sf(z), fractions, alternative="less") == pytest.approx(one_sided, rel=0.01)
    assert max_t_adjusted(2 * norm.sf(z), fractions, alternative="two-sided") == pytest.approx(two_sided, rel=0.01)


def test_max_t_is_well_below_bonferroni_when_candidates_are_strongly_correlated():
    # Neighbouring weeks of a 13-week quarter: correlations of 0.78-0.86 between adjacent splits.
    assert bridge_correlation(UNIFORM_FRACTIONS)[np.arange(7), np.arange(1, 8)].min() > 0.75
    for p in (0.01, 0.001, 1e-4):
        adjusted = max_t_adjusted(p, UNIFORM_FRACTIONS)
        assert adjusted < 0.8 * selection_adjusted(p, 8)
        assert max_t_adjusted(p, UNIFORM_FRACTIONS, alternative="two-sided") < 0.8 * selection_adjusted(p, 8)
    # Splits far apart are nearly independent: then max-T is close to Bonferroni.
    apart = max_t_adjusted(0.001, [0.01, 0.99])
    assert 0.95 * 0.002 < apart <= 0.002


def calm_binomial_series(rng, n_series):
    trials = rng.integers(15, 46, size=(n_series, 13))
    weeks = np.tile(np.arange(1, 14), n_series)
    return pd.DataFrame({
        "group": np.repeat(np.arange(n_series), 13), "week_of_quarter": weeks,
        "events": rng.binomial(trials, 0.7).ravel(), "base": trials.ravel(),
    })


def calm_poisson_series(rng, n_series):
    days = rng.choice([3, 4, 5, 5, 5], size=(n_series, 13))
    weeks = np.tile(np.arange(1, 14), n_series)
    return pd.DataFrame({
        "group": np.repeat(np.arange(n_series), 13), "week_of_quarter": weeks,
        "events": rng.poisson(4.0 * days).ravel(), "base": days.ravel(),
    })


def one_sided_p_at_onset(prof, kind, direction):
    """One-sided p-value in ``direction`` of the step at each group's chosen onset (Wald, as the detectors)."""
    from scipy.stats import norm

    eb, nb, ea, na = (prof[c].to_numpy(dtype=float) for c in ("events_before", "base_before", "events_after",
                                                              "base_after"))
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "binomial":
            pb, pa = eb / nb, ea / na
            z = (pa - pb) / np.sqrt(pb * (1 - pb) / nb + pa * (1 - pa) / na)
        else:
            z = np.log((ea / na) / (eb / nb)) / np.sqrt(1 / ea + 1 / eb)
    # No split in the direction asked for: no evidence at all.
    return np.where(np.isfinite(z), norm.sf(direction * z), 1.0)


@pytest.mark.slow
@pytest.mark.stats  # 4000 simulated calm series per kind: make test-stats (and CI) runs it
@pytest.mark.parametrize("kind, direction", [("binomial", -1), ("poisson", +1)])
def test_max_t_keeps_calm_series_at_the_nominal_rate_and_bonferroni_does_not(kind, direction):
    rng = np.random.default_rng(7)
    n_series = 4000
    weekly = (calm_binomial_series if kind == "binomial" else calm_poisson_series)(rng, n_series)
    prof = profile_step(weekly, ["group"], events="events", base="base", kind=kind, direction=direction)
    p_values = one_sided_p_at_onset(prof, kind, direction)
    fractions = prof["candidate_fractions"]
    assert (fractions.map(len) == 8).all()
    max_t = (max_t_adjusted(p_values, fractions) <= 0.05).mean()
    bonferroni = (selection_adjusted(p_values, fractions.map(len)) <= 0.05).mean()
    unadjusted = (p_values <= 0.05).mean()
    assert 0.03 <= max_t <= 0.065, (max_t, bonferroni, unadjusted)
    assert bonferroni <= 0.03 and bonferroni < max_t - 0.01, (max_t, bonferroni)
    assert unadjusted > 0.15  # the search is real: unadjusted, calm series would be flagged three times too often


# -- simultaneous intervals ------------------------------------------------------------------------
def test_chain_adjustment_of_bridge_correlations_is_the_split_adjustment():
    rng = np.random.default_rng(11)
    p_values = 10 ** rng.uniform(-6, 0, 50)
    chains = [bridge_correlations(UNIFORM_FRACTIONS)] * len(p_values)
    for alternative in ("greater", "two-sided"):
        assert np.allclose(max_t_adjusted_chain(p_values, chains, alternative=alternative),
                           max_t_adjusted(p_values, [UNIFORM_FRACTIONS] * len(p_values), alternative=alternative))
    assert max_t_adjusted_chain(0.013, []) == 0.013


@pytest.mark.parametrize("ci_level", [0.9, 0.95, 0.99])
def test_critical_value_is_the_inverse_of_the_adjusted_p_value(ci_level):
    rhos = bridge_correlations(UNIFORM_FRACTIONS)
    alpha = 1 - ci_level
    critical = max_t_critical_value(rhos, ci_level=ci_level)
    assert norm.isf(alpha / 2) < critical < norm.isf(alpha / 16)
    for z, below in ((critical * 0.999, False), (critical * 1.001, True)):
        adjusted = max_t_adjusted(2 * norm.sf(z), UNIFORM_FRACTIONS, alternative="two-sided")
        assert (adjusted < alpha) == below
    # A statistic referred to t with few degrees of freedom needs a larger quantile on the t scale.
    on_t_scale = max_t_critical_value(rhos, ci_level=ci_level, df=8)
    from scipy.stats import t

    assert on_t_scale > critical and 2 * t.sf(on_t_scale, 8) == pytest.approx(2 * norm.sf(critical))
    assert max_t_critical_value([], ci_level=ci_level) == pytest.approx(norm.isf(alpha / 2))


def test_simulated_max_t_matches_the_recursion_and_its_interval_agrees_with_its_p_value():
    correlation = bridge_correlation(UNIFORM_FRACTIONS)
    rhos = bridge_correlations(UNIFORM_FRACTIONS)
    p_value, critical = max_t_simulated(2.6, correlation)
    assert p_value == pytest.approx(max_t_adjusted_chain(2 * norm.sf(2.6), rhos, alternative="two-sided"), abs=0.003)
    assert critical == pytest.approx(max_t_critical_value(rhos), abs=0.02)
    # Any covariance (here scaled by 4) gives the same answer: only the correlations matter.
    assert max_t_simulated(2.6, 4 * correlation) == (p_value, critical)
    for z in np.linspace(1.5, 4.0, 101):
        p, c = max_t_simulated(z, correlation)
        assert (p < 0.05) == (abs(z) > c)
        assert 2 * norm.sf(z) <= p <= min(1.0, 8 * 2 * norm.sf(z))
    assert max_t_simulated(2.0, np.ones((1, 1))) == pytest.approx((2 * norm.sf(2.0), norm.isf(0.025)))


def test_one_sided_simulated_max_t_looks_at_one_tail_and_its_interval_agrees_with_it():
    correlation = bridge_correlation(UNIFORM_FRACTIONS)
    rhos = bridge_correlations(UNIFORM_FRACTIONS)
    p_value, critical = max_t_simulated(2.6, correlation, alternative="greater")
    assert p_value == pytest.approx(max_t_adjusted_chain(norm.sf(2.6), rhos, alternative="greater"), abs=0.002)
    # The interval's critical value leaves 2.5% in one tail, as a plain 95% interval does.
    assert critical == pytest.approx(max_t_critical_value(rhos, alternative="greater", ci_level=0.975), abs=0.02)
    assert max_t_simulated(-2.6, correlation, alternative="greater")[0] > 0.99
    for z in np.linspace(1.5, 4.0, 101):
        p, c = max_t_simulated(z, correlation, alternative="greater")
        assert (p < 0.025) == (z > c)
        assert norm.sf(z) <= p <= min(1.0, 8 * norm.sf(z))
    assert max_t_simulated(2.0, np.ones((1, 1)), alternative="greater") == pytest.approx((norm.sf(2.0), norm.isf(0.025)))
    with pytest.raises(ValueError):
        max_t_simulated(2.0, correlation, alternative="less")
