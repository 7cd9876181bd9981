"""False alarms under the default false-discovery family (one organisation × metric), on the null scenario.

Nothing panics, so every flag is false. Per quarter, a main component flags at most ``alpha`` of the quarters;
per family (one organisation's quarters of one main metric in one run), Benjamini–Hochberg under the complete
null is a family-wise bound, so at most ``alpha`` of the families hold any flag; per run, at most the union of
its families. Seeds no other test uses.
"""
import pandas as pd
import pytest
from scipy import stats

from quarterpanic import sample
from quarterpanic.analysis.detect import detect
from quarterpanic.dataset import Dataset
from quarterpanic.params import DEFAULTS

pytestmark = [pytest.mark.slow, pytest.mark.stats]

SEEDS = range(3050, 3080)
MAIN = ["qualification_decay", "reactive_order_taking"]
ALPHA = float(DEFAULTS["alpha"])


@pytest.fixture(scope="module")
def null_runs():
    frames = []
    for seed in SEEDS:
        generated = sample.generate("null", seed=seed, scale="small")
        data = Dataset.from_tables(generated.tables, generated.orgs, as_of=generated.as_of)
        findings = detect(data, components=MAIN)
        complete = generated.truth_frame().loc[lambda t: ~t["open"], ["org", "quarter"]]
        main = findings[findings["metric"].isin(MAIN) & (findings["segment"] == "all")]
        frames.append(main.merge(complete, on=["org", "quarter"]).assign(seed=seed))
    return pd.concat(frames, ignore_index=True)


def upper_bound(rate: float, n: int) -> float:
    """The share a true ``rate`` stays under in 99% of ``n`` trials: the sampling slack of an observed rate."""
    return stats.binom.ppf(0.99, n, rate) / n


@pytest.mark.parametrize("metric", MAIN)
def test_per_quarter_false_alarm_rate_is_at_most_alpha(null_runs, metric):
    tested = null_runs[(null_runs["metric"] == metric) & null_runs["p_value"].notna()]
    assert len(tested) >= 300
    rate = tested["flagged"].mean()
    assert rate <= upper_bound(ALPHA, len(tested)), f"{metric}: {rate:.3f} of {len(tested)} quarters flagged"


def test_per_family_false_alarm_rate_is_at_most_alpha(null_runs):
    tested = null_runs[null_runs["p_value"].notna()]
    families = tested.groupby(["seed", "org", "metric"])["flagged"].any()
    assert len(families) >= 100
    rate = families.mean()
    assert rate <= upper_bound(ALPHA, len(families)), f"{rate:.3f} of {len(families)} families hold a flag"


def test_per_run_false_alarm_rate_is_at_most_the_union_of_its_families(null_runs):
    tested = null_runs[null_runs["p_value"].notna()]
    per_run = tested.groupby("seed").agg(flagged=("flagged", "any"))
    families_per_run = tested.groupby("seed").apply(lambda rows: rows[["org", "metric"]].drop_duplicates().shape[0])
    bound = min(1.0, ALPHA * families_per_run.mean())
    rate = per_run["flagged"].mean()
    assert rate <= upper_bound(bound, len(per_run)), f"{rate:.3f} of {len(per_run)} runs flag a quarter"
