"""Slow change: the panic index and each of its components as a trend over many quarters.

A large organisation changes slowly: one quarter says little, the drift over
two or three years says whether panic is easing. Per organisation × segment
(× component) the quarters' values are regressed on time in years (a fiscal
year is four quarters, so quarter ``FY2025-Q2`` is ``2025.25``).

**Robust to the quarter-to-quarter noise, weighted by each quarter's
precision.** A quarter's value is its true level plus two kinds of noise: its
own sampling error (the standard error its detector reports, larger for a thin
or partial quarter) and the calm variation between quarters. The slope is a
Huber M-estimate (statsmodels' ``RLM``) of the line through the quarters, each
weighted by ``1 / (se² + tau²)``: ``tau²``, the between-quarter variance net
of sampling noise, is the robust method-of-moments estimate the panic index
uses for its calm variation (``(1.4826 × MAD)² − median se²`` of the
residuals from a Theil–Sen line, at least 0). The Huber loss caps a single
panic quarter's pull on the line (a least-squares line would tilt towards
it). The interval is the slope ± a t quantile (n − 2 degrees of freedom) ×
its standard error (Huber's sandwich, scaled by ``n / (n − 2)``, the
degrees-of-freedom correction of HC1, as the sandwich is a large-sample
estimate and a trend has 6 to 20 quarters); the p-value is the same Wald
test. A column without standard errors is weighted equally.

*Why not Sen's interval.* The Theil–Sen slope with Sen's distribution-free
interval assumes exchangeable errors; with heteroscedastic quarters (noisy
first and last quarters, a common shape when data begin mid-quarter) it
covered a known slope in only 87–88% of simulated series of 12–20 quarters,
where the weighted Huber line covers it in 93–97% (docs/METHODS.md, slow
change). The index is in baseline standard deviations, so the slope reads
"standard deviations a year". Below ``trend_min_quarters`` quarters with a
value the trend is ``insufficient data``.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats

from quarterpanic.analysis.findings import INSUFFICIENT, OK
from quarterpanic.params import defaults

#: The standard-error column of each value column a trend is fitted to (the scores' and the index's).
STANDARD_ERRORS = {"z": "z_se", "value": "se"}
MAD_TO_SD = 1.4826  # MAD of a normal sample × this = its standard deviation
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


def slope(years: np.ndarray, values: np.ndarray, ci_level: float, se: np.ndarray | None = None) -> dict[str, float]:
    """The weighted Huber slope per year of ``values`` with its interval at ``ci_level`` and Wald p-value.

    ``se`` are the values' standard errors (missing or ``None``: equal weights). Returns
    ``slope_per_year``, ``ci_low``, ``ci_high``, ``p_value`` and ``tau`` (the between-quarter SD).
    """
    years, values = np.asarray(years, dtype=float), np.asarray(values, dtype=float)
    n = len(values)
    variances = np.zeros(n) if se is None else np.asarray(se, dtype=float) ** 2
    known = np.isfinite(variances)
    # A quarter without a standard error is taken to be as noisy as the typical quarter with one.
    variances = np.where(known, variances, float(np.median(variances[known])) if known.any() else 0.0)
    start = stats.theilslopes(values, years)
    residuals = values - start.intercept - start.slope * years
    spread = MAD_TO_SD * float(np.median(np.abs(residuals - np.median(residuals))))
    tau2 = max(spread ** 2 - float(np.median(variances)), 0.0)
    sd = np.sqrt(variances + tau2)
    quantile = float(stats.t.ppf((1 + ci_level) / 2, n - 2))
    if spread == 0 or not (sd > 0).all():
        # Most quarters sit exactly on a line: that line, uncertain only by the quarters' own sampling error.
        centred = years - years.mean()
        std_error = 1 / np.sqrt(np.sum(centred ** 2 / variances)) if (variances > 0).all() else 0.0
        return {**_interval(float(start.slope), float(std_error), quantile, n), "tau": 0.0}
    design = np.column_stack([np.ones(n), years - years.mean()]) / sd[:, None]
    fit = sm.RLM(values / sd, design, M=sm.robust.norms.HuberT()).fit()
    std_error = float(fit.bse[1]) * np.sqrt(n / (n - 2))
    return {**_interval(float(fit.params[1]), std_error, quantile, n), "tau": float(np.sqrt(tau2))}


def _interval(estimate: float, std_error: float, quantile: float, n: int) -> dict[str, float]:
    """The slope, its interval ``estimate ± quantile × std_error`` and the two-sided t-test's p-value."""
    p_value = float(2 * stats.t.sf(abs(estimate) / std_error, n - 2)) if std_error > 0 else float(estimate == 0)
    return {"slope_per_year": estimate, "ci_low": estimate - quantile * std_error,
            "ci_high": estimate + quantile * std_error, "p_value": p_value}


def quarter_trends(frame: pd.DataFrame, value: str, by: Sequence[str] = ("org", "segment"),
                   params: Mapping[str, Any] | None = None, se: str | None = None) -> pd.DataFrame:
    """The trend of ``frame[value]`` over the quarters, per group of ``by`` (:func:`slope`).

    ``frame`` has ``quarter`` labels and the ``by`` columns; rows without a finite value are left out.
    ``se`` names the values' standard-error column (weights; ``None`` or a column ``frame`` lacks:
    equal weights).
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
        errors = part[se].to_numpy(dtype=float) if se is not None and se in part else None
        fit = slope(part["_years"].to_numpy(dtype=float), part[value].to_numpy(dtype=float), ci_level, errors)
        fit.pop("tau")
        records.append({**record, **fit, "status": OK})
    out = pd.DataFrame(records, columns=by + TREND_COLUMNS)
    out["n_quarters"] = out["n_quarters"].astype(int)
    return out


def index_column(index: pd.DataFrame) -> str:
    """The index's value column: ``index`` (the rebuilt index's name) or ``panic_index``."""
    return "index" if "index" in index.columns else "panic_index"


def index_trends(index: pd.DataFrame, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The panic index's trend per organisation × segment (:func:`quarter_trends` of the index frame, each
    quarter weighted by its ``index_se``)."""
    return quarter_trends(index, index_column(index), ("org", "segment"), params, se="index_se")


def component_trends(scores: pd.DataFrame, params: Mapping[str, Any] | None = None, value: str = "z") -> pd.DataFrame:
    """Each index component's trend per org × segment × component.

    ``value="z"`` (the default, what the executive page reads) is in baseline standard deviations;
    ``value="value"`` is in the component's own panic-side units (the decay in probability points, a
    surge as log(ratio), ...), the scale the generator's truth states a slow change on
    (:mod:`quarterpanic.sample.trends`). Quarters are weighted by their ``z_se`` or ``se``.
    """
    return quarter_trends(scores, value, ("org", "segment", "component"), params, se=STANDARD_ERRORS.get(value))
