"""Small helpers every layer shares: the UTC clock, JSON-safe values and file hashes.

It imports nothing from quarterpanic, so any module may use it.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def utc_now() -> str:
    """The current UTC time as ISO 8601 to the second (``2026-12-04T21:11:14+00:00``)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types: NaN, infinities, ``NA`` and ``NaT`` become None.

    Mappings, lists, tuples and DataFrames (as lists of records) are converted
    element by element; numpy scalars become Python numbers; timestamps ISO text.
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, pd.DataFrame):
        return [jsonable(r) for r in value.to_dict(orient="records")]
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(value) else float(value)
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def finite_or_none(value: Any) -> float | None:
    """``value`` as a float when it is a finite number, else None."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, as hex (read in blocks: any size)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


#: An opportunity column a department owns (``org.yaml``'s ``department_fields:``) is named
#: ``"<department>: <export header>"``: loading writes it, the generator writes it, the analysis reads it.
DEPARTMENT_FIELD_SEPARATOR = ": "


def department_field_column(department: str, header: str) -> str:
    """The opportunity column that holds ``department``'s field ``header`` (``"legal: Contract Signed Date"``)."""
    return f"{department}{DEPARTMENT_FIELD_SEPARATOR}{header}"


def department_field_columns(columns: Any) -> dict[str, tuple[str, str]]:
    """``{column: (department, header)}`` of the department-owned columns among ``columns``."""
    out = {}
    for column in columns:
        if isinstance(column, str) and DEPARTMENT_FIELD_SEPARATOR in column:
            department, header = column.split(DEPARTMENT_FIELD_SEPARATOR, 1)
            out[column] = (department, header)
    return out
