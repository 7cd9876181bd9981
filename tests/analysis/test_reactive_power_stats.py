"""The surge detector held to an oracle, for steps and ramps, on a small Poisson simulator of its own.

Each seed simulates weekly unplanned-request counts of three organisations
(small, mid, enterprise: 1, 5 and 15 requests per working day) over eight
13-week quarters of five working days a week, with a little week-to-week
overdispersion (gamma noise, coefficient of variation 0.1). Two or three
quarters per organisation panic, each with its own onset week (8-11) and
ratio (1.5-3, the literature's range), as a **step** (every late week at
the ratio) or a **ramp** (late weeks rising linearly to the ratio at the
last week). The truth is the post-onset average ratio, whatever the shape.

The **oracle** knows the onset and the shape: a Poisson rate test of the
known late-window profile in the same quarter-fixed-effect model, one-sided
at 5% with no search to pay for. No real detector can beat it. The detector
is :func:`estimate_surge` as the reactive component runs it (onset searched
over weeks 5-12, max-T adjusted p-value and simultaneous interval).

Seeds 2000-2049 are used by no other test.
"""
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.genmod.families import Poisson
from statsmodels.genmod.generalized_linear_model import GLM

from quarterpanic.analysis.reactive import candidate_weeks, estimate_surge

pytestmark = [pytest.mark.slow, pytest.mark.stats]

SEEDS = range(2000, 2050)
RATES = {"small": 1.0, "mid": 5.0, "enterprise": 15.0}
QUARTERS, WEEKS, DAYS = 8, 13, 5
ALPHA = 0.05


def multipliers(shape: str, ratio: float, onset: int) -> np.ndarray:
    """The rate multiplier of each week of a quarter (1 before ``onset``)."""
    weeks = np.arange(1, WEEKS + 1)
    if onset > WEEKS:
        return np.ones(WEEKS)
    rise = np.ones(WEEKS) if shape == "step" else (weeks - onset + 1) / (WEEKS - onset + 1)
    return np.where(weeks >= onset, 1 + (ratio - 1) * rise, 1.0)


def simulate(seed: int, shape: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Weekly counts and the truth (one row per org × quarter) of one seed."""
    rng = np.random.default_rng(seed * 2 + (shape == "ramp"))
    rows, truth = [], []
    for org, rate in RATES.items():
        panic = set(rng.choice(QUARTERS, size=rng.integers(2, 4), replace=False).tolist())
        for q in range(QUARTERS):
            onset = int(rng.integers(8, 12)) if q in panic else WEEKS + 1
            ratio = float(rng.uniform(1.5, 3.0)) if q in panic else 1.0
            m = multipliers(shape, ratio, onset)
            noise = rng.gamma(100.0, 0.01, WEEKS)
            counts = rng.poisson(rate * DAYS * m * noise)
            for week in range(WEEKS):
                rows.append({"org": org, "quarter": f"Q{q}", "week_of_quarter": week + 1, "working_days": DAYS,
                             "unplanned": int(counts[week]), "multiplier": m[week]})
            truth.append({"org": org, "quarter": f"Q{q}", "panic": q in panic, "true_onset": onset,
                          "true_ratio": float(m[onset - 1:].mean()) if q in panic else 1.0, "size_class": org})
    return pd.DataFrame(rows), pd.DataFrame(truth)


def oracle_p_values(weekly: pd.DataFrame, truth: pd.DataFrame) -> pd.Series:
    """One-sided p-value of the known late profile per org × quarter (Poisson GLM with quarter effects)."""
    out = {}
    for org, frame in weekly.groupby("org"):
        codes, quarters = pd.factorize(frame["quarter"])
        n = len(quarters)
        # The known profile, log-multiplier scaled to 1 at its peak: the score direction of the true alternative.
        profile = np.log(frame["multiplier"].to_numpy())
        peak = frame.assign(p=profile).groupby("quarter")["p"].transform("max").to_numpy()
        shape = np.divide(profile, peak, out=np.zeros_like(profile), where=peak > 0)
        panic = set(truth.loc[(truth["org"] == org) & truth["panic"], "quarter"])
        design = np.zeros((len(frame), 2 * n))
        design[np.arange(len(frame)), codes] = 1.0
        design[np.arange(len(frame)), n + codes] = shape
        keep = [True] * n + [q in panic for q in quarters]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = GLM(frame["unplanned"].to_numpy(float), design[:, keep], family=Poisson(),
                      offset=np.log(frame["working_days"].to_numpy(float))).fit()
        panic_quarters = [q for q in quarters if q in panic]
        z = np.asarray(fit.params)[n:] / np.asarray(fit.bse)[n:]
        out.update({(org, q): float(stats.norm.sf(value)) for q, value in zip(panic_quarters, z)})
    return pd.Series(out, name="oracle_p")


def runs(shape: str) -> pd.DataFrame:
    frames = []
    for seed in SEEDS:
        weekly, truth = simulate(seed, shape)
        candidates = candidate_weeks([5, 12], WEEKS)
        found = estimate_surge(weekly, candidates=candidates, min_events=20)
        merged = found.merge(truth, on=["org", "quarter"], validate="one_to_one")
        oracle = oracle_p_values(weekly, truth).rename_axis(["org", "quarter"]).reset_index()
        merged = merged.merge(oracle, on=["org", "quarter"], how="left")
        frames.append(merged.assign(seed=seed, shape=shape))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def step_runs():
    return runs("step")


@pytest.fixture(scope="module")
def ramp_runs():
    return runs("ramp")


def power_table(results: pd.DataFrame) -> pd.DataFrame:
    panic = results[results["panic"]]
    table = panic.assign(detector=panic["p_value"] < ALPHA, oracle=panic["oracle_p"] < ALPHA).groupby(
        "size_class")[["detector", "oracle"]].mean()
    table.loc["all"] = [(panic["p_value"] < ALPHA).mean(), (panic["oracle_p"] < ALPHA).mean()]
    table["ratio"] = table["detector"] / table["oracle"]
    return table


@pytest.mark.parametrize("shape", ["step", "ramp"])
def test_power_is_at_least_85_percent_of_the_oracles(shape, step_runs, ramp_runs):
    results = step_runs if shape == "step" else ramp_runs
    table = power_table(results)
    print(f"\n{shape}: power of the detector and the oracle (p < {ALPHA})\n{table.round(3)}")
    assert (table["ratio"] >= 0.85).all(), table.round(3).to_dict()


@pytest.mark.parametrize("shape", ["step", "ramp"])
def test_calm_quarters_rarely_reach_significance(shape, step_runs, ramp_runs):
    results = step_runs if shape == "step" else ramp_runs
    calm = results[~results["panic"]]
    assert len(calm) >= 600
    rate = (calm["p_value"] < ALPHA).mean()
    print(f"\n{shape}: calm quarters with p < {ALPHA}: {rate:.3f} of {len(calm)}")
    assert rate <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / len(calm)), f"{rate:.3f} of {len(calm)} calm quarters"


@pytest.mark.parametrize("shape", ["step", "ramp"])
def test_the_interval_holds_no_change_in_calm_quarters(shape, step_runs, ramp_runs):
    results = step_runs if shape == "step" else ramp_runs
    calm = results[~results["panic"] & (results["status"] == "ok")]
    covered = ((calm["ci_low"] <= 1) & (1 <= calm["ci_high"])).mean()
    print(f"\n{shape}: calm quarters whose interval holds 1: {covered:.3f} of {len(calm)}")
    assert 0.93 <= covered <= 0.97, f"coverage of 1 in {len(calm)} calm quarters: {covered:.3f}"


@pytest.mark.parametrize("shape", ["step", "ramp"])
def test_the_interval_holds_the_true_average_ratio_in_panic_quarters(shape, step_runs, ramp_runs):
    results = step_runs if shape == "step" else ramp_runs
    panic = results[results["panic"] & (results["status"] == "ok")]
    covered = ((panic["ci_low"] <= panic["true_ratio"]) & (panic["true_ratio"] <= panic["ci_high"])).mean()
    print(f"\n{shape}: coverage of the true post-onset average ratio {covered:.3f} over {len(panic)}")
    assert 0.90 <= covered <= 0.99, f"coverage {covered:.3f} over {len(panic)} panic quarters"


def test_step_onsets_are_found_within_a_week(step_runs):
    panic = step_runs[step_runs["panic"] & (step_runs["p_value"] < ALPHA)]
    within = (panic["onset_week"].astype(float) - panic["true_onset"]).abs() <= 1
    print(f"\nstep onset within ±1 week: {within.mean():.3f} of {len(panic)}")
    assert within.mean() >= 0.80, f"step onset within ±1 week in {within.mean():.3f} of {len(panic)}"


def test_ramp_onsets_are_found_within_two_weeks(ramp_runs):
    panic = ramp_runs[ramp_runs["panic"] & (ramp_runs["p_value"] < ALPHA)]
    within = (panic["onset_week"].astype(float) - panic["true_onset"]).abs() <= 2
    print(f"\nramp onset within ±2 weeks: {within.mean():.3f} of {len(panic)}")
    assert within.mean() >= 0.80, f"ramp onset within ±2 weeks in {within.mean():.3f} of {len(panic)}"
