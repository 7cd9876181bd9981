"""The decay detector when panic reaches only a fraction of the sellers, against the oracle, over 50 seeds.

As tests/analysis/test_qualification_power_stats.py (the default scenario's organisations at scale
"default", a 17.5-point peak drop, steps and ramps, onsets in weeks 7-11), but each panic reaches a
drawn share of the sellers (0.5-1, as in scenarios/realistic.yaml), and in about half the panics that
share spreads to every seller by the quarter's end. The truth is the average drop over the deals
created from the onset on, sellers not reached included. The oracle knows the onset, the shape and
the share reached at each moment, not which sellers. Seeds 8000-8049 are used by no other test.
"""
import pytest

from helpers import assert_power_near_the_oracle, decay_power_table, generated_decay_runs, generated_decay_scenario, mid_and_enterprise

pytestmark = [pytest.mark.slow, pytest.mark.stats]

SEEDS = range(8000, 8050)
HALF = 0.175  # half of today's 35-point drop (issue 15)


@pytest.fixture(scope="module")
def runs():
    return generated_decay_runs(generated_decay_scenario(HALF, seller_fraction={"uniform": [0.5, 1.0]},
                                                         spread={"choice": [True, False]}), SEEDS)


def test_power_against_the_oracle_when_some_sellers_panic(runs):
    table = decay_power_table(runs)
    print(f"\nhalf effect among 50-100% of sellers, power (detector, oracle):\n{table.round(3).to_string()}")
    assert_power_near_the_oracle(table, min_oracle=0.4)


@pytest.mark.parametrize("shape", ["step", "ramp"])
def test_intervals_cover_the_average_drop_over_every_sellers_deals(runs, shape):
    panic = mid_and_enterprise(runs)
    panic = panic[panic["panic"] & (panic["true_shape"] == shape) & (panic["status"] == "ok")]
    assert len(panic) >= 200 and (panic["seller_fraction"] < 1).all() and panic["spread"].any()
    coverage = panic["covered"].mean()
    print(f"\n{shape}: the interval holds the post-onset average in {coverage:.3f} of {len(panic)}")
    assert 0.90 <= coverage <= 0.99, f"{shape}: coverage {coverage:.3f} over {len(panic)} panic quarters"


def test_calm_quarters_stay_calm_beside_partial_panics(runs):
    calm = mid_and_enterprise(runs)
    calm = calm[~calm["panic"] & (calm["status"] == "ok")]
    assert len(calm) >= 400
    rate = calm["detected"].mean()
    assert rate <= 0.05 + 2 * (0.05 * 0.95 / len(calm)) ** 0.5, rate
    assert 0.93 <= calm["covered"].mean() <= 0.97
