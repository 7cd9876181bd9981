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
"""
import pandas as pd
import pytest

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
    """The org-wide index of every complete quarter of every seed, with the generator's truth and shape."""
    frames = []
    for seed in seeds:
        generated = sample.generate(scenario, seed=seed, scale="small")
        data = Dataset.from_tables(generated.tables, generated.orgs, as_of=generated.as_of)
        _, index = index_from_findings(detect(data), None, data)
        truth = generated.truth_frame()[["org", "quarter", "panic", "open", "shape"]]
        table = index[index["segment"] == "all"].merge(truth, on=["org", "quarter"], how="inner",
                                                      validate="one_to_one")
        frames.append(table[~table["open"]].assign(seed=seed, shape=lambda t: t["shape"].fillna("calm")))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def half_effect():
    return index_runs(HALF_EFFECT, SEEDS)


def rates(runs: pd.DataFrame) -> pd.DataFrame:
    """Per size class and shape: quarters, and the shares at watch or above, at panic, without a level."""
    flagged = runs.assign(watch_or_above=runs["level"].isin([WATCH, PANIC]), panic_level=runs["level"] == PANIC,
                          no_verdict=runs["level"] == "insufficient data")
    return flagged.groupby(["size_class", "shape"]).agg(
        quarters=("level", "size"), watch_or_above=("watch_or_above", "mean"), panic_level=("panic_level", "mean"),
        no_verdict=("no_verdict", "mean"))


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
# the organisation's quarters): steps at watch or above in 91.6% of mid-size and 97.9% of enterprise panic quarters
# (panic level 86% / 87%); ramps 54.3% / 67.0% (no verdict, a point at watch nothing confirms, 20% / 3%); calm
# quarters 0.6% (5 of 800: one mid-size, one enterprise, three small-firm quarters). Before (the weighted-mean index,
# per-component trim, interval and detector gates): steps 64.2% / 66.0%, ramps 24.8% / 31.1%, calm 0.1%. Ramps stay
# short because the step-shaped detectors understate a ramp and rarely flag it alone (development seeds 9100-9169:
# the point reaches watch in 64% of mid-size ramps), and half-effect panic quarters, about one total SD above calm on each
# component, still enter an organisation's baseline when it panics in half its quarters.
def test_index_catches_80_percent_of_mid_and_enterprise_step_panic_quarters_at_half_effect(half_effect):
    assert goal_met(half_effect, "step")


@pytest.mark.xfail(strict=True, reason="issue 15 goal not met for ramps: 54.3% mid-size, 67.0% enterprise < 80%")
def test_index_catches_80_percent_of_mid_and_enterprise_ramp_panic_quarters_at_half_effect(half_effect):
    assert goal_met(half_effect, "ramp")
