"""The sample generator: determinism, canonical tables, truth records, injected effects, round trip.

Effect checks average over the complete panic quarters of one default-scale
sample (fixed seed, so they are deterministic) and allow 4 standard errors
computed from the counts involved: a correct generator fails them with
probability < 1e-4 per check, a wrong effect size of the order of the
parameter fails them.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from quarterpanic.calendar import FiscalCalendar, annotate_by_org
from quarterpanic.errors import ParameterError
from quarterpanic.ingest import schemas
from quarterpanic.paths import SALESDATA_DIR
from quarterpanic.sample import EFFECTS, generate, load_scenario
from quarterpanic.util import department_field_columns

BANT = ["bant_budget", "bant_authority", "bant_need", "bant_timeline"]


@pytest.fixture(scope="module")
def small():
    return generate(seed=7, scale="small")


@pytest.fixture(scope="module")
def default():
    return generate(seed=11, scale="default")


def calendars(sample):
    return {org: info["fiscal_calendar"] for org, info in sample.orgs.items()}


def with_quarter(sample, table: str | pd.DataFrame, column: str, prefix: str) -> pd.DataFrame:
    """A table (name or frame) with the org's fiscal features of ``column`` and that quarter's truth."""
    frame = sample.tables[table] if isinstance(table, str) else table
    frame = annotate_by_org(frame, column, calendars(sample), prefix=prefix)
    truth = sample.truth_frame()[["org", "quarter", "open", "panic", "onset_week"]]
    truth = truth.rename(columns={c: prefix + c for c in ("quarter", "open", "panic", "onset_week")})
    frame = frame.merge(truth, on=["org", prefix + "quarter"], how="left")
    frame["late"] = frame[prefix + "week_of_quarter"] >= frame[prefix + "onset_week"]
    return frame


def complete_panic(frame: pd.DataFrame, prefix: str) -> pd.DataFrame:
    return frame[frame[prefix + "panic"].eq(True) & frame[prefix + "open"].eq(False)]


def panic_value(sample, effect: str) -> float:
    return float(sample.scenario["panic"][effect])


# -- API, determinism, schema ------------------------------------------------------------------------
def test_same_seed_same_sample_and_different_seed_differs(small):
    again = generate(seed=7, scale="small")
    for name in schemas.TABLES:
        pd.testing.assert_frame_equal(small.tables[name], again.tables[name])
    assert small.truth == again.truth
    other = generate(seed=8, scale="small")
    assert len(other.tables["opportunities"]) != len(small.tables["opportunities"]) or not \
        other.tables["opportunities"]["amount"].equals(small.tables["opportunities"]["amount"])


def test_tables_are_canonical(small):
    for name, model in schemas.TABLES.items():
        table = small.tables[name]
        model.validate(table, lazy=True)
        # Beside the canonical columns, the mid-size organisation's deals carry department-owned fields.
        table = table.drop(columns=list(department_field_columns(table.columns)))
        assert list(table.columns) == schemas.columns(name)
        assert table.dtypes.equals(schemas.empty(name).dtypes), name
        assert (table["source_file"] == "<generated>").all()
        for _, rows in table.groupby("org", sort=False):
            assert list(rows["source_row"]) == list(range(2, len(rows) + 2))
    opps = small.tables["opportunities"]
    assert opps.groupby("org")["opportunity_id"].apply(lambda s: s.is_unique).all()
    assert (opps["is_won"] <= opps["is_closed"]).all()
    assert set(opps["org"]) == set(small.orgs)


def test_nothing_exists_after_as_of(small):
    as_of = small.as_of
    t = small.tables
    assert t["opportunities"]["created_at"].max() <= as_of
    assert t["history"]["changed_at"].max() <= as_of
    assert t["leads"]["created_at"].max() <= as_of
    assert t["requests"]["created_at"].max() <= as_of
    assert t["requests"]["resolved_at"].max() <= as_of
    opps = t["opportunities"]
    assert (opps.loc[opps["is_closed"], "close_date"] <= as_of).all()
    assert (opps.loc[~opps["is_closed"], "close_date"] > as_of.normalize()).all()
    assert opps.loc[~opps["is_closed"], "stage"].isin(["Prospecting", "Qualification", "Needs Analysis",
                                                       "Proposal", "Negotiation"]).all()


def test_records_link_up(small):
    opps, leads, requests, history = (small.tables[k] for k in ("opportunities", "leads", "requests", "history"))
    ids = set(zip(opps["org"], opps["opportunity_id"]))
    assert set(zip(history["org"], history["opportunity_id"])) <= ids
    converted = leads[leads["converted_opportunity_id"].notna()]
    assert set(zip(converted["org"], converted["converted_opportunity_id"])) <= ids
    merged = converted.merge(opps, left_on=["org", "converted_opportunity_id"], right_on=["org", "opportunity_id"])
    assert (merged["converted_at"] == merged["created_at_y"]).all()
    assert (merged["score"] == merged["lead_score"]).all()
    assert (merged["created_at_x"] <= merged["converted_at"]).all()
    assert leads.loc[leads["status"] == "Disqualified", "disqualification_reason"].notna().all()
    linked = requests[requests["opportunity_id"].notna()]
    assert not linked["planned"].any() and requests.loc[~requests["planned"], "opportunity_id"].notna().mean() > 0.9
    assert set(zip(linked["org"], linked["opportunity_id"])) <= ids
    # Working days, working hours for CRM events.
    for stamp in (opps["created_at"], history["changed_at"]):
        assert (stamp.dt.day_of_week < 5).all() and stamp.dt.hour.between(8, 18).all()


# -- truth --------------------------------------------------------------------------------------------
def test_truth_has_a_record_for_every_org_and_quarter(small, default):
    for sample, complete in ((small, 8), (default, 10)):
        truth = sample.truth_frame()
        assert set(truth.columns) >= {"org", "quarter", "open", "panic", "onset_week", *EFFECTS}
        for org, info in sample.orgs.items():
            rows = truth[truth["org"] == org]
            calendar = FiscalCalendar.from_spec(info["fiscal_calendar"])
            first = sample.tables["opportunities"].query("org == @org")["created_at"].min()
            expected = calendar.quarters(first, sample.as_of)["quarter"].tolist()
            assert rows["quarter"].tolist() == expected
            assert len(rows) == complete + 1 and rows["open"].tolist() == [False] * complete + [True]
            assert rows["quarter"].iloc[-1] == calendar.quarter_of(sample.as_of)
    truth = default.truth_frame()
    small_org = truth[truth["org"] == "Brightline Studio"]
    assert small_org["panic"].sum() == 3 and not small_org["panic"].iloc[-1]
    mid = truth[truth["org"] == "Northwind Traders"]
    assert mid["panic"].sum() == 5 and mid["panic"].iloc[-1]
    # The enterprise panics in every complete quarter before the change its org.yaml declares, and in none since.
    (change,) = default.truth["changes"]
    assert change["org"] == "Globex Corporation" and change["segment"] is None
    assert default.orgs["Globex Corporation"]["changes"] == [{"date": change["date"], "label": change["label"]}]
    globex = truth[truth["org"] == "Globex Corporation"]
    calendar = FiscalCalendar.from_spec(default.orgs["Globex Corporation"]["fiscal_calendar"])
    starts = calendar.quarters(pd.Timestamp("2023-01-01"), default.as_of).set_index("quarter")["quarter_start"]
    after = globex["quarter"].map(starts) >= pd.Timestamp(change["date"])
    assert globex.loc[~after & ~globex["open"], "panic"].all() and not globex.loc[after, "panic"].any()
    assert (~after).sum() >= 6 and after.sum() >= 4
    assert truth.loc[truth["panic"], "onset_week"].between(8, 10).all()
    assert truth.loc[~truth["panic"], "onset_week"].isna().all()
    # Calm quarters carry the neutral values, panic ones the scenario's.
    scenario = default.scenario
    for effect, value in scenario["calm"].items():
        assert np.allclose(truth.loc[~truth["panic"], effect], value), effect
    for effect, value in scenario["panic"].items():
        if effect == "win_rate_ratio":  # with a close-keyed win drop, stated as the ratio of expected rates
            assert (np.log(truth.loc[truth["panic"], effect] / value).abs() < 0.2).all()
            continue
        assert np.allclose(truth.loc[truth["panic"], effect], value), effect
    assert truth.loc[~truth["panic"], "month3_bookings_share"].between(0.25, 0.75).all()


def test_as_of_lets_the_open_panic_quarter_show_its_onset(default):
    truth = default.truth_frame()
    open_panic = truth[truth["open"] & truth["panic"]]
    assert len(open_panic) >= 1
    for row in open_panic.itertuples():
        calendar = FiscalCalendar.from_spec(default.orgs[row.org]["fiscal_calendar"])
        week = calendar.annotate(pd.Series([default.as_of]))["week_of_quarter"].iloc[0]
        assert row.onset_week < week <= 12


def test_null_scenario_is_calm_everywhere():
    sample = generate("null", seed=3, scale="small")
    truth = sample.truth_frame()
    assert not truth["panic"].any()
    assert (truth["qualification_decay"] == 0).all() and (truth["reactive_order_taking"] == 1).all()
    assert sample.truth["scenario"] == "null"


def test_scenario_overrides_merge_over_the_default(tmp_path):
    sample = generate({"panic": {"qualification_decay": 0.2},
                       "orgs": {"Globex Corporation": {"panic_quarters": {2: {"onset_week": 7, "effects":
                                                                                  {"win_rate_ratio": 0.8}}}}}},
                      seed=1, scale="small")
    truth = sample.truth_frame()
    globex = truth[truth["org"] == "Globex Corporation"]
    assert globex["panic"].sum() == 1 and globex.loc[globex["panic"], "onset_week"].item() == 7
    (record,) = [r for r in sample.truth["quarters"] if r["org"] == "Globex Corporation" and r["panic"]]
    assert record["peak_effects"]["win_rate_ratio"] == 0.8
    assert np.allclose(truth.loc[truth["panic"], "qualification_decay"], 0.2)
    # A new panic schedule drops the default's change (which would end its later panics) unless it gives its own.
    assert "changes" not in sample.truth and "changes" not in sample.orgs["Globex Corporation"]
    own = [{"date": "2025-02-01", "segment": "Enterprise"}]
    merged = load_scenario({"orgs": {"Globex Corporation": {"panic_quarters": {1: 9}, "changes": own}}})
    assert merged["orgs"]["Globex Corporation"]["changes"] == own
    assert load_scenario()["orgs"]["Globex Corporation"]["changes"] == [{"date": "2024-11-01", "label": "deal desk"}]
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\norgs:\n  Northwind Traders: {panic_quarters: {}}\n")
    assert load_scenario(path)["orgs"]["Northwind Traders"]["panic_quarters"] == {}
    assert generate(path, seed=1, scale="small").truth["scenario"] == "mine"
    with pytest.raises(ParameterError):
        load_scenario({"panik": {}})
    with pytest.raises(ParameterError):
        load_scenario({"panic": {"qualification_dekay": 0.1}})
    with pytest.raises(ParameterError):
        generate(scale="huge")


# -- injected effects ---------------------------------------------------------------------------------
def qualified(opps: pd.DataFrame) -> pd.Series:
    """The default qualification rule: >= 3 of 4 BANT flags and a non-empty next step."""
    return (opps[BANT].astype(int).sum(axis=1) >= 3) & opps["next_step"].fillna("").str.strip().ne("")


def test_qualification_drops_by_d_after_onset(default):
    opps = with_quarter(default, "opportunities", "created_at", "c_")
    opps["qualified"] = qualified(opps)
    panic = complete_panic(opps, "c_")
    late, early = panic.loc[panic["late"], "qualified"], panic.loc[~panic["late"], "qualified"]
    drop = early.mean() - late.mean()
    se = np.sqrt(early.var() / len(early) + late.var() / len(late))
    assert abs(drop - panic_value(default, "qualification_decay")) < 4 * se
    # Calm quarters: no drop late in the quarter (the small firm's late dip is volume only).
    calm = opps[opps["c_panic"].eq(False) & ~opps["c_open"]]
    late_calm = calm["c_week_of_quarter"] >= 9
    se = np.sqrt(calm["qualified"].var() * (1 / late_calm.sum() + 1 / (~late_calm).sum()))
    assert abs(calm.loc[late_calm, "qualified"].mean() - calm.loc[~late_calm, "qualified"].mean()) < 4 * se


def test_small_firm_creates_fewer_deals_in_the_last_three_weeks_only(default):
    opps = with_quarter(default, "opportunities", "created_at", "c_")
    firm = opps[(opps["org"] == "Brightline Studio") & ~opps["c_open"]]
    late = firm["c_week_of_quarter"] > firm["c_weeks_in_quarter"] - 3
    per_week_late = late.sum() / (3 * firm["c_quarter"].nunique())
    per_week_early = (~late).sum() / ((firm["c_weeks_in_quarter"] - 3).groupby(firm["c_quarter"]).first().sum())
    assert per_week_late < 0.75 * per_week_early
    assert [r["org"] for r in default.truth["sell_or_do"]] == ["Brightline Studio"]


def working_days(sample, org: str, quarter: str, onset: int) -> tuple[int, int]:
    calendar = FiscalCalendar.from_spec(sample.orgs[org]["fiscal_calendar"])
    bounds = calendar.quarters(sample.as_of - pd.Timedelta(days=1200), sample.as_of).set_index("quarter")
    days = pd.Series(pd.bdate_range(bounds.loc[quarter, "quarter_start"], bounds.loc[quarter, "quarter_end"]))
    week = calendar.annotate(days)["week_of_quarter"]
    return int((week >= onset).sum()), int((week < onset).sum())


def test_requests_per_working_day_multiply_by_r_and_planned_by_deferral(default):
    requests = complete_panic(with_quarter(default, "requests", "created_at", "c_"), "c_")
    counts = {False: np.zeros(2), True: np.zeros(2)}  # planned -> [late, early] counts
    days = np.zeros(2)
    for (org, quarter), rows in requests.groupby(["org", "c_quarter"]):
        days += working_days(default, org, quarter, int(rows["c_onset_week"].iloc[0]))
        for planned in (False, True):
            chosen = rows[rows["planned"] == planned]
            counts[planned] += [chosen["late"].sum(), (~chosen["late"]).sum()]
    for planned, effect in ((False, "reactive_order_taking"), (True, "planned_work_deferral")):
        late, early = counts[planned]
        log_ratio = np.log((late / days[0]) / (early / days[1]))
        assert abs(log_ratio - np.log(panic_value(default, effect))) < 4 * np.sqrt(1 / late + 1 / early), effect


def test_turnaround_stretches_and_after_hours_rises(default):
    requests = complete_panic(with_quarter(default, "requests", "created_at", "c_"), "c_").dropna(
        subset=["resolved_at"])
    hours = np.log((requests["resolved_at"] - requests["created_at"]).dt.total_seconds() / 3600)
    # Within request type: mean log turnaround late minus early = log(stretch).
    by_type = hours.groupby([requests["request_type"], requests["late"]]).agg(["mean", "var", "count"]).unstack()
    diff = by_type["mean"][True] - by_type["mean"][False]
    weight = by_type["count"][True] * by_type["count"][False] / (by_type["count"][True] + by_type["count"][False])
    pooled = (diff * weight).sum() / weight.sum()
    se = np.sqrt(0.8 ** 2 / weight.sum())
    assert abs(pooled - np.log(panic_value(default, "turnaround_stretch"))) < 4 * se
    clock = requests["created_at"].dt.hour + requests["created_at"].dt.minute / 60
    after = (clock < 8) | (clock >= 18)
    late_share = after[requests["late"]].mean()
    share = panic_value(default, "after_hours_share")
    assert abs(late_share - share) < 4 * np.sqrt(share * (1 - share) / requests["late"].sum())


def test_win_rate_ratio_of_late_created_deals(default):
    opps = complete_panic(with_quarter(default, "opportunities", "created_at", "c_"), "c_")
    closed = opps[opps["is_closed"]]
    late, early = closed.loc[closed["late"], "is_won"], closed.loc[~closed["late"], "is_won"]
    ratio = late.mean() / early.mean()
    se = np.sqrt((1 - late.mean()) / late.sum() + (1 - early.mean()) / early.sum())
    # Truth's ratio of expected win rates, per quarter, weighted like the pooled data (by late deals).
    truth = default.truth_frame().set_index(["org", "quarter"])["win_rate_ratio"]
    late_deals = closed.groupby(["org", "c_quarter"])["late"].sum()
    expected = np.average(truth.reindex(late_deals.index), weights=late_deals)
    assert abs(np.log(ratio) - np.log(expected)) < 4 * se


def test_discount_uplift_and_last_week_size_change(default):
    opps = with_quarter(default, "opportunities", "close_date", "x_")
    panic = complete_panic(opps, "x_")
    won = panic[panic["is_won"]]
    late, early = won.loc[won["late"], "discount"], won.loc[~won["late"], "discount"]
    se = np.sqrt(late.var() / len(late) + early.var() / len(early))
    assert abs(late.mean() - early.mean() - panic_value(default, "discount_uplift")) < 4 * se
    closed = panic[panic["is_closed"]].copy()
    closed["last_week"] = closed["x_week_of_quarter"] == closed["x_weeks_in_quarter"]
    closed["log_amount"] = np.log(closed["amount"])
    # Within segment (amount scales differ), last week vs the rest of the quarter.
    stats = closed.groupby(["segment", "last_week"])["log_amount"].agg(["mean", "var", "count"]).unstack()
    weight = 1 / (stats["var"][True] / stats["count"][True] + stats["var"][False] / stats["count"][False])
    diff = ((stats["mean"][True] - stats["mean"][False]) * weight).sum() / weight.sum()
    assert abs(diff - np.log1p(panic_value(default, "last_week_deal_size_change"))) < 4 / np.sqrt(weight.sum())


def test_month3_share_of_won_amount(default):
    won = with_quarter(default, "opportunities", "close_date", "x_")
    won = won[won["is_won"] & won["x_open"].eq(False)]
    won["month3"] = won["amount"].where(won["x_month_of_quarter"] == 3, 0.0)
    shares = won.groupby(["org", "x_quarter"]).agg(month3=("month3", "sum"), total=("amount", "sum"),
                                                    panic=("x_panic", "first"))
    shares["share"] = shares["month3"] / shares["total"]
    shares["panic"] = shares["panic"].astype(bool)
    truth = default.truth_frame().set_index(["org", "quarter"])["month3_bookings_share"]
    shares["truth"] = truth.reindex(shares.index).to_numpy()
    panic, calm = shares[shares["panic"]], shares[~shares["panic"]]
    assert panic["share"].mean() > calm["share"].mean() + 0.15
    # Heavy-tailed amounts make one quarter's share noisy (sd ~0.05-0.1); the mean over quarters is not.
    assert abs((panic["share"] - panic["truth"]).mean()) < 0.06
    assert abs((calm["share"] - calm["truth"]).mean()) < 0.06


def test_close_date_pushes_stage_skips_and_lead_scores(default):
    history = with_quarter(default, "history", "changed_at", "t_")
    changes = history[history["field"] == "close_date"]
    old, new = pd.to_datetime(changes["old_value"]), pd.to_datetime(changes["new_value"])
    pushes = changes[(changes["t_days_to_quarter_end"] <= 13) & (old <= changes["t_quarter_end"])
                     & (new > changes["t_quarter_end"])]
    opps = with_quarter(default, "opportunities", "close_date", "x_")
    window_start = opps["x_quarter_end"] - pd.Timedelta(days=13)
    closed_in_window = opps[opps["is_closed"] & (opps["x_days_to_quarter_end"] <= 13)
                            & (opps["created_at"].dt.normalize() < window_start)]
    for panic, effect in ((True, "close_date_push_rate"), (False, "close_date_push_rate")):
        pushed = pushes[pushes["t_panic"].eq(panic) & pushes["t_open"].eq(False)]
        stayed = closed_in_window[closed_in_window["x_panic"].eq(panic) & closed_in_window["x_open"].eq(False)]
        n = len(pushed) + len(stayed)
        rate = len(pushed) / n
        expected = panic_value(default, effect) if panic else default.scenario["calm"][effect]
        assert abs(rate - expected) < 4 * np.sqrt(expected * (1 - expected) / n), (panic, rate)

    stages = ["Prospecting", "Qualification", "Needs Analysis", "Proposal", "Negotiation"]
    order = {name: i for i, name in enumerate(stages)}
    stage_rows = history[history["field"] == "stage"]
    before, after = stage_rows["old_value"].map(order), stage_rows["new_value"].map(order)
    skip = (after > before + 1) | ((stage_rows["new_value"] == "Closed Won") & (stage_rows["old_value"] != "Negotiation"))
    skipped = set(stage_rows.loc[skip, "opportunity_id"])
    created = complete_panic(with_quarter(default, "opportunities", "created_at", "c_"), "c_")
    created = created[created["is_closed"] & created["late"]]
    share = created["opportunity_id"].isin(skipped).mean()
    expected = panic_value(default, "stage_skip_rate")
    assert abs(share - expected) < 4 * np.sqrt(expected * (1 - expected) / len(created))

    leads = default.tables["leads"]
    converted = leads[leads["converted_at"].notna()]
    scores = complete_panic(with_quarter(default, converted, "converted_at", "v_"), "v_")
    late, early = scores.loc[scores["late"], "score"], scores.loc[~scores["late"], "score"]
    se = np.sqrt(late.var() / len(late) + early.var() / len(early))
    assert abs(early.mean() - late.mean() - panic_value(default, "lead_score_drop")) < 4 * se


# -- files --------------------------------------------------------------------------------------------
KEYS = {"opportunities": ["org", "opportunity_id"], "leads": ["org", "lead_id"], "requests": ["org", "request_id"],
        "history": ["org", "opportunity_id", "changed_at", "field", "old_value", "new_value"],
        "request_history": ["org", "request_id", "changed_at", "field", "old_value", "new_value"]}


def assert_same_records(generated: dict[str, pd.DataFrame], loaded) -> None:
    """Loaded tables equal the generated ones, value for value (provenance aside)."""
    for name, keys in KEYS.items():
        left = generated[name].drop(columns=["source_file", "source_row"])
        right = loaded.table(name).drop(columns=["source_file", "source_row"])
        left = left.sort_values(keys, kind="stable").reset_index(drop=True)
        right = right.sort_values(keys, kind="stable").reset_index(drop=True)
        pd.testing.assert_frame_equal(left, right, check_exact=False, rtol=1e-9, obj=name)


def assert_changes_declared(orgs, truth):
    """Each organisation's org.yaml declares exactly the changes truth.json says it made (and the default has one)."""
    declared = [{"org": org, **{k: change[k] for k in ("segment", "date", "label")}}
                for org, info in orgs.items() for change in info.changes]
    assert declared and sorted(declared, key=str) == sorted(truth["changes"], key=str)


@pytest.mark.slow
def test_written_sample_loads_back_with_zero_rejects(tmp_path):
    from quarterpanic.cli import main
    from quarterpanic.ingest.loading import load_crm

    assert main(["sample", "--out", str(tmp_path), "--seed", "5", "--scale", "small"]) == 0
    sample = generate(seed=5, scale="small")
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert truth == json.loads(json.dumps(sample.truth))
    crm = load_crm(tmp_path)
    assert crm.rejects.empty, crm.rejects.head().to_string()
    for name in schemas.TABLES:
        assert len(crm.table(name)) == len(sample.tables[name]), name
    assert (crm.accounting["rejected"] == 0).all() and (crm.accounting["read"] == crm.accounting["accepted"]).all()
    assert set(crm.orgs) == set(sample.orgs)
    assert_same_records(sample.tables, crm)
    assert_changes_declared(crm.orgs, truth)
    globex = next((tmp_path / "globex_corporation").glob("opportunities.csv")).read_bytes()
    assert b"\r\n" in globex and "€".encode("cp1252") in globex and "–".encode("cp1252") in globex
    assert b"Confidential Information - Do Not Distribute" in globex


@pytest.mark.slow
def test_bundled_salesdata_is_the_seed_2026_sample_and_loads_cleanly():
    from quarterpanic.ingest.loading import load_crm

    sample = generate(seed=2026, scale="default")
    truth = json.loads((SALESDATA_DIR / "truth.json").read_text())
    assert truth == json.loads(json.dumps(sample.truth)), "salesdata/ is stale: run `make sample`"
    crm = load_crm(SALESDATA_DIR)
    assert crm.rejects.empty, crm.rejects.head().to_string()
    assert_changes_declared(crm.orgs, truth)
    for name in schemas.TABLES:
        assert len(crm.table(name)) == len(sample.tables[name]), name
