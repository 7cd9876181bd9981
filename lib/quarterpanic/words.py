"""Plain-language sentences from numbers, for readers who never see code.

Every sentence carries the estimate's uncertainty ("95% CI ...") and says
when the data were too thin to tell.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from quarterpanic.findings import INSUFFICIENT, METRICS


def pct(value: float, digits: int = 0) -> str:
    """0.314 -> '31%'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.{digits}f}%"


def points(value: float, digits: int = 0) -> str:
    """A difference of shares in percentage points: 0.35 -> '35 points'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.{digits}f} points"


def ci_text(low: float, high: float, unit: str) -> str:
    if low is None or high is None or any(isinstance(v, float) and math.isnan(v) for v in (low, high)):
        return "uncertainty not estimable"
    if unit == "share":
        return f"95% CI {100 * low:.0f} to {100 * high:.0f} points"
    if unit == "ratio":
        return f"95% CI {low:.2f}× to {high:.2f}×"
    return f"95% CI {low:.3g} to {high:.3g}"


def p_text(p_value: float | None) -> str:
    if p_value is None or (isinstance(p_value, float) and math.isnan(p_value)):
        return ""
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}"


def describe(finding: Mapping[str, Any]) -> str:
    """One sentence for one finding row (a dict or a DataFrame row)."""
    where = f"{finding['org']}, {finding['quarter']}"
    if finding.get("segment") not in (None, "all"):
        where += f" ({finding['segment']})"
    metric = METRICS.get(finding["metric"])
    label = metric.description if metric else str(finding["metric"]).replace("_", " ")
    if finding.get("status") == INSUFFICIENT:
        return f"{where}: too little data to judge {label} (n = {finding.get('n')})."
    unit = metric.unit if metric else "value"
    estimate = finding["estimate"]
    size = points(estimate) if unit == "share" else (f"{estimate:.2f}×" if unit == "ratio" else f"{estimate:.3g}")
    onset = finding.get("onset_week")
    since = f" from week {int(onset)} on" if onset is not None and not _missing(onset) else ""
    verdict = "flagged" if finding.get("flagged") else "not flagged"
    return (
        f"{where}: {label} {size}{since} "
        f"({ci_text(finding.get('ci_low'), finding.get('ci_high'), unit)}; {p_text(finding.get('p_value'))}; {verdict})."
    )


def _missing(value: Any) -> bool:
    try:
        return bool(value != value) or value is None or str(value) == "<NA>"
    except (TypeError, ValueError):
        return True
