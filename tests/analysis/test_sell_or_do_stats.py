"""Sell or do held to the generator's truth across seeds no other test uses.

The realistic scenario makes Brightline Studio (small) create new deals at
``creation_ratio`` × its rate for ``weeks`` weeks after each win of at least
``min_amount`` (``truth["sell_or_do"]``), and at its ``quarter_end_creation_dip``
factor in the last weeks of every quarter; Northwind Traders (mid) has neither.
Intervals must cover the stated relative change in at least 90% of seeds; the
stop must be found where injected and not where not.
"""
import pandas as pd
import pytest

from quarterpanic import sample
from quarterpanic.analysis import sell_or_do
from quarterpanic.dataset import Dataset

pytestmark = [pytest.mark.slow, pytest.mark.stats]

SEEDS = range(6000, 6030)
SMALL, MID = "Brightline Studio", "Northwind Traders"


@pytest.fixture(scope="module")
def runs():
    rows = []
    for seed in SEEDS:
        generated = sample.generate("realistic", seed=seed, scale="small")
        data = Dataset.from_tables(generated.tables, generated.orgs, as_of=generated.as_of)
        (stated,) = [t for t in generated.truth["sell_or_do"] if t["org"] == SMALL]
        dip = generated.scenario["orgs"][SMALL]["quarter_end_creation_dip"]
        small = sell_or_do.detect_sell_or_do(data, {"orgs": [SMALL], "large_win_amount": stated["min_amount"],
                                                    "large_win_weeks": int(stated["weeks"]),
                                                    "crunch_weeks": int(dip["weeks"])})
        truth = {sell_or_do.COMPONENT: stated["creation_ratio"] - 1, sell_or_do.CRUNCH: float(dip["factor"]) - 1}
        rows.append(small.assign(truth=small["metric"].map(truth), seed=seed))
        mid = sell_or_do.detect_sell_or_do(data, {"orgs": [MID]})
        rows.append(mid.assign(truth=0.0, seed=seed))
    frame = pd.concat(rows, ignore_index=True)
    return frame[frame["metric"].isin([sell_or_do.COMPONENT, sell_or_do.CRUNCH])]


def rows_of(runs, org, metric):
    return runs[(runs["org"] == org) & (runs["metric"] == metric)]


def coverage(rows):
    return ((rows["ci_low"] <= rows["truth"]) & (rows["truth"] <= rows["ci_high"])).mean()


@pytest.mark.parametrize("metric", [sell_or_do.COMPONENT, sell_or_do.CRUNCH])
def test_the_small_firms_stop_is_found_and_its_interval_covers_the_truth(runs, metric):
    rows = rows_of(runs, SMALL, metric)
    assert len(rows) == len(SEEDS) and (rows["status"] == "ok").all()
    assert coverage(rows) >= 0.9
    assert rows["flagged"].mean() >= 0.7


@pytest.mark.parametrize("metric", [sell_or_do.COMPONENT, sell_or_do.CRUNCH])
def test_a_firm_that_keeps_selling_is_rarely_flagged_and_covered(runs, metric):
    rows = rows_of(runs, MID, metric)
    assert len(rows) == len(SEEDS) and (rows["status"] == "ok").all()
    assert coverage(rows) >= 0.9
    assert rows["flagged"].mean() <= 0.1
