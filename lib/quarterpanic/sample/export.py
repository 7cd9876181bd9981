"""What an organisation's export holds: which tables and columns are written, and where its data begin.

Real CRM exports rarely carry everything the generator draws: a plain Salesforce
or HubSpot opportunity report has owner, account, stage, created and close dates
and amount, but no BANT flags, next step or lead score, and nobody exported the
field history or the ticket queue. A scenario's ``export:`` block (deep-merged
with an org's own ``export:``) says what is written::

    export:
      tables: [opportunities]           # canonical tables exported (default: all four)
      omit_columns: [next_step, ...]    # opportunity columns left out of the export
      data_start_week: 9                # the CRM's records begin in this week of the first quarter

The generator still draws every effect (so the random stream, and every other
number, stays the one of the full sample); the export only leaves things out.
:data:`EFFECT_INPUTS` says which canonical inputs carry each injected effect, so
``truth.json`` can say which effects an export still lets anyone measure.
"""
from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

from quarterpanic.errors import ParameterError
from quarterpanic.ingest import schemas

EXPORT_KEYS = {"tables", "omit_columns", "data_start_week"}
BANT = ("bant_budget", "bant_authority", "bant_need", "bant_timeline")
# Opportunity columns an export can leave out: everything but the identity, dates, stage and outcome.
OPTIONAL_COLUMNS = frozenset(
    ("name", "account", "owner", "team", "segment", "amount", "currency", "discount", "probability",
     "forecast_category", "lead_source", "lead_score", "next_step") + BANT
)
# Where the generator writes each effect: "table" or "table.column". An effect is measurable
# from an export when all of its inputs were exported.
EFFECT_INPUTS: dict[str, tuple[str, ...]] = {
    "qualification_decay": tuple(f"opportunities.{c}" for c in BANT + ("next_step",)),
    "reactive_order_taking": ("requests",),
    "planned_work_deferral": ("requests",),
    "turnaround_stretch": ("requests",),
    "after_hours_share": ("requests",),
    "win_rate_ratio": ("opportunities",),
    "discount_uplift": ("opportunities.discount",),
    "last_week_deal_size_change": ("opportunities.amount",),
    "month3_bookings_share": ("opportunities.amount",),
    "close_date_push_rate": ("history",),
    "lead_score_drop": ("opportunities.lead_score",),
    "stage_skip_rate": ("history",),
    "last_week_win_rate_change": ("opportunities",),
}


def export_spec(scenario: Mapping[str, Any], org_spec: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved export of one organisation: the scenario's ``export`` with the org's over it."""
    spec = {**dict(scenario.get("export") or {}), **dict(org_spec.get("export") or {})}
    unknown = sorted(set(spec) - EXPORT_KEYS)
    if unknown:
        raise ParameterError(f"unknown export key(s) {unknown}", hint=f"use only {sorted(EXPORT_KEYS)}")
    tables = list(spec.get("tables") or schemas.TABLES)
    bad = sorted(set(tables) - set(schemas.TABLES)) or ([] if "opportunities" in tables else ["(no opportunities)"])
    if bad:
        raise ParameterError(f"export tables {bad} are not canonical tables or leave out opportunities",
                             hint=f"list some of {list(schemas.TABLES)}, opportunities included")
    omit = list(spec.get("omit_columns") or [])
    bad = sorted(set(omit) - OPTIONAL_COLUMNS)
    if bad:
        raise ParameterError(f"export cannot omit {bad}", hint=f"optional columns are {sorted(OPTIONAL_COLUMNS)}")
    start = int(spec.get("data_start_week") or 1)
    if not 1 <= start <= 13:
        raise ParameterError("export data_start_week must be 1..13")
    return {"tables": tables, "omit_columns": omit, "data_start_week": start}


def is_full(export: Mapping[str, Any]) -> bool:
    """True when the export writes every table and column from the first quarter's first day."""
    return (set(export["tables"]) == set(schemas.TABLES) and not export["omit_columns"]
            and export["data_start_week"] == 1)


def apply_export(tables: dict[str, pd.DataFrame], export: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """The canonical tables as the export holds them: omitted tables empty, omitted columns missing (null)."""
    out = {}
    for name, frame in tables.items():
        if name not in export["tables"]:
            out[name] = frame.iloc[:0]
            continue
        if name == "opportunities" and export["omit_columns"]:
            frame = frame.copy()
            for column in export["omit_columns"]:
                frame[column] = frame[column].iloc[:0].reindex(frame.index)
        out[name] = frame
    return out


def measurable_effects(export: Mapping[str, Any]) -> list[str]:
    """The effects whose inputs (:data:`EFFECT_INPUTS`) the export holds."""
    present = set(export["tables"])
    omitted = {f"opportunities.{c}" for c in export["omit_columns"]}

    def held(item: str) -> bool:
        return item.split(".")[0] in present and item not in omitted

    return [effect for effect, inputs in EFFECT_INPUTS.items() if all(held(item) for item in inputs)]
