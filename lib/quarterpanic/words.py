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
    """'95% CI 25 to 43 points' in the metric's own unit."""
    if _missing(low) or _missing(high):
        return "uncertainty not estimable"
    if unit == "share":
        return f"95% CI {100 * low:.0f} to {100 * high:.0f} points"
    if unit in ("proportion", "relative"):
        return f"95% CI {100 * low:.0f}% to {100 * high:.0f}%"
    if unit == "ratio":
        return f"95% CI {low:.2f}× to {high:.2f}×"
    return f"95% CI {low:.3g} to {high:.3g}"


def p_text(p_value: float | None) -> str:
    if _missing(p_value):
        return ""
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}"


def size_text(estimate: float, unit: str) -> str:
    """The estimate in its unit: '35 points', '31%', '-12%', '2.95×', '14.8'."""
    if unit == "share":
        return points(estimate)
    if unit == "proportion":
        return pct(estimate)
    if unit == "relative":
        return f"{100 * estimate:+.0f}%"
    if unit == "ratio":
        return f"{estimate:.2f}×"
    return f"{estimate:.3g}"


_OPPOSITES = {" fell by": " rose by", " rose by": " fell by"}


def describe(finding: Mapping[str, Any]) -> str:
    """One sentence for one finding row (a dict or a DataFrame row)."""
    where = f"{finding['org']}, {finding['quarter']}"
    if finding.get("segment") not in (None, "all"):
        where += f" ({finding['segment']})"
    metric = METRICS.get(finding["metric"])
    label = metric.description if metric else str(finding["metric"]).replace("_", " ")
    if finding.get("status") == INSUFFICIENT:
        return f"{where}: too little data to judge {_subject(label)} (n = {finding.get('n')})."
    unit = metric.unit if metric else "value"
    estimate = finding["estimate"]
    low, high = finding.get("ci_low"), finding.get("ci_high")
    # "fell by -12 points" reads as nonsense: say "rose by 12 points" instead.
    for verb, opposite in _OPPOSITES.items():
        if label.endswith(verb) and not _missing(estimate) and estimate < 0 and unit in ("share", "count"):
            label = label[: -len(verb)] + opposite
            estimate, low, high = -estimate, (None if _missing(high) else -high), (None if _missing(low) else -low)
            break
    onset = finding.get("onset_week")
    since = f" from week {int(onset)} on" if not _missing(onset) else ""
    verdict = "flagged" if finding.get("flagged") else "not flagged"
    details = "; ".join(part for part in (ci_text(low, high, unit), p_text(finding.get("p_value")), verdict) if part)
    return f"{where}: {label} {size_text(estimate, unit)}{since} ({details})."


def _subject(description: str) -> str:
    """'the share ... fell by' -> 'the share ...' (the thing measured, without its verb)."""
    for tail in (" fell by", " rose by", " changed by", " ran at", " was", " at", " by"):
        if description.endswith(tail):
            return description[: -len(tail)]
    return description


def _missing(value: Any) -> bool:
    try:
        return bool(value != value) or value is None or str(value) == "<NA>"
    except (TypeError, ValueError):
        return True
