"""One organisation's plan: its calendar, quarters, panic windows and rates, and the truth they imply.

Events are placed on a working-time axis that counts only 08:00-18:00 on Monday-Friday,
in hours; mapping back keeps order and lands in working hours."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from quarterpanic.calendar import FiscalCalendar
from quarterpanic.errors import ParameterError
from quarterpanic.sample.export import export_spec, is_full, measurable_effects
from quarterpanic.sample.scenario import EFFECTS, panic_entries

SEGMENTS = {  # amount lognormal (median, sigma), cycle median days, discount mean
    "SMB": {"amount_median": 9_000, "amount_sigma": 0.8, "cycle_days": 28, "discount_mean": 0.08},
    "Mid-Market": {"amount_median": 32_000, "amount_sigma": 0.9, "cycle_days": 50, "discount_mean": 0.10},
    "Enterprise": {"amount_median": 110_000, "amount_sigma": 1.0, "cycle_days": 80, "discount_mean": 0.12},
    "Strategic": {"amount_median": 380_000, "amount_sigma": 1.1, "cycle_days": 110, "discount_mean": 0.12},
}
CYCLE_SIGMA = 0.6
CYCLE_MIN_DAYS, CYCLE_MAX_DAYS = 3, 540
_EPOCH = np.datetime64("2000-01-03", "D")  # a Monday: origin of the working-time axis
DAY_START, DAY_HOURS = 8.0, 10.0            # working hours 08:00-18:00


# -- working time ---------------------------------------------------------------------------------
# Events are placed on a "working-time" axis that counts only 08:00-18:00 on
# Monday-Friday, in hours; mapping back keeps order and lands in working hours.
def _busday(days: np.ndarray) -> np.ndarray:
    return np.busday_count(_EPOCH, days.astype("datetime64[D]"))


def work_time(days: np.ndarray, hours: np.ndarray | float = 0.0) -> np.ndarray:
    """Working-time of ``days`` (datetime64[D], weekends count as the next Monday) plus hours."""
    return _busday(days) * DAY_HOURS + hours


def from_work_time(w: np.ndarray) -> np.ndarray:
    """datetime64[ns] (rounded to the minute) of working-time values."""
    minutes = np.round(np.asarray(w, dtype=float) * 60).astype(np.int64)
    day_minutes = int(DAY_HOURS * 60)
    day, minute = np.divmod(minutes, day_minutes)
    dates = np.busday_offset(_EPOCH, day)
    return (dates.astype("datetime64[m]") + (int(DAY_START * 60) + minute).astype("timedelta64[m]")).astype(
        "datetime64[ns]"
    )


def _timestamp_work_time(ts: pd.Timestamp) -> float:
    day = np.datetime64(ts.normalize().date(), "D")
    hours = ts.hour + ts.minute / 60 - DAY_START
    if not np.is_busday(day):
        return float(_busday(np.array([day]))[0] * DAY_HOURS)
    return float(_busday(np.array([day]))[0] * DAY_HOURS + min(max(hours, 0.0), DAY_HOURS))


def roll_to_weekday(days: np.ndarray) -> np.ndarray:
    return np.busday_offset(days.astype("datetime64[D]"), 0, roll="forward")


# -- one organisation -----------------------------------------------------------------------------
class OrgPlan:
    """The calendar, quarters, panic windows and rates of one organisation."""

    def __init__(self, name: str, spec: dict, scenario: dict, scale: str, as_of: pd.Timestamp):
        self.name, self.spec, self.as_of = name, spec, as_of
        scale_spec = scenario["scales"][scale]
        self.volume = float(scale_spec["volume"])
        self.calendar = FiscalCalendar.from_spec(spec.get("fiscal_calendar"))
        n_complete = int(scale_spec["complete_quarters"])
        table = self.calendar.quarters(as_of - pd.Timedelta(days=100 * (n_complete + 2)), as_of)
        quarters = table.iloc[-(n_complete + 1):].reset_index(drop=True)
        self.quarters = quarters
        self.nq = len(quarters)
        self.first_day = quarters["quarter_start"].iloc[0]
        self.export = export_spec(scenario, spec)
        # The CRM's records begin here: nothing is created (deals, leads, requests) before it.
        self.data_start = self.first_day + pd.Timedelta(days=7 * (self.export["data_start_week"] - 1))
        self.open_end = quarters["quarter_end"].iloc[-1]
        self.w_as_of = _timestamp_work_time(as_of)

        # Per-quarter effects: calm values everywhere, panic values where listed.
        self.onset = np.zeros(self.nq + 1, dtype=int)  # 0 = no panic; index nq = after the open quarter
        self.panic = np.zeros(self.nq + 1, dtype=bool)
        effects = {k: np.full(self.nq + 1, float(v)) for k, v in scenario["calm"].items()}
        effects["month3_bookings_share"] = np.full(self.nq + 1, np.nan)
        labels = list(quarters["quarter"])
        for key, (onset, overrides) in panic_entries(spec).items():
            q = self._quarter_index(key, labels)
            if q is None:
                continue  # before the first quarter of this scale
            self.onset[q], self.panic[q] = onset, True
            values = {**scenario["panic"], **(spec.get("effects") or {}), **overrides}
            for k, v in values.items():
                effects[k][q] = float(v)
        self.effects = effects
        self.win_probability = scenario["win_probability"]

        # Day table from the first day to well after the open quarter (closes beyond it).
        self.days = pd.date_range(self.first_day, self.open_end + pd.Timedelta(days=CYCLE_MAX_DAYS + 60), freq="D")
        feats = self.calendar.annotate(pd.Series(self.days))
        day_q = pd.Index(labels).get_indexer(feats["quarter"].astype(object))
        day_q[day_q < 0] = self.nq
        self.day_q = day_q
        self.day_week = feats["week_of_quarter"].to_numpy(dtype=int)
        self.day_weeks = feats["weeks_in_quarter"].to_numpy(dtype=int)
        self.day_month = feats["month_of_quarter"].to_numpy(dtype=int)
        self.day_to_end = feats["days_to_quarter_end"].to_numpy(dtype=int)
        self.day_dates = self.days.to_numpy().astype("datetime64[D]")
        self.day_busy = np.is_busday(self.day_dates)
        self.quarter_end = quarters["quarter_end"].to_numpy().astype("datetime64[D]")
        self.day_window = self.panic[day_q] & (self.day_week >= self.onset[day_q])
        self.day_last_week = self.day_window & (self.day_week == self.day_weeks)

        # Sellers, teams, segments.
        teams = spec["teams"]
        self.team_names = list(teams)
        self.team_segment = [teams[t] for t in self.team_names]
        self.n_sellers = max(int(spec["sellers"]), int(round(spec["sellers"] * max(self.volume, 1.0))))

    def _quarter_index(self, key: Any, labels: list[str]) -> int | None:
        if isinstance(key, str) and key in labels:
            return labels.index(key)
        try:
            back = int(key)
        except (TypeError, ValueError):
            raise ParameterError(
                f"org {self.name!r}: panic quarter {key!r} is neither a quarter label nor a number of quarters back"
            ) from None
        return self.nq - 1 - back if 0 <= back < self.nq else None

    def day_index(self, days: np.ndarray) -> np.ndarray:
        return (days.astype("datetime64[D]") - np.datetime64(self.first_day.date(), "D")).astype(int)

    def truth_records(self) -> list[dict]:
        calm_month3 = self.expected_calm_month3_share()
        full = is_full(self.export)
        measurable = set(measurable_effects(self.export))
        records = []
        for q, row in self.quarters.iterrows():
            effects = {}
            for name in EFFECTS:
                if name == "month3_bookings_share" and not self.panic[q]:
                    value = calm_month3[q]
                elif name == "month3_bookings_share" and q == 0 and self.data_start > self.first_day:
                    # Data that begin late in the quarter book mostly in month 3 anyway; the pull only
                    # ever moves deals into month 3, so the share is the larger of the two.
                    value = max(self.effects[name][q], calm_month3[q])
                else:
                    value = self.effects[name][q]
                # An effect the export holds no input for is not in the data: its truth is unknown there.
                effects[name] = round(float(value), 6) if full or name in measurable else None
            record = {
                "org": self.name,
                "quarter": row["quarter"],
                "open": bool(q == self.nq - 1),
                "panic": bool(self.panic[q]),
                "onset_week": int(self.onset[q]) if self.panic[q] else None,
                "effects": effects,
            }
            if not full:
                record["partial"] = bool(q == 0 and self.data_start > self.first_day)
            records.append(record)
        return records

    # Creation rate and mix, shared by the generator and the expected calm shares.
    def creation_rate(self, day_week: np.ndarray, day_weeks: np.ndarray, busy: np.ndarray,
                      working_days_per_quarter: np.ndarray, days: pd.DatetimeIndex | None = None) -> np.ndarray:
        """Expected new opportunities per day (0 on weekends and before the data start), with any quarter-end dip."""
        per_quarter = float(self.spec["opportunities_per_quarter"]) * self.volume
        rate = np.where(busy, per_quarter / working_days_per_quarter, 0.0)
        if days is not None and self.data_start > self.first_day:
            rate = np.where(np.asarray(days) >= self.data_start.to_datetime64(), rate, 0.0)
        dip = self.spec.get("quarter_end_creation_dip")
        if dip:
            late = day_week > day_weeks - int(dip["weeks"])
            rate = np.where(late, rate * float(dip["factor"]), rate)
        return rate

    def expected_calm_month3_share(self) -> np.ndarray:
        """Expected share of won amount closing in month 3 of each quarter, calm process.

        The creation rate (with any quarter-end dip) convolved with each segment's
        cycle-length distribution, weighted by mean amount, from the first day on (so the
        first quarters' ramp-up, with no earlier pipeline, is in it). Calm pushes (a few %
        of the last two weeks' deals) are ignored.
        """
        days = pd.date_range(self.first_day, self.open_end, freq="D")
        feats = self.calendar.annotate(pd.Series(days))
        labels = feats["quarter"].astype(object).to_numpy()
        busy = np.is_busday(days.to_numpy().astype("datetime64[D]"))
        working = pd.Series(busy).groupby(labels).transform("sum").to_numpy()
        rate = self.creation_rate(feats["week_of_quarter"].to_numpy(int),
                                  feats["weeks_in_quarter"].to_numpy(int), busy, working, days)
        segments = pd.Series(self.team_segment).value_counts(normalize=True)
        closes = np.zeros(len(days))
        for segment, share in segments.items():
            params = SEGMENTS[segment]
            pmf = _cycle_pmf(params["cycle_days"])
            mean_amount = params["amount_median"] * math.exp(params["amount_sigma"] ** 2 / 2)
            closes += share * mean_amount * np.convolve(rate, pmf)[: len(days)]
        # Weekend closes roll forward to Monday, as in the generator.
        weekday = days.day_of_week.to_numpy()
        for offset, dow in ((2, 5), (1, 6)):
            moved = np.where(weekday == dow, closes, 0.0)
            closes = closes - moved
            closes[offset:] += moved[:-offset]
        month3 = pd.Series(np.where(feats["month_of_quarter"].to_numpy(int) == 3, closes, 0.0)).groupby(labels).sum()
        total = pd.Series(closes).groupby(labels).sum()
        share = (month3 / total).reindex(list(self.quarters["quarter"]))
        return share.to_numpy()


def _cycle_pmf(median_days: float) -> np.ndarray:
    """P(cycle = k days), k = 0..CYCLE_MAX_DAYS: ceil of a lognormal, clipped to [min, max]."""
    k = np.arange(CYCLE_MAX_DAYS + 1, dtype=float)
    z = (np.log(np.maximum(k, 1e-9)) - math.log(median_days)) / (CYCLE_SIGMA * math.sqrt(2))
    cdf = 0.5 * (1 + np.vectorize(math.erf)(z))
    pmf = np.diff(cdf, prepend=0.0)
    pmf[:CYCLE_MIN_DAYS] = 0.0
    pmf[CYCLE_MIN_DAYS] = cdf[CYCLE_MIN_DAYS]  # everything up to the minimum lands on it
    pmf[-1] += 1.0 - cdf[-1]  # and everything beyond the maximum on that
    return pmf


def draw_cycle_days(rng: np.random.Generator, median_days: np.ndarray) -> np.ndarray:
    days = np.ceil(median_days * np.exp(rng.normal(0.0, CYCLE_SIGMA, len(median_days))))
    return np.clip(days, CYCLE_MIN_DAYS, CYCLE_MAX_DAYS).astype(int)
