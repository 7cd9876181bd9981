"""The sample CRM generator: realistic pipelines with quarter-end panic of known size.

:func:`generate` builds, in memory and vectorised, the four canonical tables
(``quarterpanic.schemas``) of a few organisations over ten or so fiscal quarters
and an open one, with panic injected in the quarters a *scenario* names, and a
``truth`` dict saying exactly which effect of which size holds where.
:func:`write_sample` writes the same sample as vendor exports (Salesforce,
HubSpot, Jira, a mapped generic CSV) plus ``org.yaml``, ``truth.json`` and the
scenario, the way a user would drop exports into a data folder.

Effects (``truth["quarters"][i]["effects"]``, named as the detectors report them).
"Late" means at or after the quarter's ``onset_week`` (``week_of_quarter`` by the
org's :class:`~quarterpanic.calendar.FiscalCalendar`) in a panic quarter; calm
quarters carry the neutral value of the scenario's ``calm:`` block, panic quarters
the value of ``panic:`` (with org / quarter overrides):

* ``qualification_decay`` d: each deal is qualified at creation with probability
  p_owner (org ``qualification_rate`` +- 0.05 per seller), p_owner - d if created
  late: additive, the same in every segment and lead source. Qualified means the
  default rule holds exactly: >= 3 of the 4 BANT flags and a non-empty next step.
* ``reactive_order_taking`` r: unplanned requests (Discount Approval, Rush Quote,
  Contract Redline, Expedite, Pricing Exception, Credit Check) are Poisson per
  working day (Mon-Fri) at the org's rate, x r on every working day of late weeks;
  r = rate per working day late / rate per working day earlier in the quarter.
* ``planned_work_deferral``: the same ratio for planned requests.
* ``turnaround_stretch``: turnaround (resolved - created, calendar hours) is
  lognormal per request type, its scale x stretch for requests created late.
* ``after_hours_share``: share of requests created outside 08:00-18:00.
* ``win_rate_ratio``: P(won | created late) / P(won | created earlier in the quarter),
  over deals created in the quarter (closing is independent of outcome). Base
  P(won) is by qualification (``win_probability``); late deals get the extra
  multiplier that makes the ratio exact given the qualification drop.
* ``discount_uplift``: + this many fraction points of discount on deals won with a
  late close date (base: Beta by segment, mean 0.08-0.12; clipped to [0, 0.6]).
* ``last_week_deal_size_change`` c: amounts of deals (won or lost) closing in the
  last week of a panic quarter x (1 + c), every segment alike.
* ``month3_bookings_share``: expected share of the quarter's won amount whose close
  date is in month 3 (``month_of_quarter == 3``). Panic quarters: won deals due in
  months 1-2 slip into month 3 with the probability that makes the expectation the
  parameter. Calm quarters: the expected value of the calm process (creation rate
  convolved with the cycle-length distributions; ramp-up of the first quarters
  included, calm pushes ignored).
* ``close_date_push_rate``: among deals open when the quarter's last 14 days begin
  (created before them) and due inside them, the share whose close date is moved
  past quarter end by a change made in those 14 days (into the next quarter's first
  six weeks). Applies to every quarter; panic quarters use the panic rate.
* ``lead_score_drop``: score at conversion of converted leads (= the opportunity's
  ``lead_score``; conversion = the opportunity's creation) is this many points lower
  for late conversions.
* ``stage_skip_rate``: share of late-created deals whose full stage path skips an
  open stage (a move over a stage, or into Closed Won from before Negotiation);
  every other deal skips at the calm rate.

Panic quarters and onsets come from each org's ``panic_quarters`` in the scenario
(keys: quarters before the open one, 0 = open, or quarter labels).
"""
from __future__ import annotations

import copy
import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import yaml

from quarterpanic import schemas
from quarterpanic.calendar import FiscalCalendar
from quarterpanic.errors import ParameterError
from quarterpanic.paths import SCENARIOS_DIR

SCALES = ("small", "default", "large")
EFFECTS = (
    "qualification_decay",
    "reactive_order_taking",
    "planned_work_deferral",
    "turnaround_stretch",
    "after_hours_share",
    "win_rate_ratio",
    "discount_uplift",
    "last_week_deal_size_change",
    "month3_bookings_share",
    "close_date_push_rate",
    "lead_score_drop",
    "stage_skip_rate",
)
OPEN_STAGES = ("Prospecting", "Qualification", "Needs Analysis", "Proposal", "Negotiation")
WON, LOST = "Closed Won", "Closed Lost"
STAGE_NAMES = OPEN_STAGES + (WON, LOST)
STAGE_PROBABILITY = np.array([10, 20, 40, 60, 80, 100, 0], dtype=float)
STAGE_FORECAST = ("Pipeline", "Pipeline", "Best Case", "Best Case", "Commit", "Closed", "Omitted")
# Max open stage reached by lost deals, by qualification (index 0..4).
LOST_REACH = {True: [0.10, 0.20, 0.25, 0.25, 0.20], False: [0.30, 0.30, 0.20, 0.12, 0.08]}

SEGMENTS = {  # amount lognormal (median, sigma), cycle median days, discount mean
    "SMB": {"amount_median": 9_000, "amount_sigma": 0.8, "cycle_days": 28, "discount_mean": 0.08},
    "Mid-Market": {"amount_median": 32_000, "amount_sigma": 0.9, "cycle_days": 50, "discount_mean": 0.10},
    "Enterprise": {"amount_median": 110_000, "amount_sigma": 1.0, "cycle_days": 80, "discount_mean": 0.12},
    "Strategic": {"amount_median": 380_000, "amount_sigma": 1.1, "cycle_days": 110, "discount_mean": 0.12},
}
CYCLE_SIGMA = 0.6
CYCLE_MIN_DAYS, CYCLE_MAX_DAYS = 3, 540
DISCOUNT_CONCENTRATION = 25.0
LEAD_SOURCES = {"Web": 0.35, "Referral": 0.15, "Partner": 0.15, "Outbound": 0.25, "Event": 0.10}
LEAD_SHARE = 0.85            # share of opportunities converted from a lead
UNCONVERTED_LEADS = 1.2      # unconverted leads per opportunity
LEAD_SCORE = (62.0, 14.0)    # converted leads: mean, sd
DISQUALIFICATION_REASONS = ("No budget", "No authority", "Not a fit", "Competitor", "Unresponsive", "Duplicate")
UNPLANNED_TYPES = {  # weight, median turnaround hours
    "Discount Approval": (0.30, 6.0),
    "Rush Quote": (0.20, 4.0),
    "Contract Redline": (0.15, 30.0),
    "Expedite": (0.15, 8.0),
    "Pricing Exception": (0.12, 16.0),
    "Credit Check": (0.08, 20.0),
}
PLANNED_TYPES = {
    "Territory Planning": (0.15, 120.0),
    "Enablement": (0.25, 72.0),
    "Data Clean-up": (0.20, 48.0),
    "Forecast Review": (0.25, 24.0),
    "Process Improvement": (0.15, 160.0),
}
TURNAROUND_SIGMA = 0.8
PRIORITIES = ("Highest", "High", "Medium", "Low")
NEXT_STEPS = (
    "Send proposal", "Book demo with team", "Follow up on pricing", "Schedule technical review",
    "Get legal sign-off", "Intro call with decision maker", "Share case study", "Confirm budget",
    "Align on timeline", "Prepare SOW", "Negotiate terms", "Reference call",
)
PRODUCTS = ("New Business", "Renewal", "Expansion", "Services", "Pilot", "Platform Licence", "Add-on Seats")

_EPOCH = np.datetime64("2000-01-03", "D")  # a Monday: origin of the working-time axis
_DAY_START, _DAY_HOURS = 8.0, 10.0            # working hours 08:00-18:00


@dataclass
class Sample:
    """A generated sample CRM.

    Attributes
    ----------
    tables:
        The canonical tables ``opportunities``, ``history``, ``leads``, ``requests``.
    truth:
        What ``truth.json`` holds: ``as_of``, ``seed``, ``scenario``, ``scale`` and one
        record per org x fiscal quarter with data (``org``, ``quarter``, ``open``,
        ``panic``, ``onset_week``, ``effects``).
    orgs:
        Org name -> ``{"size_class", "fiscal_calendar", "format"}``.
    as_of:
        The moment of the export; nothing after it exists.
    scenario:
        The resolved scenario (default merged with overrides).
    """

    tables: dict[str, pd.DataFrame]
    truth: dict
    orgs: dict[str, dict]
    as_of: pd.Timestamp
    scenario: dict = field(repr=False, default_factory=dict)

    def truth_frame(self) -> pd.DataFrame:
        """``truth["quarters"]`` as a frame, one column per effect."""
        rows = [{k: v for k, v in r.items() if k != "effects"} | r["effects"] for r in self.truth["quarters"]]
        return pd.DataFrame(rows)


# -- scenarios ------------------------------------------------------------------------------------
def load_scenario(scenario: str | Path | Mapping | None = None) -> dict:
    """The resolved scenario: the shipped default with ``scenario`` deep-merged over it.

    ``scenario`` is ``None`` (the default), a shipped scenario name (``"null"``),
    a YAML file path, or a mapping with the same keys. Mappings merge key by key;
    an org's ``panic_quarters`` is replaced whole.
    """
    base = _default_scenario()
    if scenario is None:
        return _checked(base)
    if isinstance(scenario, Mapping):
        override = copy.deepcopy(dict(scenario))
    else:
        path = Path(scenario)
        shipped = SCENARIOS_DIR / f"{scenario}.yaml"
        if not path.suffix and shipped.exists():
            path = shipped
        if not path.exists():
            names = sorted(p.stem for p in SCENARIOS_DIR.glob("*.yaml"))
            raise ParameterError(f"no scenario {str(scenario)!r}", hint=f"use one of {names} or a YAML file")
        override = _read_yaml(path)
        override.setdefault("name", path.stem)
    return _checked(_merge(base, override))


def _default_scenario() -> dict:
    """A fresh copy of the shipped default scenario (parsed once)."""
    global _DEFAULT_SCENARIO
    if _DEFAULT_SCENARIO is None:
        _DEFAULT_SCENARIO = _read_yaml(SCENARIOS_DIR / "default.yaml")
    return copy.deepcopy(_DEFAULT_SCENARIO)


_DEFAULT_SCENARIO: dict | None = None


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ParameterError(f"scenario is not valid YAML: {err}", path=path) from None
    if not isinstance(data, dict):
        raise ParameterError("scenario must be a mapping", path=path)
    return data


def _merge(base: dict, override: Mapping) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key != "panic_quarters" and isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _checked(scenario: dict) -> dict:
    known = {"name", "description", "as_of", "scales", "calm", "panic", "win_probability", "orgs"}
    unknown = sorted(set(scenario) - known)
    if unknown:
        raise ParameterError(f"unknown scenario key(s) {unknown}", hint=f"use only {sorted(known)}")
    for section in ("calm", "panic"):
        bad = sorted(set(scenario[section]) - set(EFFECTS))
        if bad:
            raise ParameterError(f"unknown effect(s) {bad} under {section!r}", hint=f"effects are {list(EFFECTS)}")
    for org, spec in scenario["orgs"].items():
        for key in ("size_class", "format", "teams", "sellers", "opportunities_per_quarter"):
            if key not in spec:
                raise ParameterError(f"org {org!r} lacks {key!r} in the scenario")
        for key, onset in _panic_entries(spec).items():
            if not 2 <= onset[0] <= 12:
                raise ParameterError(f"org {org!r}: onset week of panic quarter {key!r} must be 2..12")
    return scenario


def _panic_entries(spec: Mapping) -> dict[Any, tuple[int, dict]]:
    """``panic_quarters`` as {key: (onset_week, effect overrides)}."""
    out = {}
    for key, value in (spec.get("panic_quarters") or {}).items():
        if isinstance(value, Mapping):
            out[key] = (int(value["onset_week"]), dict(value.get("effects") or {}))
        else:
            out[key] = (int(value), {})
    return out


# -- public API -----------------------------------------------------------------------------------
def generate(scenario: str | Path | Mapping | None = None, seed: int = 0, scale: str = "default") -> Sample:
    """Generate a sample CRM in memory.

    Parameters
    ----------
    scenario:
        ``None`` (the shipped default), ``"null"`` (no panic), a YAML path or a mapping
        deep-merged over the default (see :func:`load_scenario`).
    seed:
        Seed of the one ``numpy.random.default_rng`` every draw comes from.
    scale:
        ``"small"`` (8 complete quarters, ~60 % volume: for tests), ``"default"``
        (10 quarters) or ``"large"`` (20 quarters, ~1M opportunities).

    Returns
    -------
    :class:`Sample` with canonical tables (provenance ``source_file="<generated>"``,
    ``source_row`` 2..n+1 per org and table), truth, orgs and as_of.
    """
    return _collect(load_scenario(scenario), seed, scale)


def write_sample(
    out_dir: str | Path,
    scenario: str | Path | Mapping | None = None,
    seed: int = 0,
    scale: str = "default",
) -> Sample:
    """Generate a sample and write it as a data folder of vendor exports.

    Writes one sub-folder per org (its exports and ``org.yaml``), ``truth.json``
    and ``scenario.yaml`` into ``out_dir``. Organisations are generated and
    written one at a time; at scale ``large`` the returned :class:`Sample` keeps
    no tables (they would not fit comfortably in memory), otherwise it is what
    :func:`generate` returns for the same arguments.
    """
    from quarterpanic import vendor_writers

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keep = scale != "large"

    def write(org: str, info: dict, tables: dict[str, pd.DataFrame], as_of: pd.Timestamp) -> None:
        vendor_writers.write_org(out, org, info, tables, as_of)

    sample = _collect(load_scenario(scenario), seed, scale, on_org=write, keep_tables=keep)
    (out / "truth.json").write_text(json.dumps(sample.truth, indent=1) + "\n", encoding="utf-8")
    (out / "scenario.yaml").write_text(
        "# The resolved scenario this sample was generated from (quarterpanic.sample).\n"
        + yaml.safe_dump(sample.scenario, sort_keys=False, allow_unicode=True),
        encoding="utf-8",
    )
    return sample


def _collect(resolved: dict, seed: int, scale: str, on_org=None, keep_tables: bool = True) -> Sample:
    """Generate every org in scenario order from one rng; ``on_org(org, info, tables, as_of)`` sees each."""
    if scale not in resolved["scales"]:
        raise ParameterError(f"unknown scale {scale!r}", hint=f"use one of {sorted(resolved['scales'])}")
    rng = np.random.default_rng(seed)
    as_of = pd.Timestamp(resolved["as_of"])
    parts: dict[str, list[pd.DataFrame]] = {t: [] for t in schemas.TABLES}
    records: list[dict] = []
    orgs: dict[str, dict] = {}
    for org_name, spec in resolved["orgs"].items():
        plan = _OrgPlan(org_name, spec, resolved, scale, as_of)
        tables = {name: _canonical(name, frame) for name, frame in _generate_org(plan, rng).items()}
        records.extend(plan.truth_records())
        orgs[org_name] = {
            "size_class": spec["size_class"],
            "fiscal_calendar": plan.calendar.to_spec(),
            "format": spec["format"],
        }
        if on_org is not None:
            on_org(org_name, orgs[org_name], tables, as_of)
        if keep_tables:
            for name, frame in tables.items():
                parts[name].append(frame)
        del tables
    tables = {name: pd.concat(frames, ignore_index=True) if frames else schemas.empty(name)
              for name, frames in parts.items()}
    truth = {
        "as_of": as_of.isoformat(),
        "seed": int(seed),
        "scenario": resolved.get("name", "custom"),
        "scale": scale,
        "quarters": records,
    }
    return Sample(tables=tables, truth=truth, orgs=orgs, as_of=as_of, scenario=resolved)


# -- working time ---------------------------------------------------------------------------------
# Events are placed on a "working-time" axis that counts only 08:00-18:00 on
# Monday-Friday, in hours; mapping back keeps order and lands in working hours.
def _busday(days: np.ndarray) -> np.ndarray:
    return np.busday_count(_EPOCH, days.astype("datetime64[D]"))


def _work_time(days: np.ndarray, hours: np.ndarray | float = 0.0) -> np.ndarray:
    """Working-time of ``days`` (datetime64[D], weekends count as the next Monday) plus hours."""
    return _busday(days) * _DAY_HOURS + hours


def _from_work_time(w: np.ndarray) -> np.ndarray:
    """datetime64[ns] (rounded to the minute) of working-time values."""
    minutes = np.round(np.asarray(w, dtype=float) * 60).astype(np.int64)
    day_minutes = int(_DAY_HOURS * 60)
    day, minute = np.divmod(minutes, day_minutes)
    dates = np.busday_offset(_EPOCH, day)
    return (dates.astype("datetime64[m]") + (int(_DAY_START * 60) + minute).astype("timedelta64[m]")).astype(
        "datetime64[ns]"
    )


def _timestamp_work_time(ts: pd.Timestamp) -> float:
    day = np.datetime64(ts.normalize().date(), "D")
    hours = ts.hour + ts.minute / 60 - _DAY_START
    if not np.is_busday(day):
        return float(_busday(np.array([day]))[0] * _DAY_HOURS)
    return float(_busday(np.array([day]))[0] * _DAY_HOURS + min(max(hours, 0.0), _DAY_HOURS))


def _roll_to_weekday(days: np.ndarray) -> np.ndarray:
    return np.busday_offset(days.astype("datetime64[D]"), 0, roll="forward")


# -- one organisation -----------------------------------------------------------------------------
class _OrgPlan:
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
        self.open_end = quarters["quarter_end"].iloc[-1]
        self.w_as_of = _timestamp_work_time(as_of)

        # Per-quarter effects: calm values everywhere, panic values where listed.
        self.onset = np.zeros(self.nq + 1, dtype=int)  # 0 = no panic; index nq = after the open quarter
        self.panic = np.zeros(self.nq + 1, dtype=bool)
        effects = {k: np.full(self.nq + 1, float(v)) for k, v in scenario["calm"].items()}
        effects["month3_bookings_share"] = np.full(self.nq + 1, np.nan)
        labels = list(quarters["quarter"])
        for key, (onset, overrides) in _panic_entries(spec).items():
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
        records = []
        for q, row in self.quarters.iterrows():
            effects = {}
            for name in EFFECTS:
                if name == "month3_bookings_share" and not self.panic[q]:
                    value = calm_month3[q]
                else:
                    value = self.effects[name][q]
                effects[name] = round(float(value), 6)
            records.append(
                {
                    "org": self.name,
                    "quarter": row["quarter"],
                    "open": bool(q == self.nq - 1),
                    "panic": bool(self.panic[q]),
                    "onset_week": int(self.onset[q]) if self.panic[q] else None,
                    "effects": effects,
                }
            )
        return records

    # Creation rate and mix, shared by the generator and the expected calm shares.
    def creation_rate(self, day_week: np.ndarray, day_weeks: np.ndarray, busy: np.ndarray,
                      working_days_per_quarter: np.ndarray) -> np.ndarray:
        """Expected new opportunities per day (0 on weekends), with any quarter-end dip."""
        per_quarter = float(self.spec["opportunities_per_quarter"]) * self.volume
        rate = np.where(busy, per_quarter / working_days_per_quarter, 0.0)
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
                                  feats["weeks_in_quarter"].to_numpy(int), busy, working)
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


def _draw_cycle_days(rng: np.random.Generator, median_days: np.ndarray) -> np.ndarray:
    days = np.ceil(median_days * np.exp(rng.normal(0.0, CYCLE_SIGMA, len(median_days))))
    return np.clip(days, CYCLE_MIN_DAYS, CYCLE_MAX_DAYS).astype(int)


def _generate_org(plan: _OrgPlan, rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    people = _people(plan, rng)
    opps, changes = _opportunities(plan, people, rng)
    # Sorted by creation, so what exists at as_of is a prefix; changes after it never happened.
    n_visible = int(np.searchsorted(opps["w_created"], plan.w_as_of, side="right"))
    opps = {k: v[:n_visible] for k, v in opps.items()}
    seen = changes["when"] <= plan.w_as_of
    changes = {k: v[seen][np.argsort(changes["when"][seen], kind="stable")] for k, v in changes.items()}
    if plan.spec["format"] == "salesforce":
        # One multi-line Next Step with a euro sign, as real Salesforce exports have.
        with_step = np.flatnonzero(pd.notna(opps["next_step"]))
        if len(with_step):
            opps["next_step"][with_step[0]] = "Call CFO on Monday\nthen send revised quote (€ 12k discount)"
    ids = _record_ids(plan, "opportunity", n_visible, rng)
    history, stage_now, max_open_stage = _history(plan, opps, changes, ids, rng)
    return {
        "opportunities": _opportunity_frame(plan, opps, changes, people, ids, stage_now, max_open_stage),
        "history": history,
        "leads": _leads(plan, opps, ids, people, rng),
        "requests": _requests(plan, opps, ids, people, rng),
    }


# -- people and accounts --------------------------------------------------------------------------
FIRST_NAMES = (
    "Anna", "Ben", "Chloé", "David", "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Karin", "Lars",
    "Maya", "Nils", "Olivia", "Pablo", "Rosa", "Sven", "Tara", "Umar", "Vera", "Wim", "Yara", "Zoe",
    "Amélie", "Jürgen", "Søren", "Noémie", "Björn", "Lucía", "Marek", "Priya", "Kenji", "Aisha",
)
LAST_NAMES = (
    "Bauer", "Cohen", "Dubois", "Evans", "Fischer", "Garcia", "Hansen", "Ito", "Jansen", "Kowalski",
    "Larsen", "Martin", "Nguyen", "Okafor", "Peters", "Quinn", "Rossi", "Schmidt", "Tanaka", "Urban",
    "Visser", "Weiß", "Young", "Zimmermann", "Müller", "Lefèvre", "Novák", "Brandão", "Øster", "Walsh",
)
ACCOUNT_STEMS = (
    "Acme", "Blue Harbor", "Cobalt", "Delta Freight", "Evergreen", "Fjord", "Granite", "Helios", "Ironwood",
    "Juniper", "Keystone", "Lumen", "Meridian", "Northstar", "Orchid", "Pinnacle", "Quartz", "Redwood",
    "Summit", "Tidewater", "Umbra", "Vantage", "Willow", "Xenon", "Yellowstone", "Zephyr", "Atlas", "Beacon",
    "Cedar", "Driftwood", "Ember", "Falcon", "Garnet", "Horizon", "Indigo", "Jade", "Kestrel", "Lighthouse",
)
ACCOUNT_WORDS = ("", "Logistics", "Systems", "Foods", "Health", "Energy", "Partners", "Labs", "Retail", "Media",
                 "Analytics", "Manufacturing")
ACCOUNT_SUFFIXES = ("Ltd", "Inc.", "GmbH", "B.V.", "S.A.", "AG", "Group", "Holdings", "& Co.", "LLC")
ACCENTED_ACCOUNTS = (
    "Müller & Söhne GmbH", "Société Générale de Café", "Zürich Rückversicherung AG", "Crème Brûlée Bistro SARL",
    "Björk Möbler AB", "Café Noir Lyon S.A.", "Größenwahn Verlag KG", "Ætna Façades Ltd",
)


def _people(plan: _OrgPlan, rng: np.random.Generator) -> dict:
    n = plan.n_sellers
    combos = np.array([f"{f} {l}" for f in FIRST_NAMES for l in LAST_NAMES], dtype=object)
    if n > len(combos):  # large scale: numbered names beyond the combinations
        combos = np.concatenate([combos, np.array([f"Seller {i}" for i in range(n - len(combos))], dtype=object)])
    names = combos[rng.permutation(len(combos))[:n]]
    team = np.arange(n) % len(plan.team_names)
    weight = rng.gamma(4.0, 1.0, n)
    weight /= weight.sum()
    p0 = float(plan.spec.get("qualification_rate", 0.7))
    qual = np.clip(p0 + rng.uniform(-0.05, 0.05, n), 0.0, 1.0)
    n_accounts = max(40, int(plan.spec["opportunities_per_quarter"] * plan.volume))
    combos = len(ACCOUNT_STEMS) * len(ACCOUNT_WORDS) * len(ACCOUNT_SUFFIXES)
    pick = rng.choice(combos, n_accounts, replace=n_accounts > combos)
    stem, rest = np.divmod(pick, len(ACCOUNT_WORDS) * len(ACCOUNT_SUFFIXES))
    word, suffix = np.divmod(rest, len(ACCOUNT_SUFFIXES))
    accounts = np.array(
        [" ".join(filter(None, (ACCOUNT_STEMS[s], ACCOUNT_WORDS[w], ACCOUNT_SUFFIXES[x])))
         for s, w, x in zip(stem, word, suffix)],
        dtype=object,
    )
    if plan.spec["format"] == "salesforce":
        accounts[rng.choice(n_accounts, len(ACCENTED_ACCOUNTS), replace=False)] = ACCENTED_ACCOUNTS
    if n_accounts > combos:  # large scale: number the repeats
        repeat = pd.Series(accounts).groupby(accounts).cumcount().to_numpy()
        accounts = np.where(repeat > 0, accounts + " " + (repeat + 1).astype(str), accounts)
    account_weight = 1.0 / np.arange(1, n_accounts + 1) ** 0.8
    return {
        "names": names,
        "team": team,
        "weight": weight,
        "qualification": qual,
        "accounts": accounts,
        "account_weight": account_weight / account_weight.sum(),
    }


# -- opportunities --------------------------------------------------------------------------------
def _opportunities(plan: _OrgPlan, people: dict, rng: np.random.Generator) -> dict:
    """Every opportunity created from the first day to the end of the open quarter (censored later)."""
    in_range = plan.day_q < plan.nq
    day_q = plan.day_q[in_range]
    busy = plan.day_busy[in_range]
    working = np.bincount(day_q, weights=busy, minlength=plan.nq)[day_q]
    rate = plan.creation_rate(plan.day_week[in_range], plan.day_weeks[in_range], busy, working)
    counts = rng.poisson(rate)
    created_idx = np.repeat(np.arange(len(rate)), counts)
    n = len(created_idx)
    days = plan.days.to_numpy().astype("datetime64[D]")
    created_day = days[created_idx]
    w_created = _work_time(created_day, rng.uniform(0.5, 9.5, n))
    q = plan.day_q[created_idx]
    late = plan.day_window[created_idx]

    owner = rng.choice(plan.n_sellers, n, p=people["weight"])
    team = people["team"][owner]
    segment_names = np.array(plan.team_segment, dtype=object)[team]
    seg_codes, seg_names = pd.factorize(segment_names)
    seg_params = [SEGMENTS[s] for s in seg_names]
    amount_median = np.array([p["amount_median"] for p in seg_params])[seg_codes]
    amount_sigma = np.array([p["amount_sigma"] for p in seg_params])[seg_codes]
    cycle_median = np.array([p["cycle_days"] for p in seg_params], dtype=float)[seg_codes]
    discount_mean = np.array([p["discount_mean"] for p in seg_params])[seg_codes]

    # 1. Qualification at creation: p_owner, minus d when created late in a panic quarter.
    decay = plan.effects["qualification_decay"][q]
    p_qualified = np.clip(people["qualification"][owner] - np.where(late, decay, 0.0), 0.0, 1.0)
    qualified = rng.random(n) < p_qualified
    bant, next_step = _bant_and_next_step(qualified, rng)

    # 3. Win probability; late deals get the extra multiplier that makes the overall
    # ratio P(won | late) / P(won | early) equal win_rate_ratio given the qualification mix.
    pq, pu = float(plan.win_probability["qualified"]), float(plan.win_probability["unqualified"])
    q_early = float(np.sum(people["weight"] * people["qualification"]))
    p_early = q_early * pq + (1 - q_early) * pu
    p_late_natural = p_early - plan.effects["qualification_decay"] * (pq - pu)
    multiplier = plan.effects["win_rate_ratio"] * p_early / p_late_natural
    p_won = np.where(qualified, pq, pu) * np.where(late, multiplier[q], 1.0)
    won = rng.random(n) < np.clip(p_won, 0.0, 1.0)

    amount0 = np.round(amount_median * np.exp(rng.normal(0.0, 1.0, n) * amount_sigma), -1)
    amount0 = np.maximum(amount0, 100.0)

    # Planned close date: created + lognormal cycle, on a weekday. Then, quarter by
    # quarter in time order, 6. the month-3 pull and 7. the quarter-end pushes move it.
    due = _roll_to_weekday(created_day + _draw_cycle_days(rng, cycle_median).astype("timedelta64[D]"))
    planned_day = due.copy()
    changes: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []  # opp, when, old, new
    for qi in range(plan.nq):
        if plan.panic[qi]:
            due = _pull_into_month3(plan, qi, won, created_day, amount0, due, changes, rng)
        due = _push_past_quarter_end(plan, qi, created_day, due, changes, rng)
    final_day = due
    final_idx = plan.day_index(final_day)
    w_close = _work_time(final_day, rng.uniform(0.5, 9.5, n))

    # 5. Last-week deal size: amounts of deals closing in the last week of a panic quarter.
    last_week = plan.day_last_week[final_idx]
    size_change = plan.effects["last_week_deal_size_change"][plan.day_q[final_idx]]
    amount_final = np.round(amount0 * np.where(last_week, 1.0 + size_change, 1.0), 2)

    # 4. Discount: segment base, + uplift for deals won with a close date in the panic window.
    kappa = DISCOUNT_CONCENTRATION
    discount = rng.beta(discount_mean * kappa, (1 - discount_mean) * kappa)
    won_late = won & plan.day_window[final_idx]
    discount = discount + np.where(won_late, plan.effects["discount_uplift"][plan.day_q[final_idx]], 0.0)
    discount = np.round(np.clip(discount, 0.0, 0.6), 3)

    # Stage path: lost deals stop at a reached stage; skips drop an intermediate stage.
    reach = np.where(
        qualified,
        _choice_rows(rng, LOST_REACH[True], n),
        _choice_rows(rng, LOST_REACH[False], n),
    )
    reach = np.where(won, 4, reach)
    skip_rate = np.where(late, plan.effects["stage_skip_rate"][q], plan.effects["stage_skip_rate"][plan.nq])
    skips = rng.random(n) < skip_rate
    reach = np.where(skips & ~won, np.maximum(reach, 2), reach)
    visited = np.arange(5)[None, :] <= reach[:, None]
    options = np.where(won, 4, reach - 1)  # droppable stages 1..options
    drop1 = 1 + np.floor(rng.random(n) * np.maximum(options, 1)).astype(int)
    drop2 = 1 + np.floor(rng.random(n) * np.maximum(options, 1)).astype(int)
    second = skips & (options >= 2) & (rng.random(n) < 0.25)
    rows = np.arange(n)
    visited[rows[skips], drop1[skips]] = False
    visited[rows[second], drop2[second]] = False

    # 8. Lead scores at conversion (drop for late conversions); conversion = creation.
    has_lead = rng.random(n) < LEAD_SHARE
    score = rng.normal(*LEAD_SCORE, n) - np.where(late, plan.effects["lead_score_drop"][q], 0.0)
    score = np.where(has_lead, np.round(np.clip(score, 0.0, 100.0)), np.nan)
    lead_source = rng.choice(list(LEAD_SOURCES), n, p=list(LEAD_SOURCES.values()))

    # Amount revisions along the way (calm noise): an initial estimate replaced mid-cycle.
    revised = rng.random(n) < 0.25
    amount_initial = np.where(revised, np.round(amount0 * np.exp(rng.normal(0, 0.2, n)), -1), amount0)
    w_revised = w_created + rng.uniform(0.05, 0.5, n) * (w_close - w_created)

    order = np.argsort(w_created, kind="stable")
    rank = np.empty(n, dtype=int)
    rank[order] = np.arange(n)
    change_opp = np.concatenate([c[0] for c in changes]) if changes else np.zeros(0, int)
    close_changes = {
        "opp": rank[change_opp],
        "when": np.concatenate([c[1] for c in changes]) if changes else np.zeros(0),
        "old": np.concatenate([c[2] for c in changes]) if changes else np.zeros(0, "datetime64[D]"),
        "new": np.concatenate([c[3] for c in changes]) if changes else np.zeros(0, "datetime64[D]"),
    }
    arrays = dict(
        w_created=w_created, created_day=created_day, owner=owner, team=team, segment=segment_names,
        qualified=qualified, bant=bant, next_step=next_step, won=won, planned_day=planned_day,
        final_day=final_day, w_close=w_close, amount0=amount0, amount_final=amount_final, last_week=last_week,
        amount_initial=amount_initial, revised=revised, w_revised=w_revised, discount=discount,
        visited=visited, has_lead=has_lead, score=score, lead_source=lead_source,
        account=rng.choice(len(people["accounts"]), n, p=people["account_weight"]),
        product=rng.integers(0, len(PRODUCTS), n),
    )
    return {k: v[order] for k, v in arrays.items()}, close_changes


def _choice_rows(rng: np.random.Generator, probabilities: list[float], n: int) -> np.ndarray:
    return np.searchsorted(np.cumsum(probabilities), rng.random(n) * sum(probabilities), side="right").clip(
        0, len(probabilities) - 1
    )


def _bant_and_next_step(qualified: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """BANT flags (n x 4) and next-step texts such that the default rule
    (>= 3 of 4 flags AND a non-empty next step) holds exactly for the qualified."""
    n = len(qualified)
    k_qualified = np.where(rng.random(n) < 0.5, 3, 4)
    # Unqualified: mostly too few flags; some have the flags but no next step.
    flags_but_no_step = rng.random(n) < 0.3
    k_unqualified = np.where(flags_but_no_step, np.where(rng.random(n) < 0.7, 3, 4), rng.integers(0, 3, n))
    k = np.where(qualified, k_qualified, k_unqualified)
    ranks = np.argsort(np.argsort(rng.random((n, 4)), axis=1), axis=1)
    bant = ranks < k[:, None]
    has_step = np.where(qualified, True, np.where(flags_but_no_step, False, rng.random(n) < 0.6))
    steps = np.array(NEXT_STEPS, dtype=object)[rng.integers(0, len(NEXT_STEPS), n)]
    next_step = np.where(has_step, steps, None)
    return bant, next_step


def _survival(plan: _OrgPlan, qi: int, idx: np.ndarray, created_day: np.ndarray) -> np.ndarray:
    """P(a deal due on day ``idx`` of quarter ``qi`` is not pushed out of it)."""
    window_start = plan.quarter_end[qi] - np.timedelta64(13, "D")
    eligible = (plan.day_q[idx] == qi) & (plan.day_to_end[idx] <= 13) & (created_day < window_start)
    return 1.0 - eligible * plan.effects["close_date_push_rate"][qi]


def _pull_into_month3(plan: _OrgPlan, qi: int, won: np.ndarray, created_day: np.ndarray, amount0: np.ndarray,
                      due: np.ndarray, changes: list, rng: np.random.Generator) -> np.ndarray:
    """Won deals due in months 1-2 of panic quarter ``qi`` slip into its month 3.

    Each candidate moves (to a uniform working day of month 3, the change made on its
    old due date) with probability
    pi = (s (A12 + B) - B) / ((1 - s) sum(post) + s sum(pre)),
    A12 = sum(pre) the candidates' won amount, B the won amount already due in month 3,
    post their amount once moved; amounts carry the last-week size change and are
    weighted by the chance of not being pushed out in the last two weeks. So the
    expected month-3 share of the quarter's won amount is s = month3_bookings_share.
    """
    target = float(plan.effects["month3_bookings_share"][qi])
    size = 1.0 + plan.effects["last_week_deal_size_change"][qi]
    idx = plan.day_index(due)
    in_q = won & (plan.day_q[idx] == qi)
    month = plan.day_month[idx]
    expected = amount0 * np.where(plan.day_last_week[idx], size, 1.0) * _survival(plan, qi, idx, created_day)
    candidates = np.flatnonzero(in_q & (month < 3))
    month3_days = np.flatnonzero((plan.day_q == qi) & (plan.day_month == 3) & plan.day_busy)
    if len(candidates) == 0 or len(month3_days) == 0:
        return due
    new_idx = month3_days[rng.integers(0, len(month3_days), len(candidates))]
    moved = (amount0[candidates] * np.where(plan.day_last_week[new_idx], size, 1.0)
             * _survival(plan, qi, new_idx, created_day[candidates]))
    month3_amount = float(np.sum(expected[in_q & (month == 3)]))
    pre, post = float(np.sum(expected[candidates])), float(np.sum(moved))
    pi = (target * (pre + month3_amount) - month3_amount) / ((1 - target) * post + target * pre)
    move = rng.random(len(candidates)) < min(max(pi, 0.0), 1.0)
    rows, new_days = candidates[move], plan.day_dates[new_idx[move]]
    changes.append((rows, _work_time(due[rows], rng.uniform(0.5, 9.5, len(rows))), due[rows], new_days))
    due = due.copy()
    due[rows] = new_days
    return due


def _push_past_quarter_end(plan: _OrgPlan, qi: int, created_day: np.ndarray, due: np.ndarray, changes: list,
                           rng: np.random.Generator) -> np.ndarray:
    """Push deals due in the last two weeks of quarter ``qi`` (and open when they began)
    into the first six weeks of the next quarter, each with probability close_date_push_rate.
    The change is made at a uniform working moment between the window start and the due date."""
    idx = plan.day_index(due)
    rate = 1.0 - _survival(plan, qi, idx, created_day)
    rows = np.flatnonzero(rng.random(len(due)) < rate)
    if len(rows) == 0:
        return due
    window_start = plan.quarter_end[qi] - np.timedelta64(13, "D")
    new_days = _roll_to_weekday(plan.quarter_end[qi] + rng.integers(1, 43, len(rows)).astype("timedelta64[D]"))
    w_start = _work_time(np.array([window_start]))[0]
    w_due_end = _work_time(due[rows], _DAY_HOURS)
    when = w_start + rng.random(len(rows)) * (w_due_end - w_start)
    changes.append((rows, when, due[rows], new_days))
    due = due.copy()
    due[rows] = new_days
    return due


def _opportunity_frame(plan: _OrgPlan, o: dict, changes: dict, people: dict, ids: np.ndarray,
                       stage_now: np.ndarray, max_open_stage: np.ndarray) -> pd.DataFrame:
    """The canonical opportunities of one org as they stand at ``as_of``."""
    w_as_of = plan.w_as_of
    closed = o["w_close"] <= w_as_of
    current_close = o["planned_day"].copy()
    current_close[changes["opp"]] = changes["new"]  # in time order: the last change wins
    amount_now = np.where(o["revised"] & (o["w_revised"] > w_as_of), o["amount_initial"], o["amount0"])
    is_won = closed & o["won"]
    accounts = people["accounts"][o["account"]]
    dash = " – " if plan.spec["format"] == "salesforce" else " - "
    return pd.DataFrame(
        {
            "org": plan.name,
            "opportunity_id": ids,
            "name": accounts + dash + np.array(PRODUCTS, dtype=object)[o["product"]],
            "account": accounts,
            "owner": people["names"][o["owner"]],
            "team": np.array(plan.team_names, dtype=object)[o["team"]],
            "segment": o["segment"],
            "size_class": plan.spec["size_class"],
            "created_at": _from_work_time(o["w_created"]),
            "close_date": np.where(closed, o["final_day"], current_close).astype("datetime64[ns]"),
            "stage": np.array(STAGE_NAMES, dtype=object)[stage_now],
            "is_closed": closed,
            "is_won": is_won,
            "amount": np.where(closed, o["amount_final"], amount_now),
            "currency": plan.spec.get("currency", "USD"),
            # Quoted discounts exist once a deal reached Proposal.
            "discount": np.where(is_won | (max_open_stage >= 3), o["discount"], np.nan),
            "probability": STAGE_PROBABILITY[stage_now],
            "forecast_category": np.array(STAGE_FORECAST, dtype=object)[stage_now],
            "lead_source": o["lead_source"],
            "lead_score": o["score"],
            "bant_budget": o["bant"][:, 0],
            "bant_authority": o["bant"][:, 1],
            "bant_need": o["bant"][:, 2],
            "bant_timeline": o["bant"][:, 3],
            "next_step": o["next_step"],
        }
    )


# -- history --------------------------------------------------------------------------------------
_FIELDS = np.array(schemas.HISTORY_FIELDS, dtype=object)  # stage, amount, close_date, forecast_category


def _history(plan: _OrgPlan, o: dict, changes: dict, ids: np.ndarray, rng: np.random.Generator):
    """Field history rows up to ``as_of``, plus each deal's stage and highest open stage then.

    Stage rows: each visited stage after Prospecting (where every deal starts) at
    sorted uniform times between creation and close, then the close. Forecast category rows where the stage
    moves the category. Amount rows for revisions and the last-week size change;
    close_date rows for pushes and month-3 pulls.
    """
    n = len(o["w_created"])
    w_as_of = plan.w_as_of
    span = o["w_close"] - o["w_created"]
    # Stage events: creation (code 0), transitions into visited stages 1..4, close (5 won, 6 lost).
    t_rows, t_stage = np.nonzero(o["visited"][:, 1:])
    t_stage = t_stage + 1
    u = rng.uniform(0.03, 0.97, len(t_rows))
    u_sorted = u[np.lexsort((u, t_rows))]  # same group sizes, so block positions line up
    stage_opp = np.concatenate([np.arange(n), t_rows, np.arange(n)])
    stage_time = np.concatenate([o["w_created"], o["w_created"][t_rows] + u_sorted * span[t_rows], o["w_close"]])
    stage_code = np.concatenate([np.zeros(n, int), t_stage, np.where(o["won"], 5, 6)])
    order = np.lexsort((stage_time, stage_opp))
    stage_opp, stage_time, stage_code = stage_opp[order], stage_time[order], stage_code[order]
    starts = np.searchsorted(stage_opp, np.arange(n))
    first = np.zeros(len(stage_opp), dtype=bool)
    first[starts] = True
    stage_old = np.where(first, -1, np.roll(stage_code, 1))

    seen = stage_time <= w_as_of
    count = np.bincount(stage_opp[seen], minlength=n)
    now_pos = starts + count - 1
    stage_now = stage_code[now_pos]
    max_open_stage = np.where(stage_now >= 5, stage_old[now_pos], stage_now)

    names = np.array(STAGE_NAMES, dtype=object)
    forecast = np.array(STAGE_FORECAST + ("",), dtype=object)
    fc_change = ~first & (forecast[stage_old] != forecast[stage_code])

    def money(x: np.ndarray) -> np.ndarray:  # as loading normalises amounts: str(float)
        return np.asarray(x, dtype=float).astype(str).astype(object)

    def day(x: np.ndarray) -> np.ndarray:
        return np.datetime_as_string(x.astype("datetime64[D]")).astype(object)

    revised, last_week = o["revised"], o["last_week"]
    moved = ~first  # creation is not a change: the first stage row leaves Prospecting
    parts = [
        (stage_opp[moved], stage_time[moved], 0, names[stage_old[moved]], names[stage_code[moved]]),
        (stage_opp[fc_change], stage_time[fc_change], 3, forecast[stage_old[fc_change]], forecast[stage_code[fc_change]]),
        (np.flatnonzero(revised), o["w_revised"][revised], 1, money(o["amount_initial"][revised]),
         money(o["amount0"][revised])),
        (np.flatnonzero(last_week), o["w_close"][last_week], 1, money(o["amount0"][last_week]),
         money(o["amount_final"][last_week])),
        (changes["opp"], changes["when"], 2, day(changes["old"]), day(changes["new"])),
    ]
    opp = np.concatenate([p[0] for p in parts])
    when = np.concatenate([p[1] for p in parts])
    field_code = np.concatenate([np.full(len(p[0]), p[2]) for p in parts])
    old = np.concatenate([np.asarray(p[3], dtype=object) for p in parts])
    new = np.concatenate([np.asarray(p[4], dtype=object) for p in parts])
    keep = when <= w_as_of
    order = np.argsort(when[keep], kind="stable")
    opp, when, field_code, old, new = (a[keep][order] for a in (opp, when, field_code, old, new))
    frame = pd.DataFrame(
        {
            "org": plan.name,
            "opportunity_id": ids[opp],
            "changed_at": _from_work_time(when),
            "field": _FIELDS[field_code],
            "old_value": old,
            "new_value": new,
        }
    )
    return frame, stage_now, max_open_stage


# -- leads ----------------------------------------------------------------------------------------
def _leads(plan: _OrgPlan, o: dict, opp_ids: np.ndarray, people: dict, rng: np.random.Generator) -> pd.DataFrame:
    """Converted leads (one per opportunity that came from a lead) and unconverted ones."""
    w_first = _work_time(np.array([plan.first_day], dtype="datetime64[D]"))[0] + 0.5
    conv = np.flatnonzero(o["has_lead"])
    # Working hours from lead creation to conversion; leads of the first days are younger.
    lead_age = 60.0 * np.exp(rng.normal(0.0, 1.0, len(conv)))
    room = np.maximum(o["w_created"][conv] - w_first, 0.0)
    lead_age = np.where(lead_age > room, rng.random(len(conv)) * room, lead_age)
    w_conv_created = o["w_created"][conv] - lead_age
    n_other = rng.poisson(UNCONVERTED_LEADS * len(o["w_created"]))
    w_other = rng.uniform(w_first, plan.w_as_of, n_other)
    recent = w_other > plan.w_as_of - 30 * _DAY_HOURS
    status_other = np.where(
        recent,
        np.where(rng.random(n_other) < 0.5, "Open", "Working"),
        np.where(rng.random(n_other) < 0.7, "Disqualified", "Nurture"),
    ).astype(object)
    reasons = np.array(DISQUALIFICATION_REASONS, dtype=object)[rng.integers(0, len(DISQUALIFICATION_REASONS), n_other)]
    score_other = np.round(np.clip(rng.normal(40.0, 15.0, n_other), 0.0, 100.0))
    converted_at = _from_work_time(o["w_created"][conv])

    w = np.concatenate([w_conv_created, w_other])
    frame = pd.DataFrame(
        {
            "org": plan.name,
            "w": w,
            "status": np.concatenate([np.full(len(conv), "Converted", dtype=object), status_other]),
            "lead_source": np.concatenate(
                [o["lead_source"][conv], rng.choice(list(LEAD_SOURCES), n_other, p=list(LEAD_SOURCES.values()))]
            ),
            "score": np.concatenate([o["score"][conv], score_other]),
            "owner": people["names"][
                np.concatenate([o["owner"][conv], rng.choice(plan.n_sellers, n_other, p=people["weight"])])
            ],
            "converted_at": np.concatenate([converted_at, np.full(n_other, np.datetime64("NaT"), "datetime64[ns]")]),
            "converted_opportunity_id": np.concatenate([opp_ids[conv], np.full(n_other, None, dtype=object)]),
            "disqualification_reason": np.concatenate(
                [np.full(len(conv), None, dtype=object), np.where(status_other == "Disqualified", reasons, None)]
            ),
        }
    )
    frame = frame.iloc[np.argsort(w, kind="stable")].reset_index(drop=True)
    frame.insert(1, "lead_id", _record_ids(plan, "lead", len(frame), rng))
    frame.insert(2, "created_at", _from_work_time(frame.pop("w").to_numpy()))
    return frame


# -- requests -------------------------------------------------------------------------------------
def _requests(plan: _OrgPlan, o: dict, opp_ids: np.ndarray, people: dict, rng: np.random.Generator) -> pd.DataFrame:
    """Sales-ops requests: Poisson per working day, unplanned x r and planned x deferral in panic windows."""
    in_range = (plan.day_q < plan.nq) & plan.day_busy
    in_range &= plan.days.to_numpy() <= plan.as_of.to_datetime64()
    day_idx = np.flatnonzero(in_range)
    window = plan.day_window[day_idx]
    q = plan.day_q[day_idx]
    spec = plan.spec
    unplanned_rate = float(spec["unplanned_requests_per_day"]) * plan.volume * np.where(
        window, plan.effects["reactive_order_taking"][q], 1.0)
    planned_rate = float(spec["planned_requests_per_day"]) * plan.volume * np.where(
        window, plan.effects["planned_work_deferral"][q], 1.0)
    n_unplanned = rng.poisson(unplanned_rate)
    n_planned = rng.poisson(planned_rate)
    req_day = np.concatenate([np.repeat(day_idx, n_unplanned), np.repeat(day_idx, n_planned)])
    planned = np.concatenate([np.zeros(n_unplanned.sum(), bool), np.ones(n_planned.sum(), bool)])
    n = len(req_day)
    in_window = plan.day_window[req_day]
    req_q = plan.day_q[req_day]

    # Creation time: working hours, or after hours with the (panic-raised) share.
    after_share = np.where(in_window, plan.effects["after_hours_share"][req_q], plan.effects["after_hours_share"][plan.nq])
    after = rng.random(n) < after_share
    evening = rng.random(n) < 0.75
    hour = np.where(after, np.where(evening, rng.uniform(18.0, 22.5, n), rng.uniform(6.5, 8.0, n)),
                    rng.uniform(8.0, 18.0, n))
    days = plan.days.to_numpy().astype("datetime64[D]")[req_day]
    created = days.astype("datetime64[m]") + np.round(hour * 60).astype("timedelta64[m]")

    unplanned_names = list(UNPLANNED_TYPES)
    planned_names = list(PLANNED_TYPES)
    u_type = rng.choice(len(unplanned_names), n, p=[w for w, _ in UNPLANNED_TYPES.values()])
    p_type = rng.choice(len(planned_names), n, p=[w for w, _ in PLANNED_TYPES.values()])
    type_name = np.where(planned, np.array(planned_names, dtype=object)[p_type],
                         np.array(unplanned_names, dtype=object)[u_type])
    median = np.where(planned, np.array([m for _, m in PLANNED_TYPES.values()])[p_type],
                      np.array([m for _, m in UNPLANNED_TYPES.values()])[u_type])
    stretch = np.where(in_window, plan.effects["turnaround_stretch"][req_q], 1.0)
    turnaround_h = median * np.exp(rng.normal(0.0, TURNAROUND_SIGMA, n)) * stretch
    resolved = created + np.round(turnaround_h * 60).astype("timedelta64[m]")
    as_of = plan.as_of.to_datetime64().astype("datetime64[m]")
    done = resolved <= as_of

    # Unplanned requests are about a deal open at the time: a few random draws among
    # deals created in the last 120 working days, else the latest deal created before.
    w_req = _work_time(days, np.clip(hour - _DAY_START, 0.0, _DAY_HOURS))
    opp = np.full(n, -1)
    todo = ~planned
    hi_all = np.searchsorted(o["w_created"], w_req, side="right")
    lo_all = np.searchsorted(o["w_created"], w_req - 120 * _DAY_HOURS)
    for _ in range(6):
        rows = np.flatnonzero(todo)
        hi, lo = hi_all[rows], lo_all[rows]
        pick = lo + np.floor(rng.random(len(rows)) * (hi - lo)).astype(int)
        ok = (hi > lo) & (o["w_close"][np.minimum(pick, max(len(o["w_close"]) - 1, 0))] >= w_req[rows])
        opp[rows[ok]] = pick[ok]
        todo[rows[ok]] = False
    opp = np.where(todo & (hi_all > 0), hi_all - 1, opp)
    linked = opp >= 0
    requester = np.where(linked, o["owner"][np.maximum(opp, 0)] if len(o["owner"]) else 0,
                         rng.choice(plan.n_sellers, n, p=people["weight"]))
    priority_p = np.where(
        planned[:, None], [[0.0, 0.1, 0.6, 0.3]],
        np.where(in_window[:, None], [[0.3, 0.35, 0.3, 0.05]], [[0.1, 0.3, 0.45, 0.15]]),
    )
    priority = (rng.random(n)[:, None] > np.cumsum(priority_p, axis=1)).sum(axis=1).clip(0, 3)
    open_status = np.array(["To Do", "In Progress", "Waiting for Approval"], dtype=object)[rng.integers(0, 3, n)]
    hours = np.where(planned, 5.0, 1.5) * np.exp(rng.normal(0.0, 0.7, n))
    hours = np.where(rng.random(n) < 0.6, np.maximum(np.round(hours * 4) / 4, 0.25), np.nan)

    exists = created <= as_of  # evening requests of the as-of day come after it
    order = np.argsort(created, kind="stable")
    order = order[exists[order]]
    frame = pd.DataFrame(
        {
            "org": plan.name,
            "created_at": created.astype("datetime64[ns]"),
            "resolved_at": np.where(done, resolved, np.datetime64("NaT")).astype("datetime64[ns]"),
            "request_type": type_name,
            "priority": np.array(PRIORITIES, dtype=object)[priority],
            "status": np.where(done, "Done", open_status).astype(object),
            "requester": people["names"][requester],
            "team": np.array(plan.team_names, dtype=object)[people["team"][requester]],
            "opportunity_id": np.where(linked, opp_ids[np.maximum(opp, 0)] if len(opp_ids) else None, None),
            "planned": planned,
            "handling_hours": hours,
        }
    ).iloc[order].reset_index(drop=True)
    frame.insert(1, "request_id", _record_ids(plan, "request", len(frame), rng))
    return frame


# -- ids and canonical dtypes ---------------------------------------------------------------------
_BASE62 = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))
_SF_CHECKSUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_SF_PREFIX = {"opportunity": "006", "lead": "00Q"}


def _record_ids(plan: _OrgPlan, kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Ids in the style of the org's CRM (Salesforce 18-char, HubSpot numeric, Jira keys, plain)."""
    fmt = plan.spec["format"]
    if kind == "request":
        project = plan.spec.get("jira_project") or "".join(w[0] for w in plan.name.split()).upper() + "OPS"
        return np.array([f"{project}-{i}" for i in range(101, 101 + n)], dtype=object)
    if fmt == "salesforce":
        return _salesforce_ids(_SF_PREFIX[kind], n, rng)
    if fmt == "hubspot":
        start = {"opportunity": 9_000_000_000, "lead": 4_000_000_000}[kind]
        return (start + np.cumsum(rng.integers(1, 5000, n))).astype(str).astype(object)
    prefix = {"opportunity": "OPP", "lead": "LEAD"}[kind]
    return np.array([f"{prefix}-{i:05d}" for i in range(1, n + 1)], dtype=object)


def _salesforce_ids(prefix: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """18-character Salesforce ids: a 15-character case-sensitive id + its 3-character checksum."""
    counter = int(rng.integers(10_000_000, 50_000_000)) + np.arange(n)
    digits = np.empty((n, 7), dtype="<U1")
    for pos in range(6, -1, -1):
        counter, rem = np.divmod(counter, 62)
        digits[:, pos] = _BASE62[rem]
    body = np.char.add(prefix + "5J000", np.ascontiguousarray(digits).view("<U7").ravel())
    chars = np.ascontiguousarray(body.astype("<U15")).view("<U1").reshape(n, 3, 5)
    # Each 5-character chunk's upper-case positions, as bits, pick one checksum letter.
    index = (np.char.isupper(chars) * (1 << np.arange(5))).sum(axis=2)
    suffix = np.ascontiguousarray(np.array(list(_SF_CHECKSUM))[index]).view("<U3").ravel()
    return np.char.add(body, suffix).astype(object)


def _canonical(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Schema column order and dtypes, provenance ``<generated>`` with rows 2..n+1 (one org's table)."""
    frame = frame.copy()
    frame["source_file"] = "<generated>"
    frame["source_row"] = np.arange(2, len(frame) + 2)
    dtypes = _canonical_dtypes(table)
    return frame[list(dtypes)].astype(dtypes)


@functools.lru_cache(maxsize=None)
def _canonical_dtypes_cached(table: str) -> tuple:
    return tuple(schemas.empty(table).dtypes.items())


def _canonical_dtypes(table: str) -> dict:
    return dict(_canonical_dtypes_cached(table))
