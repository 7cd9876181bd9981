"""The truth of a slow change (an org's ``trend: {per_year: r}``): what the trend over the quarters estimates.

Per organisation and index component, the estimand is the slope per year of the component's *true*
quarter value on the index's panic-side scale (truth.json's post-onset averages: the decay and the
discount as they are, the month-3 share of bookings, the request surge as log(ratio), the late win
rate as −log(ratio)), fitted by least squares over the complete quarters. A panic every quarter
whose strength changes linearly gives exactly linear true values (the month-3 share up to its calm
share's small quarter-to-quarter wobble), so the line is the schedule's. The panic index is in each
organisation's calm standard deviations, which its own quarters estimate: truth can only state its
direction (``easing``, ``worsening`` or ``flat``), not its size.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

# Index component -> (truth effect, its panic-side transform).
COMPONENT_EFFECTS: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    "qualification_decay": ("qualification_decay", lambda v: v),
    "win_rate_ratio": ("win_rate_ratio", lambda v: -np.log(v)),
    "discount_uplift": ("discount_uplift", lambda v: v),
    "reactive_order_taking": ("reactive_order_taking", np.log),
    "bookings_backloading": ("month3_bookings_share", lambda v: v),
}


def trend_records(records: list[dict], specs: dict[str, dict]) -> list[dict]:
    """One record per organisation: its ``per_year`` strength change (0 without ``trend``), the complete
    quarters' span, each component's true slope per year (``None`` where truth has no value) and the
    index's direction. ``records`` are the truth's quarter records in quarter order, ``specs`` the orgs."""
    out = []
    for org, spec in specs.items():
        rows = [r for r in records if r["org"] == org and not r["open"]]
        years = np.arange(len(rows)) / 4
        per_year = float((spec.get("trend") or {}).get("per_year", 0.0))
        slopes = {}
        for component, (effect, transform) in COMPONENT_EFFECTS.items():
            values = [r["effects"].get(effect) for r in rows]
            if len(rows) < 2 or any(v is None for v in values):
                slopes[component] = None
                continue
            slopes[component] = round(float(np.polyfit(years, transform(np.asarray(values, dtype=float)), 1)[0]), 6)
        panics = any(r["panic"] for r in rows)
        direction = "flat" if per_year == 0 or not panics else ("easing" if per_year < 0 else "worsening")
        out.append({"org": org, "per_year": per_year, "first_quarter": rows[0]["quarter"] if rows else None,
                    "last_quarter": rows[-1]["quarter"] if rows else None, "slope_per_year": slopes,
                    "index": direction})
    return out
