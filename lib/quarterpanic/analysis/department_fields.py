"""Departmental kingdoms on the CRM side: fields other departments own, missing when a deal closes late.

A mid-size company keeps part of each deal's record in other departments'
hands: legal's contract signature date, finance's purchase-order number or
billing contact, delivery's kick-off date. Under quarter-end pressure deals are
pushed through before those departments have done their part. Which
opportunity fields a department owns is the organisation's to say (``org.yaml``'s
``department_fields:``, docs/DATA.md); loading keeps each as an opportunity
column named ``"<department>: <export header>"``
(:func:`quarterpanic.util.department_field_columns`).

**Missing at close.** A won deal's field is missing at close when it is empty in
the export, or when its value is a date (loading writes the dates of a column
that holds only dates as ISO dates) later than the deal's close date: the
department filled it in after the deal had closed. Other values are read from
the export's final snapshot only, so a text field filled in after the close
counts as present (the share missing at close is then a lower bound). A deal
misses a department's fields when any of them is missing.

Per organisation × complete quarter, won deals closed in the quarter's last
:data:`LATE_WEEKS` weeks are compared with those closed earlier in it:

* ``department_fields`` (main): the share of won deals missing some department's
  field, late minus early (percentage points);
* ``department_field_gap``: the same per department (``department`` column).

The interval is Newcombe's hybrid score interval for a difference of two
independent proportions, the p-value the one-sided score test (more missing
late); both from statsmodels. Fewer than :data:`MIN_PER_WINDOW` won deals in a
window is ``insufficient data``. An organisation without department fields gets
no rows here; ``detect`` marks it ``not measured`` with the need naming
``department_fields:``.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
from statsmodels.stats.proportion import confint_proportions_2indep, test_proportions_2indep

from quarterpanic.analysis.findings import (
    ALL_SEGMENTS,
    INSUFFICIENT,
    OK,
    detect_in_segment,
    register_metric,
)
from quarterpanic.analysis.inputs import quarter_coverage
# Deals won in the quarter's last LATE_WEEKS weeks are "late": the window of the ticket-side silos.
from quarterpanic.analysis.silos import LATE_WEEKS, late_window_findings
from quarterpanic.dataset import Dataset
from quarterpanic.params import defaults
from quarterpanic.store import results as results_cache
from quarterpanic.util import department_field_columns

COMPONENT = "department_fields"
DEPARTMENT_METRIC = "department_field_gap"
MIN_PER_WINDOW = 10
#: The value of the ``department`` column on the main (any department) rows.
ANY_DEPARTMENT = "any"
_ISO_DATE = r"^\d{4}-\d{2}-\d{2}$"

register_metric(
    COMPONENT,
    component=COMPONENT,
    null=0.0,
    direction=+1,
    unit="share",
    sided="one-sided",
    description="the share of won deals closed with another department's field missing, late weeks vs earlier, rose by",
)
register_metric(
    DEPARTMENT_METRIC,
    component=COMPONENT,
    null=0.0,
    direction=+1,
    unit="share",
    sided="one-sided",
    description="the share of won deals closed with this department's field missing, late weeks vs earlier, rose by",
)


def missing_at_close(values: pd.Series, close_date: pd.Series) -> pd.Series:
    """Whether each deal's department field was missing when the deal closed (bool, indexed like ``values``).

    Missing: empty (or blank) in the export, or an ISO date later than the deal's ``close_date``.
    """
    text = values.astype("string").str.strip()
    empty = text.isna() | text.eq("")
    dated = text.str.fullmatch(_ISO_DATE).fillna(False).astype(bool)
    when = pd.to_datetime(text.where(dated), format="%Y-%m-%d", errors="coerce")
    late = dated & (when > pd.to_datetime(close_date).dt.normalize()).fillna(False).astype(bool)
    return (empty | late).fillna(True).astype(bool)


def won_deals(dataset: Dataset) -> pd.DataFrame:
    """The won deals of organisations with department fields, with what each misses at close.

    Returns ``org``, ``opportunity_id``, ``close_date``, ``quarter``, ``late`` (closed in the last
    :data:`LATE_WEEKS` weeks), ``weeks_in_quarter``, ``quarter_complete``, and one bool column per
    department (``missing:<department>``: some field of the department missing at close) plus
    ``missing:any``. Only an organisation's fields with a value on some of its deals count.
    """
    opps = dataset.opportunities
    columns = department_field_columns(opps.columns)
    frames = []
    for org, rows in opps.groupby(opps["org"].astype(str), sort=True):
        held = {column: dept for column, (dept, _) in columns.items() if rows[column].notna().any()}
        won = rows[rows["is_won"].astype(bool) & rows["close_date"].notna()]
        if not held or won.empty:
            continue
        weeks = dataset.calendar(org).annotate(won["close_date"])
        out = pd.DataFrame({"org": org, "opportunity_id": won["opportunity_id"].to_numpy(),
                            "close_date": won["close_date"].to_numpy(),
                            "quarter": weeks["quarter"].astype(str).to_numpy(),
                            "weeks_in_quarter": weeks["weeks_in_quarter"].to_numpy(),
                            "late": (weeks["week_of_quarter"] > weeks["weeks_in_quarter"] - LATE_WEEKS).to_numpy(),
                            "quarter_start": weeks["quarter_start"].to_numpy(),
                            "quarter_end": weeks["quarter_end"].to_numpy()})
        missing = pd.DataFrame({column: missing_at_close(won[column], won["close_date"]).to_numpy()
                                for column in held})
        for department in sorted(set(held.values())):
            out[f"missing:{department}"] = missing[[c for c, d in held.items() if d == department]].any(axis=1)
        out[f"missing:{ANY_DEPARTMENT}"] = missing.any(axis=1)
        frames.append(out)
    if not frames:
        return pd.DataFrame()
    deals = pd.concat(frames, ignore_index=True)
    coverage = quarter_coverage(dataset, deals["org"], deals["quarter_start"], deals["quarter_end"])
    return deals.assign(quarter_complete=coverage["complete"])


def share_difference(missing: pd.Series, late: pd.Series, ci_level: float = 0.95,
                     min_per_window: int = MIN_PER_WINDOW) -> dict[str, Any]:
    """The share of ``missing`` where ``late`` minus where not, with Newcombe's interval and a one-sided score test.

    Returns ``estimate``, ``ci_low``, ``ci_high``, ``p_value`` (one-sided: more missing late), ``n``,
    ``n_early``, ``n_late``, ``share_early``, ``share_late`` and ``status``.
    """
    late = late.astype(bool).to_numpy()
    x = missing.astype(bool).to_numpy()
    n_late, n_early = int(late.sum()), int((~late).sum())
    k_late, k_early = int(x[late].sum()), int(x[~late].sum())
    row: dict[str, Any] = {"n": len(x), "n_early": n_early, "n_late": n_late,
                           "share_early": k_early / n_early if n_early else np.nan,
                           "share_late": k_late / n_late if n_late else np.nan,
                           "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan,
                           "status": INSUFFICIENT}
    if min(n_early, n_late) < min_per_window:
        return row
    # statsmodels also works out the ratio and odds ratio of the shares, dividing by a share of 0 when no deal
    # of a window misses a field: harmless for the difference.
    with np.errstate(divide="ignore", invalid="ignore"):
        low, high = confint_proportions_2indep(k_late, n_late, k_early, n_early, compare="diff", method="newcomb",
                                               alpha=1 - ci_level)
        if k_late + k_early in (0, n_late + n_early):
            # Every deal alike (all complete, or all missing): no difference, and no evidence of one.
            p_value = 1.0
        else:
            p_value = float(test_proportions_2indep(k_late, n_late, k_early, n_early, compare="diff", value=0,
                                                    method="score", alternative="larger").pvalue)
    return row | {"estimate": row["share_late"] - row["share_early"], "ci_low": float(low), "ci_high": float(high),
                  "p_value": p_value, "status": OK}


def analyse_department_fields(dataset: Dataset, params: Mapping[str, Any] | None = None, *,
                              segment: str = ALL_SEGMENTS, cache: bool = False) -> pd.DataFrame:
    """Findings of both metrics per organisation × complete quarter (× department), before multiple-testing control."""
    params = {**defaults(), **(params or {})}
    return results_cache.cached(
        "quarterpanic.analysis.department_fields.analyse_department_fields",
        lambda: _analyse(dataset, params, segment), dataset, params, extra={"segment": segment}, use=cache,
    )


def _analyse(dataset: Dataset, params: dict[str, Any], segment: str) -> pd.DataFrame:
    def measure(rows: pd.DataFrame):
        departments = [c.split(":", 1)[1] for c in rows.columns
                       if c.startswith("missing:") and rows[c].notna().all()]
        for department in [ANY_DEPARTMENT] + sorted(d for d in departments if d != ANY_DEPARTMENT):
            result = share_difference(rows[f"missing:{department}"], rows["late"], ci_level)
            yield (COMPONENT if department == ANY_DEPARTMENT else DEPARTMENT_METRIC, {"department": department},
                   {k: result[k] for k in ("estimate", "ci_low", "ci_high", "p_value", "n", "status", "share_early",
                                           "share_late")})

    ci_level = float(params["ci_level"])
    return late_window_findings(won_deals(dataset), measure, component=COMPONENT, segment=segment,
                                dataset=dataset, params=params)


def detect_department_fields(dataset: Dataset, params: Mapping[str, Any] | None = None, *,
                             cache: bool = False) -> pd.DataFrame:
    """Findings of the department-fields component (the ``detect`` registry entry).

    One main finding per organisation with department fields × complete quarter (``metric ==
    "department_fields"``: won deals missing some department's field at close, late weeks minus
    earlier), then one ``department_field_gap`` per department. With ``params["segment"]`` only that
    segment's deals are analysed.
    """
    return detect_in_segment(analyse_department_fields, dataset, {**defaults(), **(params or {})}, cache)
