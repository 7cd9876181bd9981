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
from quarterpanic.sample.scenario import (
    EFFECTS,
    MULTIPLICATIVE,
    PATTERN_DEFAULTS,
    PATTERN_KEYS,
    RELATIVE,
    SHAPES,
    CONFOUNDER_DEFAULTS,
    draw,
    panic_entries,
)

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

    def __init__(self, name: str, spec: dict, scenario: dict, scale: str, as_of: pd.Timestamp,
                 draws: np.random.Generator | None = None):
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

        # Per-quarter effects: calm values everywhere, panic values where listed. self.effects holds
        # each panic quarter's value at full intensity; units see it scaled by their intensity.
        self.onset = np.zeros(self.nq + 1, dtype=int)  # 0 = no panic; index nq = after the open quarter
        self.panic = np.zeros(self.nq + 1, dtype=bool)
        self.calm = {k: float(v) for k, v in scenario["calm"].items()}
        effects = {k: np.full(self.nq + 1, float(v)) for k, v in scenario["calm"].items()}
        effects["month3_bookings_share"] = np.full(self.nq + 1, np.nan)
        base_pattern = {**PATTERN_DEFAULTS, **(scenario.get("pattern") or {}), **(spec.get("pattern") or {})}
        self.patterns = [dict(PATTERN_DEFAULTS) for _ in range(self.nq + 1)]  # calm quarters: no pattern
        labels = list(quarters["quarter"])
        # Scenario values may be distributions: drawn here, quarter by quarter, from the seed's
        # own stream for draws (so a scenario without any keeps every other number of its sample).
        draws = draws if draws is not None else np.random.default_rng(0)
        for q, entry in self._panic_quarters(spec, labels, draws).items():
            onset = draw(entry["onset_week"], draws)
            if not 2 <= int(round(onset)) <= 12:
                raise ParameterError(f"org {name!r}: drawn onset week {onset} of quarter {labels[q]} is not in 2..12")
            self.onset[q], self.panic[q] = int(round(onset)), True
            pattern = {**base_pattern, **{k: entry[k] for k in PATTERN_KEYS if k in entry}}
            self.patterns[q] = {k: draw(pattern[k], draws) for k in PATTERN_KEYS}
            if self.patterns[q]["shape"] not in SHAPES:
                raise ParameterError(f"org {name!r}: shape {self.patterns[q]['shape']!r} is not one of {list(SHAPES)}")
            values = {**scenario["panic"], **(spec.get("effects") or {}), **entry["effects"]}
            for k in sorted(values):
                effects[k][q] = float(draw(values[k], draws))
        self.strength = self._trend_strength(spec, labels)
        if spec.get("trend"):
            self._scale_by_strength(effects)
        self.effects = effects
        self.win_probability = scenario["win_probability"]
        self.seller_sd = float(draw(spec.get("seller_sd", scenario.get("seller_sd", 0.0)), draws) or 0.0)
        confounders = {**CONFOUNDER_DEFAULTS, **(scenario.get("confounders") or {}), **(spec.get("confounders") or {})}
        self.confounders = {k: float(draw(v, draws)) for k, v in confounders.items()}
        # A close-date keyed win-rate drop needs month-3 pulls that move deals whatever their outcome.
        self.close_keyed_wins = bool(np.any(self.effects["last_week_win_rate_change"][self.panic] != 0))

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
        self.day_quarter_num = feats["quarter_num"].to_numpy(dtype=int)
        # The last working day of each day's fiscal month (where habitual close dates land).
        month_key = pd.Series(day_q * 4 + self.day_month)
        last_busy = pd.Series(np.where(self.day_busy, np.arange(len(day_q)), -1)).groupby(month_key).transform("max")
        self.day_month_end = np.where((day_q < self.nq) & (last_busy >= 0), last_busy, np.arange(len(day_q)))
        self.quarter_end = quarters["quarter_end"].to_numpy().astype("datetime64[D]")
        self.day_window = self.panic[day_q] & (self.day_week >= self.onset[day_q])
        self.day_last_week = self.day_window & (self.day_week == self.day_weeks)
        self._shape_days(feats["day_of_quarter"].to_numpy(dtype=int), feats["days_in_quarter"].to_numpy(dtype=int))

        # Sellers, teams, segments.
        teams = spec["teams"]
        self.team_names = list(teams)
        self.team_segment = [teams[t] for t in self.team_names]
        self.n_sellers = max(int(spec["sellers"]), int(round(spec["sellers"] * max(self.volume, 1.0))))

    def _panic_quarters(self, spec: dict, labels: list[str], draws: np.random.Generator) -> dict[int, dict]:
        """{quarter index: entry} from the explicit entries and any ``draw:`` of ``panic_quarters``.

        ``draw: {probability: p}`` makes each complete quarter (and the open one with ``open: true``)
        panic with probability p; ``draw: {count: k}`` picks k of them. Drawn quarters take the
        draw's ``onset_week`` (default: integers 8..11), pattern keys and ``effects``; an explicit
        entry for the same quarter wins.
        """
        out: dict[int, dict] = {}
        spec_draw = (spec.get("panic_quarters") or {}).get("draw")
        if spec_draw:
            candidates = np.arange(self.nq if spec_draw.get("open") else self.nq - 1)
            if "probability" in spec_draw:
                chosen = candidates[draws.random(len(candidates)) < float(draw(spec_draw["probability"], draws))]
            else:
                count = min(int(draw(spec_draw["count"], draws)), len(candidates))
                chosen = np.sort(draws.choice(candidates, count, replace=False))
            entry = {k: spec_draw[k] for k in PATTERN_KEYS if k in spec_draw}
            entry.update(onset_week=spec_draw.get("onset_week", {"integers": [8, 11]}),
                         effects=dict(spec_draw.get("effects") or {}))
            out.update({int(q): entry for q in chosen})
        for key, entry in panic_entries(spec).items():
            q = self._quarter_index(key, labels)
            if q is not None:  # else before the first quarter of this scale
                out[q] = entry
        return dict(sorted(out.items()))

    def _trend_strength(self, spec: dict, labels: list[str]) -> np.ndarray:
        """Per quarter, the strength of its panic under the org's slow change (1 everywhere without ``trend``).

        ``trend: {per_year: r}`` makes a panic quarter ``q`` quarters after the first one panic with
        strength ``1 + r × q / 4``: r < 0 eases the panic steadily, r > 0 worsens it.
        """
        strength = np.ones(self.nq + 1)
        trend = spec.get("trend")
        if not trend:
            return strength
        if set(trend) != {"per_year"}:
            raise ParameterError(f"org {self.name!r}: trend takes only per_year (the change of panic strength a year)")
        strength[: self.nq] = 1.0 + float(trend["per_year"]) * np.arange(self.nq) / 4
        weak = np.flatnonzero((strength < 0) & self.panic)
        if len(weak):
            raise ParameterError(f"org {self.name!r}: trend per_year {trend['per_year']} leaves no panic by "
                                 f"{labels[weak[0]]}", hint="ease more slowly or stop the panic quarters earlier")
        return strength

    def _scale_by_strength(self, effects: dict[str, np.ndarray]) -> None:
        """Every panic quarter's effects moved from calm by its :attr:`strength` (on the log scale for effects
        that multiply, like an intensity); the month-3 share follows in :meth:`month3_target`."""
        for q in np.flatnonzero(self.panic):
            s = self.strength[q]
            for name, calm in self.calm.items():
                panic = effects[name][q]
                if name in MULTIPLICATIVE:
                    effects[name][q] = calm * (panic / calm) ** s
                elif name in RELATIVE:
                    effects[name][q] = (1.0 + calm) * ((1.0 + panic) / (1.0 + calm)) ** s - 1.0
                else:
                    effects[name][q] = calm + s * (panic - calm)

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

    # -- intensity: how strongly a panic holds on a day, for a seller ------------------------------
    def _shape_days(self, day_of_quarter: np.ndarray, days_in_quarter: np.ndarray) -> None:
        """The panic's intensity path per day (``day_shape``, 0 outside a post-onset window) and the
        share of sellers it has reached (``day_fraction``).

        ``step`` is 1 from the onset on; ``ramp`` rises linearly from the onset's first day to 1 on
        the quarter's last day (or after ``ramp_weeks``); ``plateau`` ramps over ``ramp_weeks``
        (default 2) and then holds at 1. A ``seller_fraction`` f of the sellers panic from the
        onset; with ``spread`` the share grows linearly to all of them by the quarter's end.
        """
        q = self.day_q
        since = day_of_quarter - 7 * (self.onset[q] - 1)  # 1 on the onset week's first day
        length = np.maximum(days_in_quarter - 7 * (self.onset[q] - 1), 1)
        progress = np.clip(since / length, 0.0, 1.0)
        shape = np.array([SHAPES.index(p["shape"]) for p in self.patterns])[q]
        ramp_days = np.array([7.0 * float(p["ramp_weeks"] or (2 if p["shape"] == "plateau" else 0))
                              for p in self.patterns])[q]
        ramped = np.where(ramp_days > 0, np.clip(since / np.maximum(ramp_days, 1.0), 0.0, 1.0), progress)
        intensity = np.where(shape == SHAPES.index("step"), 1.0, ramped)
        self.day_shape = np.where(self.day_window, intensity, 0.0)
        fraction = np.array([float(p["seller_fraction"]) for p in self.patterns])[q]
        spread = np.array([bool(p["spread"]) for p in self.patterns])[q]
        self.day_fraction = np.where(spread, fraction + (1.0 - fraction) * progress, fraction)
        # Quarters where only some sellers panic need each seller's draw (set_sellers).
        self.split = np.array([float(p["seller_fraction"]) < 1.0 or bool(p["segments"]) for p in self.patterns])
        self.split &= self.panic
        # A change ("panic stops after this date in that segment", or the whole org without one) needs each
        # seller's own path.
        self.changes = [{"segment": None, **change} for change in (self.spec.get("changes") or [])]
        for change in self.changes:
            if "date" not in change:
                raise ParameterError(f"org {self.name!r}: each change needs a date (and a segment, or none: the org)")
        if self.changes:
            self.split = self.panic.copy()
        self.seller_u: np.ndarray | None = None
        self.seller_ok: np.ndarray | None = None
        self.seller_stop: np.ndarray | None = None
        self.request_weight: np.ndarray | None = None
        self.seller_weight: np.ndarray | None = None
        self.seller_names: np.ndarray | None = None
        self.units: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.stated: dict[tuple[str, int], float] = {}  # truths the tables compute directly

    def set_sellers(self, people: dict, rng: np.random.Generator) -> None:
        """Which sellers each split quarter reaches: seller s panics on day d of quarter q when
        ``u[s, q] < day_fraction[d]`` and its team or segment is among the quarter's ``segments``."""
        self.request_weight = people["request_weight"]
        self.seller_weight = people["weight"]
        self.seller_names = people["names"]
        if not self.split.any():
            return
        self.seller_u = rng.random((self.n_sellers, self.nq + 1))
        team_names = np.array(self.team_names, dtype=object)[people["team"]]
        team_segments = np.array(self.team_segment, dtype=object)[people["team"]]
        self.seller_stop = np.full(self.n_sellers, len(self.days))  # first day a seller no longer panics
        for change in self.changes:
            day = int(self.day_index(np.array([pd.Timestamp(change["date"]).to_datetime64()]))[0])
            if change["segment"] is None:
                chosen = np.ones(self.n_sellers, dtype=bool)
            else:
                chosen = np.isin(team_names, [change["segment"]]) | np.isin(team_segments, [change["segment"]])
            if not chosen.any():
                raise ParameterError(f"org {self.name!r}: change segment {change['segment']!r} is no team or segment")
            self.seller_stop = np.where(chosen, np.minimum(self.seller_stop, day), self.seller_stop)
        ok = np.ones((self.n_sellers, self.nq + 1), dtype=bool)
        for q, pattern in enumerate(self.patterns):
            if pattern["segments"]:
                chosen = list(pattern["segments"])
                ok[:, q] = np.isin(team_names, chosen) | np.isin(team_segments, chosen)
        self.seller_ok = ok

    def intensity(self, day_idx: np.ndarray, seller: np.ndarray) -> np.ndarray:
        """Panic intensity in [0, 1] of each (day, seller) pair."""
        level = self.day_shape[day_idx]
        if self.seller_u is None:
            return level
        q = self.day_q[day_idx]
        reached = (self.seller_u[seller, q] < self.day_fraction[day_idx]) & self.seller_ok[seller, q]
        reached &= day_idx < self.seller_stop[seller]
        return np.where(reached, level, 0.0)

    def day_mixture(self, day_idx: np.ndarray, effect: str) -> np.ndarray:
        """Per day, the request-weighted mean over sellers of the effect's value (org-level requests)."""
        q = self.day_q[day_idx]
        if self.seller_u is None or not self.split[q].any():
            return self.blend(effect, q, self.day_shape[day_idx])
        out = self.blend(effect, q, self.day_shape[day_idx])
        rows = np.flatnonzero(self.split[q] & (self.day_shape[day_idx] > 0))
        if not len(rows):  # days before any onset: calm for every seller
            return out
        sellers = np.arange(self.n_sellers)
        level = self.intensity(np.repeat(day_idx[rows], self.n_sellers), np.tile(sellers, len(rows)))
        values = self.blend(effect, np.repeat(q[rows], self.n_sellers), level).reshape(len(rows), -1)
        out[rows] = values @ self.request_weight
        return out

    def blend(self, effect: str, q: np.ndarray, level: np.ndarray) -> np.ndarray:
        """The effect's value in quarter(s) ``q`` at intensity ``level``: calm at 0, the quarter's
        panic value at 1, in between on the log scale for effects that multiply and linearly otherwise.
        Effects that are a relative change come back as the factor 1 + change."""
        calm = self.calm.get(effect, self.effects[effect][self.nq])
        panic = self.effects[effect][q]
        if effect in MULTIPLICATIVE:
            value = calm * (panic / calm) ** level
        elif effect in RELATIVE:
            value = (1.0 + calm) * ((1.0 + panic) / (1.0 + calm)) ** level
        else:
            value = calm + level * (panic - calm)
        full = (1.0 + panic) if effect in RELATIVE else panic
        return np.where(level == 1.0, full, value)

    def record_units(self, name: str, day_idx: np.ndarray, level: np.ndarray) -> None:
        """Remember the intensity of units of one kind (e.g. deals created post-onset) for the truth."""
        q, level = self.day_q[day_idx], np.asarray(level, dtype=float)
        if name in self.units:  # e.g. pushes, recorded quarter by quarter
            q, level = np.concatenate([self.units[name][0], q]), np.concatenate([self.units[name][1], level])
        self.units[name] = (q, level)

    def day_index(self, days: np.ndarray) -> np.ndarray:
        return (days.astype("datetime64[D]") - np.datetime64(self.first_day.date(), "D")).astype(int)

    def truth_records(self) -> list[dict]:
        """One record per quarter: whether it panics, its onset and pattern, and each effect as the
        average over the post-onset window of what the units there saw (see :meth:`window_effects`)."""
        calm_month3 = self._calm_month3()
        full = is_full(self.export)
        measurable = set(measurable_effects(self.export))
        records = []
        for q, row in self.quarters.iterrows():
            averaged = self.window_effects(q) if self.panic[q] else {}
            effects = {}
            for name in EFFECTS:
                if name == "month3_bookings_share" and not self.panic[q]:
                    value = calm_month3[q]
                elif name == "month3_bookings_share" and q == 0 and self.data_start > self.first_day:
                    # Data that begin late in the quarter book mostly in month 3 anyway; the pull only
                    # ever moves deals into month 3, so the share is the larger of the two.
                    value = max(self.month3_target(q), calm_month3[q])
                else:
                    value = averaged.get(name, self.effects[name][q])
                # An effect the export holds no input for is not in the data: its truth is unknown there.
                effects[name] = round(float(value), 6) if full or name in measurable else None
            # The after-hours level's counterpart the detector reports: late share minus early share.
            shift = averaged.get("after_hours_shift", 0.0) if effects["after_hours_share"] is not None else None
            effects["after_hours_shift"] = None if shift is None else round(float(shift), 6)
            pattern = self.patterns[q]
            record = {
                "org": self.name,
                "quarter": row["quarter"],
                "open": bool(q == self.nq - 1),
                "panic": bool(self.panic[q]),
                "onset_week": int(self.onset[q]) if self.panic[q] else None,
                "shape": pattern["shape"] if self.panic[q] else None,
                "ramp_weeks": _number(pattern["ramp_weeks"]) if self.panic[q] else None,
                "seller_fraction": float(pattern["seller_fraction"]) if self.panic[q] else None,
                "spread": bool(pattern["spread"]) if self.panic[q] else None,
                "segments": list(pattern["segments"]) if self.panic[q] and pattern["segments"] else None,
                "intensity": round(float(np.mean(self._levels("created", q))), 6) if self.panic[q] else None,
                "effects": effects,
            }
            if self.split[q] and self.seller_u is not None:
                # Who panics by the quarter's end (everyone when the pattern reaches all sellers).
                reached = (self.seller_u[:, q] < self._final_fraction(q)) & self.seller_ok[:, q]
                record["sellers_reached"] = sorted(str(n) for n in self.seller_names[reached])
            if self.panic[q]:
                record["peak_effects"] = {name: round(float(self.effects[name][q]), 6) for name in EFFECTS
                                          if name != "month3_bookings_share"}
            if not full:
                record["partial"] = bool(q == 0 and self.data_start > self.first_day)
            if self.spec.get("trend"):
                record["trend_strength"] = round(float(self.strength[q]), 6)
            records.append(record)
        return records

    def _final_fraction(self, q: int) -> float:
        pattern = self.patterns[q]
        return 1.0 if pattern["spread"] else float(pattern["seller_fraction"])

    SEGMENT_EFFECTS = ("qualification_decay", "lead_score_drop", "stage_skip_rate", "win_rate_ratio")

    def segment_records(self) -> list[dict]:
        """Per quarter and segment, the deal effects averaged over the segment's post-onset deals.

        Only for organisations whose panic differs by segment (``segments`` in a pattern, or ``changes``);
        ``panic`` says whether any such deal panicked, ``intensity`` their mean intensity."""
        if not (self.changes or any(p["segments"] for p in self.patterns)):
            return []
        records = []
        for q, row in self.quarters.iterrows():
            for segment in dict.fromkeys(self.team_segment):
                qs, level = self.units.get(f"created:{segment}", (np.zeros(0, int), np.zeros(0)))
                level = level[qs == q] if self.panic[q] else np.zeros(0)
                mean = float(np.mean(level)) if len(level) else 0.0
                effects = {name: round(float(np.mean(self.blend(name, np.array([q]), level))) if len(level)
                                       else self.calm[name], 6) for name in self.SEGMENT_EFFECTS}
                records.append({"org": self.name, "quarter": row["quarter"], "segment": segment,
                                "panic": bool(mean > 0), "onset_week": int(self.onset[q]) if mean > 0 else None,
                                "intensity": round(mean, 6), "effects": effects})
        return records

    def change_records(self) -> list[dict]:
        """The scenario's changes: from ``date`` on, the panic stops among the segment's (or team's) sellers
        (every seller's for a change without a segment: ``segment`` None)."""
        return [{"org": self.name, "segment": c["segment"], "date": str(pd.Timestamp(c["date"]).date()),
                 "label": c.get("label")} for c in self.changes]

    def window_effects(self, q: int) -> dict[str, float]:
        """Each effect of panic quarter ``q`` as the average over its post-onset window.

        Deal effects average over the deals of the window as drawn (created in it for
        qualification, win rate, lead score and stage skips; won with a close date in it for
        the discount; closing in its last week for the deal size; due in the last 14 days for
        pushes), each at its own seller's intensity. Effects that add average their values;
        the win-rate ratio is the ratio of expected win rates (the mean of the per-deal factors);
        deal size and turnaround, read on the log scale, are the geometric means. Request rates
        are the ratio of the expected rate per working day after the onset (up to ``as_of``) to
        the rate before it.
        """
        q_arr = np.array([q])
        out: dict[str, float] = {}
        for name in ("qualification_decay", "lead_score_drop", "stage_skip_rate", "win_rate_ratio"):
            out[name] = float(np.mean(self.blend(name, q_arr, self._levels("created", q))))
        out["discount_uplift"] = float(np.mean(self.blend("discount_uplift", q_arr, self._levels("won_close", q))))
        size = self.blend("last_week_deal_size_change", q_arr, self._levels("last_week_close", q))
        out["last_week_deal_size_change"] = float(np.exp(np.mean(np.log(size))) - 1.0)
        keep = self.blend("last_week_win_rate_change", q_arr, self._levels("last_week_close", q))
        out["last_week_win_rate_change"] = float(np.mean(keep) - 1.0)
        out.update({name: value for (name, quarter), value in self.stated.items() if quarter == q})
        out["close_date_push_rate"] = float(np.mean(self.blend("close_date_push_rate", q_arr,
                                                               self._levels("push", q))))
        days = self._window_days(q, requests=True)
        if len(days):
            for name in ("reactive_order_taking", "planned_work_deferral"):
                out[name] = float(np.mean(self.day_mixture(days, name)))
            weight = self._request_weight(days)
            out["after_hours_share"] = self._after_hours_level(days)
            # What the detector estimates: the late window's share minus the same quarter's earlier weeks'.
            early = self._window_days(q, requests=True, before_onset=True)
            early_share = self._after_hours_level(early) if len(early) else float(self.calm["after_hours_share"])
            out["after_hours_shift"] = out["after_hours_share"] - early_share
            stretch = np.log(self.day_mixture(days, "turnaround_stretch"))
            out["turnaround_stretch"] = float(np.exp(np.sum(weight * stretch) / np.sum(weight)))
        out["month3_bookings_share"] = self.month3_target(q)
        return out

    def _request_weight(self, days: np.ndarray) -> np.ndarray:
        """Expected requests (unplanned and planned) per working day of ``days``."""
        unplanned, planned = (float(self.spec[k]) for k in ("unplanned_requests_per_day", "planned_requests_per_day"))
        return (unplanned * self.day_mixture(days, "reactive_order_taking")
                + planned * self.day_mixture(days, "planned_work_deferral"))

    def _after_hours_level(self, days: np.ndarray) -> float:
        """Expected share of requests created after hours over ``days`` (weighted by expected requests)."""
        weight = self._request_weight(days)
        return float(np.sum(weight * self.day_mixture(days, "after_hours_share")) / np.sum(weight))

    def _window_days(self, q: int, requests: bool = False, before_onset: bool = False) -> np.ndarray:
        """Working days of quarter ``q``'s post-onset window, or with ``before_onset`` of its earlier weeks
        (for requests: inside the data, up to as_of)."""
        keep = (self.day_q == q) & (~self.day_window if before_onset else self.day_window) & self.day_busy
        if requests:
            keep &= (self.days >= self.data_start.normalize()) & (self.days <= self.as_of)
        return np.flatnonzero(keep)

    def window_level(self, q: int) -> np.ndarray:
        """Expected intensity per working day of ``q``'s window, averaged over sellers by deal share."""
        days = self._window_days(q)
        if self.seller_u is None or not self.split[q]:
            return self.day_shape[days]
        sellers = np.arange(self.n_sellers)
        level = self.intensity(np.repeat(days, self.n_sellers), np.tile(sellers, len(days)))
        return level.reshape(len(days), -1) @ self.seller_weight

    def _levels(self, unit: str, q: int) -> np.ndarray:
        """Intensities of the recorded units of quarter ``q`` (the window's expected ones if there are none)."""
        qs, level = self.units.get(unit, (np.zeros(0, int), np.zeros(0)))
        chosen = level[qs == q]
        if len(chosen) == 0:
            chosen = self.window_level(q)
        return chosen if len(chosen) else np.ones(1)

    def month3_target(self, q: int) -> float:
        """Expected month-3 share of won amount in panic quarter ``q``: the calm share moved towards the
        scenario's value by the window's mean intensity."""
        value = float(self.effects["month3_bookings_share"][q])
        level = float(np.mean(self.window_level(q))) if self.split[q] or self.patterns[q]["shape"] != "step" else 1.0
        level *= float(self.strength[q])  # a slow change scales the pull like an intensity
        if level == 1.0:
            return value
        calm = float(self._calm_month3()[q])
        return calm + level * (value - calm)

    def _calm_month3(self) -> np.ndarray:
        if getattr(self, "_calm_month3_cache", None) is None:
            self._calm_month3_cache = self.expected_calm_month3_share()
        return self._calm_month3_cache

    # Creation rate and mix, shared by the generator and the expected calm shares.
    def creation_rate(self, day_week: np.ndarray, day_weeks: np.ndarray, busy: np.ndarray,
                      working_days_per_quarter: np.ndarray, days: pd.DatetimeIndex | None = None,
                      quarter_num: np.ndarray | None = None) -> np.ndarray:
        """Expected new opportunities per day (0 on weekends and before the data start), with any quarter-end
        dip and the fiscal fourth quarter's seasonal bump (``confounders: {q4_volume}``)."""
        per_quarter = float(self.spec["opportunities_per_quarter"]) * self.volume
        rate = np.where(busy, per_quarter / working_days_per_quarter, 0.0)
        if quarter_num is not None and self.confounders["q4_volume"] != 1.0:
            rate = np.where(quarter_num == 4, rate * self.confounders["q4_volume"], rate)
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
                                  feats["weeks_in_quarter"].to_numpy(int), busy, working, days,
                                  feats["quarter_num"].to_numpy(int))
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


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


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
