"""Department-owned opportunity fields for the mid-size organisations: filled in time, or not.

A ``size_class: mid`` organisation's deals carry one field per other department
(:data:`FIELDS`): legal's contract signature date, finance's purchase-order
number, delivery's kick-off date, as opportunity columns named
``"<department>: <header>"`` (:func:`quarterpanic.util.department_field_column`).

A won deal misses each department's field at close with probability
:data:`MISSING` apart; one closed in the last :data:`LATE_WEEKS` weeks of a panic
quarter with :data:`MISSING_LATE` (departments drawn independently). A missing
date is either left empty or filled in after the close (a date later than the
close date, when that is before the export); a missing purchase-order number is
empty. Present dates fall on or before the close. So in expectation

* per department (``department_field_gap``), the share of won deals missing the
  field at close, late minus early, is ``MISSING_LATE - MISSING`` in a panic
  quarter and 0 in a calm one;
* for any department (``department_fields``), it is
  ``(1 - MISSING)^3 - (1 - MISSING_LATE)^3`` in a panic quarter, 0 in a calm one.

An organisation's scenario entry may set both shares
(``department_fields: {missing: 0.08, missing_late: 0.22}``).
``truth["department_fields"]`` holds both per organisation × quarter. Lost and open
deals leave the fields empty half the time (no estimand reads them). The values
are drawn from a random generator of their own (seeded by the sample's seed and
the organisation), so the rest of the sample is the same with or without them.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from quarterpanic.sample.plan import OrgPlan
from quarterpanic.util import department_field_column

LATE_WEEKS = 4  # the same window as quarterpanic.analysis.department_fields.LATE_WEEKS
#: department -> (export header, kind: "date" or "text")
FIELDS = {"legal": ("Contract Signed Date", "date"), "finance": ("PO Number", "text"),
          "delivery": ("Delivery Kick-off Date", "date")}
MISSING = 0.08
MISSING_LATE = 0.22
BACKFILLED = 0.5  # of missing dates, the share filled in after the close (the rest stay empty)
_SEED_TAG = 17  # keeps this generator's stream apart from any other derived from the sample's seed


def any_missing_gap(missing: float, missing_late: float, departments: int = len(FIELDS)) -> float:
    """The expected late-minus-early share of won deals missing some of ``departments`` independent fields."""
    return (1 - missing) ** departments - (1 - missing_late) ** departments


def add_department_fields(plan: OrgPlan, tables: dict[str, pd.DataFrame], seed: int, org_index: int) -> list[dict]:
    """Add the department-owned columns to a mid-size organisation's ``opportunities``; its truth records.

    Other organisations' tables are left as they are, and give no records; so are those of an export that
    leaves out optional columns (``export: omit_columns``): a plain report carries no custom fields either.
    """
    opps = tables.get("opportunities")
    if plan.spec.get("size_class") != "mid" or opps is None or opps.empty or plan.export["omit_columns"]:
        return []
    rng = np.random.default_rng([int(seed), _SEED_TAG, int(org_index)])
    given = plan.spec.get("department_fields") or {}
    missing, missing_late = float(given.get("missing", MISSING)), float(given.get("missing_late", MISSING_LATE))
    tables["opportunities"] = with_department_fields(plan, opps, rng, missing, missing_late)
    gap, any_gap = missing_late - missing, any_missing_gap(missing, missing_late)
    return [{"org": plan.name, "quarter": str(row["quarter"]), "open": bool(q == plan.nq - 1),
             "panic": bool(plan.panic[q]), "late_weeks": LATE_WEEKS,
             "department_fields": any_gap if plan.panic[q] else 0.0,
             "department_field_gap": gap if plan.panic[q] else 0.0}
            for q, row in plan.quarters.iterrows()]


def with_department_fields(plan: OrgPlan, opps: pd.DataFrame, rng: np.random.Generator, missing: float = MISSING,
                           missing_late: float = MISSING_LATE) -> pd.DataFrame:
    """``opps`` (one organisation) with one column per department of :data:`FIELDS`; a won deal misses each
    at close with probability ``missing``, ``missing_late`` when it closes late in a panic quarter."""
    out = opps.copy()
    close = pd.to_datetime(out["close_date"])
    won = out["is_won"].astype(bool).to_numpy() & close.notna().to_numpy()
    late = np.zeros(len(out), dtype=bool)
    if won.any():
        day = plan.day_index(close[won].to_numpy(dtype="datetime64[ns]"))
        q = plan.day_q[day]
        late[won] = plan.panic[q] & (plan.day_week[day] > plan.day_weeks[day] - LATE_WEEKS)
    p_missing = np.where(late, missing_late, missing)
    close_day = close.dt.normalize().to_numpy(dtype="datetime64[D]")
    created_day = pd.to_datetime(out["created_at"]).dt.normalize().to_numpy(dtype="datetime64[D]")
    export_day = np.datetime64(plan.as_of.normalize().date(), "D")
    for department, (header, kind) in FIELDS.items():
        absent = np.where(won, rng.random(len(out)) < p_missing, rng.random(len(out)) < 0.5)
        if kind == "text":
            numbers = rng.integers(100_000, 1_000_000, len(out))
            values = pd.Series([f"PO-{n}" for n in numbers], index=out.index, dtype=object)
            values[absent] = None
        else:
            before = np.minimum(np.maximum(close_day - rng.integers(0, 15, len(out)), created_day), close_day)
            after = close_day + rng.integers(1, 22, len(out))
            backfilled = absent & (rng.random(len(out)) < BACKFILLED) & won & (after <= export_day)
            days = np.where(backfilled, after, before)
            values = pd.Series(pd.to_datetime(days).strftime("%Y-%m-%d"), index=out.index, dtype=object)
            values[absent & ~backfilled] = None
        # Text as loading holds it (the canonical text dtype), so generated and loaded tables compare equal.
        out[department_field_column(department, header)] = values.astype("str")
    return out
