"""Each organisation's findings in the terms of its size class, for the executive page.

Panic looks different by size: a **small** firm sells or delivers, rarely both
(:mod:`quarterpanic.analysis.sell_or_do`); a **mid-size** company works in
functional silos, so sales-ops requests wait on other departments (the
silo metrics of the ticket history, :mod:`quarterpanic.analysis.silos`) and deals close before
legal, finance or delivery have filled in their fields
(:mod:`quarterpanic.analysis.department_fields`); an **enterprise**
changes slowly, so what matters is the trend over many quarters
(:mod:`quarterpanic.analysis.trend`). Each organisation gets its own size's
lens first, and a note on the size-specific symptoms its data could not
measure with the field that would unlock them.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import pandas as pd

from quarterpanic.analysis.department_fields import (
    ANY_DEPARTMENT, COMPONENT as DEPARTMENT_FIELDS, LATE_WEEKS, MIN_PER_WINDOW,
)
from quarterpanic.analysis.findings import INSUFFICIENT, NOT_MEASURED, OK, ci_level_of
from quarterpanic.analysis.inputs import INPUT_LABELS
from quarterpanic.analysis.sell_or_do import COMPONENT as SELL_OR_DO, CRUNCH, LEADS
from quarterpanic.analysis.silos import COMPONENT as SILOS
from quarterpanic.report.index_report import money
from quarterpanic.report.safe import escape_text
from quarterpanic.report.words import ci_label, describe

SMALL, MID, ENTERPRISE = "small", "mid", "enterprise"
LENS_NAMES = {SMALL: "sell or do", MID: "silos", ENTERPRISE: "slow change"}
#: What would unlock the silo metrics where the data have none.
SILO_NEEDS = "ticket change history (status, assignee or component changes, e.g. a Jira changelog)"
#: What would unlock the department-fields metric where the data have none.
DEPARTMENT_FIELDS_NEEDS = INPUT_LABELS["department_fields"]
COMPONENT_WORDS = {"qualification_decay": "qualification decay", "win_rate_ratio": "the late win rate",
                   "discount_uplift": "the extra discount", "reactive_order_taking": "reactive order-taking"}
LENS_COLUMNS = ["org", "size_class", "lens", "own_lens", "measured", "sentence"]


def _signed_range(low: float, high: float, level: float, suffix: str = "%") -> str:
    # Rounded first, so that -0.4% reads "0%", not "-0%".
    return f"{ci_label(level)} {round(100 * low) + 0:+d}{suffix} to {round(100 * high) + 0:+d}{suffix}"


def _change(estimate: float) -> str:
    return f"fell {100 * -estimate:.0f}%" if estimate < 0 else f"rose {100 * estimate:.0f}%"


def sell_or_do_sentences(rows: pd.DataFrame) -> list[tuple[bool, str]]:
    """``(measured, sentence)`` for one organisation's sell-or-do findings (its ``sell_or_do*`` rows).

    E.g. "In the 4 weeks after a win above 45k EUR, new pipeline fell 55% against the same quarters'
    other weeks (95% CI -70% to -35%; since FY2024-Q1): selling stops while the firm delivers".
    """
    out: list[tuple[bool, str]] = []
    by_metric = {row["metric"]: row for row in rows.to_dict("records")}
    for metric, what, when in ((SELL_OR_DO, "new pipeline", "after a large win"),
                               (CRUNCH, "new pipeline", "in the quarter-end delivery crunch"),
                               (LEADS, "new leads logged", "after a large win")):
        row = by_metric.get(metric)
        if row is None:
            continue
        if row["status"] == NOT_MEASURED:
            needs = "; ".join(row.get("needs") or []) or "its inputs"
            out.append((False, f"Whether {what} slows {when} could not be measured: the data have no {needs}"))
            continue
        if row["status"] != OK or _missing(row["estimate"]):
            out.append((False, f"Too little data to tell whether {what} slows {when} (n = {row.get('n')})"))
            continue
        if metric == CRUNCH:
            opening = f"In the quarter's last weeks (the delivery crunch), {what}"
            baseline = "the quarters' other weeks"
        else:
            weeks = int(row.get("weeks_after") or 0)
            span = "week" if weeks == 1 else f"{weeks} weeks"
            threshold = money(row.get("win_amount"), row.get("currency") or "")
            opening = f"In the {span} after a win above {threshold}, {what}"
            baseline = "the same quarters' other days"
        verdict = ("selling stops while the firm delivers" if row.get("flagged")
                   else "no clear stop in selling")
        out.append((True, f"{opening} {_change(row['estimate'])} against {baseline} "
                          f"({_signed_range(row['ci_low'], row['ci_high'], ci_level_of(row))}; since "
                          f"{row.get('since_quarter')}): {verdict}"))
    return out


def silo_sentences(rows: pd.DataFrame) -> list[tuple[bool, str]]:
    """``(measured, sentence)`` for one organisation's silo findings (component ``mid_size_silos``).

    The latest quarter with a measured silo finding is described (:func:`quarterpanic.report.words.describe`);
    with none, the sentence says what would unlock them.
    """
    measured = rows[rows["status"] == OK]
    if measured.empty:
        needs = sorted({need for row_needs in rows.get("needs", pd.Series(dtype=object)).dropna()
                        for need in row_needs}) or [SILO_NEEDS]
        return [(False, "Handoffs between departments and the time requests wait on them could not be measured: "
                        f"the data have no {'; '.join(needs)}")]
    latest = measured[measured["quarter"] == max(measured["quarter"])]
    return [(True, describe(row).rstrip(".")) for row in latest.to_dict("records")]


def department_field_sentences(rows: pd.DataFrame) -> list[tuple[bool, str]]:
    """``(measured, sentence)`` for one organisation's department-fields findings (component ``department_fields``).

    The latest quarter with a measured main finding is described, e.g. "In FY2025-Q3, 41% of the deals won in
    the last 4 weeks missed a field legal, finance or delivery owns when they closed, against 12% earlier in the
    quarter (+29 points, 95% CI +15 to +42; most in legal: +21 points): deals close before the other departments
    have done their part"; with none, what would unlock it.
    """
    main = rows[rows["metric"] == DEPARTMENT_FIELDS] if len(rows) else rows
    measured = main[main["status"] == OK] if len(main) else main
    what = "deals closing late miss the fields other departments (legal, finance, delivery) own"
    if measured.empty:
        if len(main) and (main["status"] != NOT_MEASURED).any():
            return [(False, f"Too little data to tell whether {what} (fewer than {MIN_PER_WINDOW} won deals "
                            "closed late or earlier in a quarter)")]
        needs = sorted({need for row_needs in main.get("needs", pd.Series(dtype=object)).dropna()
                        for need in row_needs}) or [DEPARTMENT_FIELDS_NEEDS]
        return [(False, f"Whether {what} could not be measured: the data have no {'; '.join(needs)}")]
    row = measured[measured["quarter"] == max(measured["quarter"])].iloc[0]
    departments = rows[(rows["quarter"] == row["quarter"]) & (rows["metric"] != DEPARTMENT_FIELDS)
                       & (rows["status"] == OK)]
    owners = sorted(set(rows.get("department", pd.Series(dtype=object)).dropna()) - {ANY_DEPARTMENT})
    named = " or ".join([", ".join(owners[:-1]), owners[-1]] if len(owners) > 1 else owners) or "another department"
    detail = _signed_range(row["ci_low"], row["ci_high"], ci_level_of(row), suffix="")
    worst = departments.sort_values("estimate", ascending=False).head(1)
    if row.get("flagged") and len(worst) and worst["estimate"].iloc[0] > 0:
        detail += f"; most in {worst['department'].iloc[0]}: {100 * worst['estimate'].iloc[0]:+.0f} points"
    verdict = ("deals close before the other departments have done their part" if row.get("flagged")
               else "no clear gap between late and earlier deals")
    return [(True, f"In {row['quarter']}, {_share(row.get('share_late'))} of the deals won in the last {LATE_WEEKS} "
                   f"weeks missed a field {named} owns when they closed, against {_share(row.get('share_early'))} "
                   f"earlier in the quarter ({100 * row['estimate']:+.0f} points, {detail}): {verdict}")]


def _share(value: Any) -> str:
    return "n/a" if _missing(value) else f"{100 * float(value):.0f}%"


def trend_sentence(row: Mapping[str, Any], subject: str = "panic") -> tuple[bool, str]:
    """``(measured, sentence)`` for one :func:`quarterpanic.analysis.trend.quarter_trends` row.

    E.g. "Since FY2024-Q1, panic has eased by 0.4 SD a year (95% CI 0.1 to 0.7; 10 quarters)".
    """
    if row["status"] != OK:
        return (False, f"Too few quarters with a panic index ({row['n_quarters']}) to see whether {subject} "
                       "is easing over the years")
    slope, low, high = row["slope_per_year"], row["ci_low"], row["ci_high"]
    level = ci_label(ci_level_of(row))
    since = f"Since {row['first_quarter']}"
    # One decimal, or two when a number would otherwise round to 0.0 (a small but clear trend).
    places = 1 if all(round(abs(x), 1) > 0 for x in (slope, low, high) if x != 0) else 2
    if high < 0:
        return (True, f"{since}, {subject} has eased by {-slope:.{places}f} SD a year ({level} {-high:.{places}f} to "
                      f"{-low:.{places}f}; {row['n_quarters']} quarters)")
    if low > 0:
        return (True, f"{since}, {subject} has grown by {slope:.{places}f} SD a year ({level} {low:.{places}f} to "
                      f"{high:.{places}f}; {row['n_quarters']} quarters)")
    return (True, f"{since}, no clear trend in {subject}: {slope:+.{places}f} SD a year ({level} {low:+.{places}f} "
                  f"to {high:+.{places}f}; {row['n_quarters']} quarters)")


def slow_change_sentences(index_trends: pd.DataFrame, component_trends: pd.DataFrame) -> list[tuple[bool, str]]:
    """``(measured, sentence)`` for one organisation's index trend and the components that moved clearly."""
    out = [trend_sentence(row) for row in index_trends.to_dict("records")]
    if not out:
        out = [(False, "No quarter has a panic index yet, so slow change cannot be followed")]
    for row in component_trends.to_dict("records"):
        if row["status"] == OK and (row["ci_high"] < 0 or row["ci_low"] > 0):
            out.append(trend_sentence(row, COMPONENT_WORDS.get(row["component"], row["component"].replace("_", " "))))
    return out


def size_lenses(findings: pd.DataFrame, index_trends: pd.DataFrame, component_trends: pd.DataFrame,
                size_classes: Mapping[str, str]) -> pd.DataFrame:
    """Every organisation's size-specific symptoms as sentences, its own size's lens first.

    ``findings`` is :func:`quarterpanic.analysis.detect.detect`'s table; ``index_trends`` and
    ``component_trends`` are :func:`quarterpanic.analysis.trend.index_trends` and
    :func:`~quarterpanic.analysis.trend.component_trends` (segment ``all`` is used). Returns ``org``,
    ``size_class``, ``lens`` (``sell or do``, ``silos``, ``slow change``), ``own_lens`` (the lens of the
    organisation's size class), ``measured`` and ``sentence``.
    """
    everyone = sorted(set(size_classes) | set(findings["org"].astype(str)))
    records = []
    for org in everyone:
        size = size_classes.get(org, MID)
        mine = findings[(findings["org"].astype(str) == org) & (findings["segment"] == "all")]
        lenses = {
            SMALL: sell_or_do_sentences(mine[mine["component"] == SELL_OR_DO]),
            MID: silo_sentences(mine[mine["component"].astype(str) == SILOS])
            + department_field_sentences(mine[mine["component"] == DEPARTMENT_FIELDS]),
            ENTERPRISE: slow_change_sentences(_all_segments(index_trends, org), _all_segments(component_trends, org)),
        }
        for lens_size in sorted(lenses, key=lambda name: name != size):
            for measured, sentence in lenses[lens_size]:
                records.append({"org": org, "size_class": size, "lens": LENS_NAMES[lens_size],
                                "own_lens": lens_size == size, "measured": measured, "sentence": sentence})
    return pd.DataFrame(records, columns=LENS_COLUMNS)


def size_lenses_markdown(lenses: pd.DataFrame) -> str:
    """:func:`size_lenses` as Markdown (CRM text escaped): per organisation its own size's lens, what else was
    measured, and the size-specific symptoms its data could not measure."""
    if lenses.empty:
        return "No organisation to describe."
    blocks = []
    for org, rows in lenses.groupby("org", sort=True):
        size = rows["size_class"].iloc[0]
        own = rows[rows["own_lens"]]
        lines = [f"**{escape_text(org)}** ({escape_text(size)}: {LENS_NAMES.get(size, size)})"]
        lines += [f"* {escape_text(sentence)}." for sentence in own.loc[own["measured"], "sentence"]]
        others = rows[~rows["own_lens"] & rows["measured"]]
        lines += [f"* Also ({lens}): {escape_text(sentence)}."
                  for lens, sentence in zip(others["lens"], others["sentence"])]
        unmeasured = own[~own["measured"]]
        lines += [f"* Not measured: {escape_text(sentence)}." for sentence in unmeasured["sentence"]]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _all_segments(frame: pd.DataFrame, org: str) -> pd.DataFrame:
    if frame.empty:
        return frame
    return frame[(frame["org"].astype(str) == org) & (frame["segment"] == "all")]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
