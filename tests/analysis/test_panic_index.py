"""The panic index: standardisation against an organisation's own calm quarters, contributions, levels."""
import json

import numpy as np
import pandas as pd
import pytest

from quarterpanic.analysis import panic_index as pi
from quarterpanic.analysis.findings import INSUFFICIENT, METRICS, apply_fdr, make_findings, z_of
from quarterpanic.report.index_report import effect_phrase, headline, multiplier_words, size_class_headline

THRESHOLDS = {"index_thresholds": {"watch": 2.0, "panic": 3.0}}
QUARTERS = [f"FY2025-Q{i}" for i in range(1, 5)] + [f"FY2026-Q{i}" for i in range(1, 5)]


def finding(org, quarter, metric, estimate, half_width, flagged=False, status="ok", onset=9):
    return {"org": org, "quarter": quarter, "component": "qualification_decay" if metric != "reactive_order_taking"
            else "reactive_order_taking", "metric": metric, "estimate": estimate, "ci_low": estimate - half_width,
            "ci_high": estimate + half_width, "p_value": 0.5, "flagged": flagged, "status": status, "n": 100,
            "onset_week": onset}


def org_findings(org="Acme", decay=None, reactive=None, panic=()):
    """Eight quarters of the four index metrics; quarters in ``panic`` flagged."""
    decay = decay or [0.02, 0.05, 0.03, 0.04, 0.06, 0.01, 0.04, 0.40]
    reactive = reactive or [1.1, 1.2, 1.0, 1.15, 1.25, 1.05, 1.1, 3.0]
    rows = []
    for quarter, d, r in zip(QUARTERS, decay, reactive):
        flagged = quarter in panic
        rows += [
            finding(org, quarter, "qualification_decay", d, 0.02, flagged),
            finding(org, quarter, "win_rate_ratio", 1.0, 0.001),
            finding(org, quarter, "discount_uplift", 0.0, 0.001),
            finding(org, quarter, "reactive_order_taking", r, 0.01 * r, flagged),
        ]
    return make_findings(rows)


def scores_of(findings, **params):
    return pi.component_scores(findings, {**THRESHOLDS, **params})


def test_index_components_agree_with_the_metric_registry():
    import quarterpanic.analysis.qualification  # noqa: F401  (registers the metrics)
    import quarterpanic.analysis.reactive  # noqa: F401

    for component in pi.COMPONENTS:
        metric = METRICS[component.metric]
        assert component.direction == metric.direction
        assert component.log_scale == (metric.unit == "ratio")
    assert sum(c.weight for c in pi.COMPONENTS) == pytest.approx(1.0)


def test_each_component_is_standardised_against_its_own_calm_quarters():
    findings = org_findings(panic=("FY2026-Q4",))
    scores = scores_of(findings)
    decay = scores[scores["component"] == "qualification_decay"].set_index("quarter")
    # The flagged quarter is not in the baseline; the centre is the median of the other seven.
    calm = np.array([0.02, 0.05, 0.03, 0.04, 0.06, 0.01, 0.04])
    centre = np.median(calm)
    mad_sd = 1.4826 * np.median(np.abs(calm - centre))
    se = 0.02 / z_of(0.95)
    assert not decay.loc["FY2026-Q4", "baseline"] and decay.loc["FY2025-Q1", "baseline"]
    assert decay.loc["FY2026-Q4", "centre"] == pytest.approx(centre)
    assert decay.loc["FY2026-Q4", "scale"] == pytest.approx(max(mad_sd, se, 0.02))
    assert decay.loc["FY2026-Q4", "z"] == pytest.approx((0.40 - centre) / max(mad_sd, se, 0.02))
    reactive = scores[scores["component"] == "reactive_order_taking"].set_index("quarter")
    assert reactive.loc["FY2026-Q4", "value"] == pytest.approx(np.log(3.0))


def test_a_very_quiet_baseline_does_not_explode_the_z_scores():
    # Seven identical calm estimates: MAD = 0, so the scale falls back to the estimates' own standard error.
    findings = org_findings(decay=[0.05] * 7 + [0.09], panic=())
    decay = scores_of(findings).query("component == 'qualification_decay'").set_index("quarter")
    assert decay.loc["FY2026-Q4", "scale"] == pytest.approx(max(0.02 / z_of(0.95), 0.02))
    assert decay.loc["FY2026-Q4", "z"] == pytest.approx(0.04 / decay.loc["FY2026-Q4", "scale"])
    # Same with a tiny standard error: the absolute floor of the component holds.
    tight = findings.copy()
    tight["ci_low"], tight["ci_high"] = tight["estimate"] - 1e-6, tight["estimate"] + 1e-6
    floor = scores_of(tight).query("component == 'qualification_decay' and quarter == 'FY2026-Q4'")
    assert floor["scale"].iloc[0] == pytest.approx(0.02) and floor["z"].iloc[0] == pytest.approx(2.0)


def test_organisations_are_standardised_separately():
    noisy = org_findings("Noisy", decay=[0.0, 0.2, -0.1, 0.15, -0.05, 0.1, 0.05, 0.40])
    quiet = org_findings("Quiet", decay=[0.02, 0.03, 0.02, 0.03, 0.02, 0.03, 0.02, 0.40])
    scores = scores_of(make_findings(pd.concat([noisy, quiet])))
    last = scores[(scores["component"] == "qualification_decay") & (scores["quarter"] == "FY2026-Q4")]
    z = last.set_index("org")["z"]
    assert z["Quiet"] > 3 * z["Noisy"] > 0


def test_contributions_sum_to_the_index_and_levels_follow_the_thresholds():
    scores = scores_of(org_findings(panic=("FY2026-Q4",)))
    index = pi.panic_index(scores, THRESHOLDS)
    sums = scores.groupby("quarter")["contribution"].sum()
    np.testing.assert_allclose(index.set_index("quarter")["panic_index"], sums.loc[index["quarter"]])
    weights = scores.groupby("quarter")["weight"].sum()
    np.testing.assert_allclose(weights, 1.0)
    np.testing.assert_allclose(scores["contribution"], scores["weight"] * scores["z"].fillna(0))
    levels = index.set_index("quarter")["level"]
    assert levels["FY2026-Q4"] == "panic" and (levels.drop("FY2026-Q4") == "calm").all()
    assert index.set_index("quarter").loc["FY2026-Q4", "top_component"] in ("qualification_decay",
                                                                             "reactive_order_taking")


def test_levels_at_the_boundaries():
    levels = pi.level_of([1.99, 2.0, 2.99, 3.0, np.nan], {"watch": 2.0, "panic": 3.0})
    assert list(levels) == ["calm", "watch", "watch", "panic", "insufficient data"]


def test_insufficient_components_get_no_weight_and_the_others_are_renormalised():
    findings = org_findings(panic=("FY2026-Q4",))
    gap = (findings["quarter"] == "FY2026-Q4") & findings["metric"].isin(["win_rate_ratio", "discount_uplift"])
    findings.loc[gap, ["estimate", "ci_low", "ci_high"]] = np.nan
    findings.loc[gap, "status"] = INSUFFICIENT
    last = scores_of(findings).query("quarter == 'FY2026-Q4'").set_index("component")
    assert (last.loc[["win_rate_ratio", "discount_uplift"], "status"] == "insufficient data").all()
    assert (last.loc[["win_rate_ratio", "discount_uplift"], "weight"] == 0).all()
    np.testing.assert_allclose(last.loc[["qualification_decay", "reactive_order_taking"], "weight"], [0.5, 0.5])


def test_too_few_baseline_quarters_is_insufficient_baseline():
    findings = org_findings()
    only_two = findings[findings["quarter"].isin(QUARTERS[:2] + QUARTERS[-1:])]
    scores = pi.component_scores(make_findings(only_two), {"baseline_quarters": QUARTERS[:2]})
    assert (scores["status"] == pi.INSUFFICIENT_BASELINE).all()
    index = pi.panic_index(scores, THRESHOLDS)
    assert (index["level"] == "insufficient data").all() and index["panic_index"].isna().all()


def test_explicit_baseline_quarters_replace_the_flag_rule():
    findings = org_findings(panic=())
    scores = scores_of(findings, baseline_quarters=QUARTERS[:4])
    baseline = scores.drop_duplicates("quarter").set_index("quarter")["baseline"]
    assert baseline[QUARTERS[:4]].all() and not baseline[QUARTERS[4:]].any()


def test_open_quarters_get_no_index():
    findings = org_findings().assign(quarter_complete=lambda f: f["quarter"] != "FY2026-Q4")
    assert "FY2026-Q4" not in set(scores_of(findings)["quarter"])


def test_plain_words_carry_size_and_uncertainty():
    decay = {"component": "qualification_decay", "estimate": 0.34, "ci_low": 0.25, "ci_high": 0.43,
             "onset_week": 9, "status": "ok"}
    assert effect_phrase(decay, short=True) == "late-quarter deals were qualified 34 points less often (95% CI 25–43)"
    win = {"component": "win_rate_ratio", "estimate": 0.52, "ci_low": 0.44, "ci_high": 0.61, "status": "ok"}
    assert effect_phrase(win, short=True) == "late-quarter deals won 48% less often (95% CI 39–56%)"
    assert multiplier_words(3.1) == "tripled" and multiplier_words(1.3) == "rose by 30%"


def test_headline_names_the_most_panicked_organisation():
    findings = apply_fdr(make_findings(pd.concat([
        org_findings("Globex", panic=("FY2026-Q4",)),
        org_findings("Calm Co", decay=[0.02, 0.05, 0.03, 0.04, 0.06, 0.01, 0.04, 0.03],
                     reactive=[1.1, 1.2, 1.0, 1.15, 1.25, 1.05, 1.1, 1.12]),
    ])))
    findings["flagged"] = (findings["org"] == "Globex") & (findings["quarter"] == "FY2026-Q4")
    scores = scores_of(findings)
    index = pi.panic_index(scores, THRESHOLDS)
    text = headline(index, scores)
    assert text.startswith("Globex panicked in 1 of its last 8 quarters; in FY2026-Q4 late-quarter deals were "
                           "qualified 40 points less often")
    assert "sales-ops firefighting tripled" in text and "Calm Co: none of 8" in text


def test_size_classes_are_compared():
    tiny = org_findings("Tiny", decay=[0.02, 0.05, 0.03, 0.04, 0.06, 0.01, 0.04, 0.03],
                        reactive=[1.1, 1.2, 1.0, 1.15, 1.25, 1.05, 1.1, 1.12])
    findings = make_findings(pd.concat([org_findings("Big", panic=("FY2026-Q4",)), tiny]))
    index = pi.panic_index(scores_of(findings), THRESHOLDS, size_classes={"Big": "enterprise", "Tiny": "small"})
    table = pi.by_size_class(index).set_index("size_class")
    assert list(table.index) == ["small", "enterprise"]
    assert table.loc["enterprise", "panic_quarters"] == 1 and table.loc["small", "quarters"] == 8
    assert 0 <= table.loc["enterprise", "panic_share_low"] <= 1 / 8 <= table.loc["enterprise", "panic_share_high"]
    assert size_class_headline(table.reset_index()) == "Enterprise organisations panicked most often (12% of quarters)"


def test_json_quarters_have_the_documented_shape():
    findings = org_findings(panic=("FY2026-Q4",))
    scores = scores_of(findings)
    records = pi.quarter_records(scores, pi.panic_index(scores, THRESHOLDS))
    json.dumps(records)
    assert len(records) == 8
    record = records[-1]
    assert {"org", "quarter", "panic_index", "level", "rests_on", "not_measured", "components"} <= set(record)
    assert record["level"] == "panic" and record["quarter"] == "FY2026-Q4"
    assert set(record["components"]) == {c.metric for c in pi.COMPONENTS}
    assert set(record["rests_on"]) == {c.metric for c in pi.COMPONENTS} and record["not_measured"] == []
    assert set(record["components"]["qualification_decay"]) == {
        "z", "weight", "contribution", "estimate", "status", "needs", "signals"}
    assert sum(c["contribution"] for c in record["components"].values()) == pytest.approx(record["panic_index"])


@pytest.fixture(scope="module")
def generated():
    from quarterpanic.analysis.detect import detect
    from quarterpanic.dataset import Dataset
    from quarterpanic.sample import generate

    sample = generate(seed=5, scale="default")
    data = Dataset.from_tables(sample.tables, sample.orgs, as_of=sample.as_of)
    findings = detect(data)
    return sample, data, findings


@pytest.mark.slow
def test_index_ranks_generated_panic_quarters_above_calm_ones(generated):
    sample, data, findings = generated
    scores, index = pi.index_from_findings(findings, THRESHOLDS, data)
    truth = sample.truth_frame()[["org", "quarter", "panic"]]
    table = index[index["segment"] == "all"].merge(truth, on=["org", "quarter"], how="inner")
    assert len(table) == len(truth[~sample.truth_frame()["open"]])
    panic, calm = table[table["panic"]], table[~table["panic"]]
    assert len(panic) >= 5 and len(calm) >= 10
    # AUC: the share of (panic, calm) pairs the index orders correctly.
    auc = (panic["panic_index"].to_numpy()[:, None] > calm["panic_index"].to_numpy()[None, :]).mean()
    assert auc >= 0.9
    assert (calm["level"] == "calm").mean() >= 0.9
    assert set(table["size_class"]) == {"small", "mid", "enterprise"}


@pytest.mark.slow
def test_detect_json_has_quarters_beside_findings(generated):
    from quarterpanic.report.detect_output import report_document

    _, data, findings = generated
    document = json.loads(report_document(data, findings, THRESHOLDS))
    assert len(document["findings"]) == len(findings)
    quarters = document["quarters"]
    assert quarters and all({"org", "quarter", "panic_index", "level", "components"} <= set(q) for q in quarters)
    assert {q["level"] for q in quarters} <= set(pi.LEVELS)


def test_late_unqualified_deals_are_the_largest_after_the_onset_of_the_latest_panic_quarter():
    from helpers import bernoulli_dataset
    from quarterpanic.analysis.features import opportunity_features

    data = bernoulli_dataset(per_quarter=200, quarters=4, panic=(1, 2), onset=9)
    opps = data.opportunities
    data.opportunities = opps.assign(amount=np.arange(len(opps), dtype=float) * 10,
                                     name=opps["opportunity_id"] + " deal",
                                     account="Acct " + opps["opportunity_id"], currency="EUR")
    features = opportunity_features(data)
    labels = sorted(features["quarter"].unique())
    index = pd.DataFrame({"org": "A", "quarter": labels, "segment": "all",
                          "level": ["calm", "panic", "panic", "watch"]})
    scores = pd.DataFrame({"org": "A", "quarter": labels, "segment": "all", "component": "qualification_decay",
                           "onset_week": [np.nan, 9.0, 10.0, 9.0]})
    deals = pi.late_unqualified_deals(data, scores, index, n=3)
    assert list(deals.columns) == pi.LATE_DEAL_COLUMNS and len(deals) == 3
    # The latest panic quarter only, from its own onset week, unqualified deals, largest first.
    eligible = features[(features["quarter"] == labels[2]) & (features["week_of_quarter"] >= 10)
                        & ~features["qualified"]]
    expected = eligible.sort_values("amount", ascending=False).head(3)
    assert deals["opportunity_id"].tolist() == expected["opportunity_id"].tolist()
    assert (deals["quarter"] == labels[2]).all() and (deals["onset_week"] == 10).all()
    assert deals["account"].tolist() == ("Acct " + expected["opportunity_id"]).tolist()
    assert (deals["currency"] == "EUR").all()
    # A panic quarter without a measured onset, or no panic quarter at all, lists nothing.
    assert pi.late_unqualified_deals(data, scores.assign(onset_week=np.nan), index).empty
    assert pi.late_unqualified_deals(data, scores, index.assign(level="calm")).empty
