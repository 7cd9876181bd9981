import json

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from statsmodels.stats.proportion import proportion_confint

from helpers import bernoulli_dataset, decay_features
from helpers import canonical_table as canonical
from quarterpanic.analysis import outcomes, qualification
from quarterpanic.analysis.features import FEATURE_COLUMNS, opportunity_features, quarter_roles
from quarterpanic.analysis.findings import FINDING_COLUMNS, INSUFFICIENT, METRICS, UNITS, apply_fdr, to_json
from quarterpanic.analysis.rule import qualified_at_creation, rule_for, stage_rank, stage_skips
from quarterpanic.dataset import Dataset
from quarterpanic.params import defaults
from quarterpanic.report.qualification_report import (
    chart_roles,
    contrast_headline,
    decay_headline,
    forest_headline,
    heatmap_headline,
    summary_figures,
    summary_headline,
)
from quarterpanic.report.words import describe
from quarterpanic.sample import generate


def opportunity(**fields):
    row = dict(org="A", opportunity_id="1", size_class="mid", created_at="2025-01-10", close_date="2025-03-01",
               stage="Prospecting", is_closed=False, is_won=False, owner="o1", segment="SMB", lead_source="Web",
               bant_budget=True, bant_authority=True, bant_need=True, bant_timeline=True, next_step="Call")
    row.update(fields)
    return row




# -- the rule -------------------------------------------------------------------------------------
def test_default_rule_needs_three_bant_flags_and_a_next_step():
    opps = canonical("opportunities", [
        opportunity(opportunity_id="all4"),
        opportunity(opportunity_id="three", bant_timeline=False),
        opportunity(opportunity_id="two", bant_timeline=False, bant_need=False),
        opportunity(opportunity_id="no-step", next_step="  "),
        opportunity(opportunity_id="missing-step", next_step=None),
    ])
    qualified = qualified_at_creation(opps)
    assert qualified.name == "qualified" and qualified.dtype == bool
    assert qualified.tolist() == [True, True, False, False, False]


def test_missing_bant_flags_count_as_not_met():
    opps = canonical("opportunities", [
        opportunity(opportunity_id="1", bant_timeline=None),
        opportunity(opportunity_id="2", bant_timeline=None, bant_need=None),
    ])
    assert qualified_at_creation(opps).tolist() == [True, False]


def test_overrides_change_the_rule_of_one_org_only():
    opps = canonical("opportunities", [
        opportunity(org="A", opportunity_id="1", bant_timeline=False, bant_need=False, next_step=None),
        opportunity(org="B", opportunity_id="2", bant_timeline=False, bant_need=False, next_step=None),
    ])
    rule = {"min_bant": 3}
    overrides = {"B": {"min_bant": 2, "require_next_step": False}}
    assert qualified_at_creation(opps, rule, overrides).tolist() == [False, True]
    assert rule_for("B", rule, overrides) == {**defaults()["qualification_rule"], "min_bant": 2,
                                             "require_next_step": False, "min_lead_score": None}


def test_min_lead_score_fails_missing_scores():
    opps = canonical("opportunities", [
        opportunity(opportunity_id="1", lead_score=80.0),
        opportunity(opportunity_id="2", lead_score=40.0),
        opportunity(opportunity_id="3", lead_score=None),
    ])
    assert qualified_at_creation(opps, {"min_lead_score": 50}).tolist() == [True, False, False]


# -- stage paths ----------------------------------------------------------------------------------
def stage_history(paths):
    rows = []
    for opp, stages in paths.items():
        for old, new in zip([None] + stages[:-1], stages):
            rows.append(dict(org="A", opportunity_id=opp, changed_at="2025-01-01", field="stage", old_value=old,
                             new_value=new))
    return canonical("history", rows)


def test_stage_skips_count_forward_jumps_but_not_losses_or_moves_back():
    history = stage_history({
        "straight": ["Prospecting", "Qualification", "Needs Analysis", "Proposal", "Negotiation", "Closed Won"],
        "jump": ["Prospecting", "Needs Analysis", "Proposal", "Negotiation", "Closed Won"],
        "won-early": ["Prospecting", "Qualification", "Needs Analysis", "Proposal", "Closed Won"],
        "lost-early": ["Prospecting", "Qualification", "Closed Lost"],
        "back": ["Prospecting", "Qualification", "Prospecting", "Qualification"],
        "hubspot": ["prospecting", "qualification", "needs_analysis", "proposal", "closedwon"],
        "unknown": ["Prospecting", "Discovery", "Proposal"],
    })
    skips = stage_skips(history).set_index("opportunity_id")
    assert skips["stage_skipped"].to_dict() == {
        "straight": False, "jump": True, "won-early": True, "lost-early": False, "back": False,
        "hubspot": True, "unknown": False,
    }
    assert skips.loc["jump", "stages_skipped"] == 1 and skips.loc["straight", "stage_changes"] == 6


def test_stage_rank_knows_closed_stages_and_leaves_unknown_missing():
    ranks = stage_rank(pd.Series(["Closed Lost", "NEEDS ANALYSIS", "Demo", None]))
    assert ranks.tolist()[:2] == [5, 2] and ranks.isna().tolist()[2:] == [True, True]


# -- features -------------------------------------------------------------------------------------
def test_features_censor_open_deals_and_place_them_in_the_fiscal_calendar():
    opps = canonical("opportunities", [
        opportunity(opportunity_id="won", created_at="2025-02-03", close_date="2025-04-20", stage="Closed Won",
                    is_closed=True, is_won=True, amount=100.0),
        opportunity(opportunity_id="lost", created_at="2025-04-10", close_date="2025-05-01", stage="Closed Lost",
                    is_closed=True, is_won=False),
        opportunity(opportunity_id="open", created_at="2025-04-12", close_date="2025-07-30"),
    ])
    history = stage_history({"won": ["Prospecting", "Proposal", "Closed Won"]})
    data = Dataset.from_tables({"opportunities": opps, "history": history},
                               {"A": {"size_class": "mid", "fiscal_calendar": {"start_month": 2}}},
                               as_of="2025-06-01")
    features = opportunity_features(data)
    assert list(features.columns) == FEATURE_COLUMNS
    features = features.set_index("opportunity_id")
    assert features.loc["won", "quarter"] == "FY2026-Q1" and features.loc["won", "week_of_quarter"] == 1
    assert features.loc["won", "close_quarter"] == "FY2026-Q1" and features.loc["won", "close_week"] == 12
    assert features["outcome"].to_dict() == {"won": "won", "lost": "lost", "open": "open"}
    assert features.loc["lost", "won"] == 0.0 and np.isnan(features.loc["open", "won"])
    assert pd.isna(features.loc["open", "close_quarter"]) and pd.isna(features.loc["open", "close_week"])
    assert features.loc["won", "stage_skipped"] == True  # noqa: E712
    assert features.loc["lost", "stage_skipped"] == False  # noqa: E712  (no stage changes: nothing skipped)
    assert features["quarter_complete"].all()  # FY2026-Q1 ended on 2025-04-30


def test_stage_skips_are_unknown_for_an_org_without_stage_history():
    data = Dataset.from_tables({"opportunities": canonical("opportunities", [opportunity()])},
                               {"A": {"size_class": "mid"}})
    assert opportunity_features(data)["stage_skipped"].isna().all()


def test_open_deals_are_not_counted_as_losses_in_win_rates():
    features = pd.DataFrame({
        "org": "A", "quarter": "Q", "week_of_quarter": [1, 1, 1, 1],
        "won": [1.0, 0.0, np.nan, np.nan], "outcome": ["won", "lost", "open", "open"],
    })
    rates = outcomes.win_rate_by_creation_week(features)
    assert rates[["events", "n", "rate"]].iloc[0].tolist() == [1, 2, 0.5]


# -- weekly curves --------------------------------------------------------------------------------
def test_qualification_rate_by_week_has_wilson_intervals():
    features = pd.DataFrame({
        "org": "A", "quarter": "Q", "segment": ["S", "S", "T", "T", "T"],
        "week_of_quarter": [1, 1, 2, 2, 2], "qualified": [True, False, True, True, False],
    })
    rates = qualification.qualification_rate_by_week(features)
    assert rates[["week_of_quarter", "events", "n"]].to_numpy().tolist() == [[1, 1, 2], [2, 2, 3]]
    low, high = proportion_confint(2, 3, method="wilson")
    assert rates["ci_low"].iloc[1] == pytest.approx(low) and rates["ci_high"].iloc[1] == pytest.approx(high)
    exact = qualification.qualification_rate_by_week(features, method="beta")
    assert exact["ci_low"].iloc[1] < rates["ci_low"].iloc[1]
    by_segment = qualification.qualification_rate_by_week(features, by=["org", "quarter", "segment"])
    assert len(by_segment) == 2


def test_weekly_mean_geometric_is_the_back_transformed_log_mean():
    frame = pd.DataFrame({"org": "A", "quarter": "Q", "week_of_quarter": 1, "amount": [10.0, 1000.0, 0.0]})
    out = outcomes.weekly_mean(frame, "amount", geometric=True, min_n=2)
    assert out["n"].iloc[0] == 2 and out["mean"].iloc[0] == pytest.approx(100.0)
    assert out["ci_low"].iloc[0] < 100 < out["ci_high"].iloc[0]


def test_with_baseline_pools_the_baseline_quarters_per_org():
    data = bernoulli_dataset(per_quarter=200)
    features = opportunity_features(data)
    params = {"quarters": ["FY2024-Q2"], "baseline_quarters": ["FY2024-Q1", "FY2024-Q3"]}
    roles = quarter_roles(features, params)
    assert roles.set_index("quarter")["baseline"].to_dict() == {
        "FY2024-Q1": True, "FY2024-Q2": False, "FY2024-Q3": True, "FY2024-Q4": False}
    curves = qualification.with_baseline(features, roles, qualification.qualification_rate_by_week)
    assert set(curves["quarter"]) == {"FY2024-Q2", "baseline"}
    baseline_n = curves.loc[curves["quarter"] == "baseline", "n"].sum()
    assert baseline_n == features["quarter"].isin(["FY2024-Q1", "FY2024-Q3"]).sum()


def test_quarter_roles_default_baseline_is_every_complete_quarter_or_the_others():
    data = bernoulli_dataset(per_quarter=50, as_of="2024-11-15")
    features = opportunity_features(data)
    roles = quarter_roles(features).set_index("quarter")
    assert roles["judged"].tolist() == [True, True, True, False]
    assert roles["baseline"].tolist() == [True, True, True, False]
    shown = quarter_roles(features, {"quarters": ["FY2024-Q3"]}).set_index("quarter")
    assert shown["baseline"].tolist() == [True, True, False, False]


# -- the estimate ---------------------------------------------------------------------------------
def test_known_drop_is_recovered_with_its_onset():
    data = bernoulli_dataset(seed=3, per_quarter=800, drop=0.3, onset=9, panic=(1,))
    features = opportunity_features(data)
    found = qualification.decay_findings(features).set_index("quarter")
    panic = found.loc["FY2024-Q2"]
    assert panic["onset_week"] == 9 and panic["method"] == qualification.POOLED and panic["status"] == "ok"
    assert panic["ci_low"] < 0.3 < panic["ci_high"] and abs(panic["estimate"] - 0.3) < 0.08
    assert panic["p_value"] < 1e-4
    calm = found.drop(index="FY2024-Q2")
    assert (calm["p_value"] > 0.01).all() and calm["onset_week"].notna().all()
    flagged = apply_fdr(found.reset_index())
    assert flagged.loc[flagged["flagged"], "quarter"].tolist() == ["FY2024-Q2"]


def test_interval_lies_above_zero_exactly_when_the_one_sided_adjusted_p_value_is_below_half_alpha():
    rows = []
    for seed in range(3):
        features, _ = decay_features(seed, drop=0.2)
        rows.append(qualification.decay_findings(features, {"min_n": 10}))
    found = pd.concat(rows)
    found = found[found["status"] == "ok"]
    assert len(found) >= 40 and found["p_value"].lt(0.025).any() and found["p_value"].ge(0.025).any()
    # One-sided (a drop), as a plain 95% interval relates to a one-sided test: above 0 iff p < 0.025.
    assert ((found["ci_low"] > 0) == (found["p_value"] < 0.025)).all()
    assert (found.loc[found["estimate"] < 0, "p_value"] > 0.5).all()
    # The estimate is the centre of its interval, which is wider than a single test's 1.96 se.
    assert np.allclose(found["estimate"], (found["ci_low"] + found["ci_high"]) / 2)
    assert (found["critical_value"] > 1.96).all()
    assert np.allclose(found["ci_high"] - found["estimate"], found["critical_value"] * found["se"])
    assert (found["p_value"] >= found["p_unadjusted"]).all()


def test_other_quarters_early_weeks_are_pooled_leaving_the_quarter_itself_out():
    data = bernoulli_dataset(seed=5, per_quarter=300, quarters=5)
    features = opportunity_features(data)
    found = qualification.decay_findings(features).set_index("quarter")
    early = features[features["week_of_quarter"] < 5].groupby("quarter").size()
    assert (found["method"] == qualification.POOLED).all()
    assert found["baseline_n"].to_dict() == (early.sum() - early).to_dict()
    # With only two other quarters nothing is pooled: the level comes from the quarter alone.
    few = bernoulli_dataset(seed=5, per_quarter=300, quarters=3)
    alone = qualification.decay_findings(opportunity_features(few))
    assert (alone["method"] == qualification.OWN_QUARTER).all() and (alone["baseline_n"] == 0).all()


def test_pooling_makes_the_interval_narrower_than_the_quarter_alone():
    features, _ = decay_features(7, drop=0.0, orgs={"mid": (400, 12, 0.7)})
    pooled = qualification.pooled_decay(features, baseline=features).set_index("quarter")
    alone = qualification.pooled_decay(features).set_index("quarter")
    same_onset = pooled["onset_week"] == alone["onset_week"]
    assert same_onset.sum() >= 3
    assert (pooled.loc[same_onset, "se"] < alone.loc[same_onset, "se"]).all()


def test_quarters_that_disagree_get_a_between_quarter_variance():
    agree, _ = decay_features(8, drop=0.0, quarter_sd=0.0, orgs={"mid": (600, 12, 0.7)})
    disagree, _ = decay_features(8, drop=0.0, quarter_sd=0.12, orgs={"mid": (600, 12, 0.7)})
    tau2 = {name: qualification.pooled_decay(f, baseline=f)["tau2"].max() for name, f in
            (("agree", agree), ("disagree", disagree))}
    assert tau2["disagree"] > 0.005 > tau2["agree"]


@pytest.mark.parametrize("shape", ["step", "ramp"])
def test_the_shape_of_a_clear_drop_is_recognised_and_its_average_estimated(shape):
    features, truth = decay_features(2, drop=0.5, shape=shape, panic_share=1.0, onsets=(7, 7),
                                     orgs={"mid": (3000, 30, 0.75)})
    found = qualification.pooled_decay(features, baseline=features)
    found = found.merge(truth.drop(columns="shape"), on=["org", "quarter"])
    assert (found["shape"] == shape).mean() >= 0.75
    assert ((found["onset_week"] - 7).abs() <= 1).all()
    covered = (found["ci_low"] <= found["qualification_decay"]) & (found["qualification_decay"] <= found["ci_high"])
    assert covered.mean() >= 0.75 and (found["estimate"] - found["qualification_decay"]).abs().mean() < 0.03


def test_the_onset_is_averaged_over_the_candidates_by_their_fit():
    # Two equally good candidates: the onset between them; one far better: its own.
    assert qualification.averaged_onset(np.array([3.0, 3.0]), np.array([8, 10])) == 9
    assert qualification.averaged_onset(np.array([1.0, 6.0, -2.0]), np.array([7, 9, 11])) == 9
    assert qualification.averaged_onset(np.array([2.0, 2.0]), np.array([8, 9])) == 9  # half weeks round up


def test_the_onset_is_averaged_within_the_best_fitting_shape_and_widened_by_the_dispersion():
    # A sharp step at week 9 that ramps starting weeks earlier fit almost as well: mixing the shapes pulls
    # the step's onset early; within steps it stays. A dispersion above 1 flattens the weights.
    z = np.array([6.0, 5.95, 5.95, 2.0])
    onsets, shapes = np.array([9, 5, 6, 8]), np.array(["step", "ramp", "ramp", "step"], dtype=object)
    assert qualification.averaged_onset(z, onsets) == 7
    assert qualification.averaged_onset(z, onsets, shapes) == 9
    two = np.array([3.0, 2.0])
    assert qualification.averaged_onset(two, np.array([8, 12])) == 8
    assert qualification.averaged_onset(two, np.array([8, 12]), dispersion=4.0) == 9
    assert qualification.averaged_onset(two, np.array([8, 12]), dispersion=0.25) == 8  # never sharper than binomial


def test_the_dispersion_is_pooled_over_an_organisations_quarters_and_never_below_one():
    keys = pd.DataFrame({"org": ["a", "a", "b", "b"], "quarter": ["q1", "q2", "q1", "q2"]})
    residual = np.array([30.0, 10.0, 4.0, np.nan])
    df = np.array([10.0, 10.0, 10.0, 10.0])
    assert qualification._pooled_dispersion(keys, ["org"], residual, df).tolist() == [2.0, 2.0, 1.0, 1.0]
    assert qualification._pooled_dispersion(keys, [], residual, df).tolist() == pytest.approx([44 / 30] * 4)


def test_calm_binomial_quarters_have_a_dispersion_near_one():
    features, _ = decay_features(5, drop=0.0, quarters=10, seller_sd=0.0, quarter_sd=0.0,
                                 orgs={"mid": (400, 12, 0.7)})
    found = qualification.pooled_decay(features, baseline=features)
    assert (found["dispersion"] >= 1).all() and found["dispersion"].max() < 1.3


def test_the_candidates_are_the_searched_fits_before_the_search():
    # The pooled oracle reads one candidate; the chosen one's fit is the finding's, unadjusted.
    features, _ = decay_features(3, drop=0.25, quarters=8, orgs={"mid": (300, 9, 0.7)})
    found = qualification.decay_findings(features, {"by_segment": False})
    candidates = qualification.decay_candidates(features, {"by_segment": False})
    assert len(candidates) == len(found) * len(qualification.candidate_weeks()) * len(qualification.SHAPES)
    chosen = found.merge(candidates, on=["org", "quarter", "onset_week", "shape"], suffixes=("", "_candidate"))
    assert len(chosen) == found["onset_week"].notna().sum() > 0
    assert np.allclose(chosen["estimate"], chosen["estimate_candidate"])
    assert np.allclose(chosen["p_unadjusted"], chosen["p_unadjusted_candidate"])
    assert (chosen["z"].abs() == candidates.groupby(["org", "quarter"])["z"].apply(
        lambda z: z.abs().max()).reindex(pd.MultiIndex.from_frame(chosen[["org", "quarter"]])).to_numpy()).all()


def test_a_ramps_onset_is_placed_nearer_its_start_than_by_the_best_fit_alone():
    # The best fit places a ramp late (its first weeks hardly drop, so a later step fits as well).
    features, truth = decay_features(11, drop=0.3, shape="ramp", panic_share=1.0, quarters=24,
                                     orgs={"mid": (400, 12, 0.7)})
    found = qualification.pooled_decay(features, baseline=features).merge(truth, on=["org", "quarter"])
    averaged = (found["averaged_onset_week"] - found["true_onset"]).abs().astype(float)
    fitted = (found["onset_week"] - found["true_onset"]).abs().astype(float)
    assert averaged.mean() < fitted.mean() and (averaged <= 2).mean() > (fitted <= 2).mean()


def test_oracle_is_the_one_sided_two_proportion_test_for_a_step():
    from statsmodels.stats.proportion import proportions_ztest

    rng = np.random.default_rng(4)
    week = rng.integers(1, 14, 400)
    qualified = rng.random(400) < np.where(week >= 9, 0.55, 0.7)
    late = week >= 9
    counts = [qualified[~late].sum(), qualified[late].sum()]
    _, expected = proportions_ztest(counts, [(~late).sum(), late.sum()], alternative="larger")
    step = qualification.decay_intensity(week, 9, "step")
    assert qualification.oracle_decay_p_value(qualified, step) == pytest.approx(expected)
    ramp = qualification.decay_intensity(week, 9, "ramp")
    assert ramp.max() == 1 and ramp[week == 9].max() == pytest.approx(1 / 5)
    assert 0 < qualification.oracle_decay_p_value(qualified, ramp) < 1


def test_average_marginal_effect_matches_statsmodels_margeff():
    rng = np.random.default_rng(0)
    n = 600
    late = (rng.random(n) < 0.3).astype(float)
    segment = (rng.random(n) < 0.5).astype(float)
    y = (rng.random(n) < 0.7 - 0.3 * late - 0.1 * segment).astype(float)
    groups = rng.integers(0, 10, n)
    effect, se = qualification._glm_average_effect(y, late, segment[:, None], groups)
    exog = np.column_stack([np.ones(n), late, segment])
    fit = sm.GLM(y, exog, family=sm.families.Binomial()).fit(cov_type="cluster", cov_kwds={"groups": groups})
    margins = fit.get_margeff(dummy=True)
    assert effect == pytest.approx(margins.margeff[0]) and se == pytest.approx(margins.margeff_se[0])


def test_one_seller_falls_back_to_two_proportions_and_says_so():
    frame = pd.DataFrame({
        "qualified": [True] * 30 + [False] * 10 + [True] * 10 + [False] * 30,
        "week_of_quarter": [2] * 40 + [10] * 40, "owner": "solo", "segment": "SMB", "lead_source": "Web",
    })
    out = qualification.decay_estimate(frame, 9)
    assert out["method"].startswith("two-proportion") and "seller" in out["method"]
    assert out["estimate"] == pytest.approx(0.75 - 0.25)
    se = np.sqrt(0.75 * 0.25 / 40 * 2)
    assert out["ci_low"] == pytest.approx(0.5 - 1.959964 * se, rel=1e-4)


def test_separation_falls_back_to_two_proportions():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({
        "qualified": np.r_[rng.random(60) < 0.7, np.zeros(40, bool)],
        "week_of_quarter": [3] * 60 + [11] * 40, "owner": [f"o{i % 8}" for i in range(100)],
        "segment": "SMB", "lead_source": "Web",
    })
    out = qualification.decay_estimate(frame, 9)
    assert out["method"].startswith("two-proportion") and out["estimate"] > 0.5 and out["p_value"] < 1e-6


def test_too_few_opportunities_on_a_side_is_insufficient_and_never_flagged():
    data = bernoulli_dataset(per_quarter=30, drop=0.6)
    findings = qualification.detect_qualification_decay(data)
    main = findings[findings["metric"] == "qualification_decay"]
    assert (main["status"] == INSUFFICIENT).all()
    assert main["estimate"].isna().all() and main["onset_week"].isna().all() and main["p_value"].isna().all()
    assert not apply_fdr(findings)["flagged"].any()
    assert "too little data" in describe(main.iloc[0])


def test_min_n_parameter_sets_the_threshold():
    data = bernoulli_dataset(per_quarter=60)
    low = qualification.decay_findings(opportunity_features(data), {"min_n": 10})
    high = qualification.decay_findings(opportunity_features(data), {"min_n": 40})
    assert (low["status"] == "ok").all() and (high["status"] == INSUFFICIENT).all()
    assert ((low["n_before"] >= 10) & (low["n_after"] >= 10)).all()


def test_open_quarter_is_estimated_on_weeks_so_far_but_not_tested():
    data = bernoulli_dataset(per_quarter=600, panic=(3,), onset=6, as_of="2024-11-20")
    findings = qualification.detect_qualification_decay(data)
    open_rows = findings[findings["quarter"] == "FY2024-Q4"]
    main = open_rows[open_rows["metric"] == "qualification_decay"].iloc[0]
    assert not main["quarter_complete"] and main["status"] == "ok" and np.isnan(main["p_value"])
    assert main["onset_week"] <= 7 and main["estimate"] > 0.15
    assert not apply_fdr(findings).loc[findings["quarter"] == "FY2024-Q4", "flagged"].any()
    # Quarter-end metrics wait for the quarter's end.
    assert not open_rows["metric"].isin(outcomes.QUARTER_END_METRICS).any()


def test_by_segment_adds_one_test_per_segment():
    data = bernoulli_dataset(per_quarter=600)
    findings = qualification.detect_qualification_decay(data, {"by_segment": True})
    main = findings[findings["metric"] == "qualification_decay"]
    assert sorted(main["segment"].unique()) == ["Mid-Market", "SMB", "all"]
    assert len(main) == 12


def test_segment_parameter_restricts_everything_to_one_segment():
    data = bernoulli_dataset(per_quarter=400)
    findings = qualification.detect_qualification_decay(data, {"segment": "SMB"})
    main = findings[findings["metric"] == "qualification_decay"]
    everything = qualification.detect_qualification_decay(data)
    assert (main["n"] < everything.loc[everything["metric"] == "qualification_decay", "n"].to_numpy()).all()


# -- outcome metrics ------------------------------------------------------------------------------
def test_close_date_pushes_are_read_from_history():
    opps = canonical("opportunities", [
        opportunity(opportunity_id="pushed", created_at="2025-01-05", close_date="2025-04-20"),
        opportunity(opportunity_id="kept", created_at="2025-01-05", close_date="2025-03-25", stage="Closed Won",
                    is_closed=True, is_won=True),
        opportunity(opportunity_id="early", created_at="2025-01-05", close_date="2025-04-20"),
        opportunity(opportunity_id="late-created", created_at="2025-03-26", close_date="2025-03-28", stage="Closed Lost",
                    is_closed=True),
        # Pulled into the last two weeks before they began: due in them, and not pushed.
        opportunity(opportunity_id="pulled", created_at="2025-01-05", close_date="2025-03-28", stage="Closed Won",
                    is_closed=True, is_won=True),
    ])
    history = canonical("history", [
        dict(org="A", opportunity_id="pushed", changed_at="2025-03-24", field="close_date", old_value="2025-03-27",
             new_value="2025-04-20"),
        # Pushed before the last two weeks began: not a quarter-end push (and not due in them).
        dict(org="A", opportunity_id="early", changed_at="2025-03-01", field="close_date", old_value="2025-03-05",
             new_value="2025-04-20"),
        dict(org="A", opportunity_id="pulled", changed_at="2025-02-10", field="close_date", old_value="2025-02-12",
             new_value="2025-03-28"),
    ])
    data = Dataset.from_tables({"opportunities": opps, "history": history}, {"A": {"size_class": "mid"}},
                               as_of="2025-06-01")
    features = opportunity_features(data)
    pushes = outcomes.close_date_pushes(features, data).set_index("opportunity_id")
    assert pushes["pushed"].to_dict() == {"pushed": True, "kept": False, "pulled": False}
    assert pushes["quarter"].unique().tolist() == ["FY2025-Q1"]
    rate = outcomes.push_rate_by_quarter(pushes.reset_index())
    assert rate[["events", "n"]].iloc[0].tolist() == [1, 3]


def test_win_rate_ratio_compares_closed_deals_only():
    created = pd.DataFrame({
        "week_of_quarter": [2] * 40 + [10] * 40 + [10] * 20,
        "won": [1.0] * 20 + [0.0] * 20 + [1.0] * 10 + [0.0] * 30 + [np.nan] * 20,
    })
    out = outcomes.win_rate_ratio(created, 9)
    assert out["estimate"] == pytest.approx(0.25 / 0.5)
    assert out["ci_low"] < 0.5 < out["ci_high"] < 1 and out["p_value"] < 0.05


def test_last_week_size_change_is_relative():
    rng = np.random.default_rng(2)
    n = 400
    week = rng.integers(1, 14, n)
    amount = np.exp(rng.normal(9, 0.3, n)) * np.where(week == 13, 0.8, 1.0)
    frame = pd.DataFrame({"amount": amount, "close_week": week, "close_weeks_in_quarter": 13,
                          "segment": "SMB", "owner": [f"o{i % 9}" for i in range(n)]})
    out = outcomes.last_week_deal_size_change(frame)
    assert out["ci_low"] < -0.2 < out["ci_high"] and abs(out["estimate"] + 0.2) < 0.08


def test_every_metric_is_registered_with_words():
    for metric in (qualification.COMPONENT,) + outcomes.ONSET_METRICS + outcomes.QUARTER_END_METRICS:
        registered = METRICS[metric]
        assert registered.component == "qualification_decay" and registered.unit in UNITS


# -- the whole detector ---------------------------------------------------------------------------
def test_findings_have_the_standard_shape_and_are_json_ready():
    data = bernoulli_dataset(per_quarter=400)
    findings = apply_fdr(qualification.detect_qualification_decay(data))
    assert list(findings.columns[: len(FINDING_COLUMNS)]) == FINDING_COLUMNS
    assert set(findings["component"]) == {"qualification_decay"}
    assert set(findings["metric"]) >= {"qualification_decay", "win_rate_ratio", "lead_score_drop"}
    main = findings[findings["metric"] == "qualification_decay"]
    assert len(main) == 4 and main["onset_week"].notna().all()
    document = json.loads(to_json(findings))
    assert len(document["findings"]) == len(findings)
    assert all(set(record) == set(FINDING_COLUMNS) for record in document["findings"])
    sentence = describe(main.iloc[1])
    assert sentence.startswith("A, FY2024-Q2: the share of new deals meeting the qualification rule fell by")
    assert "95% CI" in sentence


def test_registered_with_the_detect_runner():
    from quarterpanic.analysis.detect import detect

    findings = detect(bernoulli_dataset(per_quarter=300), components=["qualification_decay"])
    assert findings["q_value"].notna().any()


def test_detect_on_a_small_generated_sample_gives_one_main_finding_per_org_quarter():
    sample = generate(seed=1, scale="small")
    data = Dataset.from_tables(sample.tables, sample.orgs, as_of=sample.as_of)
    findings = qualification.detect_qualification_decay(data)
    assert (findings["metric"] == "qualification_decay").sum() == len(sample.truth["quarters"])


# -- report helpers -------------------------------------------------------------------------------
def report_findings():
    rows = []
    for quarter, estimate, flagged in (("FY2024-Q1", 0.02, False), ("FY2024-Q2", 0.31, True), ("FY2024-Q3", -0.01, False)):
        rows.append(dict(org="A", quarter=quarter, segment="all", component="qualification_decay",
                         metric="qualification_decay", estimate=estimate, ci_low=estimate - 0.1,
                         ci_high=estimate + 0.1, p_value=0.001 if flagged else 0.6, onset_week=9, flagged=flagged,
                         n=400, status="ok", quarter_complete=True, rate_before=0.7, rate_after=0.7 - estimate,
                         n_before=300, n_after=100))
        rows.append(dict(org="A", quarter=quarter, segment="all", component="qualification_decay",
                         metric="win_rate_ratio", estimate=0.5 if flagged else 1.0, p_value=0.01, flagged=flagged,
                         status="ok", quarter_complete=True))
    rows.append(dict(org="B", quarter="FY2024-Q1", segment="all", component="qualification_decay",
                     metric="qualification_decay", status="insufficient data", n=12, quarter_complete=True))
    return pd.DataFrame(rows)


def test_headlines_state_the_finding():
    findings = report_findings()
    assert decay_headline(findings, "A") == (
        "A: in FY2024-Q2 qualification fell from 70% to 39% from week 9 on (1 of 3 quarters flagged)")
    assert decay_headline(findings, "A", ["FY2024-Q3"]).startswith(
        "A: no significant late-quarter drop in qualification in the quarters shown")
    assert decay_headline(findings, "B") == "B: too few new deals per quarter to judge qualification"
    assert summary_headline(findings) == (
        "Qualification decay was flagged in 1 of 3 complete quarters judged (A: FY2024-Q2); "
        "1 more had too few new deals to judge")
    assert forest_headline(findings).endswith("the largest drop was 31 points (A, FY2024-Q2)")
    assert "FY2024-Q2" in heatmap_headline(findings, "A")
    assert contrast_headline(findings, "win_rate_ratio", "Late deals won at", "ratio") == (
        "Late deals won at 0.50× in the 1 quarters flagged for decay (1.00× in the 2 others)")


def test_summary_figures_are_json_ready():
    from quarterpanic.report.artifacts import save_summary

    summary = save_summary(summary_figures(report_findings()), None)
    json.dumps(summary)
    assert summary["quarters_judged"] == 3 and summary["quarters_flagged"] == 1
    assert summary["quarters_insufficient"] == 1 and summary["flagged_quarters"] == {"A": ["FY2024-Q2"]}
    assert summary["outcome_means"]["win_rate_ratio"] == {"flagged": 0.5, "other": 1.0, "n_flagged": 1, "n_other": 2}
    assert len(summary["decay"]) == 4


def test_chart_roles_show_recent_quarters_against_a_calm_baseline():
    data = bernoulli_dataset(per_quarter=100, quarters=4, as_of="2024-11-15")
    features = opportunity_features(data)
    findings = pd.DataFrame([dict(org="A", quarter="FY2024-Q1", segment="all", metric="qualification_decay",
                                  status="ok", p_value=0.001, flagged=True)])
    roles = chart_roles(features, recent=1, findings=findings).set_index("quarter")
    assert roles["shown"].tolist() == [False, False, True, True]  # last complete quarter and the open one
    assert roles["baseline"].tolist() == [False, True, False, False]  # FY2024-Q1 was flagged: not calm
