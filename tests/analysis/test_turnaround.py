"""quarterpanic.analysis.turnaround: turnaround with open requests censored, and its late-quarter stretch."""
import numpy as np
import pandas as pd
import pytest

from quarterpanic.analysis.findings import INSUFFICIENT, OK
from quarterpanic.analysis.turnaround import km_curves, km_summary, standardised_durations, turnaround_stretch, turnaround_times


def test_kaplan_meier_median_is_unbiased_under_heavy_censoring_while_the_naive_one_is_not():
    rng = np.random.default_rng(7)
    n, mean_hours = 4000, 72.0
    created = pd.Timestamp("2025-01-01") + pd.to_timedelta(rng.uniform(0, 10 * 24, n), unit="h")
    durations = rng.exponential(mean_hours, n)
    resolved = created + pd.to_timedelta(durations, unit="h")
    as_of = pd.Timestamp("2025-01-11")  # a third of the requests are still open
    times = turnaround_times(pd.DataFrame({"org": "A", "created_at": created, "resolved_at": resolved}), as_of)
    assert 0.25 < (~times["resolved"]).mean() < 0.4
    summary = km_summary(times, ["org"]).iloc[0]
    true_median = mean_hours * np.log(2)
    assert summary["median"] == pytest.approx(true_median, rel=0.06)
    assert summary["median_low"] < true_median < summary["median_high"]
    assert summary["naive_median"] < 0.85 * true_median
    # Resolutions recorded after as_of were not known yet.
    assert not times.loc[resolved > as_of, "resolved"].any()


def test_stretch_is_measured_type_for_type_despite_a_shifting_mix():
    rng = np.random.default_rng(3)
    rows = []
    for window, n_quick, n_slow, stretch in (("early", 300, 300, 1.0), ("late", 550, 50, 2.0)):
        for type_, n, median in (("Rush Quote", n_quick, 4.0), ("Enablement", n_slow, 100.0)):
            hours = median * np.exp(rng.normal(0, 0.5, n)) * stretch
            rows.append(pd.DataFrame({"org": "A", "quarter": "Q1", "window": window, "request_type": type_,
                                      "duration_hours": hours, "resolved": True}))
    times = pd.concat(rows, ignore_index=True)
    raw = turnaround_stretch(times, duration="duration_hours").iloc[0]
    assert raw["estimate"] < 1  # the mix of quick requests hides the slow-down
    out = turnaround_stretch(standardised_durations(times, reference=times["window"] == "early")).iloc[0]
    assert out["status"] == OK and out["ci_low"] < 2.0 < out["ci_high"] and out["estimate"] == pytest.approx(2, rel=0.15)
    assert out["p_value"] < 0.001


def test_kaplan_meier_curve_steps_down_at_each_resolution_and_stays_level_for_open_requests():
    times = pd.DataFrame({"org": "A", "duration_hours": [1.0, 2.0, 2.0, 5.0, 8.0],
                          "resolved": [True, True, False, True, False]})
    curve = km_curves(times, ["org"])
    assert curve["duration_hours"].iloc[0] == 0.0 and curve["survival"].iloc[0] == 1.0
    assert (curve["n"] == 5).all() and curve["survival"].is_monotonic_decreasing
    survival = dict(zip(curve["duration_hours"], curve["survival"]))
    # Product-limit: 4/5 after 1 h, x 3/4 after 2 h (one of the four at risk resolves), x 1/2 after 5 h.
    assert survival[1.0] == pytest.approx(0.8) and survival[2.0] == pytest.approx(0.6)
    assert survival[5.0] == pytest.approx(0.3)
    assert ((curve["ci_low"] <= curve["survival"]) & (curve["survival"] <= curve["ci_high"])).all()
    assert km_curves(times.iloc[:0], ["org"]).empty


def test_a_quantile_the_curve_never_reaches_is_missing():
    times = pd.DataFrame({"org": "A", "duration_hours": [1.0, 3.0, 4.0, 6.0], "resolved": [True, False, False, False]})
    row = km_summary(times, ["org"]).iloc[0]
    assert (row["n"], row["n_open"]) == (4, 3) and np.isnan(row["median"]) and np.isnan(row["p90"])
    assert row["naive_median"] == 1.0  # the biased figure a resolved-only median would show


def test_stretch_needs_enough_requests_in_each_window():
    rows = [{"org": "A", "quarter": "Q1", "window": window, "duration_std": 1.0 + i % 3, "resolved": True}
            for window, n in (("early", 30), ("late", 9)) for i in range(n)]
    out = turnaround_stretch(pd.DataFrame(rows)).iloc[0]
    assert out["status"] == INSUFFICIENT and np.isnan(out["estimate"]) and out["n"] == 39
    assert turnaround_stretch(pd.DataFrame(rows), min_per_window=9).iloc[0]["status"] == OK
