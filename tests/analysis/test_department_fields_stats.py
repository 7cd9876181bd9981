"""Department-owned deal fields missing at close, held to the generator's truth across 30 seeds.

Each seed's sample is generated and analysed once (a module-scoped fixture). The
scenario states its own effect (:data:`SCENARIO`): the mid-size organisation
(600 deals a quarter) misses each of legal's, finance's and delivery's fields on
8% of won deals, and on 22% of those won in the last four weeks of a panic
quarter (:mod:`quarterpanic.sample.department_fields`). Truth
(``truth["department_fields"]``): late minus early, 14 points per department and
``0.92^3 - 0.78^3`` (30 points) for any department in a panic quarter, 0 in a calm
one. The open quarter is never judged.
"""
import pytest

from helpers import truth_section_runs
from quarterpanic.analysis.department_fields import COMPONENT, DEPARTMENT_METRIC, analyse_department_fields
from quarterpanic.analysis.findings import apply_fdr

pytestmark = [pytest.mark.slow, pytest.mark.stats]

SEEDS = range(5000, 5030)
METRICS = (COMPONENT, DEPARTMENT_METRIC)
SCENARIO = {"orgs": {"Northwind Traders": {"opportunities_per_quarter": 600,
                                           "department_fields": {"missing": 0.08, "missing_late": 0.22}}}}


@pytest.fixture(scope="module")
def runs():
    return truth_section_runs(SCENARIO, SEEDS, lambda data: apply_fdr(analyse_department_fields(data)),
                              "department_fields", METRICS, validate="many_to_one")


def test_complete_quarters_only_and_nearly_all_judged(runs):
    assert not runs["open"].any()
    assert (runs["status"] == "ok").mean() >= 0.95


@pytest.mark.parametrize("metric", METRICS)
def test_interval_covers_the_true_difference(runs, metric):
    rows = runs[(runs["metric"] == metric) & (runs["status"] == "ok")]
    assert len(rows) >= 200
    for panic, group in rows.groupby("panic"):
        covered = (group["ci_low"] <= group["truth"]) & (group["truth"] <= group["ci_high"])
        assert covered.mean() >= 0.90, f"{metric} (panic={panic}): coverage {covered.mean():.3f} over {len(group)}"


def test_found_where_injected_and_not_where_not(runs):
    rows = runs[(runs["metric"] == COMPONENT) & (runs["status"] == "ok")]
    panic, calm = rows[rows["panic"]], rows[~rows["panic"]]
    assert (panic["p_value"] < 0.05).mean() >= 0.8, f"found in {(panic['p_value'] < 0.05).mean():.2f} of panic quarters"
    assert panic["flagged"].mean() >= 0.7, f"flagged in {panic['flagged'].mean():.2f} of panic quarters"
    assert (calm["p_value"] < 0.05).mean() <= 0.10
    assert calm["flagged"].mean() <= 0.05


def test_each_department_points_the_right_way(runs):
    rows = runs[(runs["metric"] == DEPARTMENT_METRIC) & (runs["status"] == "ok")]
    by_department = rows.groupby(["department", "panic"])["estimate"].mean().unstack()
    assert set(by_department.index) == {"legal", "finance", "delivery"}
    # Each department's mean estimate sits near its truth: 14 points in panic quarters, none in calm ones.
    truth = rows.groupby("panic")["truth"].first()
    assert (by_department[True] - truth[True]).abs().max() < 0.04
    assert by_department[False].abs().max() < 0.03
    calm = rows[~rows["panic"]]
    assert (calm["p_value"] < 0.05).mean() <= 0.10
