"""The canonical tables every analysis reads, defined once as pandera models.

Five tables, whatever CRM they came from (docs/DATA.md explains each field):

* :class:`Opportunities` — one row per opportunity (deal);
* :class:`OpportunityHistory` — one row per change of stage, amount, close date
  or forecast category (Salesforce OpportunityFieldHistory shape, long form);
* :class:`Leads` — one row per lead;
* :class:`Requests` — one row per sales-operations request (ticket);
* :class:`RequestHistory` — one row per change of a request's status, assignee or
  component (a ticket system's changelog, long form).

Every table carries ``org`` (the organisation or business unit the export
belongs to) and provenance columns ``source_file`` / ``source_row`` (the
1-based line of the record in the file it came from, header = line 1), so a
finding can always be traced back to the export a user can open.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow
from pandera.typing import Series

SIZE_CLASSES = ("small", "mid", "enterprise")
HISTORY_FIELDS = ("stage", "amount", "close_date", "forecast_category")
REQUEST_HISTORY_FIELDS = ("status", "assignee", "component")
#: The department a request starts with and returns to: the sales (operations) team that raised it.
HOME_DEPARTMENT = "sales"
FORECAST_CATEGORIES = ("Pipeline", "Best Case", "Commit", "Closed", "Omitted")


class _Canonical(pa.DataFrameModel):
    """Columns shared by every canonical table."""

    org: Series[str] = pa.Field(description="Organisation or business unit the record belongs to.")
    source_file: Series[str] = pa.Field(description="Export file the row was read from.")
    source_row: Series[int] = pa.Field(ge=1, description="1-based line of the record in that file (header = 1).")

    class Config:
        coerce = True
        strict = False


class Opportunities(_Canonical):
    """One row per opportunity."""

    opportunity_id: Series[str] = pa.Field(description="CRM id of the opportunity, unique within org.")
    name: Series[str] = pa.Field(nullable=True)
    account: Series[str] = pa.Field(nullable=True)
    owner: Series[str] = pa.Field(nullable=True, description="Opportunity owner (seller).")
    team: Series[str] = pa.Field(nullable=True)
    segment: Series[str] = pa.Field(nullable=True, description="Market segment, e.g. SMB, Mid-Market, Enterprise.")
    size_class: Series[str] = pa.Field(isin=list(SIZE_CLASSES), description="Size class of the organisation.")
    created_at: Series[pd.Timestamp] = pa.Field(description="When the opportunity was created.")
    close_date: Series[pd.Timestamp] = pa.Field(
        nullable=True, description="Expected or actual close date; an open deal may have none yet.")
    stage: Series[str] = pa.Field(description="Current stage name as the CRM spells it.")
    is_closed: Series[bool] = pa.Field()
    is_won: Series[bool] = pa.Field()
    amount: Series[float] = pa.Field(ge=0, nullable=True)
    currency: Series[str] = pa.Field(nullable=True)
    discount: Series[float] = pa.Field(ge=0, le=1, nullable=True, description="Discount as a fraction of list price.")
    probability: Series[float] = pa.Field(ge=0, le=100, nullable=True)
    forecast_category: Series[str] = pa.Field(nullable=True)
    lead_source: Series[str] = pa.Field(nullable=True)
    lead_score: Series[float] = pa.Field(nullable=True, description="Score of the originating lead at conversion.")
    bant_budget: Series[pd.BooleanDtype] = pa.Field(nullable=True)
    bant_authority: Series[pd.BooleanDtype] = pa.Field(nullable=True)
    bant_need: Series[pd.BooleanDtype] = pa.Field(nullable=True)
    bant_timeline: Series[pd.BooleanDtype] = pa.Field(nullable=True)
    next_step: Series[str] = pa.Field(nullable=True)

    @pa.dataframe_check(description="won implies closed")
    def won_is_closed(cls, df: pd.DataFrame) -> Series[bool]:
        return ~df["is_won"].astype(bool) | df["is_closed"].astype(bool)

    @pa.dataframe_check(description="a closed deal has a close date")
    def closed_has_close_date(cls, df: pd.DataFrame) -> Series[bool]:
        return ~df["is_closed"].astype(bool) | df["close_date"].notna()


class OpportunityHistory(_Canonical):
    """One row per change of a tracked opportunity field."""

    opportunity_id: Series[str] = pa.Field()
    changed_at: Series[pd.Timestamp] = pa.Field()
    field: Series[str] = pa.Field(isin=list(HISTORY_FIELDS))
    old_value: Series[str] = pa.Field(nullable=True)
    new_value: Series[str] = pa.Field(nullable=True)


class Leads(_Canonical):
    """One row per lead."""

    lead_id: Series[str] = pa.Field()
    created_at: Series[pd.Timestamp] = pa.Field()
    status: Series[str] = pa.Field()
    lead_source: Series[str] = pa.Field(nullable=True)
    score: Series[float] = pa.Field(nullable=True)
    owner: Series[str] = pa.Field(nullable=True)
    converted_at: Series[pd.Timestamp] = pa.Field(nullable=True)
    converted_opportunity_id: Series[str] = pa.Field(nullable=True)
    disqualification_reason: Series[str] = pa.Field(nullable=True)


class Requests(_Canonical):
    """One row per sales-operations request (a ticket)."""

    request_id: Series[str] = pa.Field()
    created_at: Series[pd.Timestamp] = pa.Field()
    resolved_at: Series[pd.Timestamp] = pa.Field(nullable=True, description="Empty while the request is open (censored).")
    request_type: Series[str] = pa.Field(description="Discount Approval, Rush Quote, Contract Redline, Expedite, ...")
    priority: Series[str] = pa.Field(nullable=True)
    status: Series[str] = pa.Field(nullable=True)
    requester: Series[str] = pa.Field(nullable=True)
    team: Series[str] = pa.Field(nullable=True)
    opportunity_id: Series[str] = pa.Field(nullable=True, description="Linked opportunity, if any.")
    planned: Series[bool] = pa.Field(description="True for planned, proactive work; False for unplanned requests.")
    handling_hours: Series[float] = pa.Field(ge=0, nullable=True)


class RequestHistory(_Canonical):
    """One row per change of a tracked request (ticket) field: who has the request, and where it stands."""

    request_id: Series[str] = pa.Field(description="The request (ticket key) that changed.")
    changed_at: Series[pd.Timestamp] = pa.Field()
    field: Series[str] = pa.Field(isin=list(REQUEST_HISTORY_FIELDS))
    old_value: Series[str] = pa.Field(nullable=True)
    new_value: Series[str] = pa.Field(nullable=True)
    author: Series[str] = pa.Field(nullable=True, description="Who made the change.")
    department: Series[str] = pa.Field(
        nullable=True, description="Department the request is with after the change (org.yaml departments:), "
                                   "empty when the new value names none.")


TABLES: dict[str, type[_Canonical]] = {
    "opportunities": Opportunities,
    "history": OpportunityHistory,
    "leads": Leads,
    "requests": Requests,
    "request_history": RequestHistory,
}

#: Columns every export of the table must map although some rows may leave them empty (an open deal's close date).
REQUIRED_NULLABLE = {"opportunities": ("close_date",)}

ID_COLUMNS = {
    "opportunities": "opportunity_id",
    "history": None,
    "leads": "lead_id",
    "requests": "request_id",
    "request_history": None,
}


def columns(table: str) -> list[str]:
    """The canonical column names of ``table``, in schema order."""
    return list(TABLES[table].to_schema().columns)


def empty(table: str) -> pd.DataFrame:
    """An empty canonical table with the right dtypes."""
    schema = TABLES[table].to_schema()
    return schema.coerce_dtype(pd.DataFrame({c: pd.Series(dtype="object") for c in schema.columns}))


def constant_text(value: str, n: int) -> pd.api.extensions.ExtensionArray:
    """``n`` copies of ``value`` as a ``str`` array, built in Arrow (one copy of the bytes).

    For the provenance columns (org, source file): assigning a Python string
    to a column builds an object array of ``n`` references first.
    """
    data = value.encode("utf-8")
    offsets = np.arange(n + 1, dtype=np.int64) * len(data)
    array = pyarrow.Array.from_buffers(pyarrow.large_string(), n, [None, pyarrow.py_buffer(offsets),
                                                                   pyarrow.py_buffer(data * n)])
    return pd.array(array, dtype="str")
