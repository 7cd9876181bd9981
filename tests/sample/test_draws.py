"""Scenario values drawn per seed, the close-date keyed win-rate drop, and calm confounders.

Statistical checks allow 4 standard errors computed from the counts involved.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quarterpanic.calendar import annotate_by_org
from quarterpanic.errors import ParameterError
from quarterpanic.sample import generate, load_scenario
from quarterpanic.sample.scenario import draw

DRAWN = {
    "panic": {"qualification_decay": {"uniform": [0.10, 0.30]}, "reactive_order_taking": {"uniform": [1.5, 3.0]},
              "last_week_win_rate_change": {"uniform": [-0.5, -0.3]}},
    "pattern": {"shape": {"choice": ["step", "ramp", "plateau"]}},
    "orgs": {"Northwind Traders": {"panic_quarters": {"draw": {"probability": 0.5, "onset_week": {"integers": [8, 11]}}}},
             "Globex Corporation": {"panic_quarters": {"draw": {"count": 3}}}},
}
CONFOUNDED = {"confounders": {"q4_volume": 1.4, "month_end_close_share": 0.35},
              "orgs": {org: {"panic_quarters": {}} for org in ("Northwind Traders", "Globex Corporation")}}


def with_close(sample) -> pd.DataFrame:
    """Closed deals of complete quarters with their close-date fiscal features and that quarter's truth."""
    calendars = {org: info["fiscal_calendar"] for org, info in sample.orgs.items()}
    opps = annotate_by_org(sample.tables["opportunities"], "close_date", calendars, prefix="x_")
    truth = sample.truth_frame().rename(columns={"quarter": "x_quarter"})
    opps = opps.merge(truth, on=["org", "x_quarter"], how="left")
    opps = opps[opps["is_closed"] & opps["open"].eq(False)].copy()
    opps["last_week"] = opps["x_week_of_quarter"] == opps["x_weeks_in_quarter"]
    return opps


@pytest.fixture(scope="module")
def drawn():
    return generate(DRAWN, seed=31, scale="small")


def test_distributions_draw_within_their_ranges():
    rng = np.random.default_rng(0)
    assert all(0.1 <= draw({"uniform": [0.1, 0.3]}, rng) < 0.3 for _ in range(50))
    assert {draw({"integers": [8, 9]}, rng) for _ in range(50)} == {8, 9}
    assert {draw({"choice": ["step", "ramp"]}, rng) for _ in range(50)} == {"step", "ramp"}
    assert draw({"choice": ["a", "b"], "p": [0.0, 1.0]}, rng) == "b"
    assert draw(0.35, rng) == 0.35 and draw({"onset_week": 9}, rng) == {"onset_week": 9}


def test_draws_are_deterministic_per_seed_and_differ_across_seeds(drawn):
    again = generate(DRAWN, seed=31, scale="small")
    assert drawn.truth == again.truth
    pd.testing.assert_frame_equal(drawn.tables["opportunities"], again.tables["opportunities"])
    patterns = [generate(DRAWN, seed=seed, scale="small").truth_frame().query("panic")
                [["org", "quarter", "onset_week", "shape", "qualification_decay"]].to_dict("records")
                for seed in (32, 33)]
    current = drawn.truth_frame().query("panic")[["org", "quarter", "onset_week", "shape",
                                                  "qualification_decay"]].to_dict("records")
    assert patterns[0] != patterns[1] and current not in patterns


def test_drawn_values_are_what_truth_states(drawn):
    truth = drawn.truth_frame()
    globex = truth[(truth["org"] == "Globex Corporation") & ~truth["open"]]
    assert globex["panic"].sum() == 3 and not truth.query("org == 'Globex Corporation' and open")["panic"].any()
    panic = truth[truth["panic"]]
    assert panic["onset_week"].between(8, 11).all()
    assert set(panic["shape"]) <= {"step", "ramp", "plateau"}
    peaks = pd.DataFrame([r["peak_effects"] for r in drawn.truth["quarters"] if r["panic"]])
    assert peaks["qualification_decay"].between(0.1, 0.3).all() and peaks["qualification_decay"].nunique() > 3
    assert peaks["reactive_order_taking"].between(1.5, 3.0).all()
    # The average over the window never exceeds the peak and equals it for steps.
    assert (panic["qualification_decay"].to_numpy() <= peaks["qualification_decay"].to_numpy() + 1e-6).all()
    steps = (panic["shape"] == "step").to_numpy()
    assert np.allclose(panic["qualification_decay"].to_numpy()[steps], peaks["qualification_decay"].to_numpy()[steps])


def test_a_drawn_onset_outside_the_quarter_is_refused():
    with pytest.raises(ParameterError):
        generate({"orgs": {"Globex Corporation": {"panic_quarters": {"draw": {"count": 1, "onset_week":
                                                                               {"integers": [13, 14]}}}}}},
                 seed=1, scale="small")
    with pytest.raises(ParameterError):
        load_scenario({"orgs": {"Globex Corporation": {"panic_quarters": {"draw": {"onset_week": 9}}}}})


def test_deals_closing_in_the_last_week_of_a_panic_win_less(drawn):
    closed = with_close(drawn)
    for panic in (True, False):
        rows = closed[closed["panic"].eq(panic)]
        late, early = rows.loc[rows["last_week"], "is_won"], rows.loc[~rows["last_week"], "is_won"]
        log_ratio = np.log(late.mean() / early.mean())
        se = np.sqrt((1 - late.mean()) / late.sum() + (1 - early.mean()) / early.sum())
        if panic:
            expected = np.log1p(rows.loc[rows["last_week"], "last_week_win_rate_change"].mean())
            assert log_ratio < -0.2 and abs(log_ratio - expected) < 4 * se + 0.1, (log_ratio, expected)
        else:
            assert abs(log_ratio) < 4 * se, log_ratio


def test_calm_fourth_quarters_have_more_volume_and_a_hockey_stick_but_truth_says_calm():
    sample = generate(CONFOUNDED, seed=34, scale="small")
    truth = sample.truth_frame()
    assert not truth["panic"].any() and (truth["qualification_decay"] == 0).all()
    calendars = {org: info["fiscal_calendar"] for org, info in sample.orgs.items()}
    created = annotate_by_org(sample.tables["opportunities"], "created_at", calendars, prefix="c_")
    created = created[created["c_quarter"].isin(truth.loc[~truth["open"], "quarter"])]
    per_quarter = created.groupby(["org", "c_quarter"]).agg(n=("opportunity_id", "size"), num=("c_quarter_num", "first"))
    per_quarter["fourth"] = per_quarter["num"] == 4
    ratio = per_quarter.groupby(["org", "fourth"])["n"].mean().unstack()
    assert (ratio[True] / ratio[False]).between(1.2, 1.6).all(), ratio
    closed = with_close(sample)
    last_week_share = closed["last_week"].mean()
    assert last_week_share > 2 / 13, last_week_share  # a natural hockey stick: twice the even share
    # Month-end habits keep every close in its month: the calm month-3 truth still holds on average.
    won = closed[closed["is_won"]].assign(month3=lambda f: f["amount"].where(f["x_month_of_quarter"] == 3, 0.0))
    shares = won.groupby(["org", "x_quarter"]).agg(m3=("month3", "sum"), total=("amount", "sum"),
                                                  truth=("month3_bookings_share", "first"))
    assert abs((shares["m3"] / shares["total"] - shares["truth"]).mean()) < 0.06
