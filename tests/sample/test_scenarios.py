"""The shipped scenarios other helpers test against: `realistic`, `change`, sell-or-do and `slow_change`.

Statistical checks allow 4 standard errors computed from the counts involved.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers import created_deals_with_truth, qualification_drop
from quarterpanic.errors import ParameterError
from quarterpanic.sample import generate, load_scenario
from quarterpanic.sample.plan import OrgPlan, work_time

# Literature ranges of the realistic scenario's peak effects (docs/METHODS.md).
RANGES = {"qualification_decay": (0.10, 0.30), "reactive_order_taking": (1.5, 3.0), "discount_uplift": (0.08, 0.12),
          "last_week_deal_size_change": (-0.15, -0.09), "last_week_win_rate_change": (-0.5, -0.3)}


# -- realistic ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def realistic():
    return generate("realistic", seed=41, scale="small")


def test_realistic_draws_literature_sized_effects_and_varied_patterns(realistic):
    truth = realistic.truth_frame()
    panic = truth[truth["panic"]]
    assert realistic.truth["scenario"] == "realistic"
    assert panic["org"].nunique() == 3 and len(panic) >= 6
    peaks = pd.DataFrame([r["peak_effects"] for r in realistic.truth["quarters"] if r["panic"]])
    for effect, (low, high) in RANGES.items():
        assert peaks[effect].between(low, high).all(), effect
    assert panic["shape"].nunique() >= 2 and panic["seller_fraction"].between(0.5, 1.0).all()
    assert panic["onset_week"].between(8, 11).all()
    # Averages over the window never exceed the peaks.
    assert (panic["qualification_decay"].to_numpy() <= peaks["qualification_decay"].to_numpy() + 1e-6).all()
    scenario = load_scenario("realistic")
    assert scenario["confounders"]["q4_volume"] > 1 and scenario["seller_sd"] > 0


@pytest.mark.slow
@pytest.mark.stats
def test_realistic_truth_matches_the_realised_late_window_drop_over_seeds():
    """Over many seeds the realised qualification drop per org scatters around truth's average with unit SE."""
    z = []
    for seed in range(100, 112):
        opps = created_deals_with_truth(generate("realistic", seed=seed, scale="small"))
        for _, rows in opps[opps["panic"].eq(True)].groupby("org"):
            drop, se = qualification_drop(rows)
            z.append((drop - rows.loc[rows["late"], "qualification_decay"].mean()) / se)
    z = np.array(z)
    assert len(z) >= 25
    assert abs(z.mean()) < 4 / np.sqrt(len(z)), z.mean()
    assert 0.6 < z.std() < 1.5, z.std()


# -- change -------------------------------------------------------------------------------------------
def test_change_stops_the_panic_in_one_segment_after_its_date():
    sample = generate("change", seed=42, scale="small")
    assert sample.truth["changes"] == [{"org": "Globex Corporation", "segment": "Enterprise", "date": "2024-11-01",
                                        "label": "Enterprise deal desk"}]
    # What the organisation's org.yaml declares (the other organisations declare none).
    assert sample.orgs["Globex Corporation"]["changes"] == [{"segment": "Enterprise", "date": "2024-11-01",
                                                             "label": "Enterprise deal desk"}]
    assert not any("changes" in info for org, info in sample.orgs.items() if org != "Globex Corporation")
    opps = created_deals_with_truth(sample).query("org == 'Globex Corporation' and panic == True")
    after = opps["c_quarter_start"] >= pd.Timestamp("2024-11-01")
    enterprise = opps["segment"] == "Enterprise"
    full = sample.scenario["panic"]["qualification_decay"]
    for chosen, expected in ((~after & enterprise, full), (after & enterprise, 0.0), (after & ~enterprise, full)):
        drop, se = qualification_drop(opps[chosen])
        assert abs(drop - expected) < 4 * se, (expected, drop, se)
    segments = pd.DataFrame([{**r, **r["effects"]} for r in sample.truth["segments"]])
    globex = segments[segments["org"] == "Globex Corporation"].merge(
        sample.truth_frame()[["org", "quarter", "open"]], on=["org", "quarter"])
    globex = globex[~globex["open"]]
    quarter_start = opps.groupby("c_quarter")["c_quarter_start"].first()
    globex["after"] = globex["quarter"].map(quarter_start) >= pd.Timestamp("2024-11-01")
    assert not globex.loc[globex["after"] & (globex["segment"] == "Enterprise"), "panic"].any()
    assert (globex.loc[globex["after"] & (globex["segment"] == "Enterprise"), "qualification_decay"] == 0).all()
    assert globex.loc[globex["segment"] != "Enterprise", "panic"].all()
    assert np.allclose(globex.loc[~globex["after"], "qualification_decay"], full)
    # The org-level truth after the change is the mix: between none and the full drop.
    truth = sample.truth_frame().query("org == 'Globex Corporation' and panic and not open")
    truth_after = truth[truth["quarter"].map(quarter_start) >= pd.Timestamp("2024-11-01")]
    assert truth_after["qualification_decay"].between(0.15 * full, 0.85 * full).all()


# -- sell or do ---------------------------------------------------------------------------------------
def test_sell_or_do_dips_new_deals_after_large_wins_by_the_stated_factor():
    rule = {"min_amount": 25000, "weeks": 4, "factor": 0.4}
    sample = generate({"orgs": {"Brightline Studio": {"opportunities_per_quarter": 240, "sell_or_do": rule,
                                                       "quarter_end_creation_dip": None}}},
                      seed=43, scale="default")
    (stated,) = sample.truth["sell_or_do"]
    assert stated["org"] == "Brightline Studio" and stated["creation_ratio"] == 0.4 and stated["wins"] > 5
    opps = sample.tables["opportunities"].query("org == 'Brightline Studio'")
    as_of = work_time(np.array([sample.as_of.normalize()], dtype="datetime64[D]"))[0]
    created = work_time(opps["created_at"].dt.normalize().to_numpy().astype("datetime64[D]"),
                        (opps["created_at"].dt.hour + opps["created_at"].dt.minute / 60 - 8).to_numpy())
    wins = opps[opps["is_won"] & (opps["amount"] >= rule["min_amount"])]
    closes = np.sort(work_time(wins["close_date"].to_numpy().astype("datetime64[D]"), 0.0))
    assert len(closes) == stated["wins"]
    span = rule["weeks"] * 5 * 10.0
    # Working hours inside the union of post-win windows (up to as_of), and deals created there.
    edges = np.stack([closes, np.minimum(closes + span, as_of)], axis=1)
    inside_hours, end = 0.0, -np.inf
    for start, stop in edges:
        start = max(start, end)
        inside_hours += max(stop - start, 0.0)
        end = max(end, stop)
    inside = np.zeros(len(created), dtype=bool)
    for start, stop in edges:
        inside |= (created > start) & (created <= stop)
    first = created.min()
    outside_hours = (as_of - first) - inside_hours
    ratio = (inside.sum() / inside_hours) / ((~inside).sum() / outside_hours)
    se = np.sqrt(1 / inside.sum() + 1 / (~inside).sum())
    assert abs(np.log(ratio) - np.log(0.4)) < 4 * se, (ratio, se)


# -- slow change --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def slow_change():
    scenario = load_scenario("slow_change")
    scenario["scales"]["small"] = {"complete_quarters": 8, "volume": 0.4}  # two years suffice here, and are quick
    return generate(scenario, seed=43, scale="small")


def test_slow_change_eases_every_panic_quarter_by_its_strength(slow_change):
    truth = slow_change.truth_frame().query("org == 'Globex Corporation' and not open")
    per_year = slow_change.scenario["orgs"]["Globex Corporation"]["trend"]["per_year"]
    years = np.arange(len(truth)) / 4
    assert truth["panic"].all() and np.allclose(truth["trend_strength"], 1 + per_year * years)
    panic = slow_change.scenario["panic"]
    # Differences scale with the strength, ratios on the log scale (like an intensity).
    assert np.allclose(truth["qualification_decay"], panic["qualification_decay"] * truth["trend_strength"])
    assert np.allclose(np.log(truth["reactive_order_taking"]),
                       np.log(panic["reactive_order_taking"]) * truth["trend_strength"])
    # The data follow: the first year's deals lose more qualification after the onset than the last year's.
    opps = created_deals_with_truth(slow_change).query("org == 'Globex Corporation'")
    for quarters in (truth["quarter"].iloc[:4], truth["quarter"].iloc[-4:]):
        chosen = opps[opps["c_quarter"].isin(quarters)]
        drop, se = qualification_drop(chosen)
        expected = chosen.loc[chosen["late"], "qualification_decay"].mean()
        assert abs(drop - expected) < 4 * se, (drop, expected, se)


def test_slow_change_truth_states_each_components_slope_and_the_index_direction(slow_change):
    stated = {row["org"]: row for row in slow_change.truth["trends"]}
    assert set(stated) == set(slow_change.orgs)
    globex, northwind = stated["Globex Corporation"], stated["Northwind Traders"]
    panic = slow_change.scenario["panic"]
    per_year = globex["per_year"]
    slopes = globex["slope_per_year"]
    assert slopes["qualification_decay"] == pytest.approx(per_year * panic["qualification_decay"], abs=1e-6)
    assert slopes["discount_uplift"] == pytest.approx(per_year * panic["discount_uplift"], abs=1e-6)
    assert slopes["reactive_order_taking"] == pytest.approx(per_year * np.log(panic["reactive_order_taking"]), abs=1e-6)
    assert slopes["win_rate_ratio"] < 0 and slopes["bookings_backloading"] < 0
    assert (globex["index"], northwind["index"], stated["Brightline Studio"]["index"]) == ("easing", "flat", "flat")
    assert northwind["per_year"] == 0 and northwind["slope_per_year"]["qualification_decay"] == 0
    assert globex["first_quarter"] == slow_change.truth_frame().query(
        "org == 'Globex Corporation'")["quarter"].iloc[0]


def test_a_zero_trend_changes_no_number_and_a_fading_one_is_refused():
    tiny = {"scales": {"small": {"complete_quarters": 4, "volume": 0.1}}}
    plain = generate(tiny, seed=44, scale="small")
    flat = generate({**tiny, "orgs": {"Globex Corporation": {"trend": {"per_year": 0.0}}}}, seed=44, scale="small")
    for name, table in plain.tables.items():
        pd.testing.assert_frame_equal(table, flat.tables[name])
    assert "trends" not in plain.truth and "trend_strength" not in plain.truth["quarters"][0]
    assert [{k: v for k, v in r.items() if k != "trend_strength"} for r in flat.truth["quarters"]] \
        == plain.truth["quarters"]
    for trend, refusal in (({"per_year": -1.5}, "leaves no panic"), ({"per_quarter": -0.1}, "only per_year")):
        scenario = load_scenario({**tiny, "orgs": {"Northwind Traders": {"trend": trend}}})
        with pytest.raises(ParameterError, match=refusal):
            OrgPlan("Northwind Traders", scenario["orgs"]["Northwind Traders"], scenario, "small",
                    pd.Timestamp(scenario["as_of"]))
