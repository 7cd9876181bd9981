"""Fiscal calendars and vectorised quarter features.

Two kinds of fiscal year, both built on pandas' own offsets:

* **month-based** — the fiscal year starts on the 1st of ``start_month``;
  quarters are pandas ``Period``\\ s of frequency ``Q-<month the year ends>``.
* **52/53-week** (``week_pattern`` 4-4-5, 4-5-4 or 5-4-4) — the year ends on
  the last (or nearest) ``weekday`` of ``end_month`` (pandas ``FY5253``);
  quarters are 13 weeks, the 53rd week going to ``qtr_with_extra_week``.

Fiscal years are named by the calendar year they end in (``naming: end``, the
common convention: FY2026 ends in 2026) or begin in (``naming: start``).
Quarter labels look like ``FY2026-Q3``; every part of the suite prints them.

:class:`WorkingCalendar` says which days an organisation works — Monday to
Friday less its public holidays (the ``holidays`` package, by country and
subdivision) and its own shutdown days — the one place working days are counted.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from quarterpanic.errors import CalendarError

WEEKDAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
WEEK_PATTERNS = {"4-4-5": (4, 4, 5), "4-5-4": (4, 5, 4), "5-4-4": (5, 4, 4)}

FEATURE_COLUMNS = [
    "fiscal_year",
    "quarter_num",
    "quarter",
    "quarter_start",
    "quarter_end",
    "day_of_quarter",
    "days_in_quarter",
    "week_of_quarter",
    "weeks_in_quarter",
    "month_of_quarter",
    "days_to_quarter_end",
    "quarter_elapsed",
]


@dataclass(frozen=True)
class FiscalCalendar:
    """A fiscal calendar.

    Parameters
    ----------
    start_month:
        Month (1-12) the fiscal year starts in. For 52/53-week calendars the
        year ends near the end of the month before it.
    naming:
        ``"end"`` names FY by the calendar year it ends in, ``"start"`` by the
        one it starts in.
    week_pattern:
        ``None`` for a month-based calendar, or ``"4-4-5"``, ``"4-5-4"``,
        ``"5-4-4"`` for a 52/53-week calendar (the pattern sets which weeks
        make each fiscal month).
    weekday:
        Weekday (``"SAT"``, ...) a 52/53-week year ends on.
    variation:
        ``"last"`` (last such weekday of the end month) or ``"nearest"``
        (nearest to its last day), as in pandas ``FY5253``.
    qtr_with_extra_week:
        Which quarter (1-4) takes the 53rd week.
    """

    start_month: int = 1
    naming: str = "end"
    week_pattern: str | None = None
    weekday: str = "SAT"
    variation: str = "last"
    qtr_with_extra_week: int = 4

    def __post_init__(self) -> None:
        if not 1 <= int(self.start_month) <= 12:
            raise CalendarError(f"start_month must be 1..12, got {self.start_month!r}")
        if self.naming not in ("end", "start"):
            raise CalendarError(f"naming must be 'end' or 'start', got {self.naming!r}")
        if self.week_pattern is not None and self.week_pattern not in WEEK_PATTERNS:
            raise CalendarError(
                f"week_pattern must be one of {sorted(WEEK_PATTERNS)} or omitted, got {self.week_pattern!r}"
            )
        if str(self.weekday).upper() not in WEEKDAYS:
            raise CalendarError(f"weekday must be one of {', '.join(WEEKDAYS)}, got {self.weekday!r}")
        if self.variation not in ("last", "nearest"):
            raise CalendarError(f"variation must be 'last' or 'nearest', got {self.variation!r}")
        if not 1 <= int(self.qtr_with_extra_week) <= 4:
            raise CalendarError(f"qtr_with_extra_week must be 1..4, got {self.qtr_with_extra_week!r}")

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: FiscalCalendar | Mapping[str, Any] | None) -> FiscalCalendar:
        """Build a calendar from a parameter mapping (as in org.yaml or a params file).

        ``None`` or ``{}`` is the calendar year. Unknown keys are refused.
        """
        if isinstance(spec, FiscalCalendar):
            return spec
        spec = dict(spec or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(spec) - known)
        if unknown:
            raise CalendarError(
                f"unknown fiscal_calendar key(s) {unknown}", hint=f"use only {sorted(known)}"
            )
        month = spec.get("start_month", 1)
        if isinstance(month, str):
            try:
                spec["start_month"] = MONTHS.index(month.strip().upper()[:3]) + 1
            except ValueError:
                raise CalendarError(f"start_month {month!r} is not a month") from None
        if "weekday" in spec:
            spec["weekday"] = str(spec["weekday"]).upper()[:3]
        return cls(**spec)

    def to_spec(self) -> dict[str, Any]:
        """The parameter mapping that rebuilds this calendar."""
        spec: dict[str, Any] = {"start_month": self.start_month, "naming": self.naming}
        if self.week_pattern:
            spec.update(
                week_pattern=self.week_pattern,
                weekday=self.weekday,
                variation=self.variation,
                qtr_with_extra_week=self.qtr_with_extra_week,
            )
        return spec

    @property
    def end_month(self) -> int:
        return (int(self.start_month) - 2) % 12 + 1

    # -- quarter table ------------------------------------------------------------------------
    def quarters(self, start: Any, end: Any) -> pd.DataFrame:
        """Every fiscal quarter overlapping ``[start, end]``.

        Returns columns ``quarter`` (label), ``fiscal_year``, ``quarter_num``,
        ``quarter_start`` (first day), ``quarter_end`` (last day, inclusive),
        ``days_in_quarter``, ``weeks_in_quarter``, sorted by start.
        """
        start, end = pd.Timestamp(start).normalize(), pd.Timestamp(end).normalize()
        if self.week_pattern:
            table = self._fy5253_quarters(start, end)
        else:
            table = self._month_quarters(start, end)
        table = table[(table["quarter_end"] >= start) & (table["quarter_start"] <= end)]
        table = table.reset_index(drop=True)
        table["days_in_quarter"] = (table["quarter_end"] - table["quarter_start"]).dt.days + 1
        # 89-92 day quarters have 13 weeks, the last one a little short or long.
        table["weeks_in_quarter"] = (table["days_in_quarter"] + 3) // 7
        table["quarter"] = _labels(table["fiscal_year"], table["quarter_num"])
        return table[
            ["quarter", "fiscal_year", "quarter_num", "quarter_start", "quarter_end", "days_in_quarter", "weeks_in_quarter"]
        ]

    def _month_quarters(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        freq = f"Q-{MONTHS[self.end_month - 1]}"
        periods = pd.period_range(start.to_period(freq), end.to_period(freq), freq=freq)
        fiscal_year = np.asarray(periods.qyear)
        if self.naming == "start" and self.start_month != 1:
            fiscal_year = fiscal_year - 1
        return pd.DataFrame(
            {
                "fiscal_year": fiscal_year.astype(int),
                "quarter_num": np.asarray(periods.quarter).astype(int),
                "quarter_start": periods.start_time.normalize().astype("datetime64[ns]"),
                "quarter_end": periods.end_time.normalize().astype("datetime64[ns]"),
            }
        )

    def _fy5253_quarters(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        year_end = pd.offsets.FY5253(
            weekday=WEEKDAYS.index(self.weekday.upper()), startingMonth=self.end_month, variation=self.variation
        )
        # Year ends bracketing the range; one extra on each side so partial years are whole.
        first = year_end.rollback(start - pd.Timedelta(days=1)) if not year_end.is_on_offset(start) else start
        ends = [first - year_end]
        while ends[-1] <= end + pd.Timedelta(days=371):
            ends.append(ends[-1] + year_end)
        rows = []
        for prev_end, this_end in zip(ends[:-1], ends[1:]):
            weeks = (this_end - prev_end).days // 7
            quarter_weeks = [13, 13, 13, 13]
            if weeks == 53:
                quarter_weeks[self.qtr_with_extra_week - 1] += 1
            fiscal_year = this_end.year if self.naming == "end" else (prev_end + pd.Timedelta(days=1)).year
            q_start = prev_end + pd.Timedelta(days=1)
            for num, n_weeks in enumerate(quarter_weeks, start=1):
                q_end = q_start + pd.Timedelta(weeks=n_weeks) - pd.Timedelta(days=1)
                rows.append((fiscal_year, num, q_start, q_end))
                q_start = q_end + pd.Timedelta(days=1)
        table = pd.DataFrame(rows, columns=["fiscal_year", "quarter_num", "quarter_start", "quarter_end"])
        for col in ("quarter_start", "quarter_end"):
            table[col] = table[col].astype("datetime64[ns]")
        return table

    # -- features -----------------------------------------------------------------------------
    def annotate(self, dates: pd.Series | pd.DatetimeIndex | Any) -> pd.DataFrame:
        """Fiscal features for every timestamp, vectorised.

        Parameters
        ----------
        dates:
            A datetime-like Series (NaT allowed; its rows get missing features).

        Returns
        -------
        DataFrame indexed like ``dates`` with :data:`FEATURE_COLUMNS`.
        ``week_of_quarter`` is 1-based; the odd days of a month-based quarter
        (89-92 days) make its 13th week a little shorter or longer than 7 days.
        ``month_of_quarter`` follows the week pattern in 52/53-week calendars.
        """
        dates = pd.Series(pd.to_datetime(dates))
        index = dates.index
        days = dates.dt.normalize()
        valid = days.notna()
        out = pd.DataFrame(index=index, columns=FEATURE_COLUMNS)
        if not valid.any():
            return _typed(out)
        table = self.quarters(days[valid].min(), days[valid].max())
        starts = table["quarter_start"].to_numpy(dtype="datetime64[ns]")
        pos = np.searchsorted(starts, days[valid].to_numpy(dtype="datetime64[ns]"), side="right") - 1
        picked = table.iloc[pos].reset_index(drop=True)
        picked.index = days[valid].index
        day_of_quarter = (days[valid] - picked["quarter_start"]).dt.days + 1
        week = np.minimum((day_of_quarter - 1) // 7 + 1, picked["weeks_in_quarter"])
        if self.week_pattern:
            first, second, _ = WEEK_PATTERNS[self.week_pattern]
            month = np.where(week <= first, 1, np.where(week <= first + second, 2, 3))
            if picked["weeks_in_quarter"].max() > 13:
                month = np.where(week > 13, 3, month)
        else:
            month = ((days[valid].dt.month - picked["quarter_start"].dt.month) % 12) + 1
        result = pd.DataFrame(
            {
                "fiscal_year": picked["fiscal_year"],
                "quarter_num": picked["quarter_num"],
                "quarter": picked["quarter"],
                "quarter_start": picked["quarter_start"],
                "quarter_end": picked["quarter_end"],
                "day_of_quarter": day_of_quarter,
                "days_in_quarter": picked["days_in_quarter"],
                "week_of_quarter": week,
                "weeks_in_quarter": picked["weeks_in_quarter"],
                "month_of_quarter": month,
                "days_to_quarter_end": (picked["quarter_end"] - days[valid]).dt.days,
                "quarter_elapsed": day_of_quarter / picked["days_in_quarter"],
            },
            index=days[valid].index,
        )
        out = result.reindex(index)
        return _typed(out)

    def quarter_of(self, date: Any) -> str:
        """The quarter label of one date, e.g. ``FY2026-Q3``."""
        return str(self.annotate(pd.Series([pd.Timestamp(date)]))["quarter"].iloc[0])


def _labels(fiscal_year: pd.Series, quarter_num: pd.Series) -> pd.Series:
    return "FY" + fiscal_year.astype(int).astype(str) + "-Q" + quarter_num.astype(int).astype(str)


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    ints = ["fiscal_year", "quarter_num", "day_of_quarter", "days_in_quarter", "week_of_quarter",
            "weeks_in_quarter", "month_of_quarter", "days_to_quarter_end"]
    frame = frame.copy()
    for col in ints:
        frame[col] = pd.array(frame[col], dtype="Int64")
    for col in ("quarter_start", "quarter_end"):
        frame[col] = pd.to_datetime(frame[col]).astype("datetime64[ns]")
    frame["quarter"] = frame["quarter"].astype("string")
    frame["quarter_elapsed"] = frame["quarter_elapsed"].astype(float)
    return frame


def annotate_by_org(
    df: pd.DataFrame,
    column: str,
    calendars: Mapping[str, FiscalCalendar | Mapping[str, Any] | None],
    *,
    org_column: str = "org",
    prefix: str = "",
) -> pd.DataFrame:
    """Add fiscal features of ``df[column]`` to a multi-organisation table.

    Each organisation uses its own calendar (``calendars[org]``; organisations
    not listed use the calendar year). Feature columns are added with
    ``prefix`` (e.g. ``"close_"`` gives ``close_week_of_quarter``).
    Returns a new frame; ``df`` is not changed.
    """
    features = fiscal_features_by_org(df, column, calendars, org_column=org_column, prefix=prefix)
    return pd.concat([df, features], axis=1)


def fiscal_features_by_org(
    df: pd.DataFrame,
    column: str,
    calendars: Mapping[str, FiscalCalendar | Mapping[str, Any] | None],
    *,
    org_column: str = "org",
    prefix: str = "",
) -> pd.DataFrame:
    """Only the fiscal feature columns of :func:`annotate_by_org`, indexed like ``df``.

    Every feature depends on the day alone, and a table of millions of
    timestamps holds a few thousand organisation × day pairs: each pair is
    annotated once and gathered back. Rows without a date or an organisation
    get missing features.
    """
    org_codes, org_names = pd.factorize(df[org_column])
    day_codes, days = pd.factorize(pd.to_datetime(df[column]).dt.normalize())
    width = max(len(days), 1)
    pair = np.where((org_codes < 0) | (day_codes < 0), -1, org_codes.astype(np.int64) * width + day_codes)
    pair_codes, pairs = pd.factorize(pair)
    known = pairs >= 0
    distinct = pd.DataFrame({"org": pd.Series(None, index=range(len(pairs)), dtype=object),
                             "day": pd.Series(pd.NaT, index=range(len(pairs)), dtype="datetime64[ns]")})
    distinct.loc[known, "org"] = np.asarray(org_names, dtype=object)[pairs[known] // width]
    distinct.loc[known, "day"] = pd.DatetimeIndex(days).take(pairs[known] % width).to_numpy(dtype="datetime64[ns]")
    features = _typed(pd.DataFrame(index=distinct.index, columns=FEATURE_COLUMNS))
    for org, rows in distinct.groupby("org", sort=False).groups.items():
        calendar = FiscalCalendar.from_spec(calendars.get(org))
        features.loc[rows] = calendar.annotate(distinct.loc[rows, "day"])
    features = _typed(features).take(pair_codes)
    features.index = df.index
    features.columns = [prefix + c for c in FEATURE_COLUMNS]
    return features


# -- working days -----------------------------------------------------------------------------------
WORKING_KEYS = ("country", "subdivision", "shutdown_days")
_RANGE = re.compile(r"^\s*(\S+)\s*\.\.\s*(\S+)\s*$")
_MONTH_DAY = re.compile(r"^\d{1,2}-\d{1,2}$")


@dataclass(frozen=True)
class WorkingCalendar:
    """Which days an organisation works: Monday to Friday, less public holidays and shutdown days.

    Parameters
    ----------
    country:
        ISO 3166 code of the country whose public holidays are days off
        (``holidays.country_holidays``), e.g. ``"DE"``; ``None`` = weekends only.
    subdivision:
        The state, province or region within ``country`` (``"BY"``, ``"CA"``),
        for holidays only some of it keeps.
    shutdown_days:
        The company's own days off, as ``(first, last)`` pairs (inclusive). A
        pair of ISO dates is one stretch; a pair of ``MM-DD`` days recurs every
        year (``("12-24", "01-01")`` runs over the new year).
    """

    country: str | None = None
    subdivision: str | None = None
    shutdown_days: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        country = str(self.country).strip().upper() if self.country else None
        subdivision = str(self.subdivision).strip().upper() if self.subdivision else None
        if subdivision and not country:
            raise CalendarError(f"subdivision {subdivision!r} needs a country", hint="add country: (e.g. DE)")
        if country:
            supported = _public_holidays().list_supported_countries()
            if country not in supported:
                raise CalendarError(f"country {country!r} is not a country the holidays package knows",
                                    hint="use an ISO 3166 alpha-2 code such as US, GB, DE")
            if subdivision and subdivision not in {s.upper() for s in supported[country]}:
                raise CalendarError(f"subdivision {subdivision!r} is not one of {country}'s",
                                    hint=f"use one of {', '.join(supported[country][:12])}, ...")
        stretches = []
        for first, last in (tuple(str(day) for day in pair) for pair in self.shutdown_days):
            yearly = bool(_MONTH_DAY.match(first)) and bool(_MONTH_DAY.match(last))
            try:
                if yearly:  # checked in a year without 29 February, which a yearly shutdown cannot use
                    bounds = [dt.date(2001, *map(int, day.split("-"))) for day in (first, last)]
                else:
                    bounds = [dt.date.fromisoformat(day) for day in (first, last)]
            except ValueError:
                raise CalendarError(f"shutdown_days: {first}..{last} is not a date or a range of dates",
                                    hint="write 2025-12-24, 2025-12-24..2026-01-02 or 12-24..01-01") from None
            if not yearly and bounds[1] < bounds[0]:
                raise CalendarError(f"shutdown_days: {first}..{last} ends before it starts")
            fmt = "%m-%d" if yearly else "%Y-%m-%d"
            stretches.append(tuple(day.strftime(fmt) for day in bounds))
        stretches = tuple(stretches)
        object.__setattr__(self, "country", country)
        object.__setattr__(self, "subdivision", subdivision)
        object.__setattr__(self, "shutdown_days", stretches)

    @classmethod
    def from_spec(cls, spec: WorkingCalendar | Mapping[str, Any] | None) -> WorkingCalendar:
        """Build from ``country``, ``subdivision`` and ``shutdown_days`` as written in org.yaml.

        Each ``shutdown_days`` item is a date, ``first..last``, a ``[first, last]``
        pair or a ``{from: first, to: last}`` map; ``MM-DD`` days recur yearly.
        ``None`` or ``{}`` is Monday to Friday.
        """
        if isinstance(spec, WorkingCalendar):
            return spec
        spec = dict(spec or {})
        unknown = sorted(set(spec) - set(WORKING_KEYS))
        if unknown:
            raise CalendarError(f"unknown working-day key(s) {unknown}", hint=f"use only {list(WORKING_KEYS)}")
        items = spec.get("shutdown_days") or []
        if not isinstance(items, (list, tuple)):
            items = [items]
        return cls(country=spec.get("country"), subdivision=spec.get("subdivision"),
                   shutdown_days=tuple(_stretch(item) for item in items))

    def to_spec(self) -> dict[str, Any]:
        """The org.yaml keys that rebuild this calendar (none for Monday to Friday)."""
        spec: dict[str, Any] = {}
        if self.country:
            spec["country"] = self.country
        if self.subdivision:
            spec["subdivision"] = self.subdivision
        if self.shutdown_days:
            spec["shutdown_days"] = [f"{first}..{last}" for first, last in self.shutdown_days]
        return spec

    def days_off(self, start: Any, end: Any) -> np.ndarray:
        """Public holidays and shutdown days in ``[start, end]`` (sorted ``datetime64[D]``, weekends included)."""
        start, end = pd.Timestamp(start).normalize(), pd.Timestamp(end).normalize()
        if end < start:
            return np.array([], dtype="datetime64[D]")
        days: set[dt.date] = set()
        years = range(start.year - 1, end.year + 1)
        if self.country:
            days.update(_public_holidays().country_holidays(self.country, subdiv=self.subdivision, years=years))
        for first, last in self.shutdown_days:
            if _MONTH_DAY.match(first):
                for year in years:
                    begin = pd.Timestamp(f"{year}-{first}")
                    stop = pd.Timestamp(f"{year + (last < first)}-{last}")
                    days.update(pd.date_range(begin, stop).date)
            else:
                days.update(pd.date_range(first, last).date)
        picked = np.array(sorted(days), dtype="datetime64[D]")
        return picked[(picked >= np.datetime64(start.date())) & (picked <= np.datetime64(end.date()))]

    def count(self, start: pd.Series | Any, end: pd.Series | Any, as_of: Any = None) -> np.ndarray:
        """Working days in each ``[start, end]`` (inclusive dates) that had begun by ``as_of``.

        A day counts when its midnight is before ``as_of`` (so ``as_of`` at
        18:00 counts that day, ``as_of`` at midnight does not); ``None`` counts
        every day.
        """
        begin = pd.to_datetime(pd.Series(start)).to_numpy().astype("datetime64[D]")
        stop = pd.to_datetime(pd.Series(end)).to_numpy().astype("datetime64[D]") + np.timedelta64(1, "D")
        if as_of is not None:
            stop = np.minimum(stop, np.datetime64(pd.Timestamp(as_of).ceil("D").date(), "D"))
        stop = np.maximum(stop, begin)
        off = self.days_off(begin.min(), stop.max()) if len(begin) else np.array([], dtype="datetime64[D]")
        return np.busday_count(begin, stop, holidays=off)

    def is_working(self, days: pd.Series | Iterable[Any]) -> np.ndarray:
        """Whether each day is a working day."""
        dates = pd.to_datetime(pd.Series(days)).to_numpy().astype("datetime64[D]")
        if not len(dates):
            return np.array([], dtype=bool)
        return np.is_busday(dates, holidays=self.days_off(dates.min(), dates.max()))


def _public_holidays() -> Any:
    """The ``holidays`` package, imported on first use."""
    # About half a second to import, which every import of the calendar (each notebook, each CLI call, a
    # dataset read back from a snapshot) would pay; only an organisation that names a country needs it.
    import holidays

    return holidays


def _stretch(item: Any) -> tuple[str, str]:
    """One ``shutdown_days`` item as a ``(first, last)`` pair of ISO dates or ``MM-DD`` days."""
    if isinstance(item, Mapping):
        if set(item) != {"from", "to"}:
            raise CalendarError(f"shutdown_days: {dict(item)!r} needs exactly from: and to:")
        pair = [item["from"], item["to"]]
    elif isinstance(item, (list, tuple)):
        pair = list(item)
    elif isinstance(item, str) and _RANGE.match(item):
        pair = list(_RANGE.match(item).groups())
    else:
        pair = [item, item]
    if len(pair) != 2:
        raise CalendarError(f"shutdown_days: {item!r} is not a date or a range of dates",
                            hint="write 2025-12-24, 2025-12-24..2026-01-02 or 12-24..01-01")
    return tuple(day.isoformat() if isinstance(day, dt.date) else str(day).strip() for day in pair)
