"""Slow change: the trend of the panic index and its components over the quarters, robust to one odd quarter."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quarterpanic.analysis import trend
from quarterpanic.analysis.findings import INSUFFICIENT, OK


def index_frame(values, first_year=2023, org="A", column="index"):
    labels = [f"FY{first_year + i // 4}-Q{i % 4 + 1}" for i in range(len(values))]
    return pd.DataFrame({"org": org, "segment": "all", "quarter": labels, column: values, "level": "calm"})


def test_quarter_labels_are_years_a_quarter_apart():
    years = trend.quarter_years(pd.Series(["FY2024-Q1", "FY2024-Q4", "FY2025-Q2"]))
    assert years.tolist() == [2024.0, 2024.75, 2025.25]
    with pytest.raises(ValueError, match="2024Q1"):
        trend.quarter_years(pd.Series(["2024Q1"]))


def test_a_steady_easing_is_found_per_year_with_an_interval_around_it():
    rng = np.random.default_rng(0)
    values = 2.0 - 0.1 * np.arange(12) + rng.normal(0, 0.1, 12)  # -0.1 a quarter: -0.4 a year
    out = trend.index_trends(index_frame(values)).iloc[0]
    assert out["status"] == OK and out["n_quarters"] == 12
    assert out["ci_low"] < -0.4 < out["ci_high"] < 0 and out["p_value"] < 0.01
    assert out["first_quarter"] == "FY2023-Q1" and out["last_quarter"] == "FY2025-Q4"


def test_one_panic_quarter_does_not_tilt_the_trend():
    values = np.random.default_rng(1).normal(0, 0.2, 12)
    values[-1] += 8.0  # a single panic quarter at the end would tilt a least-squares line upwards
    out = trend.index_trends(index_frame(values)).iloc[0]
    ols = np.polyfit(np.arange(12) / 4, values, 1)[0]
    assert abs(out["slope_per_year"]) < 0.15 and ols > 0.5
    assert out["ci_low"] <= 0 <= out["ci_high"]


def test_a_noisy_quarter_weighs_less_and_the_interval_agrees_with_the_p_value():
    rng = np.random.default_rng(2)
    se = np.full(12, 0.05)
    se[[0, 1, 11]] = 1.0  # thin first and last quarters (data begin mid-quarter, a quiet last quarter)
    values = -0.4 * np.arange(12) / 4 + rng.normal(0, 0.05, 12)
    values[[0, 1]] -= 1.0  # their sampling error pulls the ends away from the line
    values[11] += 1.0
    frame = index_frame(values).assign(index_se=se)
    weighted = trend.index_trends(frame).iloc[0]
    equal = trend.index_trends(frame.drop(columns="index_se")).iloc[0]
    assert weighted["ci_low"] < -0.4 < weighted["ci_high"] < 0 and weighted["p_value"] < 0.05
    assert not equal["ci_low"] < -0.4 < equal["ci_high"]
    flat = trend.index_trends(index_frame(rng.normal(0, 0.5, 8))).iloc[0]
    assert (flat["ci_low"] <= 0 <= flat["ci_high"]) == (flat["p_value"] >= 0.05)


def test_too_few_quarters_are_insufficient_and_missing_values_do_not_count():
    values = [1.0, np.nan, 0.5, 0.2, 0.1, np.nan, 0.0]
    out = trend.index_trends(index_frame(values), {"trend_min_quarters": 6}).iloc[0]
    assert out["status"] == INSUFFICIENT and out["n_quarters"] == 5 and np.isnan(out["slope_per_year"])


def test_the_index_column_is_read_under_either_name_and_components_per_component():
    old = trend.index_trends(index_frame(np.arange(8.0), column="panic_index")).iloc[0]
    assert old["slope_per_year"] == pytest.approx(4.0)
    scores = pd.concat([index_frame(np.arange(8.0), column="z").assign(component="qualification_decay"),
                        index_frame(-np.arange(8.0), column="z").assign(component="reactive_order_taking")])
    out = trend.component_trends(scores).set_index("component")["slope_per_year"]
    assert out.to_dict() == pytest.approx({"qualification_decay": 4.0, "reactive_order_taking": -4.0})
    # In the component's own units (its panic-side value), the scale the generator's truth states.
    scores = scores.assign(value=scores["z"] / 10, se=0.01)
    out = trend.component_trends(scores, value="value").set_index("component")["slope_per_year"]
    assert out.to_dict() == pytest.approx({"qualification_decay": 0.4, "reactive_order_taking": -0.4}, abs=1e-6)
