"""What each organisation's data hold, what every finding needs, and which findings cannot be measured.

A finding measures something only when its inputs are in the data. An input is
*absent* for an organisation when its column is missing, all null or constant
(a BANT flag that is always "No" says nothing), or its table has no rows. A
finding whose inputs are absent gets status ``not measured`` with ``needs``
naming what would enable it — never an estimate of 0 or a ratio of 1 — which
is distinct from ``insufficient data`` (the input exists, the quarter is too
thin) and from a verdict.

Inputs are named by :data:`INPUT_LABELS`; each metric declares in
:data:`METRIC_INPUTS` the groups of inputs it needs (every group, any one input
of a group). The qualification signals a rule can use are declared in
:mod:`quarterpanic.analysis.rule` and decide what ``qualification_decay`` and the
metrics measured at its onset need.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from quarterpanic.analysis.findings import METRICS, NOT_MEASURED, PARTIAL
from quarterpanic.analysis.rule import BANT_COLUMNS, SIGNAL_INPUTS, rule_for, rule_signals
from quarterpanic.dataset import Dataset
from quarterpanic.params import defaults
from quarterpanic.util import department_field_columns

INPUT_LABELS: dict[str, str] = {
    "opportunities": "accepted opportunity rows",
    "bant": "BANT flags",
    "next_step": "next_step",
    "lead_score": "lead_score",
    "amount": "amount",
    "discount": "discount",
    "won": "won deals (is_won)",
    "lost": "lost deals (closed, not won)",
    "history.stage": "stage history",
    "history.close_date": "close-date history",
    "history.amount": "amount history",
    "requests": "ticket export (requests)",
    "request_history": "request history (ticket changelog)",
    "leads": "leads export",
    "department_fields": "fields other departments own on the deal (org.yaml department_fields:, e.g. "
                         "legal: [Contract Signed Date])",
}
QUALIFICATION = "qualification"  # stands for the qualification signals of the organisation's rule
# metric -> groups of inputs: every group is needed, any one input of a group will do.
METRIC_INPUTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "qualification_decay": ((QUALIFICATION,),),
    "win_rate_ratio": ((QUALIFICATION,), ("won",), ("lost",)),
    "discount_uplift": ((QUALIFICATION,), ("discount",)),
    "lead_score_drop": ((QUALIFICATION,), ("lead_score",)),
    "stage_skip_rate": ((QUALIFICATION,), ("history.stage",)),
    "last_week_deal_size_change": (("amount",),),
    "last_week_win_rate_ratio": (("won",), ("lost",)),
    "close_date_push_rate": (("history.close_date",),),
    "close_date_push_excess": (("history.close_date",),),
    "reactive_order_taking": (("requests",),),
    "planned_work_deferral": (("requests",),),
    "turnaround_stretch": (("requests",),),
    "after_hours_shift": (("requests",),),
    "wasted_effort_lost": (("requests",), ("lost",)),
    "wasted_effort_unqualified": (("requests",), (QUALIFICATION,)),
    "mid_size_silos": (("request_history",),),
    "silo_wait_stretch": (("request_history",),),
    "department_fields": (("department_fields",), ("won",)),
    "department_field_gap": (("department_fields",), ("won",)),
    "sell_or_do": (("amount",), ("won",)),
    "sell_or_do_crunch": (("opportunities",),),  # weekly creation counts only: any opportunity export has them
    "sell_or_do_leads": (("leads",), ("amount",), ("won",)),
    # Back-loading reads close dates and won flags only (amounts weight the deals when present).
    "bookings_backloading": (("won",),),
    "month3_bookings_share": (("won",),),
    "month3_share_above_even": (("won",),),
    "last_two_weeks_share_above_even": (("won",),),
}
NUMBERS = ["estimate", "ci_low", "ci_high", "p_value"]


# -- what the data hold ---------------------------------------------------------------------------
def input_presence(dataset: Dataset) -> dict[str, set[str]]:
    """``{org: inputs present}`` for every organisation of ``dataset`` (names of :data:`INPUT_LABELS`).

    A column is present when it varies within the organisation (at least two
    distinct non-null values); ``next_step`` when some deals have one written
    and some do not, or the texts differ; a history field when the organisation's
    history has rows for it; ``opportunities``, ``requests``, ``leads`` when it has any such row;
    ``department_fields`` when some department-owned column has a value on one of its deals.
    """
    opps = dataset.opportunities
    orgs = sorted(set(dataset.calendars) | set(opps["org"].astype(str)) | set(dataset.requests["org"].astype(str)))
    present: dict[str, set[str]] = {org: set() for org in orgs}
    if not opps.empty:
        by_org = opps.groupby(opps["org"].astype(str), sort=False)
        step = opps["next_step"].astype("string").str.strip()
        varying = pd.DataFrame({
            "bant": opps[list(BANT_COLUMNS)].astype("boolean").groupby(opps["org"].astype(str)).nunique().max(axis=1),
            "next_step": step.where(step.ne(""), "").fillna("").groupby(opps["org"].astype(str)).nunique(),
            "lead_score": by_org["lead_score"].nunique(),
            "amount": by_org["amount"].nunique(),
            "discount": by_org["discount"].nunique(),
            "won": by_org["is_won"].nunique(),
        })
        for org, row in varying.iterrows():
            present.setdefault(str(org), set()).update(name for name, count in row.items() if count >= 2)
            present[str(org)].add("opportunities")
        # A won-deals report (or a pipeline of won and open deals) has no loss: win rates are all 100%.
        lost = opps["is_closed"].astype("boolean").fillna(False) & ~opps["is_won"].astype("boolean").fillna(False)
        for org in opps.loc[lost.to_numpy(dtype=bool), "org"].astype(str).unique():
            present[org].add("lost")
        owned = list(department_field_columns(opps.columns))
        if owned:
            held = opps[owned].notna().any(axis=1).groupby(opps["org"].astype(str)).any()
            for org in held.index[held.to_numpy(dtype=bool)]:
                present.setdefault(str(org), set()).add("department_fields")
    history = dataset.history
    if not history.empty:
        for (org, field), _ in history.groupby([history["org"].astype(str), history["field"].astype(str)]):
            present.setdefault(org, set()).add(f"history.{field}")
    for org in dataset.requests["org"].astype(str).unique():
        present.setdefault(org, set()).add("requests")
    for org in dataset.request_history["org"].astype(str).unique():
        present.setdefault(org, set()).add("request_history")
    for org in dataset.leads["org"].astype(str).unique():
        present.setdefault(org, set()).add("leads")
    return present


# -- which quarters the data cover ----------------------------------------------------------------
FIRST_WEEK = pd.Timedelta(days=7)


def data_starts(dataset: Dataset) -> dict[str, pd.Timestamp]:
    """The first day of each organisation's records (its earliest opportunity or request created)."""
    stamps = pd.concat([dataset.opportunities[["org", "created_at"]], dataset.requests[["org", "created_at"]]],
                       ignore_index=True).dropna()
    first = stamps.groupby(stamps["org"].astype(str))["created_at"].min().dt.normalize()
    return {str(org): pd.Timestamp(day) for org, day in first.items()}


def quarter_coverage(dataset: Dataset, orgs: pd.Series, quarter_start: pd.Series,
                     quarter_end: pd.Series) -> pd.DataFrame:
    """Whether each org × quarter is complete, and whether the data only partly cover it.

    The one definition every analysis uses: a quarter is *complete* when it
    ended by ``dataset.as_of`` and the organisation's records begin within its
    first week; a quarter that ended but whose records begin later is
    *partial* (an export that starts in the quarter's last month): shown as
    such, never judged.

    Returns ``complete`` and ``partial`` (bool), indexed like ``orgs``.
    """
    starts = data_starts(dataset)
    first = pd.to_datetime(orgs.astype(str).map(starts))
    over = (pd.to_datetime(quarter_end) + pd.Timedelta(days=1) <= dataset.as_of).to_numpy(dtype=bool)
    started = (first.isna() | (first < pd.to_datetime(quarter_start) + FIRST_WEEK)).to_numpy(dtype=bool)
    return pd.DataFrame({"complete": over & started, "partial": over & ~started}, index=orgs.index)


def quarter_bounds(dataset: Dataset, orgs: pd.Series, quarters: pd.Series) -> pd.DataFrame:
    """``quarter_start`` and ``quarter_end`` of each org × quarter label, by the organisation's calendar."""
    out = pd.DataFrame({"quarter_start": pd.NaT, "quarter_end": pd.NaT}, index=orgs.index, dtype="datetime64[ns]")
    for org, rows in orgs.astype(str).groupby(orgs.astype(str)).groups.items():
        table = dataset.calendar(org).quarters(dataset.as_of - pd.Timedelta(days=366 * 12),
                                               dataset.as_of + pd.Timedelta(days=400))
        table = table.assign(quarter=table["quarter"].astype(str)).set_index("quarter")
        labels = quarters.loc[rows].astype(str)
        for column in ("quarter_start", "quarter_end"):
            out.loc[rows, column] = labels.map(table[column]).to_numpy(dtype="datetime64[ns]")
    return out


def mark_partial(findings: pd.DataFrame, dataset: Dataset) -> pd.DataFrame:
    """``findings`` of quarters the data only partly cover set to ``partial``: no numbers, no flag, no verdict."""
    if findings.empty:
        return findings
    bounds = quarter_bounds(dataset, findings["org"], findings["quarter"])
    partial = quarter_coverage(dataset, findings["org"], bounds["quarter_start"], bounds["quarter_end"])["partial"]
    partial &= findings["status"].ne(NOT_MEASURED)
    if not partial.any():
        return findings
    out = findings.copy()
    out.loc[partial, NUMBERS] = np.nan
    out.loc[partial, "status"] = PARTIAL
    out.loc[partial, "flagged"] = False
    if "quarter_complete" in out:
        out.loc[partial, "quarter_complete"] = False
    return out


# -- what a metric needs --------------------------------------------------------------------------
def missing_inputs(metric: str, present: Iterable[str], qualification_needs: Sequence[str] = ()) -> list[str]:
    """What ``metric`` lacks in an organisation with ``present`` inputs, as readable needs (empty: measurable).

    ``qualification_needs`` is what the organisation's qualification rule lacks
    (:func:`signals_need`; empty when the rule has a usable signal).
    """
    present = set(present)
    needs: list[str] = []
    for group in METRIC_INPUTS.get(metric, ()):
        if group == (QUALIFICATION,):
            needs.extend(qualification_needs)
        elif not present.intersection(group):
            needs.append(" or ".join(INPUT_LABELS[name] for name in group))
    return needs


def signals_need(signals: Sequence[str]) -> str:
    """The inputs that would make one of ``signals`` usable, as one readable need.

    The signals read from field history are named together: "field history
    (stage, close date or amount changes)".
    """
    options: list[str] = []
    history: list[str] = []
    for signal in signals:
        inputs = SIGNAL_INPUTS[signal]
        tracked = [name.split(".", 1)[1].replace("_", " ") for name in inputs if name.startswith("history.")]
        if tracked:
            history.extend(field for field in tracked if field not in history)
            continue
        option = " and ".join(INPUT_LABELS[name] for name in inputs)
        if option not in options:
            options.append(option)
    if history:
        fields = history[0] if len(history) == 1 else ", ".join(history[:-1]) + " or " + history[-1]
        options.append(f"field history ({fields} changes)")
    return " or ".join(options)


def qualification_signals(dataset: Dataset, params: Mapping[str, Any] | None = None,
                          present: Mapping[str, set[str]] | None = None) -> dict[str, list[str]]:
    """``{org: qualification signals its rule uses}`` (empty list: qualification cannot be measured)."""
    params = {**defaults(), **(params or {})}
    present = input_presence(dataset) if present is None else present
    return {org: rule_signals(rule_for(org, params["qualification_rule"], params["qualification_overrides"]), have)[0]
            for org, have in present.items()}


def supported_analyses(dataset: Dataset, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Per organisation and metric, whether the data support it and what would unlock it.

    Returns ``org``, ``metric``, ``supported`` (bool), ``needs`` (list of
    readable needs, empty when supported) and ``signals`` (the qualification
    signals the rule uses, for the metrics that depend on them).
    """
    params = {**defaults(), **(params or {})}
    present = input_presence(dataset)
    records = []
    for org, have in present.items():
        rule = rule_for(org, params["qualification_rule"], params["qualification_overrides"])
        used, lacking = rule_signals(rule, have)
        qualification_needs = [] if used else [signals_need(lacking)]
        for metric, groups in METRIC_INPUTS.items():
            needs = missing_inputs(metric, have, qualification_needs)
            records.append({
                "org": org, "metric": metric, "supported": not needs, "needs": needs,
                "signals": used if (QUALIFICATION,) in groups else [],
            })
    return pd.DataFrame(records, columns=["org", "metric", "supported", "needs", "signals"])


# -- findings -------------------------------------------------------------------------------------
def mark_not_measured(findings: pd.DataFrame, dataset: Dataset,
                      params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """``findings`` with every row whose inputs are absent set to ``not measured``.

    Such rows lose their numbers (estimate, interval, p-value and onset become
    missing, never 0 or 1) and their flag, and get ``needs``; the
    qualification-dependent rows of measurable organisations get ``signals``
    (the rule's signals used).
    """
    if findings.empty:
        return findings
    table = supported_analyses(dataset, params)
    lookup = {(r.org, r.metric): r for r in table.itertuples(index=False)}
    out = findings.copy()
    needs = out["needs"].astype(object).to_numpy(copy=True) if "needs" in out else np.full(len(out), None, object)
    signals = (out["signals"].astype(object).to_numpy(copy=True) if "signals" in out
               else np.full(len(out), None, object))
    absent = np.zeros(len(out), dtype=bool)
    keys = list(zip(out["org"].astype(str), out["metric"].astype(str)))
    for i, key in enumerate(keys):
        entry = lookup.get(key)
        if entry is None:
            continue
        if entry.needs:
            absent[i] = True
            needs[i] = list(entry.needs)
        elif entry.signals:
            signals[i] = list(entry.signals)
    out["needs"], out["signals"] = needs, signals
    if absent.any():
        out.loc[absent, NUMBERS] = np.nan
        out.loc[absent, "status"] = NOT_MEASURED
        out.loc[absent, "flagged"] = False
        out["onset_week"] = out["onset_week"].astype("Int64").mask(absent)
        if "q_value" in out:
            out.loc[absent, "q_value"] = np.nan
    return out


def not_measured_rows(findings: pd.DataFrame, dataset: Dataset, metrics: Sequence[str],
                      params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """``not measured`` rows for ``metrics`` in every org × quarter of ``findings`` that has none of them.

    A detector that found no input for an organisation (no ticket export, say)
    returns no rows for it; these rows say so in the findings.
    """
    table = supported_analyses(dataset, params)
    lacking = table[~table["supported"] & table["metric"].isin(list(metrics))]
    if findings.empty or lacking.empty:
        return findings.iloc[:0]
    grid = findings[["org", "quarter", "segment"]].drop_duplicates()
    if "quarter_complete" in findings:
        complete = findings.groupby(["org", "quarter", "segment"])["quarter_complete"].first().reset_index()
        grid = grid.merge(complete, on=["org", "quarter", "segment"], how="left")
    rows = grid.merge(lacking[["org", "metric", "needs"]], on="org", how="inner")
    have = findings[["org", "quarter", "segment", "metric"]].drop_duplicates().assign(_have=True)
    rows = rows.merge(have, on=["org", "quarter", "segment", "metric"], how="left")
    rows = rows[rows["_have"].isna()].drop(columns="_have")
    rows["component"] = rows["metric"].map(lambda m: METRICS[m].component if m in METRICS else m)
    return rows.assign(status=NOT_MEASURED, flagged=False)
