"""The decay detector against the oracle, at half today's effect, for steps and ramps, over 50 seeds.

Each seed generates the default scenario's three organisations at scale "default" (10 complete
quarters; about 60, 300 and 600 new deals a quarter) with the effect stated here, not read from the
default scenario: a 17.5-point peak drop in qualification (half of today's 35), each complete
quarter panicking with probability 0.5, onset drawn from weeks 7-11, shape a step or a ramp, seller
random effects. Two oracles know the true onset and shape: the per-quarter one
(:func:`quarterpanic.analysis.qualification.oracle_decay_p_value`, the one-sided score test of the
quarter's own deals, the issue's yardstick) looks at one quarter, so the detector, which pools the
level over the organisation's quarters, can beat it; the pooled one is the detector's own test at
the true candidate, without the search (:func:`quarterpanic.analysis.qualification.decay_candidates`),
which no detector of this model can beat. Seeds 1000-1049 are used by no other test.

The detector's decision is its own per-quarter test (search-adjusted one-sided p < 0.05 and a drop),
the counterpart of the oracle's; the flags of a whole run also depend on the false-discovery family
(:func:`quarterpanic.analysis.findings.apply_fdr`), which is not this detector's.
"""
import numpy as np
import pytest

from helpers import (
    assert_power_near_the_oracle, decay_power_table, generated_decay_runs, generated_decay_scenario, mid_and_enterprise,
)

pytestmark = [pytest.mark.slow, pytest.mark.stats]

SEEDS = range(1000, 1050)
HALF = 0.175  # half of today's 35-point drop (issue 15)
ALPHA = 0.05


@pytest.fixture(scope="module")
def runs():
    return generated_decay_runs(generated_decay_scenario(HALF), SEEDS, ALPHA)


def test_power_against_the_oracle(runs):
    # Steps and ramps reach 85% of the per-quarter oracle's power and more: where the data leave the
    # onset in doubt the search costs power (a one-sided max-T critical value of about 2.15 against the
    # oracle's 1.645), and pooling the level over the organisation's quarters wins it back (the oracle
    # compares the post-onset weeks with the quarter's own earlier weeks only).
    table = decay_power_table(runs)
    print(f"\nhalf effect, power (detector, oracles):\n{table.round(3).to_string()}")
    assert_power_near_the_oracle(table)
    assert_power_near_the_oracle(table, oracle="pooled_oracle_detected")


def test_half_effect_panics_are_found_as_often_as_the_goal_asks_where_the_oracle_can(runs):
    # The goal (80% for mid-size and enterprise) holds for steps of both and ramps of the enterprise;
    # the mid-size org's ramps average a drop of about 10 points over 300 deals a quarter, where even
    # the detector's own test told the true onset and shape finds fewer than 80%: there the detector
    # is held to the oracles.
    table = decay_power_table(runs)
    for shape, size_class in (("step", "mid"), ("step", "enterprise"), ("ramp", "enterprise")):
        assert table.loc[(shape, size_class), "detected"] >= 0.80, (shape, size_class, table.round(3))
    mid_ramp = table.loc[("ramp", "mid")]
    assert mid_ramp["oracle_detected"] < 0.80 and mid_ramp["pooled_oracle_detected"] < 0.80, table.round(3)
    for oracle in ("oracle_detected", "pooled_oracle_detected"):
        assert mid_ramp["detected"] >= 0.85 * mid_ramp[oracle], (oracle, table.round(3))


def test_the_small_org_is_held_to_its_oracle(runs):
    # About 60 deals a quarter: the oracle itself finds about one half-size panic in four, so the goal
    # of 50% is out of reach; the detector finds most of what the oracle finds, and a quarter without
    # min_n deals on each side of every candidate onset says insufficient data, never calm.
    small = runs[runs["size_class"] == "small"]
    panic = small[small["panic"]]
    assert len(panic) >= 200 and panic["oracle_detected"].mean() < 0.5
    assert panic["detected"].mean() >= 0.75 * panic["oracle_detected"].mean(), decay_power_table(runs).round(3)
    thin = small[small["status"] == "insufficient data"]
    assert thin["p_value"].isna().all() and thin["estimate"].isna().all()


def test_calm_quarters_raise_few_alarms_and_their_intervals_hold_the_null(runs):
    # A one-sided test at 5%, as the oracle's: about 5% of calm quarters by design; the bound allows
    # the sampling error of the calm quarters simulated.
    calm = mid_and_enterprise(runs)
    calm = calm[~calm["panic"] & (calm["status"] == "ok")]
    assert len(calm) >= 400
    rate = calm["detected"].mean()
    print(f"\ncalm quarters with an alarm: {rate:.3f} of {len(calm)}; interval holds 0: {calm['covered'].mean():.3f}")
    assert rate <= ALPHA + 2 * np.sqrt(ALPHA * (1 - ALPHA) / len(calm)), rate
    coverage = calm["covered"].mean()
    assert 0.93 <= coverage <= 0.97, f"null coverage {coverage:.3f} over {len(calm)} calm quarters"
    ok = runs[runs["status"] == "ok"]
    assert ((ok["ci_low"] > 0) == (ok["p_value"] < 0.025)).all()
    assert np.allclose(ok["estimate"], (ok["ci_low"] + ok["ci_high"]) / 2)


@pytest.mark.parametrize("shape", ["step", "ramp"])
def test_intervals_cover_the_post_onset_average_drop(runs, shape):
    panic = mid_and_enterprise(runs)
    panic = panic[panic["panic"] & (panic["true_shape"] == shape) & (panic["status"] == "ok")]
    assert len(panic) >= 200
    coverage = panic["covered"].mean()
    assert 0.90 <= coverage <= 0.99, f"{shape}: coverage {coverage:.3f} over {len(panic)} panic quarters"


def test_onset_of_found_steps_and_ramps(runs):
    # Among the panics the detector finds (a quarter it does not find has no onset to read), the onset
    # averaged over the best-fitting shape's candidates by their fit (``averaged_onset_week``): the best
    # fit alone places ramps within two weeks in 69% on these seeds, the average in 85% (a step a few
    # weeks after a ramp's start fits it nearly as well); steps within a week in 83% (best fit 81%;
    # averaging over both shapes placed them in 77%: ramps starting earlier pulled steps early).
    # Developed on seeds 9200-9299: steps 84% and 89%, ramps 84% and 84% per 50 seeds.
    found = mid_and_enterprise(runs)
    found = found[found["panic"] & found["detected"]]
    within = {(shape, weeks): (found.loc[found["true_shape"] == shape, "averaged_onset_off"] <= weeks).mean()
              for shape in ("step", "ramp") for weeks in (1, 2)}
    fitted = {(shape, weeks): (found.loc[found["true_shape"] == shape, "onset_off"] <= weeks).mean()
              for shape in ("step", "ramp") for weeks in (1, 2)}
    print(f"\nonset within (shape, weeks) of the found panics, averaged: "
          f"{ {k: round(v, 3) for k, v in within.items()} }; best fit: { {k: round(v, 3) for k, v in fitted.items()} }")
    assert within[("ramp", 2)] >= 0.80 and within[("step", 2)] >= 0.90, within
    assert within[("ramp", 2)] > fitted[("ramp", 2)] and within[("step", 1)] >= fitted[("step", 1)], fitted
    assert within[("step", 1)] >= 0.80, within
