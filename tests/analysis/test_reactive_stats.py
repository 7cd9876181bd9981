"""The reactive order-taking surge estimate held to the generator's truth, across many seeds.

Each seed's sample is generated and analysed once (module-scoped fixtures);
every test reads the pooled main findings. Only the main metric is computed
(``analyse_reactive(..., secondary=False)``): Benjamini–Hochberg runs per
metric, so its flags are the ones the full detector would set. The open
quarter of each sample is never judged and is left out.

Truth: unplanned requests arrive as a Poisson process on working days; in a
panic quarter the daily rate is multiplied by ``reactive_order_taking`` from the
onset week on (3 here: the effect these tests state, :data:`SCENARIO`, whatever the
default scenario's). truth.json's ``after_hours_shift`` is what the detector's
``after_hours_shift`` estimates (the late window's after-hours share minus the same
quarter's earlier weeks'; 0 in calm quarters), measured here with :func:`share_change`
at the detector's window (the full detector computes it the same way).
"""
import pandas as pd
import pytest

from quarterpanic import sample
from quarterpanic.analysis.reactive import COMPONENT, analyse_reactive, share_change
from quarterpanic.dataset import Dataset

# 50 seeds: `make test-stats` (and CI) runs these, `make test` leaves them out.
pytestmark = [pytest.mark.slow, pytest.mark.stats]

SEEDS = range(50)
# The effects these tests simulate: the default scenario with a 3x surge (its own size may change).
SCENARIO = {"name": "surge-3x", "panic": {"reactive_order_taking": 3.0}}


def main_findings_with_truth(scenario, seeds, scale="small"):
    frames = []
    for seed in seeds:
        generated = sample.generate(scenario, seed=seed, scale=scale)
        data = Dataset.from_tables(generated.tables, generated.orgs, as_of=generated.as_of)
        analysis = analyse_reactive(data, secondary=False)
        findings = analysis.findings
        truth = generated.truth_frame().rename(columns={"onset_week": "true_onset", COMPONENT: "true_ratio"})
        truth["size_class"] = truth["org"].map({org: info["size_class"] for org, info in generated.orgs.items()})
        truth = truth.rename(columns={"after_hours_shift": "true_after_hours_shift"})
        after_hours = share_change(analysis.requests, flag="is_after_hours", cluster="requester")
        after_hours = after_hours[["org", "quarter", "estimate", "ci_low", "ci_high", "status"]].rename(
            columns=lambda c: c if c in ("org", "quarter") else f"after_hours_{c}")
        merged = (findings[findings["metric"] == COMPONENT]
                  .merge(truth, on=["org", "quarter"], validate="one_to_one")
                  .merge(after_hours, on=["org", "quarter"], how="left"))
        frames.append(merged.assign(seed=seed))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def default_runs():
    return main_findings_with_truth(SCENARIO, SEEDS)


@pytest.fixture(scope="module")
def null_runs():
    return main_findings_with_truth("null", SEEDS)


def test_only_complete_quarters_are_judged_and_nearly_all_have_enough_data(default_runs):
    assert not default_runs["open"].any()
    assert (default_runs["status"] == "ok").mean() >= 0.95


def test_interval_covers_the_true_rate_ratio_in_panic_quarters(default_runs):
    panic = default_runs[default_runs["panic"] & (default_runs["status"] == "ok")]
    assert len(panic) >= 300
    covered = (panic["ci_low"] <= panic["true_ratio"]) & (panic["true_ratio"] <= panic["ci_high"])
    assert 0.90 <= covered.mean() <= 0.99, f"coverage {covered.mean():.3f} over {len(panic)} panic quarters"


def test_calm_quarters_are_rarely_flagged(default_runs):
    calm = default_runs[~default_runs["panic"]]
    assert len(calm) >= 500
    assert calm["flagged"].mean() <= 0.05, f"{calm['flagged'].mean():.3f} of {len(calm)} calm quarters flagged"


def test_nothing_much_is_flagged_when_nothing_happens(null_runs):
    assert not null_runs["panic"].any()
    assert null_runs["flagged"].mean() <= 0.05, f"{null_runs['flagged'].mean():.3f} of {len(null_runs)} flagged"
    # Calm estimates centre on no change (the onset search pushes them a little above 1).
    assert 0.95 <= null_runs["estimate"].median() <= 1.35


def test_search_corrected_p_values_are_calibrated_in_calm_quarters(default_runs, null_runs):
    # Flags are diluted by Benjamini-Hochberg; the p-values themselves must hold their level. The
    # onset search is paid for by max-T: a Bonferroni factor of 8 left only ~3% of these below 0.05.
    calm = pd.concat([default_runs[~default_runs["panic"]], null_runs])
    p_values = calm.loc[calm["status"] == "ok", "p_value"]
    assert len(p_values) >= 1500
    assert 0.035 <= (p_values <= 0.05).mean() <= 0.065, (p_values <= 0.05).mean()
    assert (p_values <= 0.01).mean() <= 0.02, (p_values <= 0.01).mean()


def test_mid_size_and_enterprise_surges_are_found(default_runs):
    panic = default_runs[default_runs["panic"] & default_runs["size_class"].isin(["mid", "enterprise"])]
    power = panic.groupby("size_class")["flagged"].mean()
    assert set(power.index) == {"mid", "enterprise"}
    assert (power >= 0.90).all(), power.to_dict()


def test_onset_is_found_within_a_week(default_runs):
    panic = default_runs[default_runs["panic"] & (default_runs["status"] == "ok")]
    within = (panic["onset_week"].astype(float) - panic["true_onset"]).abs() <= 1
    assert within.mean() >= 0.80, f"onset within ±1 week in {within.mean():.3f}"


def test_after_hours_shift_interval_covers_the_true_shift(default_runs):
    judged = default_runs[(default_runs["status"] == "ok") & (default_runs["after_hours_status"] == "ok")]
    truth = judged["true_after_hours_shift"]
    covered = (judged["after_hours_ci_low"] <= truth) & (truth <= judged["after_hours_ci_high"])
    by_kind = covered.groupby(judged["panic"]).mean()
    assert 0.90 <= by_kind[True] <= 0.99, f"coverage in panic quarters {by_kind[True]:.3f}"
    assert by_kind[False] >= 0.90, f"coverage of no change in calm quarters {by_kind[False]:.3f}"
