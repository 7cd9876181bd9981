import pandas as pd
import pytest

from quarterpanic.calendar import (
    FEATURE_COLUMNS, FiscalCalendar, WorkingCalendar, annotate_by_org, fiscal_features_by_org,
)
from quarterpanic.errors import CalendarError


def features(calendar, *dates):
    return calendar.annotate(pd.Series(pd.to_datetime(list(dates))))


def test_calendar_year_quarters():
    f = features(FiscalCalendar(), "2025-01-01", "2025-03-31", "2025-04-01", "2025-12-31")
    assert list(f["quarter"]) == ["FY2025-Q1", "FY2025-Q1", "FY2025-Q2", "FY2025-Q4"]
    assert list(f["day_of_quarter"]) == [1, 90, 1, 92]
    assert list(f["days_to_quarter_end"]) == [89, 0, 90, 0]
    assert list(f["week_of_quarter"]) == [1, 13, 1, 13]
    assert list(f["month_of_quarter"]) == [1, 3, 1, 3]


def test_fiscal_year_starting_in_february_named_by_end_year():
    # Salesforce-style FY starting Feb 1: Feb 2025 - Jan 2026 is FY2026.
    f = features(FiscalCalendar(start_month=2), "2025-02-01", "2025-05-01", "2026-01-31")
    assert list(f["quarter"]) == ["FY2026-Q1", "FY2026-Q2", "FY2026-Q4"]
    assert f["quarter_start"].iloc[1] == pd.Timestamp("2025-05-01")
    assert f["quarter_end"].iloc[2] == pd.Timestamp("2026-01-31")


def test_fiscal_year_named_by_start_year():
    f = features(FiscalCalendar(start_month=7, naming="start"), "2025-07-01", "2026-06-30")
    assert list(f["quarter"]) == ["FY2025-Q1", "FY2025-Q4"]
    f = features(FiscalCalendar(start_month=7, naming="end"), "2025-07-01")
    assert list(f["quarter"]) == ["FY2026-Q1"]


def test_week_and_elapsed_are_consistent():
    f = features(FiscalCalendar(), *pd.date_range("2025-01-01", "2025-12-31"))
    assert f["week_of_quarter"].between(1, 13).all()
    assert (f["day_of_quarter"] == f["days_in_quarter"] - f["days_to_quarter_end"]).all()
    assert f["quarter_elapsed"].between(0, 1).all()
    assert f.groupby("quarter")["week_of_quarter"].nunique().eq(13).all()


def test_53_week_year_has_a_14_week_quarter():
    # 4-4-5, year ends on the last Saturday of December: FY2022 ends 2022-12-31 after 53 weeks.
    cal = FiscalCalendar(start_month=1, week_pattern="4-4-5", weekday="SAT", variation="last")
    quarters = cal.quarters("2022-01-01", "2023-12-31")
    fy22 = quarters[quarters["fiscal_year"] == 2022]
    assert list(fy22["weeks_in_quarter"]) == [13, 13, 13, 14]
    assert fy22["quarter_start"].iloc[0] == pd.Timestamp("2021-12-26")
    assert fy22["quarter_end"].iloc[-1] == pd.Timestamp("2022-12-31")
    fy23 = quarters[quarters["fiscal_year"] == 2023]
    assert list(fy23["weeks_in_quarter"]) == [13, 13, 13, 13]
    f = features(cal, "2022-12-31", "2023-01-01")
    assert list(f["quarter"]) == ["FY2022-Q4", "FY2023-Q1"]
    assert list(f["week_of_quarter"]) == [14, 1]


@pytest.mark.parametrize("pattern, months", [("4-4-5", [1, 1, 2, 3, 3]), ("5-4-4", [1, 1, 1, 2, 3])])
def test_week_patterns_set_fiscal_months(pattern, months):
    cal = FiscalCalendar(week_pattern=pattern)
    start = cal.quarters("2023-06-01", "2023-06-01")["quarter_start"].iloc[0]
    days = [start + pd.Timedelta(weeks=w) for w in (0, 3, 4, 8, 12)]
    assert list(cal.annotate(pd.Series(days))["month_of_quarter"]) == months


def test_missing_dates_give_missing_features():
    f = features(FiscalCalendar(), "2025-01-01", None)
    assert f["quarter"].isna().tolist() == [False, True]
    assert list(f.columns) == FEATURE_COLUMNS


def test_annotate_by_org_uses_each_orgs_calendar():
    df = pd.DataFrame({"org": ["a", "b"], "closed": pd.to_datetime(["2025-03-01", "2025-03-01"])})
    out = annotate_by_org(df, "closed", {"a": {"start_month": 2}}, prefix="close_")
    assert list(out["close_quarter"]) == ["FY2026-Q1", "FY2025-Q1"]
    assert "closed" in out and len(out) == 2


def test_fiscal_features_by_org_matches_each_calendar_row_by_row():
    stamps = pd.to_datetime(["2025-03-01 09:30", None, "2025-03-01 17:00", "2025-06-30 23:59", "2025-03-01 00:00"])
    df = pd.DataFrame({"org": ["a", "a", None, "b", "a"], "at": stamps}, index=[3, 3, 7, 1, 0])
    calendars = {"a": {"start_month": 2}, "b": {"week_pattern": "4-4-5", "weekday": "sat"}}
    out = fiscal_features_by_org(df, "at", calendars, prefix="p_")
    assert list(out.index) == [3, 3, 7, 1, 0] and list(out.columns) == ["p_" + c for c in FEATURE_COLUMNS]
    for position, (org, at) in enumerate(zip(df["org"], df["at"])):
        row = out.iloc[position]
        if pd.isna(org) or pd.isna(at):
            assert row.isna().all()
            continue
        expected = FiscalCalendar.from_spec(calendars[org]).annotate(pd.Series([at])).iloc[0]
        assert list(row) == list(expected)


@pytest.mark.parametrize(
    "spec", [{"start_month": 13}, {"naming": "middle"}, {"week_pattern": "4-4-4"}, {"fiscal": 1}]
)
def test_bad_specs_are_user_errors(spec):
    with pytest.raises(CalendarError):
        FiscalCalendar.from_spec(spec)


def test_spec_round_trip_and_month_names():
    cal = FiscalCalendar.from_spec({"start_month": "Feb", "week_pattern": "4-5-4", "weekday": "sat"})
    assert cal.start_month == 2 and cal.weekday == "SAT"
    assert FiscalCalendar.from_spec(cal.to_spec()) == cal


# -- working days ---------------------------------------------------------------------------------------
def test_without_a_country_only_weekends_are_days_off():
    weeks = pd.Series(pd.to_datetime(["2025-12-22", "2025-12-29"]))  # Mondays around Christmas
    assert WorkingCalendar().count(weeks, weeks + pd.Timedelta(days=6)).tolist() == [5, 5]


def test_public_holidays_of_the_country_and_subdivision_are_days_off():
    weeks = pd.Series(pd.to_datetime(["2025-12-22", "2025-12-29", "2025-01-06"]))
    ends = weeks + pd.Timedelta(days=6)
    # Germany: 25 and 26 December, 1 January; Bavaria adds Epiphany (6 January), Berlin does not.
    assert WorkingCalendar("DE").count(weeks, ends).tolist() == [3, 4, 5]
    assert WorkingCalendar("DE", "BY").count(weeks, ends).tolist() == [3, 4, 4]
    assert WorkingCalendar("DE", "BE").count(weeks, ends).tolist() == [3, 4, 5]


def test_shutdown_days_are_days_off_once_or_every_year():
    yearly = WorkingCalendar.from_spec({"shutdown_days": ["12-24..01-01"]})
    once = WorkingCalendar.from_spec({"shutdown_days": [pd.Timestamp("2025-08-11").date(), "2025-08-13..2025-08-14"]})
    weeks = pd.Series(pd.to_datetime(["2024-12-23", "2025-12-22", "2025-12-29", "2025-08-11"]))
    ends = weeks + pd.Timedelta(days=6)
    # Monday 23rd (Tuesday 23rd in 2025) still works; the shutdown runs over the new year to Friday 2 January.
    assert yearly.count(weeks, ends).tolist() == [1, 2, 1, 5]
    assert once.count(weeks, ends).tolist() == [5, 5, 5, 2]
    assert yearly.is_working(["2025-12-23", "2025-12-24", "2026-01-02"]).tolist() == [True, False, True]


def test_working_days_count_only_days_begun_by_as_of():
    monday = pd.Series(pd.to_datetime(["2025-12-22"]))
    german = WorkingCalendar("DE")
    assert german.count(monday, monday + pd.Timedelta(days=6), "2025-12-25 12:00").tolist() == [3]
    assert german.count(monday, monday + pd.Timedelta(days=6), "2025-12-22").tolist() == [0]


def test_working_calendar_spec_round_trips():
    spec = {"country": "US", "subdivision": "CA", "shutdown_days": ["12-24..01-01", "2025-07-03..2025-07-03"]}
    calendar = WorkingCalendar.from_spec(spec)
    assert calendar.to_spec() == spec and WorkingCalendar.from_spec(calendar.to_spec()) == calendar
    with pytest.raises(CalendarError, match="unknown working-day key"):
        WorkingCalendar.from_spec({"holidays": "US"})
