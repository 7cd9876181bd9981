"""The silo ratios held to the generator's truth, across 30 seeds.

Each seed's sample is generated and analysed once (a module-scoped fixture).
Truth (``truth["request_history"]``, :mod:`quarterpanic.sample.history`): in a
panic quarter of the mid-size organisation, requests created in the last four
weeks visit other departments 1.5 times as often and wait 1.8 times as long in
all; in calm quarters both ratios are 1. The open quarter is never judged.
"""
import pytest

from helpers import truth_section_runs
from quarterpanic.analysis.silos import COMPONENT, WAIT_METRIC, analyse_silos

pytestmark = [pytest.mark.slow, pytest.mark.stats]

SEEDS = range(5000, 5030)
METRICS = (COMPONENT, WAIT_METRIC)


@pytest.fixture(scope="module")
def runs():
    return truth_section_runs(None, SEEDS, analyse_silos, "request_history", METRICS)


def test_complete_quarters_only_and_nearly_all_judged(runs):
    assert not runs["open"].any()
    assert (runs["status"] == "ok").mean() >= 0.95


@pytest.mark.parametrize("metric", METRICS)
def test_interval_covers_the_true_ratio(runs, metric):
    rows = runs[(runs["metric"] == metric) & (runs["status"] == "ok")]
    assert len(rows) >= 200
    covered = (rows["ci_low"] <= rows["truth"]) & (rows["truth"] <= rows["ci_high"])
    assert covered.mean() >= 0.90, f"{metric}: coverage {covered.mean():.3f} over {len(rows)} quarters"


@pytest.mark.parametrize("metric", METRICS)
def test_found_where_injected_and_not_where_not(runs, metric):
    rows = runs[(runs["metric"] == metric) & (runs["status"] == "ok")]
    panic, calm = rows[rows["panic"]], rows[~rows["panic"]]
    found = (panic["p_value"] < 0.05).mean()
    false_alarms = (calm["p_value"] < 0.05).mean()
    assert found >= 0.6, f"{metric}: found in {found:.2f} of panic quarters"
    assert false_alarms <= 0.10, f"{metric}: found in {false_alarms:.2f} of calm quarters"
