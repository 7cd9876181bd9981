"""Weekly curves, and what happens to deals created or closed in a panic.

The qualification-decay detector (:mod:`quarterpanic.analysis.qualification`) finds
the week a quarter's qualification rate stepped down. This module measures
the consequences at that onset, per organisation × quarter, each with a
confidence interval at ``params["ci_level"]``:

* ``win_rate_ratio`` — P(won | created at or after the onset) over
  P(won | created before), closed deals only (open deals are censored);
* ``discount_uplift`` — extra discount of deals won at or after the onset;
* ``last_week_deal_size_change`` — relative size of deals closed in the last
  week of the quarter (log-amount regression with segment controls);
* ``last_week_win_rate_ratio`` — P(won | closed in the quarter's last week)
  over P(won | closed earlier in it): the win rate keyed to the close date;
* ``close_date_push_rate`` — share of deals due in the last two weeks whose
  close date was pushed into a later quarter (a level, shown, not tested);
* ``close_date_push_excess`` — that share minus the organisation's push rate
  in its other baseline quarters (the tested form: pushes happen in calm
  quarters too);
* ``lead_score_drop`` — lead score at conversion, before minus after the onset;
* ``stage_skip_rate`` — share of deals created at or after the onset whose
  stage path skipped a stage.

It also holds the generic weekly curve helpers both modules draw with:
:func:`weekly_proportion` (rates with Wilson or exact intervals) and
:func:`weekly_mean` (means, or geometric means, with t intervals).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.regression.linear_model import OLS
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

from quarterpanic.analysis.findings import ALL_SEGMENTS, INSUFFICIENT, OK, PARTIAL, make_findings, register_metric
from quarterpanic.analysis.inputs import quarter_bounds, quarter_coverage
from quarterpanic.analysis.onset import max_t_adjusted, split_fractions
from quarterpanic.analysis.panic_index import MIN_BASELINE, calm_members, calm_variation
from quarterpanic.calendar import fiscal_features_by_org
from quarterpanic.dataset import Dataset
from quarterpanic.params import defaults

COMPONENT = "qualification_decay"
MIN_LEVEL_N = 10  # a control level needs this many rows to get its own dummy
MIN_CLUSTERS = 5  # with fewer sellers, seller-clustered errors are not trusted
MIN_SIDE_N = 10  # fewest deals on each side of a comparison for an outcome verdict
PUSH_WINDOW_DAYS = 14  # "the last two weeks" of a quarter
ONSET_GUARD_WEEKS = 1  # discount_uplift leaves out deals closed this close to the onset (its doubt, in weeks)

# Tests that find fewer than WEAK_POWER of panic quarters at literature-range effects, per quarter of a mid-size or
# enterprise organisation (tests/analysis/test_outcomes_stats.py measures it; docs/METHODS.md has the numbers):
# a quarter's last week holds too few deals for a -12% size change or a win-rate drop, and the metrics split at
# a 20-point decay's onset find mid-size panics about half the time (enterprise ones nearly always).
WEAK_TESTS = ("win_rate_ratio", "discount_uplift", "lead_score_drop", "stage_skip_rate",
              "last_week_deal_size_change", "last_week_win_rate_ratio")
# close_date_push_rate is a level with no fixed null (every quarter has some pushes): NaN, so it has no panic
# side and no direction; close_date_push_excess is its test against the organisation's own calm rate.
for _name, _null, _direction, _unit, _description in (
    ("win_rate_ratio", 1.0, -1, "ratio", "deals created after the onset won, relative to earlier deals, at"),
    ("discount_uplift", 0.0, +1, "share", "the discount on deals won after the onset rose by"),
    ("last_week_deal_size_change", 0.0, -1, "relative",
     "the size of deals closed in the last week, relative to the rest of the quarter, changed by"),
    ("last_week_win_rate_ratio", 1.0, -1, "ratio",
     "deals closed in the last week won, relative to deals closed earlier in the quarter, at"),
    ("close_date_push_rate", np.nan, +1, "proportion",
     "the share of deals due in the last two weeks whose close date was pushed into the next quarter was"),
    ("close_date_push_excess", 0.0, +1, "share",
     "the share of deals due in the last two weeks pushed into the next quarter, above the organisation's "
     "calm push rate, was"),
    ("lead_score_drop", 0.0, +1, "count", "the lead score at conversion fell by"),
    ("stage_skip_rate", 0.0, +1, "proportion", "the share of deals created after the onset that skipped a stage was"),
):
    register_metric(_name, component=COMPONENT, null=_null, direction=_direction, unit=_unit, description=_description,
                    sided="one-sided" if _name in ("stage_skip_rate", "close_date_push_excess") else "two-sided",
                    weak_test=_name in WEAK_TESTS)


# -- weekly curves --------------------------------------------------------------------------------
def weekly_proportion(
    data: pd.DataFrame,
    value: str,
    *,
    by: Sequence[str] = ("org", "quarter"),
    week: str = "week_of_quarter",
    method: str = "wilson",
    ci_level: float = 0.95,
) -> pd.DataFrame:
    """The weekly share of rows where ``value`` is true, with confidence intervals.

    Parameters
    ----------
    data:
        One row per unit (e.g. opportunity); rows with a missing ``value`` are
        left out (an open deal has no outcome yet).
    value:
        Boolean (or 0/1) column.
    by, week:
        Columns that identify a curve and its week.
    method:
        Interval method of :func:`statsmodels.stats.proportion.proportion_confint`
        (``"wilson"``, ``"beta"`` for Clopper–Pearson exact, ...).

    Returns
    -------
    One row per ``by`` × ``week``: ``events``, ``n``, ``rate``, ``ci_low``, ``ci_high``.
    """
    keys = list(by) + [week]
    known = data[data[value].notna()]
    counts = (
        known.assign(_event=known[value].astype(float))
        .groupby(keys, observed=True, sort=True)["_event"]
        .agg(events="sum", n="size")
        .reset_index()
    )
    counts["events"] = counts["events"].astype(int)
    counts["rate"] = counts["events"] / counts["n"]
    low, high = proportion_confint(
        counts["events"].to_numpy(), counts["n"].to_numpy(), alpha=1 - ci_level, method=method
    )
    counts["ci_low"], counts["ci_high"] = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    return counts


def weekly_mean(
    data: pd.DataFrame,
    value: str,
    *,
    by: Sequence[str] = ("org", "quarter"),
    week: str = "week_of_quarter",
    geometric: bool = False,
    ci_level: float = 0.95,
    min_n: int = 5,
) -> pd.DataFrame:
    """The weekly mean of ``value`` with a t interval.

    With ``geometric=True`` the mean and interval are taken on the log scale
    and transformed back (for skewed positives such as deal amounts; zero and
    negative values are left out).

    Returns
    -------
    One row per ``by`` × ``week``: ``n``, ``mean``, ``ci_low``, ``ci_high``
    (no interval for weeks with fewer than ``min_n`` values: a t interval of
    two or three values spans most of the scale and says nothing).
    """
    keys = list(by) + [week]
    values = pd.to_numeric(data[value], errors="coerce").astype(float)
    if geometric:
        values = np.log(values.where(values > 0))
    known = data.assign(_value=values)[values.notna()]
    summary = known.groupby(keys, observed=True, sort=True)["_value"].agg(n="size", mean="mean", sd="std").reset_index()
    half = stats.t.ppf((1 + ci_level) / 2, np.maximum(summary["n"] - 1, 1)) * summary["sd"] / np.sqrt(summary["n"])
    half = half.where(summary["n"] >= min_n)
    summary["ci_low"], summary["ci_high"] = summary["mean"] - half, summary["mean"] + half
    if geometric:
        for column in ("mean", "ci_low", "ci_high"):
            summary[column] = np.exp(summary[column])
    return summary.drop(columns="sd")



def win_rate_by_creation_week(features: pd.DataFrame, *, by: Sequence[str] = ("org", "quarter"), **kwargs: Any) -> pd.DataFrame:
    """Weekly win rate of closed deals by the week they were created (open deals left out: censored)."""
    return weekly_proportion(features, "won", by=by, week="week_of_quarter", **kwargs)


def deal_size_by_creation_week(features: pd.DataFrame, *, by: Sequence[str] = ("org", "quarter"), **kwargs: Any) -> pd.DataFrame:
    """Weekly geometric-mean amount of won deals by the week they were created."""
    won = features[features["outcome"] == "won"]
    return weekly_mean(won, "amount", by=by, week="week_of_quarter", geometric=True, **kwargs)


def discount_by_close_week(
    features: pd.DataFrame, *, by: Sequence[str] = ("org", "close_quarter"), **kwargs: Any
) -> pd.DataFrame:
    """Weekly mean discount of won deals by the week of the quarter they closed in."""
    won = features[features["outcome"] == "won"]
    return weekly_mean(won, "discount", by=by, week="close_week", **kwargs)


def deal_size_by_close_week(
    features: pd.DataFrame, *, by: Sequence[str] = ("org", "close_quarter"), **kwargs: Any
) -> pd.DataFrame:
    """Weekly geometric-mean amount of closed (won or lost) deals by the week they closed in."""
    closed = features[features["outcome"] != "open"]
    return weekly_mean(closed, "amount", by=by, week="close_week", geometric=True, **kwargs)


def lead_score_by_week(features: pd.DataFrame, *, by: Sequence[str] = ("org", "quarter"), **kwargs: Any) -> pd.DataFrame:
    """Weekly mean lead score at conversion of deals created from a lead."""
    return weekly_mean(features, "lead_score", by=by, week="week_of_quarter", **kwargs)


def stage_skip_by_week(features: pd.DataFrame, *, by: Sequence[str] = ("org", "quarter"), **kwargs: Any) -> pd.DataFrame:
    """Weekly share of closed deals whose stage path skipped a stage, by creation week.

    Closed deals only: an open deal may still skip a stage it has not reached.
    """
    closed = features[(features["outcome"] != "open") & features["stage_skipped"].notna()]
    return weekly_proportion(closed.astype({"stage_skipped": float}), "stage_skipped", by=by, **kwargs)


# -- close-date pushes ---------------------------------------------------------------------------
def close_date_pushes(
    features: pd.DataFrame,
    dataset: Dataset,
    *,
    window_days: int = PUSH_WINDOW_DAYS,
) -> pd.DataFrame:
    """Deals due in the last two weeks of a quarter, and whether their close date was pushed out.

    A deal is *due* in a quarter's last ``window_days`` days when it was
    created before they began and, on their first day, its close date (as
    the close-date history says it stood then) fell inside them. It is
    *pushed* when, within those days, its close date was changed to a day
    after quarter end.

    Returns
    -------
    One row per due deal of a complete quarter: ``org``, ``opportunity_id``,
    ``segment``, ``team``, ``owner``, ``quarter`` (the quarter it was due
    in), ``due_date``, ``pushed``.
    """
    keys = ["org", "opportunity_id"]
    changes = dataset.history.loc[dataset.history["field"] == "close_date", keys + ["changed_at", "old_value", "new_value"]]
    changes = changes.assign(
        old=pd.to_datetime(changes["old_value"], errors="coerce").astype("datetime64[ns]"),
        new=pd.to_datetime(changes["new_value"], errors="coerce").astype("datetime64[ns]"),
        changed_at=changes["changed_at"].astype("datetime64[ns]"),
    ).sort_values(keys + ["changed_at"])
    changes = changes[changes["org"].isin(features["org"].unique())]
    spells = _close_date_spells(features, changes)
    calendars = {org: dataset.calendar(org) for org in spells["org"].unique()}
    due = pd.concat([spells, fiscal_features_by_org(spells, "due_date", calendars, prefix="due_")], axis=1)
    window_start = due["due_quarter_end"] - pd.Timedelta(days=window_days - 1)
    eligible = (
        (due["due_quarter_end"] + pd.Timedelta(days=1) <= dataset.as_of)
        & (due["due_days_to_quarter_end"] < window_days)
        & (due["created_at"] < window_start)
        & (due["valid_from"] <= window_start)
        & (window_start < due["valid_to"])
    )
    due = due[eligible.fillna(False).astype(bool)].assign(window_start=window_start)
    moves = changes.merge(due[keys + ["window_start", "due_quarter_end"]], on=keys)
    in_window = (moves["changed_at"] >= moves["window_start"]) & (
        moves["changed_at"] < moves["due_quarter_end"] + pd.Timedelta(days=1)
    )
    out_of_quarter = moves["new"] > moves["due_quarter_end"]
    pushed = moves.loc[in_window & out_of_quarter, keys + ["due_quarter_end"]].drop_duplicates().assign(pushed=True)
    due = due.merge(pushed, on=keys + ["due_quarter_end"], how="left")
    due["pushed"] = due["pushed"].astype("boolean").fillna(False).astype(bool)
    due = due.rename(columns={"due_quarter": "quarter"})
    due["quarter"] = due["quarter"].astype(str)
    return due[["org", "opportunity_id", "segment", "team", "owner", "quarter", "due_date", "pushed"]].reset_index(
        drop=True)


def _close_date_spells(features: pd.DataFrame, changes: pd.DataFrame) -> pd.DataFrame:
    """Every close date each deal had, with when it held: ``due_date``, ``valid_from``, ``valid_to``.

    The first spell is the close date before any change (the old value of the
    first change, else the deal's close date) and holds from the start; each
    change starts a spell that holds until the next change.
    """
    keys = ["org", "opportunity_id"]
    deals = features[keys + ["segment", "team", "owner", "created_at", "close_date"]]
    start, end = pd.Timestamp.min, pd.Timestamp.max
    first = changes.groupby(keys, sort=False).agg(due_date=("old", "first"), valid_to=("changed_at", "first"))
    initial = deals.merge(first.reset_index(), on=keys, how="left")
    initial["due_date"] = initial["due_date"].fillna(initial["close_date"].astype("datetime64[ns]"))
    initial = initial.assign(valid_from=start, valid_to=initial["valid_to"].fillna(end))
    later = changes.assign(
        due_date=changes["new"],
        valid_from=changes["changed_at"],
        valid_to=changes.groupby(keys, sort=False)["changed_at"].shift(-1).fillna(end),
    ).merge(deals.drop(columns="close_date"), on=keys)
    columns = keys + ["segment", "team", "owner", "created_at", "due_date", "valid_from", "valid_to"]
    spells = pd.concat([initial[columns], later[columns]], ignore_index=True)
    spells["due_date"] = spells["due_date"].astype("datetime64[ns]").dt.normalize()
    return spells[spells["due_date"].notna()].reset_index(drop=True)


def push_rate_by_quarter(
    pushes: pd.DataFrame, *, by: Sequence[str] = ("org", "quarter"), method: str = "wilson", ci_level: float = 0.95
) -> pd.DataFrame:
    """Share of deals due in the last two weeks that were pushed into the next quarter, per quarter."""
    pushes = pushes.assign(_week=0)
    rates = weekly_proportion(pushes, "pushed", by=by, week="_week", method=method, ci_level=ci_level)
    return rates.drop(columns="_week")


# -- shared helpers -------------------------------------------------------------------------------
def constant(values: np.ndarray) -> bool:
    """True for an empty array or one whose values are all equal."""
    return len(values) == 0 or bool(np.min(values) == np.max(values))


def control_dummies(frame: pd.DataFrame, controls: Sequence[str], y: np.ndarray) -> np.ndarray:
    """Dummy columns of the categorical ``controls``.

    The most frequent level is the reference; a level with fewer than
    :data:`MIN_LEVEL_N` rows, or on which ``y`` never varies (it would
    separate a logit), is pooled with the reference.
    """
    columns = []
    for control in controls:
        if control not in frame:
            continue
        # Sorted like np.unique, so that ties for the most frequent level pick the same reference.
        codes, names = pd.factorize(frame[control].astype(str), sort=True, use_na_sentinel=False)
        counts = np.bincount(codes, minlength=len(names))
        reference = int(np.argmax(counts))
        for code in range(len(names)):
            member = codes == code
            if code != reference and counts[code] >= MIN_LEVEL_N and not constant(y[member]):
                columns.append(member.astype(float))
    return np.column_stack(columns) if columns else np.empty((len(y), 0))


def wald_interval(estimate: float, se: float, ci_level: float = 0.95, df: float | None = None) -> dict[str, float]:
    """Two-sided interval and p-value of an estimate with standard error ``se``.

    Uses the t distribution with ``df`` degrees of freedom, or the normal
    when ``df`` is None; ``df`` is returned too (infinite for the normal), so
    that a standard error can be read back off the interval at any level
    (:func:`quarterpanic.analysis.panic_index.component_scores`).
    """
    dof = float(df) if df else np.inf
    if not se > 0:
        return {"estimate": estimate, "ci_low": estimate, "ci_high": estimate, "p_value": float(estimate == 0) or np.nan,
                "df": dof}
    if df:
        quantile, tail = stats.t.ppf((1 + ci_level) / 2, df), stats.t.sf(abs(estimate) / se, df)
    else:
        quantile, tail = stats.norm.ppf((1 + ci_level) / 2), stats.norm.sf(abs(estimate) / se)
    return {
        "estimate": float(estimate),
        "ci_low": float(estimate - quantile * se),
        "ci_high": float(estimate + quantile * se),
        "p_value": float(2 * tail),
        "df": dof,
    }


def late_effect_ols(
    y: np.ndarray, late: np.ndarray, frame: pd.DataFrame, controls: Sequence[str] = ("segment",), cluster: str = "owner"
) -> tuple[float, float, float] | None:
    """OLS coefficient of ``late`` with control dummies: ``(b, se, df)``, or None when not estimable.

    Errors are clustered by ``cluster`` (df = clusters − 1) when there are at
    least :data:`MIN_CLUSTERS` of them, else heteroskedasticity-robust (HC1,
    df = n − k).
    """
    exog = np.column_stack([np.ones_like(late), late, control_dummies(frame, controls, y)])
    if len(y) <= exog.shape[1] or constant(late):
        return None
    groups = pd.factorize(frame[cluster])[0]
    n_clusters = len(np.unique(groups))
    if n_clusters >= MIN_CLUSTERS:
        result = OLS(y, exog).fit(cov_type="cluster", cov_kwds={"groups": groups})
        df = n_clusters - 1
    else:
        result = OLS(y, exog).fit(cov_type="HC1")
        df = len(y) - exog.shape[1]
    # A cluster-robust covariance of few deals can have a negative diagonal: its square root is NaN and the
    # effect not estimable (None below), which is the answer, not a warning for the reader.
    with np.errstate(invalid="ignore"):
        b, se = float(result.params[1]), float(result.bse[1])
    return (b, se, df) if np.isfinite(se) and se > 0 else None


def _one_sided_two_proportion(events: int, n: int, ref_events: int, ref_n: int) -> float:
    """P-value of "the first proportion is larger than the reference" (pooled z test)."""
    pooled = (events + ref_events) / (n + ref_n)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n + 1 / ref_n))
    if not se > 0:
        return 1.0
    return float(stats.norm.sf((events / n - ref_events / ref_n) / se))


# -- outcome-side estimates -----------------------------------------------------------------------
def _verdict(estimate: dict[str, float] | str | None, n: int) -> dict[str, Any]:
    if estimate == PARTIAL:
        return {"status": PARTIAL}
    if estimate is None:
        return {"status": INSUFFICIENT, "n": n}
    return {**{k: v for k, v in estimate.items() if k != "se"}, "status": OK, "n": n}


def _split(frame: pd.DataFrame, week: str, onset: int) -> np.ndarray:
    return (frame[week].to_numpy(dtype=float) >= onset).astype(float)


def _closed_deals(created: pd.DataFrame) -> pd.DataFrame:
    return created[created["won"].notna()]


def _won_deals(closed_in_quarter: pd.DataFrame) -> pd.DataFrame:
    return closed_in_quarter[closed_in_quarter["outcome"] == "won"]


def _closed_with_stage_path(created: pd.DataFrame) -> pd.DataFrame:
    return created[(created["outcome"] != "open") & created["stage_skipped"].notna()]


def win_rate_ratio(created: pd.DataFrame, onset: int, ci_level: float = 0.95) -> dict[str, float] | None:
    """Win rate of closed deals created from week ``onset`` on over that of earlier ones.

    Katz log interval (0.5 added to every cell when a side has no wins or no losses);
    open deals are left out. None with fewer than :data:`MIN_SIDE_N` closed
    deals on a side.
    """
    closed = _closed_deals(created)
    late = _split(closed, "week_of_quarter", onset).astype(bool)
    return _win_rate_ratio(closed["won"].to_numpy(dtype=float), late, ci_level)


def last_week_win_rate_ratio(closed_in_quarter: pd.DataFrame, ci_level: float = 0.95) -> dict[str, float] | None:
    """Win rate of deals closed in the quarter's last week over that of deals closed earlier in it.

    Keyed to the close date, as the sales-timing literature measures it
    (InsideSales 2017: deals closing on the quarter's last day win about half
    as often). Katz log interval; None with fewer than :data:`MIN_SIDE_N`
    closed deals on a side.
    """
    closed = closed_in_quarter[closed_in_quarter["outcome"] != "open"]
    last = closed["close_week"].to_numpy(dtype=float) == closed["close_weeks_in_quarter"].to_numpy(dtype=float)
    return _win_rate_ratio((closed["outcome"] == "won").to_numpy(dtype=float), last, ci_level)


def _win_rate_ratio(won: np.ndarray, late: np.ndarray, ci_level: float) -> dict[str, float] | None:
    """P(won | late) / P(won | not late) with a Katz log interval (0.5 added to every cell when a side has no
    wins or no losses)."""
    n_after, n_before = int(late.sum()), int((~late).sum())
    if min(n_after, n_before) < MIN_SIDE_N:
        return None
    x_after, x_before = won[late].sum(), won[~late].sum()
    # Haldane's 0.5 when a side has no wins (log 0) or no losses: with both sides all won the Katz
    # variance is 0 and the interval would be the single point 1.
    if x_after in (0, n_after) or x_before in (0, n_before):
        x_after, x_before, n_after, n_before = x_after + 0.5, x_before + 0.5, n_after + 1, n_before + 1
    log_ratio = np.log((x_after / n_after) / (x_before / n_before))
    se = np.sqrt(1 / x_after - 1 / n_after + 1 / x_before - 1 / n_before)
    out = wald_interval(log_ratio, se, ci_level)
    return {**{k: float(np.exp(out[k])) for k in ("estimate", "ci_low", "ci_high")}, "p_value": out["p_value"]}


def _late_shift(
    frame: pd.DataFrame, value: np.ndarray, late: np.ndarray, ci_level: float, sign: float = 1.0
) -> dict[str, float] | None:
    """``sign`` × the OLS effect of ``late`` on ``value`` (segment controls, seller clusters)."""
    keep = np.isfinite(value)
    frame, value, late = frame[keep], value[keep], late[keep]
    if min(late.sum(), (1 - late).sum()) < MIN_SIDE_N:
        return None
    fit = late_effect_ols(value, late, frame)
    if fit is None:
        return None
    b, se, df = fit
    return {**wald_interval(sign * b, se, ci_level, df), "se": se}


def discount_uplift(closed_in_quarter: pd.DataFrame, onset: int, ci_level: float = 0.95) -> dict[str, float] | None:
    """Extra discount (fraction points) of deals won from close week ``onset`` on, segment-adjusted.

    Deals closed within :data:`ONSET_GUARD_WEEKS` of the onset (weeks
    ``onset - 1`` and ``onset``) are left out, a "donut" around a cut-off
    known only roughly: the onset is found on the qualification series and is
    often a week off, and a plain split there mixes a week of deals from the
    wrong side into one group, reading the uplift low (a tenth to a fifth in
    mid-size panics). With the donut an onset up to a week off in either
    direction compares deals that are all before the true onset with deals
    that are all after it. A quarter the donut leaves with fewer than
    :data:`MIN_SIDE_N` won deals on a side (a panic's month-3 pulls thin out
    the early weeks) is split plainly at the onset instead: a diluted
    estimate rather than none.
    """
    won = _won_deals(closed_in_quarter)
    week = won["close_week"].to_numpy(dtype=float)
    outside = won[(week < onset - ONSET_GUARD_WEEKS) | (week >= onset + ONSET_GUARD_WEEKS)]
    for deals in (outside, won):
        out = _late_shift(deals, deals["discount"].to_numpy(dtype=float), _split(deals, "close_week", onset), ci_level)
        if out is not None:
            return out
    return None


def lead_score_drop(created: pd.DataFrame, onset: int, ci_level: float = 0.95) -> dict[str, float] | None:
    """How many points lower the lead score at conversion is from week ``onset`` on, segment-adjusted."""
    score = created["lead_score"].to_numpy(dtype=float)
    return _late_shift(created, score, _split(created, "week_of_quarter", onset), ci_level, sign=-1.0)


def last_week_deal_size_change(closed_in_quarter: pd.DataFrame, ci_level: float = 0.95) -> dict[str, float] | None:
    """Relative size of deals closed in the quarter's last week, from a log-amount regression.

    With b the coefficient of "closed in the last week" (segment controls,
    seller clusters) and se its standard error, the estimate is exp(b) − 1
    and the interval exp(b ± t·se) − 1: the estimate is the centre of its
    interval on the log scale, and median-unbiased for the relative change
    (b is symmetric about the log change). Kennedy's mean-unbiased
    exp(b − se²/2) − 1 would sit off that centre, lower by up to a few points
    at a small quarter's se.
    """
    frame = closed_in_quarter[closed_in_quarter["amount"] > 0]
    last = (frame["close_week"].to_numpy(dtype=float) == frame["close_weeks_in_quarter"].to_numpy(dtype=float))
    out = _late_shift(frame, np.log(frame["amount"].to_numpy(dtype=float)), last.astype(float), ci_level)
    if out is None:
        return None
    return {
        "estimate": float(np.expm1(out["estimate"])),
        "ci_low": float(np.expm1(out["ci_low"])),
        "ci_high": float(np.expm1(out["ci_high"])),
        "p_value": out["p_value"],
    }


def stage_skip_rate(created: pd.DataFrame, onset: int, ci_level: float = 0.95) -> dict[str, float] | None:
    """Share of closed deals created from week ``onset`` on whose stage path skipped a stage.

    Wilson interval; the p-value is one-sided: late deals skip more often
    than earlier deals of the same quarter.
    """
    closed = _closed_with_stage_path(created)
    late = _split(closed, "week_of_quarter", onset).astype(bool)
    skipped = closed["stage_skipped"].to_numpy(dtype=bool)
    if min(late.sum(), (~late).sum()) < MIN_SIDE_N:
        return None
    return _share_above(int(skipped[late].sum()), int(late.sum()), int(skipped[~late].sum()), int((~late).sum()), ci_level)


def close_date_push_rate(pushes: pd.DataFrame, ci_level: float = 0.95) -> dict[str, float] | None:
    """Share of due deals pushed past quarter end, with its Wilson interval (a level: no p-value).

    Every quarter pushes some deals, so the level has no null to test it
    against; :func:`close_date_push_excess` tests it against the
    organisation's own calm rate.
    """
    if len(pushes) < MIN_SIDE_N:
        return None
    events, n = int(pushes["pushed"].sum()), len(pushes)
    low, high = proportion_confint(events, n, alpha=1 - ci_level, method="wilson")
    return {"estimate": events / n, "ci_low": float(low), "ci_high": float(high), "p_value": np.nan}


def close_date_push_excess(pushes: pd.DataFrame, reference: pd.DataFrame, ci_level: float = 0.95
                           ) -> dict[str, float] | None:
    """Push rate of a quarter minus the organisation's calm push rate (:func:`calm_push_reference`).

    ``pushes`` are the quarter's due deals and ``reference`` those of the
    organisation's baseline quarters (each with its ``quarter``; the quarter
    itself may be among them). The calm rate is the pooled rate of the calm
    baseline quarters other than this one, so a panicking quarter can raise
    neither its own reference nor another's. The interval is Newcombe's
    hybrid-score interval of the difference of two independent proportions
    (statsmodels; it holds with no pushes on a side), each half widened in
    quadrature by ``z × tau × sqrt(1 + 1/k)``: the calm quarters' own
    variation ``tau`` (net of sampling noise) in this quarter and in the mean
    of the ``k`` calm quarters of the reference. The p-value is one-sided (the
    quarter pushes more than calm): a pooled two-proportion z test whose
    variance carries the same ``tau² (1 + 1/k)``. Returns ``reference`` (the
    calm rate) too. None with fewer than :data:`MIN_SIDE_N` due deals in the
    quarter or no calm reference.
    """
    quarters = pushes["quarter"].unique() if "quarter" in pushes else []
    calm = calm_push_reference(reference, leave_out=quarters[0] if len(quarters) == 1 else None)
    if len(pushes) < MIN_SIDE_N or calm is None:
        return None
    events, n = int(pushes["pushed"].sum()), len(pushes)
    ref_events, ref_n = calm["events"], calm["n"]
    estimate = events / n - ref_events / ref_n
    low, high = confint_proportions_2indep(events, n, ref_events, ref_n, compare="diff", method="newcomb",
                                           alpha=1 - ci_level)
    between = calm["tau"] ** 2 * (1 + 1 / calm["quarters"])
    z = float(stats.norm.ppf((1 + ci_level) / 2))
    pooled = (events + ref_events) / (n + ref_n)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n + 1 / ref_n) + between)
    return {
        "estimate": estimate,
        "ci_low": float(estimate - np.hypot(estimate - low, z * np.sqrt(between))),
        "ci_high": float(estimate + np.hypot(high - estimate, z * np.sqrt(between))),
        "p_value": float(stats.norm.sf(estimate / se)) if se > 0 else 1.0,
        "reference": ref_events / ref_n,
    }


def calm_push_reference(reference: pd.DataFrame, leave_out: str | None = None) -> dict[str, float] | None:
    """The calm push rate of an organisation's baseline quarters, trimmed on the panic side.

    Each baseline quarter's push rate (variance from its rate with half a
    push added, so that a quarter with none is not certain) goes through the
    panic index's forward search
    (:func:`quarterpanic.analysis.panic_index.calm_members`, no floor): panic
    only raises a push rate, so the calm quarters are the lower cluster, and a
    quarter more than two calm standard deviations above it is left out. The
    search runs over all the baseline quarters — ``leave_out`` (the quarter
    being judged) included, so that in an organisation that panics in half its
    quarters the lower half it starts from is still calm — and ``leave_out``
    is then dropped from the calm set.

    Returns the remaining calm quarters' pushes and due deals (``events``,
    ``n``), their number ``quarters`` and ``tau``, the calm quarters'
    between-quarter standard deviation net of sampling noise
    (:func:`quarterpanic.analysis.panic_index.calm_variation`); None with
    fewer than :data:`~quarterpanic.analysis.panic_index.MIN_BASELINE`
    baseline quarters with due deals, or fewer than :data:`MIN_SIDE_N` due
    deals left in the calm set.
    """
    counts = reference.groupby("quarter", sort=False)["pushed"].agg(["sum", "size"])
    counts = counts[counts["size"] > 0]
    if len(counts) < MIN_BASELINE:
        return None
    events, n = counts["sum"].to_numpy(dtype=float), counts["size"].to_numpy(dtype=float)
    rates = events / n
    smoothed = (events + 0.5) / (n + 1)
    variances = smoothed * (1 - smoothed) / n
    keep = calm_members(rates, variances, floor=0.0)
    _, _, tau = calm_variation(rates, variances, floor=0.0)
    keep &= counts.index.to_numpy() != leave_out
    if not keep.any() or n[keep].sum() < MIN_SIDE_N:
        return None
    return {"events": int(events[keep].sum()), "n": int(n[keep].sum()), "quarters": int(keep.sum()),
            "tau": float(tau)}


def _share_above(events: int, n: int, ref_events: int, ref_n: int, ci_level: float) -> dict[str, float]:
    low, high = proportion_confint(events, n, alpha=1 - ci_level, method="wilson")
    return {
        "estimate": events / n,
        "ci_low": float(low),
        "ci_high": float(high),
        "p_value": _one_sided_two_proportion(events, n, ref_events, ref_n),
    }


ONSET_METRICS = ("win_rate_ratio", "discount_uplift", "lead_score_drop", "stage_skip_rate")
QUARTER_END_METRICS = ("last_week_deal_size_change", "last_week_win_rate_ratio", "close_date_push_rate",
                       "close_date_push_excess")
# How each onset metric's p-value is defined: the onset-search adjustment must use the same tail(s).
ONSET_METRIC_ALTERNATIVES = {
    "win_rate_ratio": "two-sided", "discount_uplift": "two-sided", "lead_score_drop": "two-sided",
    "stage_skip_rate": "greater",
}


def onset_split_weeks(created: pd.DataFrame, closed_in_quarter: pd.DataFrame) -> dict[str, np.ndarray]:
    """The week that splits each row an onset metric compares, per metric of :data:`ONSET_METRICS`.

    Creation weeks of the closed deals (win rate), of the deals with a lead
    score (lead score) and of the closed deals with a stage path (stage
    skips); close weeks of the deals won with a discount (discount). Their
    shares before each candidate onset are what
    :func:`quarterpanic.analysis.onset.max_t_adjusted` needs to correct the metric's
    p-value for the onset search.
    """
    won = _won_deals(closed_in_quarter)
    discounted = won[np.isfinite(won["discount"].to_numpy(dtype=float))]
    scored = created[np.isfinite(created["lead_score"].to_numpy(dtype=float))]
    return {
        "win_rate_ratio": _closed_deals(created)["week_of_quarter"].to_numpy(dtype=float),
        "discount_uplift": discounted["close_week"].to_numpy(dtype=float),
        "lead_score_drop": scored["week_of_quarter"].to_numpy(dtype=float),
        "stage_skip_rate": _closed_with_stage_path(created)["week_of_quarter"].to_numpy(dtype=float),
    }


def outcome_findings(
    features: pd.DataFrame,
    dataset: Dataset,
    main: pd.DataFrame,
    params: Mapping[str, Any] | None = None,
    *,
    candidates: Sequence[int],
    roles: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The outcome-side findings of every group that has a main ``qualification_decay`` finding.

    Parameters
    ----------
    features:
        :func:`quarterpanic.analysis.features.opportunity_features`.
    dataset:
        The dataset (its stage and close-date history, calendars and as-of).
    main:
        The main findings (:func:`quarterpanic.analysis.qualification.decay_findings`):
        their ``onset_week`` splits each quarter.
    candidates:
        The onset weeks the main search tried
        (:func:`quarterpanic.analysis.qualification.candidate_weeks`).
    roles:
        :func:`quarterpanic.analysis.features.quarter_roles`; the calm ones of
        the baseline quarters are the reference of ``close_date_push_excess``.

    Returns
    -------
    A findings frame: per group, the metrics of :data:`ONSET_METRICS`
    (``insufficient data`` when the group has no onset) and, for complete
    quarters, :data:`QUARTER_END_METRICS`. Open quarters get no p-values.

    The onset was searched (on the qualification rate), so the p-value of an
    onset metric is corrected as if it had been searched on the metric
    itself: max-T over the ``candidates`` at which the metric has
    :data:`MIN_SIDE_N` rows on each side, with the correlation of its split
    statistics from its own rows (:func:`onset_split_weeks`,
    :func:`quarterpanic.analysis.onset.max_t_adjusted`), in the tail(s) its p-value
    is defined in (:data:`ONSET_METRIC_ALTERNATIVES`). That holds whichever
    series chose the onset, and costs less than Bonferroni over the
    candidates.
    """
    params = {**defaults(), **(params or {})}
    ci_level = float(params["ci_level"])
    pushes = close_date_pushes(features, dataset)
    if roles is not None:
        baseline = roles.loc[roles["baseline"], ["org", "quarter"]]
        reference_pushes = pushes.merge(baseline, on=["org", "quarter"], how="inner")
    else:
        reference_pushes = pushes.iloc[:0]
    created_by = _groups(features, ["org", "quarter"])
    closed_by = _groups(features[features["outcome"] != "open"], ["org", "close_quarter"])
    pushes_by = _groups(pushes, ["org", "quarter"])
    reference_by = _groups(reference_pushes, ["org"])
    empty_features, empty_pushes = features.iloc[:0], pushes.iloc[:0]
    partial = _partial_quarters(main, dataset)
    records = []
    for row in main.to_dict("records"):
        org, quarter, segment = row["org"], row["quarter"], row.get("segment", ALL_SEGMENTS)
        created = _segment(created_by.get((org, quarter), empty_features), segment)
        closed_here = _segment(closed_by.get((org, quarter), empty_features), segment)
        complete = bool(row.get("quarter_complete", True))
        onset = row.get("onset_week")
        has_onset = row["status"] == OK and pd.notna(onset)
        common = {"org": org, "quarter": quarter, "segment": segment, "component": COMPONENT,
                  "quarter_complete": complete}
        estimates: dict[str, tuple[dict | None, int]] = {}
        if has_onset:
            onset = int(onset)
            estimates["win_rate_ratio"] = (win_rate_ratio(created, onset, ci_level), int(created["won"].notna().sum()))
            estimates["discount_uplift"] = (
                discount_uplift(closed_here, onset, ci_level), int((closed_here["outcome"] == "won").sum()))
            estimates["lead_score_drop"] = (lead_score_drop(created, onset, ci_level), int(created["lead_score"].notna().sum()))
            estimates["stage_skip_rate"] = (stage_skip_rate(created, onset, ci_level), int((created["outcome"] != "open").sum()))
            split_weeks = onset_split_weeks(created, closed_here)
        else:
            for metric in ONSET_METRICS:
                estimates[metric] = (None, len(created))
        if complete:
            estimates["last_week_deal_size_change"] = (last_week_deal_size_change(closed_here, ci_level), len(closed_here))
            estimates["last_week_win_rate_ratio"] = (
                last_week_win_rate_ratio(closed_here, ci_level), int((closed_here["outcome"] != "open").sum()))
            due = _segment(pushes_by.get((org, quarter), empty_pushes), segment)
            reference = _segment(reference_by.get((org,), empty_pushes), segment)
            estimates["close_date_push_rate"] = (close_date_push_rate(due, ci_level), len(due))
            estimates["close_date_push_excess"] = (close_date_push_excess(due, reference, ci_level), len(due))
        elif (org, quarter) in partial:
            # Over, but the data begin inside it: said to be partial, never judged (inputs.mark_partial).
            estimates.update({metric: (PARTIAL, 0) for metric in QUARTER_END_METRICS})
        for metric, (estimate, n) in estimates.items():
            record = {**common, "metric": metric, **_verdict(estimate, n)}
            if metric in ONSET_METRICS and has_onset:
                record["onset_week"] = onset
                if estimate is not None:
                    fractions = split_fractions(split_weeks[metric], candidates, MIN_SIDE_N)
                    record["p_value"] = max_t_adjusted(
                        record["p_value"], fractions, alternative=ONSET_METRIC_ALTERNATIVES[metric])
            if not complete:
                record["p_value"] = np.nan
            records.append(record)
    if not records:
        return make_findings(pd.DataFrame(columns=["org"]))
    return make_findings(records)


def _partial_quarters(main: pd.DataFrame, dataset: Dataset) -> set[tuple[str, str]]:
    """The org × quarter pairs of ``main`` that are over but only partly covered by the data."""
    if main.empty:
        return set()
    pairs = main[["org", "quarter"]].drop_duplicates().astype(str).reset_index(drop=True)
    bounds = quarter_bounds(dataset, pairs["org"], pairs["quarter"])
    coverage = quarter_coverage(dataset, pairs["org"], bounds["quarter_start"], bounds["quarter_end"])
    return set(map(tuple, pairs.loc[coverage["partial"].to_numpy(), ["org", "quarter"]].to_numpy()))


def _groups(frame: pd.DataFrame, keys: list[str]) -> dict[tuple, pd.DataFrame]:
    """``{key tuple: rows}`` of a group-by, for repeated look-ups."""
    return {key if isinstance(key, tuple) else (key,): rows for key, rows in frame.groupby(keys, sort=False)}


def _segment(frame: pd.DataFrame, segment: str) -> pd.DataFrame:
    """Rows of one segment, or all rows for the segment "all"."""
    return frame if segment == ALL_SEGMENTS else frame[frame["segment"] == segment]


# -- flagged against other quarters ----------------------------------------------------------------------------------
def flagged_contrast(findings: pd.DataFrame, metric: str) -> dict[str, Any]:
    """Mean estimate of ``metric`` in quarters flagged for qualification decay and in the others.

    Complete quarters with a verdict only (``quarter_complete``, else those
    with a p-value). Returns ``flagged`` and ``other`` (NaN when there are
    none) and their counts ``n_flagged``, ``n_other``.
    """
    main = findings[(findings["metric"] == COMPONENT) & (findings["segment"] == ALL_SEGMENTS)]
    flagged = main.loc[main["flagged"].astype(bool), ["org", "quarter"]].assign(_hot=True)
    rows = findings[(findings["metric"] == metric) & (findings["segment"] == ALL_SEGMENTS) & (findings["status"] == OK)]
    # A level such as the push rate has no p-value, so completeness is read from its own column where there is one.
    complete = (rows["quarter_complete"].astype("boolean").fillna(False).astype(bool)
                if "quarter_complete" in rows else rows["p_value"].notna())
    rows = rows[complete & rows["estimate"].notna()].merge(flagged, on=["org", "quarter"], how="left")
    hot = rows["_hot"].astype("boolean").fillna(False).astype(bool)
    return {
        "flagged": float(rows.loc[hot, "estimate"].mean()) if hot.any() else np.nan,
        "other": float(rows.loc[~hot, "estimate"].mean()) if (~hot).any() else np.nan,
        "n_flagged": int(hot.sum()),
        "n_other": int((~hot).sum()),
    }
