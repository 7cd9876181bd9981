"""In-quarter early warning: control charts of the open quarter against the calm quarters.

Mid-quarter there is no finding yet — the detectors judge complete quarters —
but the two weekly series behind them already speak. For each organisation
the open quarter's weeks so far are compared with its calm *baseline
quarters* (``params["baseline_quarters"]``, else the complete quarters whose
main findings are not flagged, as in :mod:`quarterpanic.analysis.panic_index`):

``qualification_decay``
    deals created in week *t* (``n_t``), of which ``x_t`` met the qualification
    rule. With the baseline rate ``p0`` the week's standardised shortfall is
    ``z_t = (n_t p0 − x_t) / sqrt(n_t p0 (1 − p0))`` (binomial).
``reactive_order_taking``
    unplanned sales-ops requests ``x_t`` in ``e_t`` working days. With the
    baseline rate ``λ0`` per working day, ``z_t = (x_t − λ0 e_t) / sqrt(λ0 e_t)``
    (Poisson).

Weeks vary more than binomial or Poisson noise in real teams, so each ``z``
is divided by ``sqrt(φ)``, the Pearson dispersion of the baseline weeks about
their own quarter's rate (never below 1). Each chart is a one-sided (upper)
CUSUM, ``S_t = max(0, S_{t−1} + z_t − k)`` with ``S_0 = 0``; a week without
data leaves ``S`` unchanged. The chart *alarms* in the first week with
``S_t > h``; ``start_week`` — the week after ``S`` last stood at zero — is the
CUSUM's estimate of when the drift began. ``S_t`` uses weeks 1..t only, so the
path of a complete quarter is exactly what runs cut at the end of each of its
weeks would have shown.

**Calibration.** ``k = 0.5`` (:data:`DEFAULT_K`) tunes the chart to a sustained
shift of one standard deviation a week, the classic choice (k = half the
shift to detect); the panic shifts of interest are larger in all but the
smallest teams, and larger shifts are caught within a week or two anyway. The
threshold ``h`` is set per organisation and chart by simulating calm quarters
from the baseline quarters themselves (:func:`calibrate_h`): their weekly
volumes, their quarter-to-quarter variation of the rate (τ², which a CUSUM
accumulates: a calm quarter that simply runs a little lower than the others
is not panic), their week-to-week dispersion φ, and the uncertainty of a
baseline rate estimated from only a few quarters. ``h`` is the ``1 − a``
quantile of the simulated quarters' largest ``S_t``, with
``a = 1 − (1 − false_alarm) ** (1 / charts)``, so that the two (independent)
charts together alarm in at most ``false_alarm`` (5%) of calm quarters — for
at least 80% of the baselines an organisation could have drawn
(:data:`GUARANTEE`), not just on average. Simulating rather than using a
normal approximation keeps the rate honest for small teams, whose weekly
counts are few and skewed.

On the generated sample (12 seeds at scale ``small``: 96 panic and 192 calm
complete quarters, each checked against its organisation's other calm
quarters) the warning fired within two weeks of the injected onset in 98% of
panic quarters (2% alarmed before the onset: counted as misses) and in 3% of
calm quarters
(tests/test_early_warning.py).

:func:`early_warning` gives the status of the open quarter; :func:`backtest`
runs the charts through every complete quarter as if it were open (each
quarter against the *other* calm quarters of its organisation), which is how
the warning is checked against the generated sample's truth.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from quarterpanic.analysis.detect import detect
from quarterpanic.analysis.features import opportunity_features
from quarterpanic.analysis.findings import NOT_MEASURED
from quarterpanic.analysis.inputs import supported_analyses
from quarterpanic.analysis.panic_index import baseline_quarters, complete_quarters
from quarterpanic.analysis.reactive import request_features, week_grid, weekly_requests
from quarterpanic.dataset import Dataset
from quarterpanic.params import defaults

CHARTS = ("qualification_decay", "reactive_order_taking")
DEFAULT_K = 0.5
FALSE_ALARM = 0.05  # per calm quarter, both charts together
N_SIMULATIONS = 4000
MIN_BASELINE_QUARTERS = 2
GUARANTEE = 0.8  # share of possible baselines for which the false-alarm rate is at most promised
SEED = 20240601

CALM, WATCH, WARNING = "calm", "watch", "panic signals"
NO_BASELINE, NOT_STARTED = "insufficient baseline", "not started"

WEEKLY_COLUMNS = [
    "org", "quarter", "quarter_start", "quarter_end", "weeks_in_quarter", "week_of_quarter", "week_start",
    "week_end", "quarter_complete", "created", "qualified", "working_days", "unplanned",
]
CHART_COLUMNS = [
    "org", "quarter", "week_of_quarter", "chart", "observed", "expected", "base", "z", "cusum", "k", "h",
    "alarm", "alarm_week", "start_week",
]


# -- the weekly series --------------------------------------------------------------------------------
def weekly_series(dataset: Dataset, params: Mapping[str, Any] | None = None, *, cache: bool = False) -> pd.DataFrame:
    """Deals created and qualified, working days and unplanned requests, per org × quarter × week.

    Parameters
    ----------
    dataset:
        The data as of the moment of the run (:meth:`Dataset.cut`).
    params:
        Uses ``orgs``, ``segment``, the qualification rule and the request
        type lists.
    cache:
        Reuse the opportunity features of an earlier run (:mod:`quarterpanic.store.results`).

    Returns
    -------
    :data:`WEEKLY_COLUMNS`, one row per week of the reactive detector's
    :func:`~quarterpanic.analysis.reactive.week_grid` (weeks not begun by ``as_of``
    have 0 working days); ``created`` / ``qualified`` count opportunities by
    their creation week (:func:`~quarterpanic.analysis.features.opportunity_features`).
    """

    params = {**defaults(), **(params or {})}
    if params.get("segment"):
        dataset = dataset.filter(segment=params["segment"])
    grid = week_grid(dataset, params)
    if grid.empty:
        return pd.DataFrame(columns=WEEKLY_COLUMNS)
    requests = weekly_requests(request_features(dataset, params), grid)
    features = opportunity_features(dataset, params, cache=cache)
    keys = ["org", "quarter", "week_of_quarter"]
    created = (
        features.assign(qualified=features["qualified"].astype(int))
        .groupby(keys)
        .agg(created=("qualified", "size"), qualified=("qualified", "sum"))
        .reset_index()
    )
    weekly = requests.merge(created, on=keys, how="left")
    for column in ("created", "qualified", "unplanned", "working_days"):
        weekly[column] = weekly[column].fillna(0).astype(int)
    return weekly.sort_values(["org", "quarter_start", "week_of_quarter"])[WEEKLY_COLUMNS].reset_index(drop=True)


# -- baseline rates and standardisation ----------------------------------------------------------------
@dataclass
class Baseline:
    """One chart's calm reference for one organisation.

    Attributes
    ----------
    chart:
        ``qualification_decay`` or ``reactive_order_taking``.
    rate:
        ``p0`` (share of new deals qualified) or ``λ0`` (unplanned requests per
        working day), pooled over the baseline quarters.
    dispersion:
        φ ≥ 1, the week-to-week variance within a quarter relative to binomial
        (Poisson) noise.
    between:
        τ², the variance of the quarters' own levels around ``rate`` beyond
        what their sampling noise explains, on the logit (log) scale.
    exposure:
        Deals created (working days) in all baseline quarters together.
    bases:
        The weekly bases (deals created, or working days) of each baseline
        quarter: the volumes calm quarters are simulated with.
    """

    chart: str
    rate: float
    dispersion: float
    between: float
    exposure: float
    bases: list[np.ndarray]

    @property
    def quarters(self) -> int:
        return len(self.bases)

    @property
    def usable(self) -> bool:
        in_range = 0 < self.rate < 1 if self.chart == CHARTS[0] else 0 < self.rate
        return self.quarters >= MIN_BASELINE_QUARTERS and bool(in_range)

    def link_variance(self, base: np.ndarray | float) -> np.ndarray:
        """Sampling variance, on the link scale, of a rate estimated from ``base`` (deals or working days)."""
        unit = self.rate * (1 - self.rate) if self.chart == CHARTS[0] else self.rate
        with np.errstate(divide="ignore"):
            return self.dispersion / (np.asarray(base, dtype=float) * unit)


def _columns(chart: str) -> tuple[str, str]:
    """(events, base) columns of a chart."""
    return ("qualified", "created") if chart == CHARTS[0] else ("unplanned", "working_days")


def _observed_rates(chart: str, events: np.ndarray, base: np.ndarray) -> np.ndarray:
    """``events / base`` kept half an event away from 0 (and from 1 for shares), so logs stay finite."""
    base = np.maximum(np.asarray(base, dtype=float), 1.0)
    rates = np.maximum(np.asarray(events, dtype=float) / base, 0.5 / base)
    return np.minimum(rates, 1 - 0.5 / base) if chart == CHARTS[0] else rates


def _link(chart: str, rate: np.ndarray | float) -> np.ndarray:
    rate = np.asarray(rate, dtype=float)
    return np.log(rate / (1 - rate)) if chart == CHARTS[0] else np.log(rate)


def _unlink(chart: str, value: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-value)) if chart == CHARTS[0] else np.exp(value)


def standardised(
    chart: str, events: np.ndarray, base: np.ndarray, rate: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """``(expected, z)`` of weekly ``events`` out of ``base`` at the baseline ``rate`` (panic side positive).

    Binomial for ``qualification_decay`` (a shortfall of qualified deals is
    positive), Poisson for ``reactive_order_taking`` (an excess of unplanned
    requests is positive). Weeks with no base get ``z = 0``.
    """
    events, base = np.asarray(events, dtype=float), np.asarray(base, dtype=float)
    expected = rate * base
    if chart == CHARTS[0]:
        variance, excess = expected * (1 - rate), expected - events
    else:
        variance, excess = expected, events - expected
    safe = np.where(variance > 0, variance, 1.0)
    return expected, np.where(variance > 0, excess / np.sqrt(safe), 0.0)


def baseline_for(weekly: pd.DataFrame, chart: str) -> Baseline:
    """The :class:`Baseline` of one chart from the weekly rows of one organisation's baseline quarters.

    ``rate`` pools every baseline week; φ is the Pearson dispersion of the
    weeks around *their own quarter's* rate (degrees of freedom: weeks with
    data minus quarters), never below 1; τ² is the method-of-moments variance
    of the quarters' link-scale rates minus their mean sampling variance,
    never below 0.
    """
    events_col, base_col = _columns(chart)
    quarters = [part.sort_values("week_of_quarter") for _, part in weekly.groupby("quarter", sort=False)]
    bases = [part[base_col].to_numpy(dtype=float) for part in quarters]
    events_q = np.array([part[events_col].sum() for part in quarters], dtype=float)
    base_q = np.array([b.sum() for b in bases], dtype=float)
    exposure = float(base_q.sum())
    rate = float(events_q.sum() / exposure) if exposure > 0 else float("nan")
    baseline = Baseline(chart, rate, 1.0, 0.0, exposure, bases)
    if not baseline.usable:
        return baseline
    squares, weeks_seen = 0.0, 0
    for part, base, quarter_rate in zip(quarters, bases, _observed_rates(chart, events_q, base_q)):
        seen = base > 0
        _, z = standardised(chart, part[events_col].to_numpy(dtype=float)[seen], base[seen], quarter_rate)
        squares += float(np.sum(z**2))
        weeks_seen += int(seen.sum())
    df = weeks_seen - len(quarters)
    baseline.dispersion = max(1.0, squares / df) if df > 0 else 1.0
    seen = base_q > 0
    if seen.sum() > 1:
        links = _link(chart, _observed_rates(chart, events_q[seen], base_q[seen]))
        spread = float(np.var(links, ddof=1))
        baseline.between = max(0.0, spread - float(np.mean(baseline.link_variance(base_q[seen]))))
    return baseline


def cusum(z: np.ndarray, k: float, observed: np.ndarray | None = None) -> np.ndarray:
    """One-sided upper CUSUM ``S_t = max(0, S_{t-1} + z_t - k)`` along the last axis.

    Where ``observed`` is False (no data that week) ``S`` is carried over unchanged.
    """
    z = np.asarray(z, dtype=float)
    observed = np.ones_like(z, dtype=bool) if observed is None else np.asarray(observed, dtype=bool)
    path = np.zeros_like(z)
    current = np.zeros(z.shape[:-1])
    for t in range(z.shape[-1]):
        step = np.maximum(0.0, current + z[..., t] - k)
        current = np.where(observed[..., t], step, current)
        path[..., t] = current
    return path


def calibrate_h(
    baseline: Baseline,
    *,
    k: float = DEFAULT_K,
    false_alarm: float = FALSE_ALARM / 2,
    n_simulations: int = N_SIMULATIONS,
    guarantee: float = GUARANTEE,
    rng: np.random.Generator | None = None,
) -> float:
    """The CUSUM threshold ``h`` that a calm quarter crosses with probability ``false_alarm``.

    Simulates ``n_simulations`` calm quarters like the baseline ones and runs
    the chart through each exactly as :func:`chart_quarter` does:

    1. the weekly volumes of a randomly drawn baseline quarter;
    2. the quarter's own level: the baseline rate moved by N(0, τ²) on the
       logit (log) scale — calm quarters differ from each other;
    3. the baseline rate the chart is standardised with is taken as *off* by
       the ``guarantee`` quantile (80%) of its estimation error, in the
       direction that raises false alarms (its standard error on the link
       scale: ``sqrt(τ²/B + sampling variance)`` from ``B`` baseline quarters);
    4. binomial (Poisson) weekly counts at the quarter's level, plus the
       extra within-quarter variation φ as Gaussian noise.

    Returns the ``1 - false_alarm`` quantile of the simulated quarters' largest ``S_t``.
    Step 3 makes the false-alarm rate at most ``false_alarm`` for (at least)
    ``guarantee`` of the baselines an organisation could have drawn, not just
    on average over them: a baseline of a few quarters is uncertain, and
    charts standardised with it would otherwise alarm more often than
    promised for the organisations whose calm rate was under-estimated
    ("guaranteed conditional performance", Gandy & Kvaløy 2013,
    Scand. J. Statist. 40, 647-668, here with the estimation error
    approximated as normal on the link scale).
    """
    rng = rng if rng is not None else np.random.default_rng(SEED)
    chart = baseline.chart
    weeks = max(len(b) for b in baseline.bases)
    bases = np.zeros((n_simulations, weeks))
    picks = rng.integers(0, baseline.quarters, n_simulations)
    for i, source in enumerate(baseline.bases):
        rows = picks == i
        bases[rows, : len(source)] = source
    bases = np.round(bases).astype(int)
    centre = float(_link(chart, baseline.rate))
    level = _unlink(chart, centre + rng.normal(0.0, math.sqrt(baseline.between), n_simulations))[:, None]
    estimate_sd = math.sqrt(baseline.between / baseline.quarters + float(baseline.link_variance(baseline.exposure)))
    # An unlucky baseline: a qualification rate estimated too high, a request rate too low.
    unlucky = (1 if chart == CHARTS[0] else -1) * float(stats.norm.ppf(guarantee)) * estimate_sd
    estimated = float(_unlink(chart, np.asarray(centre + unlucky)))
    events = rng.binomial(bases, level) if chart == CHARTS[0] else rng.poisson(level * bases)
    _, z = standardised(chart, events, bases, estimated)
    observed = bases > 0
    extra = math.sqrt(max(0.0, 1.0 - 1.0 / baseline.dispersion))
    z = z / math.sqrt(baseline.dispersion) + extra * rng.standard_normal(z.shape) * observed
    maxima = cusum(z, k, observed).max(axis=1)
    return float(np.quantile(maxima, 1.0 - false_alarm, method="higher"))


# -- charts ------------------------------------------------------------------------------------------
def chart_quarter(
    weeks: pd.DataFrame,
    baselines: Mapping[str, Baseline],
    *,
    k: float = DEFAULT_K,
    false_alarm: float = FALSE_ALARM,
    n_simulations: int = N_SIMULATIONS,
    seed: int = SEED,
) -> pd.DataFrame:
    """The CUSUM charts of one org × quarter (its weeks so far) against its baselines.

    Parameters
    ----------
    weeks:
        :func:`weekly_series` rows of one org × quarter.
    baselines:
        ``{chart: Baseline}``; charts whose baseline is not usable are left out.
    false_alarm:
        Per-quarter false-alarm rate of all usable charts together.

    Returns
    -------
    :data:`CHART_COLUMNS`, one row per chart × week with data begun:
    ``observed`` / ``expected`` events, ``base``, standardised ``z`` (after the
    dispersion), ``cusum``, ``k``, ``h``, ``alarm`` (``cusum > h``),
    ``alarm_week`` (first alarm up to that week, else NA) and ``start_week``
    (the CUSUM's change-point estimate at the first alarm).
    """
    usable = {name: b for name, b in baselines.items() if b.usable}
    if not usable:
        return pd.DataFrame(columns=CHART_COLUMNS)
    per_chart = 1.0 - (1.0 - false_alarm) ** (1.0 / len(usable))
    weeks = weeks.sort_values("week_of_quarter")
    begun = weeks[(weeks["working_days"] > 0) | (weeks["created"] > 0)]
    frames = []
    for offset, (name, baseline) in enumerate(usable.items()):
        rng = np.random.default_rng([seed, offset])
        h = calibrate_h(baseline, k=k, false_alarm=per_chart, n_simulations=n_simulations, rng=rng)
        events_col, base_col = _columns(name)
        events = begun[events_col].to_numpy(dtype=float)
        base = begun[base_col].to_numpy(dtype=float)
        expected, z = standardised(name, events, base, baseline.rate)
        z = z / math.sqrt(baseline.dispersion)
        path = cusum(z, k, base > 0)
        alarm = path > h
        week = begun["week_of_quarter"].to_numpy(dtype=int)
        first = int(np.argmax(alarm)) if alarm.any() else None
        alarm_week = np.full(len(week), np.nan)
        start_week = np.full(len(week), np.nan)
        if first is not None:
            zeros = np.flatnonzero(path[:first] == 0)
            start = int(week[zeros[-1]]) + 1 if len(zeros) else int(week[0])
            alarm_week[first:] = week[first]
            start_week[first:] = start
        frames.append(
            pd.DataFrame(
                {
                    "org": begun["org"].to_numpy(), "quarter": begun["quarter"].to_numpy(), "week_of_quarter": week,
                    "chart": name, "observed": events, "expected": expected, "base": base, "z": z, "cusum": path,
                    "k": k, "h": h, "alarm": alarm, "alarm_week": alarm_week, "start_week": start_week,
                }
            )
        )
    out = pd.concat(frames, ignore_index=True)
    for column in ("alarm_week", "start_week"):
        out[column] = pd.array(out[column].round(), dtype="Int64")
    return out[CHART_COLUMNS]


def _baselines(weekly_org: pd.DataFrame, quarters: Sequence[str]) -> dict[str, Baseline]:
    rows = weekly_org[weekly_org["quarter"].isin(list(quarters))]
    return {name: baseline_for(rows, name) for name in CHARTS}


def calm_quarters(
    dataset: Dataset, params: Mapping[str, Any] | None = None, findings: pd.DataFrame | None = None, *,
    cache: bool = False,
) -> dict[str, list[str]]:
    """Each organisation's baseline quarters: ``params["baseline_quarters"]``, else its unflagged complete quarters.

    Without ``findings`` the detectors are run (all quarters) to find the flags.
    """
    params = {**defaults(), **(params or {})}
    if findings is None:
        findings = detect(dataset, {**params, "quarters": None}, cache=cache)
    if findings.empty:
        return {}
    roles = baseline_quarters(findings, params, complete_quarters(findings, dataset))
    roles = roles[(roles["segment"] == "all") & roles["baseline"]]
    return {str(org): list(part["quarter"]) for org, part in roles.groupby("org")}


# -- the open quarter ---------------------------------------------------------------------------------
STATUS_COLUMNS = [
    "org", "quarter", "week", "weeks_in_quarter", "status", "signals", "details", "baseline_quarters",
]


def early_warning(
    dataset: Dataset,
    params: Mapping[str, Any] | None = None,
    *,
    findings: pd.DataFrame | None = None,
    k: float = DEFAULT_K,
    false_alarm: float = FALSE_ALARM,
    n_simulations: int = N_SIMULATIONS,
    cache: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The early-warning status of every organisation's open quarter.

    Parameters
    ----------
    dataset:
        The data; cut at ``params["as_of"]`` when that is earlier than
        ``dataset.as_of``. The open quarter is the one containing ``as_of``.
    params:
        Uses ``as_of``, ``baseline_quarters``, ``orgs``, ``segment`` and the
        detectors' parameters.
    findings:
        Findings of the complete quarters (flags set) for choosing the calm
        baseline quarters; run here when not given.
    k, false_alarm, n_simulations:
        CUSUM reference value, per-quarter false-alarm rate of both charts
        together, and the number of simulated calm quarters that set ``h``.
    cache:
        Reuse detector results and opportunity features of an earlier run on
        the same data, parameters and code (:mod:`quarterpanic.store.results`).

    Returns
    -------
    ``(status, charts)``: ``status`` has :data:`STATUS_COLUMNS`, one row per
    organisation — ``week`` (week of quarter of ``as_of``), ``status``
    (``panic signals``: a chart has alarmed this quarter; ``watch``: a chart
    is past half its threshold; ``calm``; ``insufficient baseline``; ``not
    started``; ``not measured``: the data hold the input of neither chart, and
    ``details`` say what each needs), ``signals`` (``[{"component", "since_week", "start_week"}]``)
    and ``details`` (what a sentence needs: the charts near their alarm line
    with their CUSUM and threshold, or the calm charts watched;
    :func:`quarterpanic.report.words.early_warning_sentences`). ``charts`` is :func:`chart_quarter` of every
    open quarter.
    """
    params = {**defaults(), **(params or {})}
    if params.get("as_of") and pd.Timestamp(params["as_of"]) < dataset.as_of:
        dataset = dataset.cut(params["as_of"])
    weekly = weekly_series(dataset, params, cache=cache)
    baseline = calm_quarters(dataset, params, findings, cache=cache)
    # A chart whose input the organisation's data lack watches nothing: it must not read as calm.
    support = supported_analyses(dataset, params)
    support = support[support["metric"].isin(CHARTS)]
    unwatched = {org: rows for org, rows in support[~support["supported"]].groupby("org")}
    rows, charts = [], []
    for org in sorted(weekly["org"].unique()):
        weekly_org = weekly[weekly["org"] == org]
        calendar = dataset.calendar(org)
        quarter = calendar.quarter_of(dataset.as_of)
        weeks = weekly_org[weekly_org["quarter"] == quarter]
        features = calendar.annotate(pd.Series([dataset.as_of])).iloc[0]
        week = int(features["week_of_quarter"])
        quarters = [q for q in baseline.get(org, []) if q != quarter]
        chart = chart_quarter(
            weeks, _baselines(weekly_org, quarters), k=k, false_alarm=false_alarm, n_simulations=n_simulations
        ) if not weeks.empty else pd.DataFrame(columns=CHART_COLUMNS)
        lacking = unwatched.get(org, support.iloc[:0])
        chart = chart[~chart["chart"].isin(lacking["metric"])]
        charts.append(chart)
        status = _status(org, quarter, week, int(features["weeks_in_quarter"]), chart, len(quarters))
        if chart.empty and len(lacking) == len(CHARTS):
            status = {**status, "status": NOT_MEASURED,
                      "details": [{"component": r.metric, "needs": list(r.needs)} for r in lacking.itertuples()]}
        rows.append(status)
    status = pd.DataFrame(rows, columns=STATUS_COLUMNS)
    charts = [c for c in charts if not c.empty]
    return status, (pd.concat(charts, ignore_index=True) if charts else pd.DataFrame(columns=CHART_COLUMNS))


def _status(org: str, quarter: str, week: int, weeks_in_quarter: int, chart: pd.DataFrame, n_baseline: int) -> dict:
    record = {"org": org, "quarter": quarter, "week": week, "weeks_in_quarter": weeks_in_quarter,
              "baseline_quarters": n_baseline, "signals": [], "details": []}
    if chart.empty:
        return {**record, "status": NO_BASELINE if n_baseline < MIN_BASELINE_QUARTERS else NOT_STARTED}
    latest = chart.sort_values("week_of_quarter").groupby("chart").tail(1).set_index("chart")
    signals = [
        {"component": name, "since_week": int(row.alarm_week), "start_week": int(row.start_week)}
        for name, row in latest.iterrows() if pd.notna(row.alarm_week)
    ]
    signals.sort(key=lambda s: (s["since_week"], CHARTS.index(s["component"])))
    if signals:
        return {**record, "status": WARNING, "signals": signals}
    near = latest[latest["cusum"] > latest["h"] / 2]
    if not near.empty:
        return {**record, "status": WATCH,
                "details": [{"component": name, "cusum": float(row.cusum), "h": float(row.h)}
                            for name, row in near.iterrows()]}
    return {**record, "status": CALM, "details": [{"component": name} for name in latest.index]}


# -- backtest -----------------------------------------------------------------------------------------
BACKTEST_COLUMNS = [
    "org", "quarter", "weeks_in_quarter", "alarm_week", "start_week", "first_chart",
    "qualification_decay_alarm", "reactive_order_taking_alarm", "baseline_quarters",
]


def backtest(
    dataset: Dataset,
    params: Mapping[str, Any] | None = None,
    *,
    findings: pd.DataFrame | None = None,
    k: float = DEFAULT_K,
    false_alarm: float = FALSE_ALARM,
    n_simulations: int = N_SIMULATIONS,
) -> pd.DataFrame:
    """Run the warning through every complete quarter as if it were open, week by week.

    Each quarter's charts use only its own weeks up to each week (a CUSUM
    never looks ahead), so the first alarm week is what a run cut at the end
    of that week would have reported. The baseline of a quarter is its
    organisation's *other* calm quarters (``baseline_quarters`` or the
    unflagged ones, see :func:`calm_quarters`) — before and after it, so that
    the earliest quarters can be checked too.

    Returns
    -------
    :data:`BACKTEST_COLUMNS`, one row per org × complete quarter:
    ``alarm_week`` (first alarm of either chart, NA when none), its
    ``start_week`` and ``first_chart``, each chart's first alarm week and
    the number of baseline quarters used.
    """
    params = {**defaults(), **(params or {})}
    weekly = weekly_series(dataset, params)
    baseline = calm_quarters(dataset, params, findings)
    records = []
    for (org, quarter), weeks in weekly[weekly["quarter_complete"]].groupby(["org", "quarter"], sort=False):
        weekly_org = weekly[weekly["org"] == org]
        quarters = [q for q in baseline.get(org, []) if q != quarter]
        chart = chart_quarter(
            weeks, _baselines(weekly_org, quarters), k=k, false_alarm=false_alarm, n_simulations=n_simulations
        )
        record = {"org": org, "quarter": quarter, "weeks_in_quarter": int(weeks["weeks_in_quarter"].iloc[0]),
                  "baseline_quarters": len(quarters)}
        first = {}
        for name in CHARTS:
            alarms = chart[(chart["chart"] == name) & chart["alarm"]] if not chart.empty else chart
            first[name] = (int(alarms["week_of_quarter"].min()), int(alarms["start_week"].min())) if len(alarms) else None
            record[f"{name}_alarm"] = first[name][0] if first[name] else pd.NA
        fired = {name: value for name, value in first.items() if value}
        if fired:
            name = min(fired, key=lambda n: (fired[n][0], CHARTS.index(n)))
            record.update(alarm_week=fired[name][0], start_week=fired[name][1], first_chart=name)
        records.append(record)
    out = pd.DataFrame(records, columns=BACKTEST_COLUMNS)
    for column in ("alarm_week", "start_week", "qualification_decay_alarm", "reactive_order_taking_alarm"):
        out[column] = pd.array(out[column], dtype="Int64")
    return out
