"""The outcome metrics' power and false alarms, measured over generator seeds no other test uses.

Each secondary metric either finds at least :data:`~quarterpanic.analysis.findings.WEAK_POWER` of the panic
quarters of the mid-size and enterprise organisations, or is registered as a weak test (whose unflagged
findings the pages say are no sign of calm): the test fails when a metric's label and its measured power
disagree, either way. The effects are stated here (not taken from the default scenario), at the literature's
values or the middle of the ``realistic`` scenario's ranges: qualification decay 20 points (10-30), discount
+10 points (Larkin 2014: 8-12), last-week deal size -12% and a last-week win rate 40% lower keyed to the close
date (InsideSales 2017: about -51% on the last day), win rate of late-created deals x0.75 (0.6-0.9), lead score
-10 (5-15), stage skips 20% (10-30%), and close-date pushes 22.5% of due deals in a panic against 5% calm
(15-30%).
"""
import numpy as np
import pandas as pd
import pytest

from quarterpanic import sample
from quarterpanic.analysis import outcomes
from quarterpanic.analysis.detect import detect
from quarterpanic.analysis.findings import METRICS, WEAK_POWER
from quarterpanic.dataset import Dataset

pytestmark = [pytest.mark.slow, pytest.mark.stats]

SEEDS = range(3000, 3050)
CALM_PUSH_RATE = 0.05
SCENARIO = {
    "panic": {"qualification_decay": 0.20, "win_rate_ratio": 0.75, "discount_uplift": 0.10,
              "last_week_deal_size_change": -0.12, "last_week_win_rate_change": -0.4, "lead_score_drop": 10.0,
              "stage_skip_rate": 0.20, "close_date_push_rate": 0.225},
    "calm": {"close_date_push_rate": CALM_PUSH_RATE},
    # One script, pinned: steps reaching every seller in known quarters, no confounders.
    "pattern": {"shape": "step", "ramp_weeks": None, "seller_fraction": 1.0, "spread": False, "segments": None},
    "seller_sd": 0.0,
    "confounders": {"q4_volume": 1.0, "month_end_close_share": 0.0},
    "orgs": {"Northwind Traders": {"panic_quarters": {0: 9, 2: 10, 4: 8, 5: 9, 8: 10}},
             "Globex Corporation": {"panic_quarters": {1: 9, 3: 8, 4: 10, 6: 9, 9: 8}}},
}
TESTED = [m for m in outcomes.ONSET_METRICS + outcomes.QUARTER_END_METRICS if METRICS[m].null == METRICS[m].null]


@pytest.fixture(scope="module")
def runs():
    frames = []
    for seed in SEEDS:
        generated = sample.generate(SCENARIO, seed=seed, scale="small")
        data = Dataset.from_tables(generated.tables, generated.orgs, as_of=generated.as_of)
        findings = detect(data, components=["qualification_decay"])
        truth = generated.truth_frame()[["org", "quarter", "panic", "open", "close_date_push_rate",
                                         "last_week_deal_size_change"]]
        # The push excess's truth: the quarter's post-onset push rate minus the calm rate.
        truth["true_push_excess"] = truth.pop("close_date_push_rate") - CALM_PUSH_RATE
        truth["true_last_week_size"] = truth.pop("last_week_deal_size_change")
        truth["size_class"] = truth["org"].map({org: info["size_class"] for org, info in generated.orgs.items()})
        merged = findings[findings["segment"] == "all"].merge(truth, on=["org", "quarter"], validate="many_to_one")
        frames.append(merged.assign(seed=seed))
    out = pd.concat(frames, ignore_index=True)
    return out[~out["open"] & out["size_class"].isin(["mid", "enterprise"])]


def power_table(runs: pd.DataFrame) -> pd.DataFrame:
    rows = runs[runs["metric"].isin(TESTED)]
    return rows.groupby(["metric", "panic"])["flagged"].agg(["mean", "size"]).unstack("panic")


@pytest.mark.parametrize("metric", TESTED)
def test_a_metric_is_called_weak_exactly_when_it_misses_panic_quarters(runs, metric):
    panic = runs[(runs["metric"] == metric) & runs["panic"]]
    assert len(panic) >= 200, metric
    power = panic["flagged"].mean()
    table = power_table(runs).to_string()
    by_class = panic.groupby("size_class")["flagged"].mean().round(3).to_dict()
    print(f"\n{metric}: flagged in {power:.3f} of {len(panic)} panic quarters {by_class}")
    assert METRICS[metric].weak_test == (power < WEAK_POWER), f"{metric}: power {power:.3f}\n{table}"


@pytest.mark.parametrize("metric", TESTED)
def test_calm_quarters_are_rarely_flagged_on_any_outcome_metric(runs, metric):
    calm = runs[(runs["metric"] == metric) & ~runs["panic"] & (runs["status"] == "ok")]
    assert len(calm) >= 150, metric
    assert calm["flagged"].mean() <= 0.05, f"{metric}: {calm['flagged'].mean():.3f} of {len(calm)} calm quarters"


def test_pushes_are_tested_against_the_calm_rate_and_the_level_is_never_flagged(runs):
    rate = runs[(runs["metric"] == "close_date_push_rate") & (runs["status"] == "ok")]
    assert len(rate) >= 300 and rate["p_value"].isna().all() and not rate["flagged"].any()
    excess = push_excess(runs)
    calm, panic = excess[~excess["panic"]], excess[excess["panic"]]
    # Calm quarters push at the calm rate: their excess sits near 0 (not below it, as against every other
    # quarter, panicking ones included), never at the 5% a test against 0 would read as panic. Trimming the calm
    # set's high tail (a handful of due deals makes it long) lowers the calm rate by about a point; the
    # p-values still hold their level (below).
    assert abs(calm["estimate"].mean()) < 0.02 < panic["estimate"].mean() - 0.1
    assert abs(calm["reference"].mean() - CALM_PUSH_RATE) < 0.02
    assert (calm["direction"] == "toward panic").mean() <= 0.05


def push_excess(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[(runs["metric"] == "close_date_push_excess") & (runs["status"] == "ok")]


def test_push_excess_p_values_hold_their_level_in_calm_quarters(runs):
    calm = push_excess(runs)
    calm = calm[~calm["panic"]]
    assert len(calm) >= 300
    for level in (0.01, 0.05, 0.10):
        rate = (calm["p_value"] < level).mean()
        print(f"calm push excess p < {level}: {rate:.3f} of {len(calm)}")
        assert rate <= level + 2 * np.sqrt(level * (1 - level) / len(calm)), f"p < {level}: {rate:.3f}"


def test_push_excess_finds_panic_quarters(runs):
    panic = push_excess(runs)
    panic = panic[panic["panic"]]
    power = panic.groupby("size_class")["p_value"].apply(lambda p: (p < 0.05).mean())
    print(f"\npush excess: share of panic quarters with p < 0.05\n{power.round(3)}")
    # A 17.5-point excess over a few dozen due deals: nearly always found in an enterprise, mostly in a mid-size firm.
    assert (panic["p_value"] < 0.05).mean() >= WEAK_POWER and power["enterprise"] >= 0.9, power.round(3).to_dict()


def test_push_excess_interval_covers_the_true_excess_over_the_calm_rate(runs):
    excess = push_excess(runs)
    covered = (excess["ci_low"] <= excess["true_push_excess"]) & (excess["true_push_excess"] <= excess["ci_high"])
    coverage = covered.groupby(excess["panic"]).mean()
    print(f"\npush excess: coverage of the truth in calm (False) and panic (True) quarters\n{coverage.round(3)}")
    assert 0.90 <= coverage[True] <= 0.99 and coverage[False] >= 0.93, coverage.round(3).to_dict()
    panic = excess[excess["panic"]]
    gap = (panic["estimate"] - panic["true_push_excess"]).mean()
    assert abs(gap) < 3 * panic["estimate"].std() / np.sqrt(len(panic)) + 0.01, f"mean error {gap:.3f}"


def test_last_week_win_rate_measures_the_drop_keyed_to_the_close_date_though_weakly(runs):
    rows = runs[(runs["metric"] == "last_week_win_rate_ratio") & (runs["status"] == "ok")]
    log_ratio = np.log(rows["estimate"])
    calm, panic = log_ratio[~rows["panic"]], log_ratio[rows["panic"]]
    # Each quarter's last week holds a few dozen closed deals, too few to flag a 40% drop in one quarter
    # (hence weak_test), but across quarters the estimates sit where the drop puts them and calm ones at 1.
    gap = panic.mean() - calm.mean()
    se = np.sqrt(panic.var() / len(panic) + calm.var() / len(calm))
    assert gap + 3 * se < 0, f"log ratio panic - calm {gap:.3f} (se {se:.3f})"
    assert abs(calm.median()) < 3 * calm.std() / np.sqrt(len(calm)) + 0.05
    assert METRICS["last_week_win_rate_ratio"].weak_test


def test_last_week_deal_size_is_unbiased_on_the_log_scale_with_the_close_date_win_rate_drop(runs):
    """The close-date win-rate drop (-40% here) makes no size difference in calm quarters, and the estimate shows none.

    The estimate exp(b) - 1 is median-unbiased: b is unbiased for the log change, so the relative estimates
    average exp(se^2/2) - 1 above the truth (about 3 points at a quarter's se of 0.2-0.25; that, not a
    selection of deal sizes by the win-rate drop, is the calm quarters' mean of a few points above 0).
    """
    rows = runs[(runs["metric"] == "last_week_deal_size_change") & (runs["status"] == "ok")]
    for panic, group in rows.groupby("panic"):
        assert len(group) >= 300, panic
        error = np.log1p(group["estimate"]) - np.log1p(group["true_last_week_size"])
        covered = ((group["ci_low"] <= group["true_last_week_size"])
                   & (group["true_last_week_size"] <= group["ci_high"])).mean()
        print(f"\nlast-week deal size, panic={panic}: log-scale error {error.mean():+.4f} "
              f"(se {error.std() / np.sqrt(len(error)):.4f}), coverage {covered:.3f} of {len(group)}")
        assert abs(error.mean()) < 3 * error.std() / np.sqrt(len(error)), f"panic={panic}: {error.mean():+.4f}"
        # Issue 15's band for a 95% interval, allowing two binomial standard errors at this many quarters.
        slack = 2 * np.sqrt(0.95 * 0.05 / len(group))
        assert 0.93 - slack <= covered <= 0.97 + slack, f"panic={panic}: coverage {covered:.3f}"
