"""The panic index's sensitivity at half today's default effect, across 50 generator seeds no other test uses.

Goal (issue 15): at half the default effect, the index reaches ``watch`` or above in at least 80% of the
mid-size and enterprise organisations' panic quarters, and at most 5% of calm quarters (all organisations)
are at ``watch`` or above. Half the effect: differences halved, ratios halfway to 1 (a 3× surge becomes
2×), the month-3 share of a panic quarter halfway between a calm quarter's (about 40%) and today's 65%.
The shares reaching ``panic`` itself are printed beside the goal's (run with ``-s``).
"""
import pandas as pd
import pytest

from quarterpanic import sample
from quarterpanic.analysis.detect import detect
from quarterpanic.analysis.panic_index import PANIC, WATCH, index_from_findings
from quarterpanic.dataset import Dataset

pytestmark = [pytest.mark.slow, pytest.mark.stats]

SEEDS = range(4000, 4050)
HALF_EFFECT = {"panic": {
    "qualification_decay": 0.175, "reactive_order_taking": 2.0, "planned_work_deferral": 0.7,
    "turnaround_stretch": 1.4, "after_hours_share": 0.19, "win_rate_ratio": 0.75, "discount_uplift": 0.05,
    "last_week_deal_size_change": -0.06, "month3_bookings_share": 0.525, "close_date_push_rate": 0.175,
    "lead_score_drop": 7.5, "stage_skip_rate": 0.2,
}}


def index_runs(scenario, seeds):
    """The org-wide index of every complete quarter of every seed, with the generator's truth."""
    frames = []
    for seed in seeds:
        generated = sample.generate(scenario, seed=seed, scale="small")
        data = Dataset.from_tables(generated.tables, generated.orgs, as_of=generated.as_of)
        _, index = index_from_findings(detect(data), None, data)
        truth = generated.truth_frame()[["org", "quarter", "panic", "open"]]
        table = index[index["segment"] == "all"].merge(truth, on=["org", "quarter"], how="inner",
                                                      validate="one_to_one")
        frames.append(table[~table["open"]].assign(seed=seed))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def half_effect():
    return index_runs(HALF_EFFECT, SEEDS)


def rates(runs: pd.DataFrame) -> pd.DataFrame:
    """Per size class and truth: quarters, and the shares at watch or above, at panic, without a level."""
    flagged = runs.assign(watch_or_above=runs["level"].isin([WATCH, PANIC]), panic_level=runs["level"] == PANIC,
                          no_verdict=runs["level"] == "insufficient data")
    return flagged.groupby(["size_class", "panic"]).agg(
        quarters=("level", "size"), watch_or_above=("watch_or_above", "mean"), panic_level=("panic_level", "mean"),
        no_verdict=("no_verdict", "mean"))


def test_calm_quarters_rarely_reach_watch_at_half_effect(half_effect):
    print("\npanic index at half effect, seeds 4000-4049, scale small\n" + rates(half_effect).round(3).to_string())
    calm = half_effect[~half_effect["panic"]]
    assert len(calm) >= 100
    assert calm["level"].isin([WATCH, PANIC]).mean() <= 0.05


# Measured on this branch (50 seeds, before the gen helper's new generator and the decay/surge detectors' power
# work land): watch or above in 80.0% of enterprise and 61.5% of mid-size panic quarters (panic level 49% / 42%),
# calm quarters at watch or above 3.0% (small org 5.5%). Strict: when the goal is met this turns into a failure
# that asks for the mark to go.
@pytest.mark.xfail(strict=True, reason="issue 15 goal not yet met: mid-size panic quarters at watch or above 61.5% < 80%")
def test_index_catches_80_percent_of_mid_and_enterprise_panic_quarters_at_half_effect(half_effect):
    panic = rates(half_effect).xs(True, level="panic")
    assert panic.loc[["mid", "enterprise"], "quarters"].min() >= 50
    assert (panic.loc[["mid", "enterprise"], "watch_or_above"] >= 0.80).all()
