"""Slow change: the panic index and each of its components as a trend over many quarters.

A large organisation changes slowly: one quarter says little, the drift over
two or three years says whether panic is easing. Per organisation × segment
(× component) the quarters' values are regressed on time in years (a fiscal
year is four quarters, so quarter ``FY2025-Q2`` is ``2025.25``).

**Robust to the quarter-to-quarter noise.** The slope is the Theil–Sen
estimator (the median of the slopes between every pair of quarters), with
Sen's distribution-free interval from Kendall's tau (scipy's
``theilslopes``) and the two-sided Mann–Kendall p-value (Kendall's tau of the
values against time): a single panic quarter moves neither, where it would
tilt a least-squares line. The index is in baseline standard deviations, so
the slope reads "standard deviations a year". Below ``trend_min_quarters``
quarters with a value the trend is ``insufficient data``.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from quarterpanic.analysis.findings import INSUFFICIENT, OK
from quarterpanic.params import defaults

QUARTER_LABEL = re.compile(r"^FY(\d{4})-Q([1-4])$")
TREND_COLUMNS = ["first_quarter", "last_quarter", "n_quarters", "slope_per_year", "ci_low", "ci_high",
                 "p_value", "ci_level", "status"]


def quarter_years(quarters: pd.Series) -> pd.Series:
    """Fiscal quarter labels (``FY2025-Q2``) as years (``2025.25``): evenly spaced, a year apart per four."""
    parts = quarters.astype(str).str.extract(QUARTER_LABEL)
    if parts.isna().any().any():
        bad = quarters[parts.isna().any(axis=1)].iloc[0]
        raise ValueError(f"not a fiscal quarter label: {bad!r}")
    return parts[0].astype(int) + (parts[1].astype(int) - 1) / 4


def slope(years: np.ndarray, values: np.ndarray, ci_level: float) -> dict[str, float]:
    """Theil–Sen slope per year with Sen's interval at ``ci_level`` and the Mann–Kendall p-value."""
    fit = stats.theilslopes(values, years, alpha=ci_level)
    p_value = float(stats.kendalltau(years, values).pvalue)
    return {"slope_per_year": float(fit.slope), "ci_low": float(fit.low_slope), "ci_high": float(fit.high_slope),
            "p_value": p_value}


def quarter_trends(frame: pd.DataFrame, value: str, by: Sequence[str] = ("org", "segment"),
                   params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The trend of ``frame[value]`` over the quarters, per group of ``by``.

    ``frame`` has ``quarter`` labels and the ``by`` columns; rows without a finite value are left out.
    Returns the ``by`` columns, ``first_quarter``, ``last_quarter``, ``n_quarters``, ``slope_per_year``
    (change of ``value`` per fiscal year), ``ci_low``, ``ci_high``, ``p_value``, ``ci_level`` and
    ``status`` (``ok``, or ``insufficient data`` below ``trend_min_quarters``).
    """
    params = {**defaults(), **(params or {})}
    ci_level = float(params["ci_level"])
    minimum = int(params["trend_min_quarters"])
    by = list(by)
    values = pd.to_numeric(frame[value], errors="coerce") if len(frame) else pd.Series(dtype=float)
    rows = frame[np.isfinite(values.to_numpy(dtype=float))] if len(frame) else frame
    records = []
    for key, part in rows.groupby(by, sort=True):
        part = part.assign(_years=quarter_years(part["quarter"])).sort_values("_years")
        record = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        record.update(first_quarter=str(part["quarter"].iloc[0]), last_quarter=str(part["quarter"].iloc[-1]),
                      n_quarters=len(part), ci_level=ci_level)
        if len(part) < minimum:
            records.append({**record, "status": INSUFFICIENT})
            continue
        fit = slope(part["_years"].to_numpy(dtype=float), part[value].to_numpy(dtype=float), ci_level)
        records.append({**record, **fit, "status": OK})
    out = pd.DataFrame(records, columns=by + TREND_COLUMNS)
    out["n_quarters"] = out["n_quarters"].astype(int)
    return out


def index_column(index: pd.DataFrame) -> str:
    """The index's value column: ``index`` (the rebuilt index's name) or ``panic_index``."""
    return "index" if "index" in index.columns else "panic_index"


def index_trends(index: pd.DataFrame, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The panic index's trend per organisation × segment (:func:`quarter_trends` of the index frame)."""
    return quarter_trends(index, index_column(index), ("org", "segment"), params)


def component_trends(scores: pd.DataFrame, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Each index component's trend in baseline standard deviations (its ``z``) per org × segment × component."""
    return quarter_trends(scores, "z", ("org", "segment", "component"), params)
