"""Bookings back-loading held to the generator's truth across seeds no other test uses.

The generator pulls won deals into month 3 in panic quarters so that the expected
month-3 share of won amount is ``month3_bookings_share``; calm quarters keep their
own natural hockey stick (recorded in truth.json too). The level's interval must
cover that truth; the main verdict compares a quarter with the organisation's other
quarters, so calm quarters' natural hockey stick must not be flagged.
"""
import pandas as pd
import pytest

from quarterpanic import sample
from quarterpanic.analysis.backloading import detect_bookings_backloading
from quarterpanic.dataset import Dataset

pytestmark = [pytest.mark.slow, pytest.mark.stats]

SEEDS = range(300, 330)


def runs(scenario, seeds):
    frames = []
    for seed in seeds:
        generated = sample.generate(scenario, seed=seed, scale="small")
        data = Dataset.from_tables(generated.tables, generated.orgs, as_of=generated.as_of)
        findings = detect_bookings_backloading(data)
        truth = generated.truth_frame()
        merged = findings.merge(truth, on=["org", "quarter"], how="left", validate="many_to_one")
        frames.append(merged.assign(seed=seed))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def default_runs():
    return runs(None, SEEDS)


def test_month3_share_interval_covers_the_truth(default_runs):
    level = default_runs[(default_runs["metric"] == "month3_bookings_share") & (default_runs["status"] == "ok")]
    assert len(level) > 200
    covered = (level["ci_low"] <= level["month3_bookings_share"]) & (level["month3_bookings_share"] <= level["ci_high"])
    assert covered.mean() >= 0.90, covered.mean()


def test_calm_quarters_are_rarely_flagged_and_panic_quarters_stand_out(default_runs):
    main = default_runs[(default_runs["metric"] == "bookings_backloading") & (default_runs["status"] == "ok")]
    calm = main[~main["panic"].astype(bool)]
    panic = main[main["panic"].astype(bool)]
    assert len(calm) > 100 and len(panic) > 50
    # Against the organisation's own quarters calm quarters are rarely flagged, panic quarters far more often.
    assert calm["flagged"].mean() <= 0.05, calm["flagged"].mean()
    assert panic["flagged"].mean() >= 3 * max(calm["flagged"].mean(), 0.02), panic["flagged"].mean()
    assert (panic["estimate"].mean() - calm["estimate"].mean()) > 0.1


def test_judged_quarters_are_complete_and_covered(default_runs):
    judged = default_runs[default_runs["status"] == "ok"]
    assert not judged["open"].astype(bool).any()
    assert judged["quarter_complete"].astype(bool).all()
