"""The silo ratios held to the generator's truth, across 30 seeds.

Each seed's sample is generated and analysed once (a module-scoped fixture).
Truth (``truth["request_history"]``, :mod:`quarterpanic.sample.history`): in a
panic quarter of the mid-size organisation, requests created in the last four
weeks visit other departments 1.5 times as often and wait 1.8 times as long in
all; in calm quarters both ratios are 1. The open quarter is never judged.
"""
import pandas as pd
import pytest

from quarterpanic import sample
from quarterpanic.analysis.silos import COMPONENT, WAIT_METRIC, analyse_silos
from quarterpanic.dataset import Dataset

pytestmark = [pytest.mark.slow, pytest.mark.stats]

SEEDS = range(5000, 5030)
METRICS = (COMPONENT, WAIT_METRIC)


@pytest.fixture(scope="module")
def runs():
    frames = []
    for seed in SEEDS:
        generated = sample.generate(seed=seed, scale="small")
        data = Dataset.from_tables(generated.tables, generated.orgs, as_of=generated.as_of)
        findings = analyse_silos(data)
        truth = pd.DataFrame(generated.truth["request_history"]).melt(
            id_vars=["org", "quarter", "open", "panic"], value_vars=list(METRICS), var_name="metric",
            value_name="truth")
        merged = findings.merge(truth, on=["org", "quarter", "metric"], validate="one_to_one")
        frames.append(merged.assign(seed=seed))
    return pd.concat(frames, ignore_index=True)


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
