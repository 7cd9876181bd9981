"""The qualification-decay detector held to the generator's truth, across many seeds.

Every seed's sample is generated and analysed once (module-scoped fixtures);
each test reads the pooled findings. Flags come from the full pipeline
(:func:`quarterpanic.analysis.detect.detect`: Benjamini–Hochberg across the run).
Only complete quarters are judged, so the open quarter of each sample is
left out.
"""
import numpy as np
import pandas as pd
import pytest

from helpers import bernoulli_dataset
from quarterpanic import sample
from quarterpanic.analysis.detect import detect
from quarterpanic.analysis.features import opportunity_features
from quarterpanic.dataset import Dataset

# 50 seeds: `make test-stats` (and CI) runs these, `make test` leaves them out.
pytestmark = [pytest.mark.slow, pytest.mark.stats]

SEEDS = range(50)
MAIN = "qualification_decay"
# The effects these tests simulate, stated here rather than read from the default scenario (which may
# change): the issue-15 "today's" effects, panics as steps in fixed quarters of the mid-size and
# enterprise organisations, the small studio calm.
TODAY = {
    "panic": {"qualification_decay": 0.35, "win_rate_ratio": 0.5, "discount_uplift": 0.10,
              "last_week_deal_size_change": -0.12, "close_date_push_rate": 0.30, "lead_score_drop": 15.0,
              "stage_skip_rate": 0.35, "last_week_win_rate_change": 0.0},
    "pattern": {"shape": "step", "ramp_weeks": None, "seller_fraction": 1.0, "spread": False, "segments": None},
    "seller_sd": 0.0,
    "confounders": {"q4_volume": 1.0, "month_end_close_share": 0.0},
    "orgs": {"Brightline Studio": {"panic_quarters": {}},
             "Northwind Traders": {"panic_quarters": {0: 9, 2: 10, 4: 8, 5: 9, 8: 10}},
             "Globex Corporation": {"panic_quarters": {1: 9, 3: 8, 4: 10, 6: 9, 9: 8}}},
}


def findings_with_truth(scenario, seeds, scale="small"):
    frames = []
    for seed in seeds:
        generated = sample.generate(scenario, seed=seed, scale=scale)
        data = Dataset.from_tables(generated.tables, generated.orgs, as_of=generated.as_of)
        findings = detect(data, components=[MAIN])
        truth = generated.truth_frame().rename(columns={"onset_week": "true_onset"})
        truth["size_class"] = truth["org"].map({org: info["size_class"] for org, info in generated.orgs.items()})
        merged = findings[findings["segment"] == "all"].merge(truth, on=["org", "quarter"], validate="many_to_one")
        frames.append(merged.assign(seed=seed))
    out = pd.concat(frames, ignore_index=True)
    return out[~out["open"]]


@pytest.fixture(scope="module")
def default_runs():
    return findings_with_truth(TODAY, SEEDS)


@pytest.fixture(scope="module")
def null_runs():
    return findings_with_truth("null", SEEDS)


def main_rows(runs):
    return runs[runs["metric"] == MAIN]


def covers(rows, truth_column):
    return (rows["ci_low"] <= rows[truth_column]) & (rows[truth_column] <= rows["ci_high"])


def test_every_complete_truth_quarter_has_a_main_finding(default_runs):
    main = main_rows(default_runs)
    assert len(main) == main[["seed", "org", "quarter"]].drop_duplicates().shape[0]
    assert main.groupby("seed").size().nunique() == 1


def test_interval_covers_the_true_decay_in_panic_quarters(default_runs):
    main = main_rows(default_runs)
    panic = main[main["panic"] & (main["status"] == "ok")]
    assert len(panic) >= 300
    coverage = covers(panic, MAIN).mean()
    assert 0.90 <= coverage <= 0.99, f"coverage {coverage:.3f} over {len(panic)} panic quarters"


def test_calm_quarters_are_rarely_flagged(default_runs):
    calm = main_rows(default_runs)
    calm = calm[~calm["panic"]]
    false_alarms = calm["flagged"].mean()
    assert false_alarms <= 0.05, f"{false_alarms:.3f} of {len(calm)} calm quarters flagged"


def test_intervals_hold_the_null_in_calm_quarters_as_often_as_they_say(default_runs, null_runs):
    # The interval is simultaneous over the searched onsets and shapes, as the p-value is adjusted for
    # them: an interval at 1.96 se around the chosen onset held 0 in only 85-87% of calm quarters.
    for runs in (default_runs, null_runs):
        calm = main_rows(runs)
        calm = calm[~calm["panic"] & (calm["status"] == "ok")]
        assert len(calm) >= 300
        coverage = covers(calm, MAIN).mean()
        assert 0.93 <= coverage <= 0.97, f"null coverage {coverage:.3f} over {len(calm)} calm quarters"
        # The p-value is one-sided (a drop): the interval lies above 0 exactly when it is below 0.025.
        assert ((calm["ci_low"] > 0) == (calm["p_value"] < 0.025)).all()


def test_nothing_much_is_flagged_when_nothing_happens(null_runs):
    main = main_rows(null_runs)
    assert not main["panic"].any()
    false_alarms = main["flagged"].mean()
    assert false_alarms <= 0.05, f"{false_alarms:.3f} of {len(main)} quarters flagged under the null scenario"
    for metric, rows in null_runs[null_runs["status"] == "ok"].groupby("metric"):
        # A one-sided test calibrated at 5% sits at 5% per calm quarter by design (BH within a family of
        # about ten quarters barely thins it): allow two binomial standard errors, as the reactive test does.
        bound = 0.05 + 2 * np.sqrt(0.05 * 0.95 / len(rows))
        assert rows["flagged"].mean() <= bound, (metric, round(rows["flagged"].mean(), 4), len(rows))


def test_panic_of_mid_and_enterprise_orgs_is_found(default_runs):
    main = main_rows(default_runs)
    panic = main[main["panic"] & main["size_class"].isin(["mid", "enterprise"])]
    assert len(panic) >= 300
    power = panic["flagged"].mean()
    by_org = panic.groupby("org")["flagged"].mean()
    assert power >= 0.90, f"power {power:.3f}; by org {by_org.round(3).to_dict()}"
    # The mid-size org has ~180 new deals a quarter at this scale and 15 sellers: with honest
    # few-cluster inference (t with sellers - 1 df) it was found in 85% of its panic quarters while
    # the onset search cost a Bonferroni factor of 8; the max-T correction brings it to 90%.
    assert by_org.min() >= 0.90, by_org.round(3).to_dict()


def test_calm_quarters_with_few_sellers_stay_calibrated():
    # Seller-clustered errors from 12 sellers are noisy; normal quantiles would flag ~8% of these
    # calm quarters at the 5% level (t quantiles with 11 df keep the onset-corrected test valid).

    from quarterpanic.analysis import qualification

    p_values = []
    for seed in range(40):
        data = bernoulli_dataset(seed=seed, per_quarter=800, panic=(), quarters=4, owners=12)
        p_values.append(qualification.decay_findings(opportunity_features(data))["p_value"])
    p_values = pd.concat(p_values)
    assert len(p_values) == 160
    assert (p_values < 0.05).mean() <= 0.05 and (p_values < 0.01).mean() <= 0.02


def test_onset_is_found_within_a_week(default_runs):
    main = main_rows(default_runs)
    panic = main[main["panic"] & (main["status"] == "ok")]
    off_by = (panic["onset_week"].astype(float) - panic["true_onset"].astype(float)).abs()
    assert (off_by <= 1).mean() >= 0.80, f"within one week in {(off_by <= 1).mean():.3f}"


def test_thin_quarters_say_insufficient_data_instead_of_flagging(default_runs):
    main = main_rows(default_runs)
    # min_n = 20 on each side of the onset: a quarter of fewer than 40 deals cannot have a verdict.
    thin = main[main["n"] < 40]
    assert len(thin) >= 100
    assert (thin["status"] == "insufficient data").all()
    assert not thin["flagged"].any() and thin["p_value"].isna().all() and thin["estimate"].isna().all()
    ok = main[main["status"] == "ok"]
    assert ((ok["n_before"] >= 20) & (ok["n_after"] >= 20)).all()
    # The small studio (~36 deals a quarter at this scale) is almost never judged, and the few quarters
    # judged are flagged no more often than the one-sided 5% test allows (1 of 19 in these seeds).
    studio = main[main["size_class"] == "small"]
    assert (studio["status"] == "insufficient data").mean() >= 0.9
    judged = studio[studio["status"] == "ok"]
    assert judged["flagged"].mean() <= 0.05 + 2 * (0.05 * 0.95 / len(judged)) ** 0.5


def test_a_tiny_panicking_org_is_insufficient_not_flagged():
    tiny = {**TODAY, "orgs": {**TODAY["orgs"], "Northwind Traders": {
        **TODAY["orgs"]["Northwind Traders"], "opportunities_per_quarter": 40}}}
    runs = findings_with_truth(tiny, range(5))
    main = main_rows(runs)
    tiny_panic = main[(main["org"] == "Northwind Traders") & main["panic"]]
    assert len(tiny_panic) >= 15
    assert (tiny_panic["status"] == "insufficient data").all()
    assert not tiny_panic["flagged"].any() and tiny_panic["estimate"].isna().all()


@pytest.mark.parametrize(
    "metric, tolerance",
    [
        ("win_rate_ratio", 0.08),
        ("discount_uplift", 0.015),
        ("last_week_deal_size_change", 0.05),
        ("close_date_push_rate", 0.04),
        ("lead_score_drop", 1.5),
        ("stage_skip_rate", 0.04),
    ],
)
def test_outcome_metrics_match_their_truth_on_average(default_runs, metric, tolerance):
    rows = default_runs[(default_runs["metric"] == metric) & (default_runs["status"] == "ok")]
    for panic, group in rows.groupby("panic"):
        assert len(group) >= 100, (metric, panic)
        gap = group["estimate"].mean() - group[metric].mean()
        assert abs(gap) <= tolerance, f"{metric} panic={panic}: mean estimate off truth by {gap:.3f}"
        coverage = covers(group, metric).mean()
        assert 0.85 <= coverage <= 0.995, f"{metric} panic={panic}: coverage {coverage:.3f}"
    calm = rows[~rows["panic"]]
    assert calm["flagged"].mean() <= 0.05, metric
