"""Bookings back-loading: shares with honest intervals, judged only where the export covers the closes."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import canonical_table

from quarterpanic.analysis import backloading
from quarterpanic.analysis.findings import INSUFFICIENT, OK, TOWARD_PANIC
from quarterpanic.dataset import Dataset


def won_deals(closes, amounts=None, org="A", start="2024-01-01"):
    n = len(closes)
    closes = pd.to_datetime(pd.Series(closes))
    return pd.DataFrame({
        "org": org, "opportunity_id": [f"{org}{i}" for i in range(n)], "size_class": "mid",
        "created_at": closes - pd.Timedelta(days=20), "close_date": closes, "stage": "Closed Won",
        "is_closed": True, "is_won": True, "owner": "o",
        "amount": amounts if amounts is not None else np.full(n, np.nan),
    })


def dataset_from(frames, as_of="2025-01-15"):
    opps = canonical_table("opportunities", pd.concat(frames, ignore_index=True))
    return Dataset.from_tables({"opportunities": opps}, {"A": {"size_class": "mid"}}, as_of=as_of)


def quarter_days(quarter_start, n, rng, month3_share):
    start = pd.Timestamp(quarter_start)
    in_m3 = rng.random(n) < month3_share
    first_two = start + pd.to_timedelta(rng.integers(0, 59, n), unit="D")
    third = start + pd.offsets.MonthBegin(2) + pd.to_timedelta(rng.integers(0, 29, n), unit="D")
    return np.where(in_m3, third, first_two)


def steady_year(rng, per_quarter=60, shares=(0.4, 0.4, 0.8, 0.4), amounts=True):
    frames = []
    for q, share in enumerate(shares):
        closes = quarter_days(pd.Timestamp("2024-01-01") + pd.DateOffset(months=3 * q), per_quarter, rng, share)
        frames.append(won_deals(closes, rng.lognormal(8, 0.3, per_quarter) if amounts else None))
    # Closes from before the first quarter, so every 2024 quarter's closes are covered.
    frames.append(won_deals(["2023-12-15"], [1000.0] if amounts else None))
    return frames


def test_a_back_loaded_quarter_is_flagged_toward_panic_and_calm_ones_not():
    findings = backloading.detect_bookings_backloading(dataset_from(steady_year(np.random.default_rng(1))))
    main = findings[findings["metric"] == "bookings_backloading"].set_index("quarter")
    assert main.loc["FY2024-Q3", "flagged"] and main.loc["FY2024-Q3", "direction"] == TOWARD_PANIC
    assert not main.drop(index="FY2024-Q3")["flagged"].any()
    level = findings[findings["metric"] == "month3_bookings_share"].set_index("quarter")
    assert level.loc["FY2024-Q3", "ci_low"] < 0.8 < level.loc["FY2024-Q3", "ci_high"]
    assert (main["signals"].map(tuple) == ("won amount",)).all()


def test_without_amounts_deal_counts_are_used_and_said():
    findings = backloading.detect_bookings_backloading(
        dataset_from(steady_year(np.random.default_rng(2), amounts=False)))
    level = findings[(findings["metric"] == "month3_bookings_share") & (findings["status"] == OK)]
    assert len(level) == 4 and level["estimate"].notna().all()
    assert (level["signals"].map(tuple) == ("won deal count",)).all()


def test_a_handful_of_deals_is_insufficient_and_few_deals_get_wide_honest_intervals():
    rng = np.random.default_rng(3)
    frames = steady_year(rng)
    # Q4: only 3 won deals, all in month 3.
    frames = [f for f in frames if not (f["close_date"] >= "2024-10-01").all()]
    frames.append(won_deals(["2024-12-05", "2024-12-10", "2024-12-20"], [1.0, 1.0, 1.0]))
    findings = backloading.detect_bookings_backloading(dataset_from(frames))
    q4 = findings[findings["quarter"] == "FY2024-Q4"]
    assert (q4["status"] == INSUFFICIENT).all() and q4["estimate"].isna().all()
    # 12 deals all in month 3: the share is 100% but the interval is not 100-100%.
    low, high = backloading._level(*backloading._effective(np.ones(12), np.ones(12, dtype=bool)), 0.95)
    assert high == pytest.approx(1.0) and low < 0.8


def test_a_quarter_whose_closes_the_export_does_not_cover_is_partial():
    rng = np.random.default_rng(4)
    frames = steady_year(rng)[:-1]  # no closes before 2024: Q1's early closes may be missing
    late_start = won_deals(quarter_days("2024-01-01", 60, rng, 0.4))
    late_start = late_start[late_start["close_date"] >= "2024-01-20"]
    frames[0] = late_start
    findings = backloading.detect_bookings_backloading(dataset_from(frames))
    q1 = findings[findings["quarter"] == "FY2024-Q1"]
    assert (q1["status"] == backloading.PARTIAL).all() and q1["estimate"].isna().all()
    assert not q1["flagged"].any()


def test_ci_level_sets_the_width():
    data = dataset_from(steady_year(np.random.default_rng(5)))
    narrow = backloading.detect_bookings_backloading(data, {"ci_level": 0.8})
    wide = backloading.detect_bookings_backloading(data, {"ci_level": 0.99})
    level = "metric == 'month3_bookings_share' and status == 'ok'"
    n, w = narrow.query(level), wide.query(level)
    assert ((w["ci_low"].to_numpy() < n["ci_low"].to_numpy()) & (n["ci_high"].to_numpy() < w["ci_high"].to_numpy())).all()
