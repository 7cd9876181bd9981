"""Panic shapes, seller fractions and segments: the data follow the pattern and truth.json states its average.

Every check compares what the generated rows show with what ``truth.json`` says, within 4 standard
errors computed from the counts involved (a correct generator fails one with probability < 1e-4).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quarterpanic.calendar import annotate_by_org
from quarterpanic.errors import ParameterError
from quarterpanic.sample import generate, load_scenario

BANT = ["bant_budget", "bant_authority", "bant_need", "bant_timeline"]
# A strong decay on the two larger orgs only, so shapes show clearly in one small-scale sample.
STRONG = {"panic": {"qualification_decay": 0.45, "reactive_order_taking": 3.0}}


def scenario(**pattern) -> dict:
    return {**STRONG, "pattern": pattern}


def created_deals(sample) -> pd.DataFrame:
    """Deals of complete panic quarters with their creation week, onset, qualification and that quarter's truth."""
    calendars = {org: info["fiscal_calendar"] for org, info in sample.orgs.items()}
    opps = annotate_by_org(sample.tables["opportunities"], "created_at", calendars, prefix="c_")
    truth = sample.truth_frame().rename(columns={"quarter": "c_quarter"})
    opps = opps.merge(truth, on=["org", "c_quarter"], how="left")
    opps = opps[opps["panic"].eq(True) & opps["open"].eq(False)].copy()
    opps["qualified"] = (opps[BANT].astype(int).sum(axis=1) >= 3) & opps["next_step"].fillna("").str.strip().ne("")
    opps["late"] = opps["c_week_of_quarter"] >= opps["onset_week"]
    return opps


def drop_and_se(opps: pd.DataFrame) -> tuple[float, float]:
    late, early = opps.loc[opps["late"], "qualified"], opps.loc[~opps["late"], "qualified"]
    return early.mean() - late.mean(), float(np.sqrt(early.var() / len(early) + late.var() / len(late)))


def truth_drop(opps: pd.DataFrame) -> float:
    """The truth's qualification drop averaged like the data: over late-created deals."""
    return float(opps.loc[opps["late"], "qualification_decay"].mean())


@pytest.fixture(scope="module")
def ramp():
    return generate(scenario(shape="ramp"), seed=21, scale="small")


@pytest.fixture(scope="module")
def fraction():
    return generate(scenario(seller_fraction=0.4), seed=22, scale="small")


def test_step_is_the_default_and_truth_is_the_full_effect():
    truth = generate(seed=4, scale="small").truth_frame()
    panic = truth[truth["panic"]]
    assert (panic["shape"] == "step").all() and (panic["seller_fraction"] == 1.0).all()
    assert (panic["intensity"] == 1.0).all()
    assert truth.loc[~truth["panic"], "shape"].isna().all()


def test_a_ramp_rises_through_the_window_and_truth_states_its_average(ramp):
    opps = created_deals(ramp)
    panic = ramp.truth_frame().query("panic and not open")
    assert (panic["shape"] == "ramp").all() and panic["intensity"].between(0.3, 0.7).all()
    assert np.allclose(panic["qualification_decay"], 0.45 * panic["intensity"], atol=1e-6)
    drop, se = drop_and_se(opps)
    assert abs(drop - truth_drop(opps)) < 4 * se
    # The first half of the window drops less than the second half: the ramp is in the data.
    late = opps[opps["late"]].copy()
    half = (late["c_weeks_in_quarter"] + late["onset_week"]) / 2
    first, second = late[late["c_week_of_quarter"] <= half], late[late["c_week_of_quarter"] > half]
    early_rate = opps.loc[~opps["late"], "qualified"].mean()
    gap = (early_rate - second["qualified"].mean()) - (early_rate - first["qualified"].mean())
    se = np.sqrt(first["qualified"].var() / len(first) + second["qualified"].var() / len(second))
    assert gap > 2 * se, (gap, se)


def test_a_plateau_sits_between_a_ramp_and_a_step():
    plateau = generate(scenario(shape="plateau", ramp_weeks=2), seed=23, scale="small")
    ramp = generate(scenario(shape="ramp"), seed=23, scale="small")
    level = {name: s.truth_frame().query("panic and not open")["intensity"].mean()
             for name, s in (("plateau", plateau), ("ramp", ramp))}
    assert level["ramp"] < level["plateau"] < 1.0
    opps = created_deals(plateau)
    drop, se = drop_and_se(opps)
    assert abs(drop - truth_drop(opps)) < 4 * se


def test_seller_fraction_restricts_the_panic_to_the_sellers_truth_names(fraction):
    opps = created_deals(fraction)
    truth = fraction.truth_frame().query("panic and not open")
    assert (truth["seller_fraction"] == 0.4).all()
    reached = truth.set_index(["org", "quarter"])["sellers_reached"]
    key = list(zip(opps["org"], opps["c_quarter"]))
    opps["reached"] = [owner in reached[k] for owner, k in zip(opps["owner"], key)]
    shares = [len(names) / fraction.tables["opportunities"].query("org == @org")["owner"].nunique()
              for (org, _), names in reached.items()]
    assert 0.2 < np.mean(shares) < 0.6
    for group, expected in ((True, 0.45), (False, 0.0)):
        drop, se = drop_and_se(opps[opps["reached"] == group])
        assert abs(drop - expected) < 4 * se, (group, drop, se)
    drop, se = drop_and_se(opps)
    assert abs(drop - truth_drop(opps)) < 4 * se
    assert truth_drop(opps) < 0.3


def test_spread_reaches_every_seller_by_quarter_end():
    sample = generate(scenario(seller_fraction=0.2, spread=True), seed=24, scale="small")
    truth = sample.truth_frame().query("panic and not open")
    assert all(len(names) == sample.scenario["orgs"][org]["sellers"]
               for org, names in zip(truth["org"], truth["sellers_reached"]))
    assert truth["intensity"].between(0.2, 0.9).all()


def test_requests_surge_by_the_truths_average_ratio(ramp):
    calendars = {org: info["fiscal_calendar"] for org, info in ramp.orgs.items()}
    requests = ramp.tables["requests"]
    requests = annotate_by_org(requests[~requests["planned"]], "created_at", calendars, prefix="c_")
    truth = ramp.truth_frame().rename(columns={"quarter": "c_quarter"})
    requests = requests.merge(truth, on=["org", "c_quarter"]).query("panic and not open")
    for org, rows in requests.groupby("org"):
        late = rows["c_week_of_quarter"] >= rows["onset_week"]
        days = rows.assign(day=rows["created_at"].dt.normalize(), late=late).groupby("late")["day"].nunique()
        log_ratio = np.log((late.sum() / days[True]) / ((~late).sum() / days[False]))
        expected = np.log(rows.loc[late, "reactive_order_taking"]).mean()
        assert abs(log_ratio - expected) < 4 * np.sqrt(1 / late.sum() + 1 / (~late).sum()), org
        assert expected < np.log(3.0) - 0.2  # a ramp's average is well below its peak


def test_segments_confine_the_panic():
    sample = generate({**STRONG, "orgs": {"Globex Corporation": {"panic_quarters": {
        2: {"onset_week": 8, "segments": ["Enterprise"]}, 4: {"onset_week": 9, "segments": ["Enterprise"]}}}}},
        seed=25, scale="small")
    opps = created_deals(sample).query("org == 'Globex Corporation'")
    for inside, expected in ((True, 0.45), (False, 0.0)):
        drop, se = drop_and_se(opps[opps["segment"].eq("Enterprise") == inside])
        assert abs(drop - expected) < 4 * se, (inside, drop)
    truth = sample.truth_frame().query("org == 'Globex Corporation' and panic")
    assert truth["segments"].map(list).tolist() == [["Enterprise"]] * 2
    assert (truth["qualification_decay"] < 0.45).all()


def test_pattern_keys_are_checked():
    with pytest.raises(ParameterError):
        load_scenario({"pattern": {"shape": "zigzag"}})
    with pytest.raises(ParameterError):
        load_scenario({"pattern": {"seller_fraction": 0}})
