"""Charts' roles, headlines, sentences and key figures of the qualification-decay notebook."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import pandas as pd

from quarterpanic.analysis import outcomes
from quarterpanic.analysis.features import quarter_roles
from quarterpanic.analysis.findings import ALL_SEGMENTS, INSUFFICIENT, NOT_MEASURED, OK
from quarterpanic.analysis.qualification import COMPONENT
from quarterpanic.params import defaults
from quarterpanic.report.words import describe, pct, points


# -- for reports ----------------------------------------------------------------------------------
def chart_roles(
    features: pd.DataFrame,
    params: Mapping[str, Any] | None = None,
    *,
    recent: int = 2,
    findings: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """:func:`quarter_roles` for charts: recent quarters against a calm baseline.

    With ``params["quarters"]`` set, those quarters are shown. Otherwise each
    organisation shows its last ``recent`` complete quarters and its open
    one (organisations have their own fiscal calendars, so one list of labels
    would not fit them all). The baseline is ``params["baseline_quarters"]``,
    else the other complete quarters — without those flagged in
    ``findings``, when given, so that the baseline is calm.
    """
    params = {**defaults(), **(params or {})}
    if params.get("quarters"):
        roles = quarter_roles(features, params)
    else:
        roles = quarter_roles(features, {**params, "baseline_quarters": None})
        complete = roles["quarter_complete"]
        from_last = roles[complete].groupby("org").cumcount(ascending=False).reindex(roles.index)
        roles["shown"] = ~complete | (from_last < recent)
        roles["judged"] = roles["shown"] & complete
        if params.get("baseline_quarters"):
            roles["baseline"] = complete & roles["quarter"].isin(params["baseline_quarters"])
        else:
            roles["baseline"] = complete & ~roles["shown"]
    if findings is not None and not params.get("baseline_quarters"):
        flagged = _judged_main(findings)
        flagged = set(map(tuple, flagged.loc[flagged["flagged"], ["org", "quarter"]].to_numpy()))
        hot = pd.Series([(o, q) in flagged for o, q in zip(roles["org"], roles["quarter"])], index=roles.index)
        roles["baseline"] &= ~hot
    return roles


def not_measured_text(findings: pd.DataFrame, org: str | None = None) -> str:
    """"<org>: qualification not measured — the data have no ..." for the organisations (of ``org``, or all)
    whose qualification decay could not be measured at all; "" when it was measured everywhere."""
    main = findings[(findings["metric"] == COMPONENT) & (findings["segment"] == ALL_SEGMENTS)]
    if org is not None:
        main = main[main["org"] == org]
    parts = []
    for name, rows in main.groupby("org", sort=True):
        if len(rows) and (rows["status"] == NOT_MEASURED).all():
            needs = next((n for n in rows["needs"] if isinstance(n, list) and n), [])
            lacking = "; ".join(needs) if needs else "qualification fields"
            parts.append(f"{name}: qualification not measured — the data have no {lacking}")
    return "; ".join(parts)


def _judged_main(findings: pd.DataFrame) -> pd.DataFrame:
    main = findings[(findings["metric"] == COMPONENT) & (findings["segment"] == ALL_SEGMENTS)]
    return main[(main["status"] == OK) & main["p_value"].notna()]


def decay_headline(findings: pd.DataFrame, org: str, quarters: Sequence[str] | None = None) -> str:
    """One sentence on an organisation's qualification decay, for a chart title.

    Names the latest flagged quarter (among ``quarters``, when given) with
    its rates before and after the onset; else says that none was flagged,
    or that there was too little data to judge.
    """
    judged = _judged_main(findings[findings["org"] == org])
    if judged.empty:
        return not_measured_text(findings, org) or f"{org}: too few new deals per quarter to judge qualification"
    flagged = judged[judged["flagged"]]
    named = flagged if quarters is None else flagged[flagged["quarter"].isin(list(quarters))]
    count = f"{len(flagged)} of {len(judged)} quarters flagged"
    if named.empty:
        where = "" if quarters is None else " in the quarters shown"
        return f"{org}: no significant late-quarter drop in qualification{where} ({count})"
    last = named.iloc[-1]
    return (
        f"{org}: in {last['quarter']} qualification fell from {pct(last['rate_before'])} to "
        f"{pct(last['rate_after'])} from week {int(last['onset_week'])} on ({count})"
    )


def heatmap_headline(findings: pd.DataFrame, org: str) -> str:
    """Title of a quarter × week heatmap: which quarters fell late, and the usual level of the others."""
    judged = _judged_main(findings[findings["org"] == org])
    if judged.empty:
        return not_measured_text(findings, org) or f"{org}: too few new deals per quarter to judge qualification"
    overall = (judged["rate_before"] * judged["n_before"] + judged["rate_after"] * judged["n_after"]) / (
        judged["n_before"] + judged["n_after"])
    flagged = judged["flagged"].astype(bool)
    usual = f"{pct(overall[~flagged].mean())} qualified" if (~flagged).any() else ""
    if not flagged.any():
        return f"{org}: no quarter fell late; new deals are {usual} week after week"
    text = f"{org}: qualification falls late in {', '.join(judged.loc[flagged, 'quarter'])}"
    return text + (f"; the other quarters stay near {usual}" if usual else "")


def forest_headline(findings: pd.DataFrame) -> str:
    """Title of the forest plot of decay estimates: how many quarters were flagged, and the largest drop."""
    judged = _judged_main(findings)
    if judged.empty:
        return not_measured_text(findings) or "Too few new deals to judge qualification in any complete quarter"
    flagged = judged[judged["flagged"]]
    text = f"Qualification decay flagged in {len(flagged)} of {len(judged)} complete quarters"
    if len(flagged):
        top = flagged.loc[flagged["estimate"].idxmax()]
        text += f"; the largest drop was {points(top['estimate'])} ({top['org']}, {top['quarter']})"
    return text


def summary_headline(findings: pd.DataFrame) -> str:
    """One sentence on the whole run: how many complete quarters were flagged, and which."""
    judged = _judged_main(findings)
    flagged = judged[judged["flagged"]]
    thin = _thin_complete(findings)
    absent = not_measured_text(findings)
    if judged.empty and absent:
        return f"Qualification decay could not be judged in any quarter ({absent})"
    text = f"Qualification decay was flagged in {len(flagged)} of {len(judged)} complete quarters judged"
    if len(flagged):
        text += " (" + "; ".join(
            f"{org}: {', '.join(rows['quarter'])}" for org, rows in flagged.groupby("org", sort=True)) + ")"
    if thin:
        text += f"; {thin} more had too few new deals to judge"
    if absent:
        text += f"; {absent}"
    basis = signals_text(findings)
    return text + (f". {basis}" if basis else "")


SIGNAL_WORDS = {
    "bant": "BANT flags", "next_step": "a written next step", "lead_score": "lead score",
    "amount_at_creation": "an amount entered at creation", "stage_at_creation": "the stage at creation",
    "short_cycle": "a realistic planned close date",
}


def signals_text(findings: pd.DataFrame) -> str:
    """Which signals the qualification rule used, per organisation, when any differs from BANT and next step.

    E.g. "Qualification was judged on lead score and the stage at creation for Northwind Traders (the export
    has no BANT flags or next step)"; "" when every organisation was judged on today's rule.
    """
    main = findings[(findings["metric"] == COMPONENT) & (findings["segment"] == ALL_SEGMENTS)]
    if "signals" not in main:
        return ""
    used: dict[tuple[str, ...], list[str]] = {}
    for org, rows in main.groupby("org", sort=True):
        signals = next((tuple(s) for s in rows["signals"] if isinstance(s, list) and s), ())
        if signals and signals != ("bant", "next_step"):
            used.setdefault(signals, []).append(str(org))
    parts = []
    for signals, orgs in used.items():
        names = [SIGNAL_WORDS.get(s, s) for s in signals]
        what = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        parts.append(f"Qualification was judged on {what} for {', '.join(orgs)}")
    return "; ".join(parts)


def _thin_complete(findings: pd.DataFrame) -> int:
    """How many complete quarters had too little data for a qualification verdict."""
    main = findings[(findings["metric"] == COMPONENT) & (findings["segment"] == ALL_SEGMENTS)]
    return int(((main["status"] == INSUFFICIENT) & main["quarter_complete"].astype(bool)).sum())


def findings_in_words(findings: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """The findings as plain sentences (:func:`quarterpanic.report.words.describe`), one row each.

    Returns ``org``, ``quarter``, ``segment``, ``metric``, ``flagged`` and
    ``finding`` (the sentence); only the ``metrics`` given, if any.
    """
    rows = findings if metrics is None else findings[findings["metric"].isin(list(metrics))]
    sentences = [describe(row) for row in rows.to_dict("records")]
    return rows[["org", "quarter", "segment", "metric", "flagged"]].assign(finding=sentences).reset_index(drop=True)


def summary_figures(findings: pd.DataFrame) -> dict[str, Any]:
    """Key figures of a run for :func:`quarterpanic.report.artifacts.save_summary`.

    ``quarters_judged``, ``quarters_flagged``, ``quarters_insufficient``
    (complete quarters with too little data),
    ``flagged_quarters`` (org → labels), ``decay`` (the main findings) and
    ``outcome_means`` (metric → mean estimate in flagged and other quarters).
    """
    main = findings[(findings["metric"] == COMPONENT) & (findings["segment"] == ALL_SEGMENTS)]
    judged = _judged_main(findings)
    columns = [c for c in ["org", "quarter", "estimate", "ci_low", "ci_high", "p_value", "q_value", "onset_week",
                           "flagged", "status", "n", "method", "quarter_complete"] if c in main]
    return {
        "quarters_judged": len(judged),
        "quarters_flagged": int(judged["flagged"].sum()),
        "quarters_insufficient": _thin_complete(findings),
        "flagged_quarters": {org: list(rows["quarter"]) for org, rows in judged[judged["flagged"]].groupby("org")},
        "decay": main[columns],
        "outcome_means": {
            metric: outcomes.flagged_contrast(findings, metric) for metric in outcomes.ONSET_METRICS + outcomes.QUARTER_END_METRICS
        },
    }


def contrast_headline(findings: pd.DataFrame, metric: str, subject: str, style: str = "percent") -> str:
    """A chart title contrasting ``metric`` in quarters flagged for qualification decay with the others.

    Reads "``subject`` <mean> in the N quarters flagged for decay (<mean> in
    the M others)". ``style`` formats the means: ``"percent"`` (31%),
    ``"points"`` (10 points), ``"change"`` (−12%), ``"ratio"`` (0.52×) or
    ``"score"`` (14.8 points).
    """
    contrast = outcomes.flagged_contrast(findings, metric)
    fmt = {
        "percent": lambda v: f"{v:.0%}",
        "points": lambda v: f"{100 * v:.0f} points",
        "change": lambda v: f"{v:+.0%}",
        "ratio": lambda v: f"{v:.2f}×",
        "score": lambda v: f"{v:.1f} points",
    }[style]
    if contrast["n_flagged"] == 0 and contrast["n_other"] == 0:
        return f"{subject} … too little data to tell"
    if contrast["n_flagged"] == 0:
        return f"{subject} {fmt(contrast['other'])} on average (no quarter flagged for decay)"
    text = f"{subject} {fmt(contrast['flagged'])} in the {contrast['n_flagged']} quarters flagged for decay"
    if contrast["n_other"]:
        text += f" ({fmt(contrast['other'])} in the {contrast['n_other']} others)"
    return text
