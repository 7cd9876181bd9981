"""Plain-language sentences from numbers, for readers who never see code.

Every sentence carries the estimate's uncertainty ("95% CI ...", labelled with
the level the interval was computed at: the ``ci_level`` column) and says
when the data were too thin to tell.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from quarterpanic.analysis import change as change_analysis
from quarterpanic.analysis import early_warning
from quarterpanic.analysis.department_fields import ANY_DEPARTMENT
from quarterpanic.analysis.findings import (
    AWAY_FROM_PANIC, DEFAULT_CI_LEVEL, INSUFFICIENT, METRICS, NOT_MEASURED, PARTIAL, SIDED, TOWARD_PANIC,
    ci_level_of,
)
from quarterpanic.report.safe import escape_text


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


def ci_label(level: float) -> str:
    """'95% CI' for ``level`` 0.95: the label of an interval of that confidence level."""
    return f"{round(100 * float(level), 6):g}% CI"


def ci_text(low: float, high: float, unit: str, level: float = DEFAULT_CI_LEVEL) -> str:
    """'95% CI 25 to 43 points' in the metric's own unit, labelled with the interval's ``level``."""
    if _missing(low) or _missing(high):
        return "uncertainty not estimable"
    if unit == "share":
        return f"{ci_label(level)} {100 * low:.0f} to {100 * high:.0f} points"
    if unit in ("proportion", "relative"):
        return f"{ci_label(level)} {100 * low:.0f}% to {100 * high:.0f}%"
    if unit == "ratio":
        return f"{ci_label(level)} {low:.2f}× to {high:.2f}×"
    return f"{ci_label(level)} {low:.3g} to {high:.3g}"


#: What each false-discovery family (:data:`quarterpanic.analysis.findings.FDR_FAMILIES`) holds, for a method note.
FDR_FAMILY_WORDS = {
    "organisation": "within each organisation and metric (its quarters and segments), so no other organisation's "
                    "data change an organisation's flags",
    "metric": "within each metric across all organisations of the run, so one organisation's flags can change "
              "with another's data",
    "run": "across every test of the run at once, so one organisation's flags can change with another's data",
}


def fdr_text(alpha: float, family: str) -> str:
    """The method note of the flags: 'flags keep the false discovery rate at 5% (Benjamini–Hochberg) within ...'."""
    return (f"flags keep the false discovery rate at {round(100 * float(alpha), 6):g}% "
            f"(Benjamini–Hochberg) {FDR_FAMILY_WORDS[family]}")


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


#: Said of a finding of a weak test (:attr:`quarterpanic.analysis.findings.Metric.weak_test`) that is not flagged.
WEAK_TEST_NOTE = "a weak test, which misses most panic quarters at realistic effects: not flagged is no sign of calm"

_OPPOSITES = {" fell by": " rose by", " rose by": " fell by"}


def describe(finding: Mapping[str, Any]) -> str:
    """One sentence for one finding row (a dict or a DataFrame row)."""
    where = f"{finding['org']}, {finding['quarter']}"
    if finding.get("segment") not in (None, "all"):
        where += f" ({finding['segment']})"
    department = finding.get("department")
    if isinstance(department, str) and department != ANY_DEPARTMENT:
        # A metric reported per department (department_field_gap) names which one.
        where += f" ({department})"
    metric = METRICS.get(finding["metric"])
    label = metric.description if metric else str(finding["metric"]).replace("_", " ")
    if finding.get("status") == INSUFFICIENT:
        return f"{where}: too little data to judge {_subject(label)} (n = {finding.get('n')})."
    if finding.get("status") == PARTIAL:
        return f"{where}: the data cover only part of this quarter, so {_subject(label)} is not judged."
    if finding.get("status") == NOT_MEASURED:
        needs = finding.get("needs")
        lacking = "; ".join(needs) if isinstance(needs, (list, tuple)) and len(needs) else "its inputs"
        return f"{where}: {_subject(label)} not measured — the data have no {lacking}."
    if finding["metric"] in BOOKINGS_WINDOWS:
        return f"{where}: {bookings_phrase(finding)}."
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
    if finding.get("direction") == AWAY_FROM_PANIC:
        # A clear move the other way is worth saying, and is never a panic signal.
        verdict += ": points away from panic"
    p_value = p_text(finding.get("p_value"))
    if p_value and finding.get("p_sided") in SIDED:
        p_value += f" ({finding['p_sided']})"
    if metric is not None and math.isnan(metric.null):
        verdict = "a level, with no null to test it against"
    if metric is not None and metric.weak_test and not finding.get("flagged"):
        verdict += f" — {WEAK_TEST_NOTE}"
    interval = ci_text(low, high, unit, ci_level_of(finding))
    details = "; ".join(part for part in (interval, p_value, verdict) if part)
    return f"{where}: {label} {size_text(estimate, unit)}{since} ({details})."


# -- bookings back-loading --------------------------------------------------------------------------
# metric -> the window of the quarter its share is about
BOOKINGS_WINDOWS = {"bookings_backloading": "its last month", "month3_bookings_share": "its last month",
                    "month3_share_above_even": "its last month", "last_two_weeks_share_above_even": "its last two weeks"}


def bookings_phrase(finding: Mapping[str, Any]) -> str:
    """A measured back-loading finding as a phrase, its interval on the share a reader can picture.

    E.g. "43% of the quarter's bookings closed in its last month (95% CI 39–47%), above an even pace of
    33%" or "… 10 points more than in the organisation's other quarters (33%; 95% CI 4 to 16 points)".
    The comparison is worded by the finding's ``direction``: "above" only when the interval clears it.
    """
    metric, estimate = finding["metric"], finding["estimate"]
    reference = finding.get("reference")
    label = ci_label(ci_level_of(finding))
    low, high = finding.get("ci_low"), finding.get("ci_high")
    counted = " (counted in deals: no amounts)" if finding.get("signals") == ["won deal count"] else ""
    share = estimate if metric == "month3_bookings_share" else (
        None if _missing(reference) else estimate + reference)
    window = BOOKINGS_WINDOWS[metric]
    if share is None:
        return f"{METRICS[metric].description} {points(estimate)} ({ci_text(low, high, 'share', ci_level_of(finding))})"
    said = f"{pct(share)} of the quarter's bookings{counted} closed in {window}"
    if metric == "month3_bookings_share":
        return f"{said} ({label} {100 * low:.0f}–{100 * high:.0f}%)" if not _missing(low) else said
    compared = {TOWARD_PANIC: "above", AWAY_FROM_PANIC: "below"}.get(finding.get("direction"), "not clearly above")
    tail = _bookings_test(finding)
    if metric == "bookings_backloading":
        gap = f"{abs(100 * estimate):.0f} points {'more' if estimate >= 0 else 'less'} than"
        return (f"{said}, {gap} in the organisation's other quarters ({pct(reference)}; "
                f"{ci_text(low, high, 'share', ci_level_of(finding))}{tail}) — {compared} its usual pace")
    # Against an even pace the reference is a constant, so the interval of the share is the difference's, shifted.
    return (f"{said} ({label} {100 * (low + reference):.0f}–{100 * (high + reference):.0f}%{tail}), "
            f"{compared} an even pace of {pct(reference)}")


def _bookings_test(finding: Mapping[str, Any]) -> str:
    p_value = p_text(finding.get("p_value"))
    if p_value and finding.get("p_sided") in SIDED:
        p_value += f", {finding['p_sided']}"
    verdict = "flagged" if finding.get("flagged") else ""
    return "".join(f"; {part}" for part in (p_value, verdict) if part)


def findings_in_words(findings: pd.DataFrame, metrics: Sequence[str] | None = None, *,
                      flagged_only: bool = False) -> pd.DataFrame:
    """The findings as plain sentences (:func:`describe`), one row each, for every notebook's tables.

    Returns ``org``, ``quarter``, ``segment``, ``metric``, ``flagged`` and ``finding`` (the sentence); only
    the ``metrics`` given, if any, and only flagged findings with ``flagged_only``.
    """
    rows = findings if metrics is None else findings[findings["metric"].isin(list(metrics))]
    if flagged_only:
        rows = rows[rows["flagged"].astype(bool)]
    sentences = [describe(row) for row in rows.to_dict("records")]
    return rows[["org", "quarter", "segment", "metric", "flagged"]].assign(finding=sentences).reset_index(drop=True)


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


# -- did the change work? -------------------------------------------------------------------------
def _change_subject(quantity: str) -> tuple[str, str]:
    """What a change quantity is called and its unit (the panic index counts baseline SDs)."""
    metric = METRICS.get(quantity)
    if metric is None:
        return quantity.replace("_", " "), "count"
    return quantity.replace("_", " "), metric.unit


def _level_text(value: float, unit: str) -> str:
    return f"{value:.1f}" if unit == "count" else size_text(value, unit)


def _delta_text(value: float, unit: str, scale: str) -> str:
    if scale == "ratio":
        return f"×{value:.2f}"
    if unit in ("share", "proportion", "relative"):
        return f"{100 * value:+.0f} points"
    return f"{value:+.2g}" if abs(value) < 1 else f"{value:+.1f}"


def change_sentence(row: Mapping[str, Any]) -> str:
    """One before/after estimate (a row of :func:`quarterpanic.analysis.change.assess_changes`) in words.

    E.g. "Northwind Traders, deal desk (from 2024-10-01): qualification decay went from 38 points to 6 points
    (-32 points, 95% CI -41 points to -23 points; 4 quarters before, 4 after): away from panic." A
    difference-in-differences row names its control; too few quarters gives the counts, never a number.
    """
    where = str(row["org"]) if row.get("segment") in (None, "all") else f"{row['org']} ({row['segment']})"
    what, unit = _change_subject(str(row["quantity"]))
    scale = str(row.get("scale") or "difference")
    counts = f"{row['n_before']} quarter{'s' if row['n_before'] != 1 else ''} before, {row['n_after']} after"
    head = f"{where}, {_change_name(row)}"
    control = row.get("control")
    against = f", against {control} (which did not change)" if isinstance(control, str) and control else ""
    if row.get("method") == change_analysis.DID and not against:
        return (f"{head}: no organisation or segment that did not change has {_min_quarters()} complete quarters "
                f"of {what} on each side to compare with.")
    if row["status"] == INSUFFICIENT:
        if against:
            counts += f"; each control at least {row['n_control_before']} before, {row['n_control_after']} after"
        return (f"{head}: too few complete quarters to judge {what}{against} ({counts}; "
                f"{_min_quarters()} needed on each side).")
    label = ci_label(row.get("ci_level", DEFAULT_CI_LEVEL))
    low, high = (_delta_text(row[k], unit, scale) for k in ("ci_low", "ci_high"))
    change = _delta_text(row["estimate"], unit, scale)
    if against:
        moved = f"{what}{against}: {change} ({label} {low} to {high}; {counts})"
    else:
        moved = (f"{what} went from {_level_text(row['before'], unit)} to {_level_text(row['after'], unit)} "
                 f"({change}, {label} {low} to {high}; {counts})")
    verdict = {AWAY_FROM_PANIC: "away from panic", TOWARD_PANIC: "toward panic"}.get(row.get("direction"))
    if verdict is None:
        return f"{head}: {moved}: no clear change."
    return f"{head}: {moved}: {verdict}{'' if row.get('significant') else ' (not significant across all the tests)'}."


def _change_name(row: Mapping[str, Any]) -> str:
    """'deal desk (from 2024-10-01)', or 'the change of 2024-10-01' without a label."""
    date = pd.Timestamp(row["change_date"])
    label = row.get("label")
    return f"{label} (from {date:%Y-%m-%d})" if isinstance(label, str) and label else f"the change of {date:%Y-%m-%d}"


def _min_quarters() -> int:
    # The analysis' threshold, read where the sentence is made so that the words never drift from it.
    return change_analysis.MIN_QUARTERS


def change_sentences(estimates: pd.DataFrame) -> pd.DataFrame:
    """The estimates of :func:`quarterpanic.analysis.change.assess_changes` with a ``sentence`` each."""
    return estimates.assign(sentence=[change_sentence(row) for row in estimates.to_dict("records")])


def change_title(row: Mapping[str, Any]) -> str:
    """A chart title that states a before/after estimate ("Northwind Traders: panic index fell from 3.9 to 0.1
    after deal desk (from 2024-10-01)"), or why there is none."""
    where = str(row["org"]) if row.get("segment") in (None, "all") else f"{row['org']} ({row['segment']})"
    what, unit = _change_subject(str(row["quantity"]))
    if row["status"] == INSUFFICIENT:
        return f"{where}: too few quarters to judge {what} around {_change_name(row)}"
    verb = "fell" if row["after"] < row["before"] else "rose"
    clear = "" if row.get("direction") in (AWAY_FROM_PANIC, TOWARD_PANIC) else " (no clear change)"
    return (f"{where}: {what} {verb} from {_level_text(row['before'], unit)} to {_level_text(row['after'], unit)} "
            f"after {_change_name(row)}{clear}")


def change_headline(estimates: pd.DataFrame) -> str:
    """One sentence per change whose panic index moved significantly ("" when none did).

    Difference-in-differences where there was a control, else before/after; e.g. "After the deal desk
    (2024-10-01) Northwind Traders' panic index fell by 3.6 (95% CI 2.1 to 5.1) against Globex Corporation."
    """
    rows = estimates[(estimates["quantity"] == change_analysis.INDEX) & estimates["significant"].astype(bool)]
    parts = []
    for _, group in rows.groupby(["change", "org", "segment"], sort=False):
        row = group.sort_values("method", key=lambda m: m != change_analysis.DID).iloc[0]
        where = row["org"] if row["segment"] == "all" else f"{row['org']} ({row['segment']})"
        verb = "fell" if row["estimate"] < 0 else "rose"
        low, high = sorted((abs(row["ci_low"]), abs(row["ci_high"])))
        against = f" against {row['control']}, which did not change" if row["method"] == change_analysis.DID else ""
        date, label = pd.Timestamp(row["change_date"]), row.get("label")
        since = f"Since {label} began on {date:%Y-%m-%d}" if isinstance(label, str) and label else (
            f"Since the change of {date:%Y-%m-%d}")
        parts.append(f"{since}, the panic index of {where} "
                     f"{verb} by {abs(row['estimate']):.1f} ({ci_label(row['ci_level'])} {low:.1f} to {high:.1f})"
                     f"{against}.")
    return " ".join(parts)


# -- the early warning ---------------------------------------------------------------------------
CHART_LABELS = {"qualification_decay": "qualification decay", "reactive_order_taking": "reactive order-taking"}


def and_list(parts: Sequence[str]) -> str:
    """``["a", "b", "c"]`` -> ``"a, b and c"``."""
    parts = list(parts)
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def early_warning_sentence(status: Mapping[str, Any]) -> str:
    """One organisation's open-quarter status (a row of :func:`~quarterpanic.analysis.early_warning.early_warning`) in words."""
    where = f"{status['org']}, as of week {status['week']} of {status['quarter']}"
    level = status["status"]
    if level == early_warning.NO_BASELINE:
        return f"{where}: too few calm quarters ({status['baseline_quarters']}) to compare the quarter with."
    if level == early_warning.NOT_STARTED:
        return f"{where}: no data for this quarter yet."
    if level == NOT_MEASURED:
        needs = []
        for detail in status["details"]:
            needs.extend(n for n in detail.get("needs", []) if n not in needs)
        charts = and_list([CHART_LABELS[d["component"]] for d in status["details"]])
        return f"{where}: nothing to watch — {charts} cannot be measured (the data have no {'; '.join(needs)})."
    if level == early_warning.WARNING:
        parts = [f"{CHART_LABELS[s['component']]} (since week {s['since_week']})" for s in status["signals"]]
        return f"{where}: panic signals emerging in {and_list(parts)}."
    if level == early_warning.WATCH:
        parts = [f"{CHART_LABELS[d['component']]} (CUSUM {d['cusum']:.1f} of {d['h']:.1f})" for d in status["details"]]
        return f"{where}: watch — drifting towards the alarm line in {and_list(parts)}."
    return f"{where}: no panic signals in {and_list([CHART_LABELS[d['component']] for d in status['details']])}."


def early_warning_sentences(status: pd.DataFrame) -> pd.DataFrame:
    """The early-warning status table with a ``sentence`` per organisation in place of its ``details``."""
    sentences = [early_warning_sentence(row) for row in status.to_dict("records")]
    out = status.drop(columns=["details"]).assign(sentence=sentences)
    columns = [c for c in early_warning.STATUS_COLUMNS if c != "details"]
    return out[columns[: columns.index("signals") + 1] + ["sentence"] + columns[columns.index("signals") + 1:]]


# -- Markdown for the pages ----------------------------------------------------------------------
def bold_text(text: str) -> str:
    """``text`` as bold Markdown, its CRM text escaped."""
    return f"**{escape_text(text)}**"


def bold_sentence(text: str) -> str:
    """A headline as one bold Markdown sentence (a full stop added), its CRM text escaped."""
    return bold_text(f"{text}.")


def bullet_list(sentences: Sequence[str]) -> str:
    """Sentences as a Markdown bullet list, each escaped (CRM text is never read as markup)."""
    return "\n".join(f"* {escape_text(sentence)}" for sentence in sentences)


def bold_names(names: Sequence[str]) -> str:
    """``["A", "B"]`` -> ``"**A**, **B**"``, each name escaped."""
    return ", ".join(f"**{escape_text(name)}**" for name in names)


def markdown_lines(rows: pd.DataFrame, line: Callable[[Any], str], empty: str) -> str:
    """One Markdown line per row (``line`` gets each ``itertuples`` row and escapes its CRM text), or ``empty``."""
    return "\n".join(line(row) for row in rows.itertuples()) if len(rows) else empty


def supported_analyses_lines(table: pd.DataFrame) -> list[str]:
    """What ``quarterpanic validate`` says per organisation: the analyses its data support, and what unlocks the rest.

    ``table`` is :func:`quarterpanic.analysis.inputs.supported_analyses`.
    """
    lines = ["analyses the data support, per organisation:"]
    for org, rows in table.groupby("org", sort=True):
        supported = rows.loc[rows["supported"], "metric"].tolist()
        signals = next((s for s in rows["signals"] if s), [])
        lines.append(f"  {org}: {len(supported)} of {len(rows)} analyses measurable")
        if supported:
            lines.append(f"    measured: {', '.join(supported)}")
        if signals:
            lines.append(f"    qualification signals used: {', '.join(signals)}")
        unlock: dict[str, list[str]] = {}
        for row in rows[~rows["supported"]].itertuples(index=False):
            for need in row.needs:
                unlock.setdefault(need, []).append(row.metric)
        for need, metrics in unlock.items():
            lines.append(f"    not measured: {', '.join(metrics)} — needs {need}")
    return lines

