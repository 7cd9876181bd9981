"""Before/after and difference-in-differences estimates (analysis/change.py) on synthetic findings frames."""
import numpy as np
import pandas as pd
import pytest

from helpers import bernoulli_dataset
from quarterpanic.analysis import change, detect, qualification
from quarterpanic.analysis.findings import AWAY_FROM_PANIC, INSUFFICIENT, METRICS, OK, empty_findings, make_findings

START = pd.Timestamp("2021-01-01")
METRIC = "qualification_decay"  # a difference of shares, panic = larger


def quarter_dates(orgs, n):
    starts = [START + pd.DateOffset(months=3 * i) for i in range(n)]
    return pd.DataFrame([
        {"org": org, "quarter": f"Q{i:02d}", "quarter_start": start,
         "quarter_end": start + pd.DateOffset(months=3) - pd.Timedelta(days=1), "complete": True}
        for org in orgs for i, start in enumerate(starts)
    ])


def series_findings(rng, org, n, *, level, change_at, change, se=0.03, shock=0.0, metric=METRIC, segment="all",
                    ratio=False):
    """One group's quarterly findings: ``level`` before quarter ``change_at``, ``level + change`` after, plus a
    ``shock`` from that quarter on, each quarter measured with standard error ``se`` (on the log scale for ratios)."""
    records = []
    for i in range(n):
        truth = level + (change + shock) * (i >= change_at)
        value = truth + rng.normal(0, se)
        low, high = value - 1.959964 * se, value + 1.959964 * se
        if ratio:
            value, low, high = np.exp([value, low, high])
        records.append({"org": org, "quarter": f"Q{i:02d}", "segment": segment, "component": metric,
                        "metric": metric, "estimate": value, "ci_low": low, "ci_high": high, "p_value": 0.5,
                        "ci_level": 0.95, "status": OK, "n": 100})
    return records


def date_of(change_at):
    return START + pd.DateOffset(months=3 * change_at)


def test_before_after_recovers_a_known_level_change_and_covers_it():
    rng = np.random.default_rng(1)
    orgs = [f"Org {i:03d}" for i in range(100)]  # 100 replications, each its own organisation and change
    records = [r for org in orgs for r in series_findings(rng, org, 10, level=0.30, change_at=5, change=-0.25)]
    changes = [{"org": org, "date": date_of(5)} for org in orgs]
    estimates = change.assess_changes(make_findings(records), None, changes, quarter_dates(orgs, 10)).estimates
    # Every organisation changed, so none is another's control: before/after rows only.
    rows = estimates
    assert len(rows) == 100 and (rows["method"] == change.ITS).all() and (rows["status"] == OK).all()
    assert (rows["n_before"] == 5).all() and (rows["n_after"] == 5).all()
    assert abs(rows["estimate"].mean() + 0.25) < 0.01
    covered = (rows["ci_low"] <= -0.25) & (-0.25 <= rows["ci_high"])
    assert 0.90 <= covered.mean() <= 0.995, covered.mean()


def test_a_ratio_metric_is_fitted_on_the_log_scale_and_reported_as_a_factor():
    rng = np.random.default_rng(2)
    findings = make_findings(series_findings(rng, "Acme", 10, level=np.log(3.0), change_at=5, change=np.log(1 / 3),
                                             metric="reactive_order_taking", se=0.01, ratio=True))
    row = change.assess_changes(findings, None, [{"org": "Acme", "date": date_of(5)}],
                                quarter_dates(["Acme"], 10)).estimates.iloc[0]
    assert row["scale"] == "ratio"
    assert row["before"] == pytest.approx(3.0, rel=0.03) and row["after"] == pytest.approx(1.0, rel=0.03)
    assert row["ci_low"] < 1 / 3 < row["ci_high"] and row["estimate"] == pytest.approx(1 / 3, rel=0.03)
    assert row["direction"] == AWAY_FROM_PANIC and row["significant"]


def test_the_quarter_containing_the_date_is_left_out():
    rng = np.random.default_rng(3)
    findings = make_findings(series_findings(rng, "Acme", 10, level=0.3, change_at=5, change=-0.2))
    mid_quarter = date_of(5) + pd.Timedelta(days=20)
    result = change.assess_changes(findings, None, [{"org": "Acme", "date": mid_quarter}], quarter_dates(["Acme"], 10))
    assert (result.estimates.iloc[0]["n_before"], result.estimates.iloc[0]["n_after"]) == (5, 4)
    assert (result.series["period"] == change.TRANSITION).sum() == 1


@pytest.mark.parametrize("change_at, counts", [(2, (2, 8)), (8, (8, 2)), (0, (0, 10))])
def test_too_few_quarters_on_a_side_is_insufficient_data_with_the_counts(change_at, counts):
    rng = np.random.default_rng(4)
    findings = make_findings(series_findings(rng, "Acme", 10, level=0.3, change_at=change_at, change=-0.2))
    row = change.assess_changes(findings, None, [{"org": "Acme", "date": date_of(change_at)}],
                                quarter_dates(["Acme"], 10)).estimates.iloc[0]
    assert row["status"] == INSUFFICIENT
    assert (row["n_before"], row["n_after"]) == counts
    assert row[["estimate", "ci_low", "ci_high", "p_value"]].isna().all()
    assert not row["significant"] and row["direction"] is None


def test_difference_in_differences_cancels_a_shared_shock_the_before_after_estimate_credits_to_the_change():
    rng = np.random.default_rng(5)
    shock = -0.15  # every group's decay eased at the change date: a market-wide lull, not the change
    records = (series_findings(rng, "Acme", 12, level=0.30, change_at=6, change=-0.20, shock=shock)
               + series_findings(rng, "Bolt", 12, level=0.25, change_at=6, change=0.0, shock=shock)
               + series_findings(rng, "Core", 12, level=0.35, change_at=6, change=0.0, shock=shock))
    result = change.assess_changes(make_findings(records), None, [{"org": "Acme", "date": date_of(6)}],
                                   quarter_dates(["Acme", "Bolt", "Core"], 12))
    rows = result.estimates.set_index("method")
    its, did = rows.loc[change.ITS], rows.loc[change.DID]
    assert its["ci_low"] <= -0.35 <= its["ci_high"] and not its["ci_low"] <= -0.20 <= its["ci_high"]
    assert did["ci_low"] <= -0.20 <= did["ci_high"]
    assert did["control"] == "Bolt, Core" and (did["n_control_before"], did["n_control_after"]) == (12, 12)
    assert set(result.series.loc[result.series["role"] == change.CONTROL, "org"]) == {"Bolt", "Core"}


def test_a_control_without_enough_quarters_on_a_side_is_left_out_and_without_any_there_is_no_number():
    rng = np.random.default_rng(10)
    records = (series_findings(rng, "Acme", 10, level=0.3, change_at=5, change=-0.2)
               + series_findings(rng, "Bolt", 10, level=0.3, change_at=5, change=0.0)
               + series_findings(rng, "Core", 7, level=0.3, change_at=5, change=0.0))  # 2 quarters after
    dates = quarter_dates(["Acme", "Bolt", "Core"], 10)
    did = change.assess_changes(make_findings(records), None, [{"org": "Acme", "date": date_of(5)}], dates).estimates
    did = did[did["method"] == change.DID].iloc[0]
    assert did["status"] == OK and did["control"] == "Bolt"
    alone = change.assess_changes(make_findings(records[:10] + records[20:]), None,
                                  [{"org": "Acme", "date": date_of(5)}], dates).estimates
    alone = alone[alone["method"] == change.DID].iloc[0]
    assert alone["status"] == INSUFFICIENT and pd.isna(alone["estimate"]) and pd.isna(alone["control"])


def test_a_segments_change_is_controlled_by_the_other_segments_and_a_changed_group_never_controls():
    rng = np.random.default_rng(6)
    records = (series_findings(rng, "Acme", 10, level=0.3, change_at=5, change=-0.2, segment="SMB")
               + series_findings(rng, "Acme", 10, level=0.3, change_at=5, change=0.0, segment="Enterprise")
               + series_findings(rng, "Acme", 10, level=0.3, change_at=5, change=-0.1, segment="Mid-Market")
               + series_findings(rng, "Acme", 10, level=0.3, change_at=5, change=-0.1)
               + series_findings(rng, "Bolt", 10, level=0.3, change_at=5, change=0.0))
    changes = [{"org": "Acme", "segment": "SMB", "date": date_of(5), "label": "deal desk"},
               {"org": "Acme", "segment": "Mid-Market", "date": date_of(7)}]
    result = change.assess_changes(make_findings(records), None, changes, quarter_dates(["Acme", "Bolt"], 10))
    smb = result.estimates[(result.estimates["segment"] == "SMB") & (result.estimates["method"] == change.DID)]
    whole = change.assess_changes(make_findings(records), None, changes + [{"org": "Bolt", "date": date_of(5)}],
                                  quarter_dates(["Acme", "Bolt"], 10)).estimates
    # Bolt's whole-organisation change finds no control: Acme changed in part.
    assert whole.loc[whole["org"] == "Bolt", "method"].eq(change.ITS).all()
    assert list(smb["control"]) == ["Acme (Enterprise)"] and list(smb["label"]) == ["deal desk"]
    assert list(smb["change"]) == [f"Acme (SMB): deal desk from {date_of(5):%Y-%m-%d}"]


def test_the_panic_index_is_a_quantity_fitted_unweighted_and_listed_first():
    rng = np.random.default_rng(7)
    findings = make_findings(series_findings(rng, "Acme", 10, level=0.3, change_at=5, change=-0.2))
    index = pd.DataFrame({"org": "Acme", "segment": "all", "quarter": [f"Q{i:02d}" for i in range(10)],
                          "panic_index": [4.0, 3.5, 4.2, 3.8, 4.1, 0.2, -0.1, 0.3, 0.0, 0.1], "level": "calm"})
    estimates = change.assess_changes(findings, index, [{"org": "Acme", "date": date_of(5)}],
                                      quarter_dates(["Acme"], 10)).estimates
    assert list(estimates["quantity"]) == [change.INDEX, METRIC]
    row = estimates.iloc[0]
    assert row["before"] == pytest.approx(3.92) and row["after"] == pytest.approx(0.1)
    assert row["estimate"] == pytest.approx(0.1 - 3.92) and row["significant"]


def test_a_group_without_any_index_value_gets_an_insufficient_index_row_with_its_counts():
    rng = np.random.default_rng(11)
    findings = make_findings(series_findings(rng, "Acme", 10, level=0.3, change_at=5, change=-0.2))
    index = pd.DataFrame({"org": "Acme", "segment": "all", "quarter": [f"Q{i:02d}" for i in range(10)],
                          "panic_index": np.nan, "level": "insufficient data"})
    row = change.assess_changes(findings, index, [{"org": "Acme", "date": date_of(5)}],
                                quarter_dates(["Acme"], 10)).estimates.iloc[0]
    assert row["quantity"] == change.INDEX and row["status"] == INSUFFICIENT
    assert (row["n_before"], row["n_after"]) == (0, 0) and pd.isna(row["estimate"])


def test_a_pre_trend_keeps_a_drift_already_under_way_from_being_credited_to_the_change():
    rng = np.random.default_rng(8)
    records = []
    for i in range(12):  # qualification decay easing by 0.03 a quarter all along; nothing happened at the date
        value = 0.5 - 0.03 * i + rng.normal(0, 0.01)
        records.append({"org": "Acme", "quarter": f"Q{i:02d}", "metric": METRIC, "component": METRIC,
                        "estimate": value, "ci_low": value - 0.0196, "ci_high": value + 0.0196, "ci_level": 0.95})
    findings, dates = make_findings(records), quarter_dates(["Acme"], 12)
    level_only = change.assess_changes(findings, None, [{"org": "Acme", "date": date_of(6)}], dates).estimates
    with_trend = change.assess_changes(findings, None, [{"org": "Acme", "date": date_of(6), "pre_trend": True}],
                                       dates).estimates
    assert level_only.iloc[0]["significant"] and level_only.iloc[0]["estimate"] < -0.1
    assert with_trend.iloc[0]["ci_low"] <= 0 <= with_trend.iloc[0]["ci_high"]
    assert bool(with_trend.iloc[0]["pre_trend"])


def test_incomplete_quarters_and_unmeasured_findings_are_not_used():
    rng = np.random.default_rng(9)
    records = series_findings(rng, "Acme", 10, level=0.3, change_at=5, change=-0.2)
    records[0]["status"] = "partial"
    findings = make_findings(records)
    dates = quarter_dates(["Acme"], 10)
    dates.loc[9, "complete"] = False
    row = change.assess_changes(findings, None, [{"org": "Acme", "date": date_of(5)}], dates).estimates.iloc[0]
    assert (row["n_before"], row["n_after"]) == (4, 4)


def test_no_changes_give_empty_frames_with_the_columns():
    result = change.assess_changes(make_findings([]), None, [], quarter_dates(["Acme"], 4))
    assert result.estimates.empty and list(result.estimates.columns) == change.ESTIMATE_COLUMNS
    assert result.series.empty and list(result.series.columns) == change.SERIES_COLUMNS


def test_a_segments_change_has_detect_find_per_segment(monkeypatch):
    seen = []
    monkeypatch.setattr(qualification, "detect_qualification_decay",
                        lambda dataset, params, *, cache=False: seen.append(params["by_segment"]) or empty_findings())
    data = bernoulli_dataset(per_quarter=40)
    detect.detect(data, {}, components=["qualification_decay"])
    detect.detect(data, {"changes": [{"org": "A", "date": "2025-01-01"}]}, components=["qualification_decay"])
    detect.detect(data, {"changes": [{"org": "A", "segment": "SMB", "date": "2025-01-01"}]},
                  components=["qualification_decay"])
    assert seen == [False, False, True]


def test_a_metric_pooled_over_the_quarters_is_not_split_at_the_date():
    assert not METRICS["sell_or_do"].per_quarter and METRICS["qualification_decay"].per_quarter
    rows = pd.DataFrame({"org": "A", "segment": "all", "quarter": ["2024-Q1", "2024-Q4"],
                         "metric": ["qualification_decay", "sell_or_do"], "estimate": [0.1, -0.5],
                         "ci_low": [0.0, -0.7], "ci_high": [0.2, -0.3], "ci_level": 0.95, "status": "ok"})
    assert set(change.quarter_series(rows)["quantity"]) == {"qualification_decay"}
