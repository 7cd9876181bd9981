"""Charts, their roles and headlines, sentences and key figures of the qualification-decay notebook."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd
from pandas.io.formats.style import Styler

from quarterpanic.analysis import outcomes, qualification
from quarterpanic.analysis.features import quarter_roles
from quarterpanic.analysis.findings import ALL_SEGMENTS, INSUFFICIENT, NOT_MEASURED, OK, ci_level_of
from quarterpanic.analysis.qualification import COMPONENT
from quarterpanic.dataset import Dataset
from quarterpanic.params import defaults
from quarterpanic.report import plots
from quarterpanic.report.plots import chart_text
from quarterpanic.report.words import bold_sentence, findings_in_words, pct, points


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


# -- Markdown and tables --------------------------------------------------------------------------
NO_DECAY_VERDICT = "No quarter had enough new deals on both sides of a candidate onset to be judged."
NO_FLAGGED_OUTCOME = "No outcome-side estimate is flagged."


def intro(as_of: pd.Timestamp, features: pd.DataFrame, findings: pd.DataFrame) -> str:
    """The page's first line (Markdown): the as-of time, how many opportunities, the :func:`summary_headline`."""
    return (f"Data as of **{as_of:%Y-%m-%d %H:%M}**, {len(features):,} opportunities. "
            f"{bold_sentence(summary_headline(findings))}")


def flagged_outcome_words(findings: pd.DataFrame) -> pd.DataFrame:
    """:func:`findings_in_words` of the flagged outcome-side metrics (onset and quarter-end ones)."""
    words = findings_in_words(findings, outcomes.ONSET_METRICS + outcomes.QUARTER_END_METRICS)
    return words[words["flagged"]]


def findings_styler(words: pd.DataFrame, *, bold_flagged: bool = False) -> Styler:
    """A :func:`findings_in_words` table for the page: org, quarter, segment and sentence, CRM text escaped,
    flagged rows in bold when ``bold_flagged``."""
    styler = words[["org", "quarter", "segment", "finding"]].style.hide(axis="index").format(escape="html")
    if bold_flagged:
        flagged = words["flagged"].astype(bool)
        styler = styler.apply(lambda row: ["font-weight: bold" if flagged.loc[row.name] else "" for _ in row], axis=1)
    return styler


# -- charts ---------------------------------------------------------------------------------------
def _weeks_of(features: pd.DataFrame, org: str) -> range:
    return range(1, int(features.loc[features["org"] == org, "weeks_in_quarter"].max()) + 1)


def plot_rate_curves(features: pd.DataFrame, roles: pd.DataFrame, findings: pd.DataFrame,
                     orgs: Sequence[str]) -> plt.Figure:
    """One row per organisation: the weekly qualification rate of the shown quarters and the pooled baseline,
    with Wilson bands, titled by :func:`decay_headline`."""
    curves = qualification.with_baseline(features, roles, qualification.qualification_rate_by_week,
                                         ci_level=ci_level_of(findings))
    fig, axes = plt.subplots(len(orgs), 1, figsize=(10, 3.8 * len(orgs)), squeeze=False)
    for ax, org in zip(axes[:, 0], orgs):
        shown = roles.loc[(roles["org"] == org) & roles["shown"], "quarter"]
        plots.band_plot(curves[curves["org"] == org], x="week_of_quarter", y="rate", low="ci_low", high="ci_high",
                        hue="quarter", ax=ax, percent=True, palette={"baseline": plots.BASELINE_COLOR})
        plots.week_ticks(ax, _weeks_of(features, org))
        plots.label_axes(ax, title=chart_text(decay_headline(findings, org, shown), 90),
                         x="Week of fiscal quarter the deal was created in", y="New deals qualified")
    fig.tight_layout()
    return fig


def plot_rate_heatmaps(features: pd.DataFrame, findings: pd.DataFrame, orgs: Sequence[str]) -> list[plt.Axes]:
    """One quarter × week heatmap of the qualification rate per organisation, titled by :func:`heatmap_headline`."""
    weekly = qualification.qualification_rate_by_week(features)
    axes = []
    for org in orgs:
        ax = plots.week_heatmap(weekly[weekly["org"] == org], row="quarter", value="rate", percent=True)
        axes.append(plots.label_axes(ax, title=chart_text(heatmap_headline(findings, org), 90),
                                     x="Week of fiscal quarter the deal was created in", y="Fiscal quarter"))
    return axes


def plot_decay_forest(findings: pd.DataFrame) -> plt.Axes | None:
    """The org-wide decay estimates with their intervals, one line per judged quarter (open ones marked);
    None, drawing nothing, when no quarter could be judged (say :data:`NO_DECAY_VERDICT`)."""
    decay = findings[(findings["metric"] == COMPONENT) & (findings["segment"] == ALL_SEGMENTS)
                     & (findings["status"] == OK)]
    if decay.empty:
        return None
    decay = decay.assign(label=decay["org"] + ", " + decay["quarter"]
                         + decay["quarter_complete"].map({True: "", False: " (open, not judged)"}))
    ax = plots.forest_plot(decay, label="label", percent=True)
    return plots.label_axes(ax, title=chart_text(forest_headline(findings), 90),
                            x="Drop in the share of new deals qualified after the onset (percentage points)", y="")


def _weekly_panels(curves: pd.DataFrame, orgs: Sequence[str], *, x: str, y: str, title: str, xlabel: str,
                   ylabel: str, percent: bool = False, quarter: str = "quarter", sharey: bool = True) -> plt.Figure:
    """One panel per organisation of a weekly curve (shown quarters and baseline) with bands, one headline above."""
    fig, axes = plt.subplots(1, len(orgs), figsize=(4.6 * len(orgs), 4), squeeze=False, sharey=sharey)
    for ax, org in zip(axes[0], orgs):
        plots.band_plot(curves[curves["org"] == org], x=x, y=y, low="ci_low", high="ci_high", hue=quarter, ax=ax,
                        percent=percent, palette={"baseline": plots.BASELINE_COLOR})
        plots.label_axes(ax, title=chart_text(org, 40), x=xlabel, y=ylabel)
        ax.legend(fontsize=8)
    fig.suptitle(chart_text(title, 110), x=0.01, ha="left", fontsize=12, fontweight="bold")
    fig.tight_layout()
    return fig


def _by_close(features: pd.DataFrame, roles: pd.DataFrame, curve: Callable[..., pd.DataFrame],
              **kwargs: Any) -> pd.DataFrame:
    return qualification.with_baseline(features, roles, curve, by=("org", "close_quarter"), quarter="close_quarter",
                                       **kwargs)


def plot_lead_score(features: pd.DataFrame, roles: pd.DataFrame, findings: pd.DataFrame,
                    orgs: Sequence[str]) -> plt.Figure:
    """Lead score at conversion by the week a deal was created, per organisation."""
    return _weekly_panels(
        qualification.with_baseline(features, roles, outcomes.lead_score_by_week, ci_level=ci_level_of(findings)),
        orgs, x="week_of_quarter",
        y="mean", title=contrast_headline(findings, "lead_score_drop", "Lead score at conversion fell by", "score"),
        xlabel="Week created", ylabel="Lead score at conversion")


def plot_win_rate(features: pd.DataFrame, roles: pd.DataFrame, findings: pd.DataFrame,
                  orgs: Sequence[str]) -> plt.Figure:
    """The win rate of closed deals by the week they were created, per organisation."""
    return _weekly_panels(
        qualification.with_baseline(features, roles, outcomes.win_rate_by_creation_week,
                                    ci_level=ci_level_of(findings)), orgs, x="week_of_quarter",
        y="rate", percent=True, xlabel="Week created", ylabel="Closed deals won",
        title=contrast_headline(findings, "win_rate_ratio",
                                "Deals created after the onset won, relative to earlier deals, at", "ratio"))


def plot_discount(features: pd.DataFrame, roles: pd.DataFrame, findings: pd.DataFrame,
                  orgs: Sequence[str]) -> plt.Figure:
    """The mean discount of won deals by the week they closed, per organisation."""
    return _weekly_panels(
        _by_close(features, roles, outcomes.discount_by_close_week, ci_level=ci_level_of(findings)), orgs,
        x="close_week", y="mean", percent=True,
        quarter="close_quarter", xlabel="Week closed", ylabel="Discount of won deals",
        title=contrast_headline(findings, "discount_uplift", "The discount on deals won after the onset rose by",
                                "points"))


def plot_deal_size(features: pd.DataFrame, roles: pd.DataFrame, findings: pd.DataFrame,
                   orgs: Sequence[str]) -> plt.Figure:
    """The typical (geometric-mean) amount of closed deals by the week they closed, per organisation."""
    return _weekly_panels(
        _by_close(features, roles, outcomes.deal_size_by_close_week, ci_level=ci_level_of(findings)), orgs,
        x="close_week", y="mean",
        quarter="close_quarter", xlabel="Week closed", sharey=False, ylabel="Typical amount of closed deals",
        title=contrast_headline(findings, "last_week_deal_size_change",
                                "Deals closed in the last week changed in size by", "change"))


def plot_push_rates(features: pd.DataFrame, dataset: Dataset, findings: pd.DataFrame,
                    orgs: Sequence[str]) -> plt.Figure:
    """One row per organisation: the share of deals due in a quarter's last two weeks pushed into the next
    quarter, with intervals against the median quarter."""
    pushes = outcomes.push_rate_by_quarter(outcomes.close_date_pushes(features, dataset),
                                           ci_level=ci_level_of(findings))
    fig, axes = plt.subplots(len(orgs), 1, figsize=(10, 3.4 * len(orgs)), squeeze=False, sharey=True)
    for ax, org in zip(axes[:, 0], orgs):
        rows = pushes[pushes["org"] == org]
        plots.interval_plot(rows, x="quarter", estimate="rate", order=rows["quarter"], ax=ax, percent=True,
                            reference=rows["rate"].median() if len(rows) else None, reference_label="median quarter")
        plots.label_axes(ax, title=chart_text(org, 60), x="Fiscal quarter", y="Due deals pushed out")
    fig.suptitle(chart_text(contrast_headline(
        findings, "close_date_push_rate", "Deals due in the last two weeks pushed into the next quarter:", "percent"),
        110), x=0.01, ha="left", fontsize=12, fontweight="bold")
    fig.tight_layout()
    return fig
