"""Outcome metrics keyed to the quarter's end: last-week deal size and win rate, and close-date pushes
against the organisation's own calm rate."""
import numpy as np
import pandas as pd
import pytest

from quarterpanic.analysis import outcomes
from quarterpanic.analysis.findings import METRICS, apply_fdr, make_findings


def closed_deals(n=600, last_week_factor=1.0, last_week_win=0.3, other_win=0.3, seed=2):
    rng = np.random.default_rng(seed)
    week = rng.integers(1, 14, n)
    last = week == 13
    amount = np.exp(rng.normal(9, 0.3, n)) * np.where(last, last_week_factor, 1.0)
    won = rng.random(n) < np.where(last, last_week_win, other_win)
    return pd.DataFrame({"amount": amount, "close_week": week, "close_weeks_in_quarter": 13,
                         "outcome": np.where(won, "won", "lost"), "segment": "SMB",
                         "owner": [f"o{i % 9}" for i in range(n)]})


def test_last_week_size_change_is_the_centre_of_its_interval_on_the_log_scale():
    out = outcomes.last_week_deal_size_change(closed_deals(last_week_factor=0.8))
    centre = (np.log1p(out["ci_low"]) + np.log1p(out["ci_high"])) / 2
    assert np.log1p(out["estimate"]) == pytest.approx(centre, abs=1e-12)
    assert out["ci_low"] < -0.2 < out["ci_high"]


def test_last_week_win_rate_is_keyed_to_the_close_week():
    frame = closed_deals(n=2000, last_week_win=0.15, other_win=0.3)
    out = outcomes.last_week_win_rate_ratio(frame)
    last = frame["close_week"] == 13
    won = frame["outcome"] == "won"
    assert out["estimate"] == pytest.approx(won[last].mean() / won[~last].mean())
    assert out["ci_low"] < 0.5 < out["ci_high"] < 1 and out["p_value"] < 0.01


def test_last_week_win_rate_needs_closed_deals_on_both_sides():
    frame = closed_deals(n=60)
    assert outcomes.last_week_win_rate_ratio(frame[frame["close_week"] < 13]) is None



def test_a_quarter_whose_closed_deals_all_won_gets_an_interval_not_a_point():
    # Katz's variance is 0 when both sides won every deal: the interval was the single point 1..1.
    frame = closed_deals(n=200).assign(outcome="won")
    out = outcomes.last_week_win_rate_ratio(frame)
    assert out["ci_low"] < out["estimate"] < out["ci_high"]
    assert out["ci_low"] < 1 < out["ci_high"] and out["p_value"] > 0.5

def pushes(pushed, n):
    return pd.DataFrame({"pushed": [True] * pushed + [False] * (n - pushed)})


def test_push_excess_is_measured_against_the_calm_rate_not_zero():
    calm_like = outcomes.close_date_push_excess(pushes(5, 100), pushes(25, 500))
    # 5% in this quarter as in the others: no excess, nothing to flag, although 5% is far above 0.
    assert calm_like["estimate"] == pytest.approx(0.0)
    assert calm_like["ci_low"] < 0 < calm_like["ci_high"] and calm_like["p_value"] > 0.3
    panic = outcomes.close_date_push_excess(pushes(30, 100), pushes(25, 500))
    assert panic["estimate"] == pytest.approx(0.25)
    assert 0 < panic["ci_low"] < 0.25 < panic["ci_high"] and panic["p_value"] < 1e-6
    assert outcomes.close_date_push_excess(pushes(0, 100), pushes(0, 500))["p_value"] == 1.0


def test_push_rate_is_a_level_that_is_shown_and_never_tested():
    rate = outcomes.close_date_push_rate(pushes(30, 100))
    assert rate["estimate"] == pytest.approx(0.3) and rate["ci_low"] < 0.3 < rate["ci_high"]
    assert np.isnan(rate["p_value"])
    assert np.isnan(METRICS["close_date_push_rate"].null) and METRICS["close_date_push_excess"].null == 0
    rows = make_findings([
        {"org": "A", "quarter": "FY2025-Q1", "component": "qualification_decay", "metric": metric, **estimate}
        for metric, estimate in (("close_date_push_rate", rate),
                                 ("close_date_push_excess", outcomes.close_date_push_excess(pushes(30, 100),
                                                                                            pushes(25, 500))))])
    flagged = apply_fdr(rows).set_index("metric")
    assert not flagged.loc["close_date_push_rate", "flagged"]
    assert flagged.loc["close_date_push_rate", "direction"] is None
    assert flagged.loc["close_date_push_excess", "flagged"]
    assert flagged.loc["close_date_push_excess", "direction"] == "toward panic"


def test_contrast_of_a_level_without_p_values_reads_complete_quarters():
    findings = make_findings([
        {"org": "A", "quarter": q, "component": "qualification_decay", "metric": metric, "estimate": est,
         "p_value": p, "flagged": flag, "quarter_complete": True}
        for q, flag, rate in (("FY2025-Q1", True, 0.3), ("FY2025-Q2", False, 0.05), ("FY2025-Q3", False, 0.07))
        for metric, est, p in (("qualification_decay", 0.3, 0.01), ("close_date_push_rate", rate, np.nan))])
    contrast = outcomes.flagged_contrast(findings, "close_date_push_rate")
    assert contrast["flagged"] == pytest.approx(0.3) and contrast["other"] == pytest.approx(0.06)
    assert (contrast["n_flagged"], contrast["n_other"]) == (1, 2)
