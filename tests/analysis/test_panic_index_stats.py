"""The panic index's sensitivity at half today's effect, across 50 generator seeds no other test uses.

Goal (issue 15): at half today's effect, the index reaches ``watch`` or above in at least 80% of the
mid-size and enterprise organisations' panic quarters, and at most 5% of calm quarters (all organisations)
are at ``watch`` or above. ``watch`` is the level that says "this quarter is unlike the organisation's calm
ones and a detector confirms it"; ``panic`` is the same at a larger effect, so the goal's sensitivity is
the share at ``watch`` *or above* (the shares at ``panic`` itself are printed beside it, run with ``-s``).

The scenario states everything the rates depend on rather than reading the shipped default: today's
effects (decay 0.35, surge 3×, ...) halved — differences halved, ratios halfway to 1 on the log scale (a 3×
surge becomes √3×), the month-3 share halfway between a calm quarter's 40% and 65% — which quarters panic
(at this scale the mid-size firm and the enterprise each in 4 of their 8 complete quarters, the small firm never),
and each panic quarter's shape, a step or a ramp (drawn per quarter).

Beside the index stands an **oracle index** (issue 15: every detector held to the same test told the truth):
the same findings with each panic quarter's decay and surge findings fitted at the true onset and shape, without
the search adjustment, and each organisation's true calm quarters as the baseline
(:func:`helpers.oracle_index`). No real index can beat it; the index should reach 85% of its rate.
"""
import numpy as np
import pandas as pd
import pytest

from helpers import oracle_index
from quarterpanic import sample
from quarterpanic.analysis.detect import detect
from quarterpanic.analysis.panic_index import PANIC, WATCH, index_from_findings
from quarterpanic.dataset import Dataset

pytestmark = [pytest.mark.slow, pytest.mark.stats]

SEEDS = range(4100, 4150)
TODAY = {
    "qualification_decay": 0.35, "reactive_order_taking": 3.0, "planned_work_deferral": 0.4,
    "turnaround_stretch": 1.8, "after_hours_share": 0.30, "win_rate_ratio": 0.5, "discount_uplift": 0.10,
    "last_week_deal_size_change": -0.12, "month3_bookings_share": 0.65, "close_date_push_rate": 0.30,
    "lead_score_drop": 15.0, "stage_skip_rate": 0.35,
}
CALM = {
    "qualification_decay": 0.0, "reactive_order_taking": 1.0, "planned_work_deferral": 1.0,
    "turnaround_stretch": 1.0, "after_hours_share": 0.08, "win_rate_ratio": 1.0, "discount_uplift": 0.0,
    "last_week_deal_size_change": 0.0, "month3_bookings_share": 0.40, "close_date_push_rate": 0.05,
    "lead_score_drop": 0.0, "stage_skip_rate": 0.05,
}
RATIOS = {"reactive_order_taking", "planned_work_deferral", "turnaround_stretch", "win_rate_ratio"}
HALF = {name: CALM[name] * (value / CALM[name]) ** 0.5 if name in RATIOS else (CALM[name] + value) / 2
        for name, value in TODAY.items()}
HALF_EFFECT = {
    "calm": {name: value for name, value in CALM.items() if name != "month3_bookings_share"},
    "panic": HALF,
    "pattern": {"shape": {"choice": ["step", "ramp"]}, "ramp_weeks": None, "seller_fraction": 1.0,
                "spread": False, "segments": None},
    "orgs": {
        "Brightline Studio": {"panic_quarters": {}},
        "Northwind Traders": {"panic_quarters": {0: 9, 2: 10, 4: 8, 5: 9, 8: 10}},
        "Globex Corporation": {"panic_quarters": {1: 9, 3: 8, 4: 10, 6: 9, 9: 8}},
    },
}


def index_runs(scenario, seeds):
    """The org-wide index of every complete quarter of every seed, with the generator's truth and shape, and the
    oracle index's level (``oracle_level``: :func:`helpers.oracle_index`, the same findings told the truth)."""
    frames = []
    for seed in seeds:
        generated = sample.generate(scenario, seed=seed, scale="small")
        data = Dataset.from_tables(generated.tables, generated.orgs, as_of=generated.as_of)
        findings = detect(data)
        _, index = index_from_findings(findings, None, data)
        truth = generated.truth_frame()
        oracle = oracle_index(findings, data, truth)[["org", "quarter", "level"]]
        table = index[index["segment"] == "all"].merge(truth[["org", "quarter", "panic", "open", "shape"]],
                                                      on=["org", "quarter"], how="inner", validate="one_to_one")
        table = table.merge(oracle.rename(columns={"level": "oracle_level"}), on=["org", "quarter"], how="left",
                            validate="one_to_one")
        frames.append(table[~table["open"]].assign(seed=seed, shape=lambda t: t["shape"].fillna("calm")))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def half_effect():
    return index_runs(HALF_EFFECT, SEEDS)


def rates(runs: pd.DataFrame) -> pd.DataFrame:
    """Per size class and shape: quarters, and the shares at watch or above, at panic, without a level, and the
    oracle index's share at watch or above with the index's ratio to it."""
    flagged = runs.assign(watch_or_above=runs["level"].isin([WATCH, PANIC]), panic_level=runs["level"] == PANIC,
                          no_verdict=runs["level"] == "insufficient data",
                          oracle_watch_or_above=runs["oracle_level"].isin([WATCH, PANIC]))
    table = flagged.groupby(["size_class", "shape"]).agg(
        quarters=("level", "size"), watch_or_above=("watch_or_above", "mean"), panic_level=("panic_level", "mean"),
        no_verdict=("no_verdict", "mean"), oracle_watch_or_above=("oracle_watch_or_above", "mean"))
    return table.assign(ratio=table["watch_or_above"] / table["oracle_watch_or_above"])


def test_the_scenario_halves_today_s_effects():
    assert HALF["qualification_decay"] == pytest.approx(0.175)
    assert HALF["reactive_order_taking"] == pytest.approx(3 ** 0.5)
    assert HALF["month3_bookings_share"] == pytest.approx(0.525)


def test_calm_quarters_rarely_reach_watch_at_half_effect(half_effect):
    print("\npanic index at half effect, seeds 4100-4149, scale small\n" + rates(half_effect).round(3).to_string())
    calm = half_effect[~half_effect["panic"]]
    assert len(calm) >= 600
    assert calm["level"].isin([WATCH, PANIC]).mean() <= 0.05


def goal_met(runs: pd.DataFrame, shape: str) -> bool:
    """Whether >= 80% of the mid-size and enterprise panic quarters of ``shape`` are at watch or above."""
    table = rates(runs).xs(shape, level="shape").loc[["mid", "enterprise"]]
    return bool((table["watch_or_above"] >= 0.80).all())


def test_each_class_has_at_least_50_step_and_50_ramp_panic_quarters(half_effect):
    panic = rates(half_effect).loc[(["mid", "enterprise"], ["step", "ramp"]), "quarters"]
    assert len(panic) == 4 and panic.min() >= 50


# Measured (seeds 4100-4149, the index as of this commit: calm quarters chosen on all components together, the index
# in calm SDs of the composite, a level confirmed by a detector's flag or the detectors' tests combined under BH across
# the organisation's quarters): steps at watch or above in 91.6% of mid-size and 96.8% of enterprise panic quarters
# (panic level 85% / 87%); ramps 52.4% / 68.9% (no verdict, a point at watch nothing confirms, 23% / 4%); calm
# quarters 0.6% (5 of 800). Before (the weighted-mean index, per-component trim, interval and detector gates): steps
# 64.2% / 66.0%, ramps 24.8% / 31.1%, calm 0.1%. Ramps stay short even for the oracle index (below: 61.9% / 80.2%):
# a half-effect ramp's average effect is about half a step's, and the tests, even told the true onset and shape,
# cannot confirm it in a fifth of mid-size quarters.
def test_index_catches_80_percent_of_mid_and_enterprise_step_panic_quarters_at_half_effect(half_effect):
    assert goal_met(half_effect, "step")


@pytest.mark.xfail(strict=True, reason="issue 15 goal not met for ramps: 52.4% mid-size, 68.9% enterprise < 80%; "
                                       "the oracle index reaches 61.9% / 80.2% (seeds 4100-4149)")
def test_index_catches_80_percent_of_mid_and_enterprise_ramp_panic_quarters_at_half_effect(half_effect):
    assert goal_met(half_effect, "ramp")



def share_of_the_oracle(runs: pd.DataFrame, shape: str) -> pd.DataFrame:
    """The mid-size and enterprise rows of :func:`rates` for ``shape``, printed: the index beside the oracle index."""
    table = rates(runs).xs(shape, level="shape").loc[["mid", "enterprise"]]
    print(f"\n{shape}s at watch or above, index vs oracle index, seeds 4100-4149\n"
          + table[["quarters", "watch_or_above", "oracle_watch_or_above", "ratio"]].round(3).to_string())
    return table


# The oracle index (helpers.oracle_index) reads the same findings with the decay and surge findings of each panic
# quarter fitted at the true onset and shape, unadjusted for a search, against the true calm quarters; no real
# index can beat it. Measured (seeds 4100-4149): steps 91.6% / 96.8% (mid-size / enterprise) vs the oracle's
# 96.8% / 100% (ratio 0.95 / 0.97); ramps 52.4% / 68.9% vs 61.9% / 80.2% (0.85 / 0.86). Development seeds
# 9400-9439 (before the discount donut): ramps 61.8% / 82.0% vs 65.2% / 77.5%, steps 91.5% / 93.0% vs 97.2% / 98.6%.
# The oracle itself reaches 80% of mid-size ramps on neither set, so the 80% ramp goal is out of reach of these
# components at this scale.
def test_index_reaches_85_percent_of_the_oracle_index_for_steps(half_effect):
    table = share_of_the_oracle(half_effect, "step")
    assert (table["oracle_watch_or_above"] > 0.5).all()
    assert (table["ratio"] >= 0.85).all()


def test_index_is_not_below_85_percent_of_the_oracle_index_for_ramps(half_effect):
    # Ramps sit at the line (0.85 / 0.86 here, 0.95 / 1.06 on development seeds, 0.84-0.88 before the discount
    # donut): a point ratio would pass or fail on the seeds' luck. The index and the oracle judge the same
    # quarters, so the test is paired: per quarter d = (index at watch+) - 0.85 x (oracle at watch+), and the
    # index falls short of 85% of the oracle only when the mean of d is more than two standard errors below 0.
    # With about 105 ramps per class that catches a class whose ratio falls to about 0.7, and the pooled ~210 one
    # that falls to about 0.75; the point ratios are printed.
    table = share_of_the_oracle(half_effect, "ramp")
    assert (table["oracle_watch_or_above"] > 0.5).all()
    ramps = half_effect[(half_effect["shape"] == "ramp") & half_effect["size_class"].isin(["mid", "enterprise"])]
    d = (ramps["level"].isin([WATCH, PANIC]).astype(float)
         - 0.85 * ramps["oracle_level"].isin([WATCH, PANIC]).astype(float))
    groups = d.groupby(ramps["size_class"]).agg(["mean", "std", "size"])
    groups.loc["pooled"] = [d.mean(), d.std(), len(d)]
    upper = groups["mean"] + 2 * groups["std"] / np.sqrt(groups["size"])
    assert (upper >= 0).all(), groups.assign(upper=upper).round(3).to_dict()
