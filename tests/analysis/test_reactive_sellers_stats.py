"""The surge detector on a panic that reaches only some sellers, held to an oracle and to the generator's truth.

The ``realistic`` scenario's kind of panic: in each complete quarter of each organisation (with probability
0.4) unplanned requests surge from an onset week drawn in 8-11, by a ratio drawn in 1.5-3 (the literature's
range), among a drawn half to all of the sellers (``seller_fraction`` uniform in 0.5-1) — and, in half the
panics, spreading to every seller by the quarter's end (``spread``). The effects are stated here, not taken
from the default scenario. The truth is the generator's post-onset average: the expected request rate per
working day after the onset over the rate before it, mixed over the sellers reached.

The **oracle** is the same quasi-Poisson rate test given the true onset
(:func:`~quarterpanic.analysis.reactive.estimate_surge` with the onsets fixed: no search to pay for); no
detector that must find the onset can beat it. The detector is the reactive component as it runs
(``analyse_reactive``: onset searched, max-T adjusted p-value and simultaneous interval).

Seeds 8100-8149 are used by no other test.
"""
import numpy as np
import pandas as pd
import pytest

from quarterpanic import sample
from quarterpanic.analysis.reactive import COMPONENT, analyse_reactive, estimate_surge
from quarterpanic.dataset import Dataset
from quarterpanic.params import defaults

pytestmark = [pytest.mark.slow, pytest.mark.stats]

SEEDS = range(8100, 8150)
ALPHA = 0.05
DRAWN = {"draw": {"probability": 0.4}}
SCENARIO = {
    "pattern": {"shape": "step", "seller_fraction": {"uniform": [0.5, 1.0]}, "spread": {"choice": [True, False]}},
    "panic": {"reactive_order_taking": {"uniform": [1.5, 3.0]}},
    "orgs": {"Brightline Studio": {"panic_quarters": DRAWN}, "Northwind Traders": {"panic_quarters": DRAWN},
             "Globex Corporation": {"panic_quarters": DRAWN}},
}


def seed_runs(seed: int) -> pd.DataFrame:
    """The detector's and the oracle's verdicts on every complete quarter of one seed, with the truth."""
    generated = sample.generate(SCENARIO, seed=seed, scale="small")
    data = Dataset.from_tables(generated.tables, generated.orgs, as_of=generated.as_of)
    analysis = analyse_reactive(data, secondary=False)
    found = analysis.findings[analysis.findings["metric"] == COMPONENT]
    truth = generated.truth_frame().rename(columns={"onset_week": "true_onset", COMPONENT: "true_ratio"})
    truth["size_class"] = truth["org"].map({org: info["size_class"] for org, info in generated.orgs.items()})
    judged = analysis.weekly[analysis.weekly["judged"]]
    onsets = truth.loc[truth["panic"], ["org", "quarter", "true_onset"]].rename(columns={"true_onset": "onset_week"})
    oracle = estimate_surge(judged.merge(onsets[["org", "quarter"]], on=["org", "quarter"]), onsets=onsets,
                            min_events=int(defaults()["min_requests"]))
    oracle = oracle[["org", "quarter", "p_value"]].rename(columns={"p_value": "oracle_p"})
    merged = (found.merge(truth, on=["org", "quarter"], validate="one_to_one")
              .merge(oracle, on=["org", "quarter"], how="left"))
    return merged.assign(seed=seed)


@pytest.fixture(scope="module")
def runs() -> pd.DataFrame:
    return pd.concat([seed_runs(seed) for seed in SEEDS], ignore_index=True)


def power_table(runs: pd.DataFrame) -> pd.DataFrame:
    panic = runs[runs["panic"]]
    table = panic.assign(detector=panic["p_value"] < ALPHA, oracle=panic["oracle_p"] < ALPHA).groupby(
        "size_class")[["detector", "oracle"]].agg(["mean", "size"])
    table.columns = ["detector", "n", "oracle", "_n"]
    table = table.drop(columns="_n")
    table["ratio"] = table["detector"] / table["oracle"]
    return table


def test_the_panics_drawn_reach_only_some_sellers(runs):
    panic = runs[runs["panic"]]
    assert len(panic) >= 150 and panic["seller_fraction"].between(0.5, 1.0).all()
    assert panic["spread"].astype(bool).mean() == pytest.approx(0.5, abs=0.15)
    assert panic["seller_fraction"].lt(0.75).mean() >= 0.3


def test_power_is_at_least_85_percent_of_the_oracles_for_mid_and_enterprise(runs):
    table = power_table(runs)
    print(f"\nsurge on a fraction of sellers: power of the detector and the oracle (p < {ALPHA})\n{table.round(3)}")
    sized = table.loc[["mid", "enterprise"]]
    assert (sized["n"] >= 60).all(), table.round(3).to_dict()
    assert (sized["ratio"] >= 0.85).all(), table.round(3).to_dict()


def test_calm_quarters_rarely_reach_significance(runs):
    calm = runs[~runs["panic"]]
    assert len(calm) >= 400
    rate = (calm["p_value"] < ALPHA).mean()
    print(f"\ncalm quarters with p < {ALPHA}: {rate:.3f} of {len(calm)}")
    assert rate <= ALPHA + 2 * np.sqrt(ALPHA * (1 - ALPHA) / len(calm))


def test_the_interval_holds_the_post_onset_average_ratio(runs):
    panic = runs[runs["panic"] & (runs["status"] == "ok") & runs["size_class"].isin(["mid", "enterprise"])]
    covered = (panic["ci_low"] <= panic["true_ratio"]) & (panic["true_ratio"] <= panic["ci_high"])
    by_class = covered.groupby(panic["size_class"]).mean()
    print(f"\ncoverage of the post-onset average ratio: {covered.mean():.3f} over {len(panic)}\n{by_class.round(3)}")
    # Issue 15's band. A confirmed surge's interval pays only for the onsets the data leave plausible; when it
    # paid for the chosen onset and both neighbours whatever the data said, it held the truth in 99.3%.
    assert 0.90 <= covered.mean() <= 0.99, f"coverage {covered.mean():.3f} over {len(panic)} panic quarters"
