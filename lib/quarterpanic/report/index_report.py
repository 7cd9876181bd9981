"""The panic index in words and charts: the executive headline, each component as a phrase, the index bars."""
from __future__ import annotations

import textwrap
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns

from quarterpanic.analysis import change, early_warning
from quarterpanic.analysis.findings import ALL_SEGMENTS, NOT_MEASURED, OK
from quarterpanic.analysis.panic_index import (
    CALM, COMPONENTS, INSUFFICIENT_LEVEL, KEYS, NOT_ENOUGH_EVIDENCE, PANIC, WATCH,
)
from quarterpanic.report import plots
from quarterpanic.report.safe import escape_text
from quarterpanic.report.words import (
    CHART_LABELS, bookings_phrase, change_headline, change_sentence, change_title, ci_label, ci_level_of,
    markdown_lines,
)
from quarterpanic.util import finite_or_none


def size_class_headline(sizes: pd.DataFrame) -> str:
    """The size classes that panicked most often, from :func:`by_size_class` ("Mid and enterprise organisations
    panicked most often (50% of quarters each)")."""
    if sizes.empty or not sizes["panic_quarters"].any():
        return "No size class had a quarter in panic"
    top = sizes[sizes["panic_share"] == sizes["panic_share"].max()]
    names = list(top["size_class"])
    who = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    each = " each" if len(names) > 1 else ""
    return f"{who.capitalize()} organisations panicked most often ({top['panic_share'].iloc[0]:.0%} of quarters{each})"


# -- in plain words -----------------------------------------------------------------------------------
def _finite(*values: Any) -> bool:
    return all(finite_or_none(v) is not None for v in values)


def effect_phrase(row: Mapping[str, Any], *, short: bool = False) -> str:
    """One component's finding as a phrase a reader without statistics understands.

    ``row`` is a :func:`component_scores` row (or a findings row) of one of
    :data:`COMPONENTS`; ``short=True`` leaves out the onset week. Examples:
    "late-quarter deals were qualified 34 points less often (95% CI 25–43)",
    "late-quarter deals won 48% less often (95% CI 39–56%)".
    """
    metric, estimate = row["component"] if "component" in row else row["metric"], finite_or_none(row["estimate"])
    low, high = finite_or_none(row.get("ci_low")), finite_or_none(row.get("ci_high"))
    if row.get("status") == NOT_MEASURED:
        needs = row.get("needs")
        lacking = f" (needs {'; '.join(needs)})" if isinstance(needs, (list, tuple)) and len(needs) else ""
        return f"{metric.replace('_', ' ')} not measured{lacking}"
    if estimate is None or row.get("status") == "insufficient data":
        return f"too little data to measure {metric.replace('_', ' ')}"
    onset = finite_or_none(row.get("onset_week"))
    late = "late-quarter deals" if short or onset is None else f"deals created from week {onset:.0f} on"
    won_late = "deals won late" if short or onset is None else f"deals won from week {onset:.0f} on"
    has_ci = _finite(low, high)
    label = ci_label(ci_level_of(row))
    if metric == "qualification_decay":
        size, direction = abs(100 * estimate), "less" if estimate >= 0 else "more"
        ci = f" ({label} {100 * low:.0f}–{100 * high:.0f})" if has_ci and estimate >= 0 else (
            f" ({label} {-100 * high:.0f}–{-100 * low:.0f})" if has_ci else "")
        return f"{late} were qualified {size:.0f} points {direction} often{ci}"
    if metric == "win_rate_ratio":
        change = estimate - 1
        if has_ci and high < 1:
            ci = f" ({label} {100 * (1 - high):.0f}–{100 * (1 - low):.0f}%)"
        elif has_ci and low > 1:
            ci = f" ({label} {100 * (low - 1):.0f}–{100 * (high - 1):.0f}%)"
        else:
            ci = f" ({label} from {100 * (1 - low):.0f}% less to {100 * (high - 1):.0f}% more)" if has_ci else ""
        return f"{late} won {abs(100 * change):.0f}% {'less' if change <= 0 else 'more'} often{ci}"
    if metric == "discount_uplift":
        ci = f" ({label} {100 * low:.1f} to {100 * high:.1f})" if has_ci else ""
        return f"{won_late} carried {abs(100 * estimate):.1f} points {'more' if estimate >= 0 else 'less'} discount{ci}"
    if metric == "reactive_order_taking":
        ci = f" ({label} {low:.1f}–{high:.1f}×)" if has_ci else ""
        if short:
            return f"sales-ops firefighting {multiplier_words(estimate)}{ci}"
        since = f"from week {onset:.0f} on" if onset is not None else "late in the quarter"
        return f"unplanned sales-ops requests per working day ran at {estimate:.1f}× the earlier weeks' pace {since}{ci}"
    if metric == "bookings_backloading" and row.get("metric") == metric:  # the finding itself
        return bookings_phrase(row)
    if metric == "bookings_backloading":
        # The index's row holds the month-3 share and the other quarters' median share (its centre).
        centre = finite_or_none(row.get("centre"))
        usual = f", against {100 * centre:.0f}% in the organisation's other quarters" if centre is not None else ""
        return bookings_phrase({**row, "metric": "month3_bookings_share"}) + usual
    return f"{metric.replace('_', ' ')} {estimate:.3g}"


def multiplier_words(ratio: float) -> str:
    """A rate ratio in words: 2.0 → "doubled", 3.1 → "tripled", 1.4 → "rose by 40%", 0.7 → "fell by 30%"."""
    if ratio >= 4.5:
        return f"rose {ratio:.1f}-fold"
    for low, words in ((3.5, "quadrupled"), (2.5, "tripled"), (1.75, "doubled")):
        if ratio >= low:
            return words
    return f"rose by {100 * (ratio - 1):.0f}%" if ratio >= 1 else f"fell by {100 * (1 - ratio):.0f}%"


def headline(index: pd.DataFrame, scores: pd.DataFrame, changes: pd.DataFrame | None = None) -> str:
    """The one sentence of the executive summary, made from the numbers.

    The organisation with the most panic quarters (ties: the highest index),
    how often it panicked, and what happened in its latest panic quarter;
    then the other organisations' counts. E.g. "Globex Corporation panicked
    in 4 of its last 10 quarters; in FY2026-Q3 late-quarter deals were
    qualified 34 points less often (95% CI 25–43) and sales-ops firefighting
    tripled (95% CI 2.4–3.6×). Northwind Traders: 3 of 10; Brightline Studio: none of 10."
    With ``changes`` (:func:`quarterpanic.analysis.change.assess_changes`), a change whose panic
    index moved significantly is said too (:func:`quarterpanic.report.words.change_headline`).
    """
    said = _panic_headline(index, scores)
    moved = change_headline(changes) if changes is not None and not changes.empty else ""
    return f"{said} {moved}" if moved else said


def _panic_headline(index: pd.DataFrame, scores: pd.DataFrame) -> str:
    table = index[(index["segment"] == ALL_SEGMENTS) & index["panic_index"].notna()]
    if table.empty:
        basis = rests_on_sentence(index, scores)
        return "Too little data to compute a panic index for any quarter." + (f" {basis}" if basis else "")
    per_org = (
        table.assign(_panic=table["level"] == PANIC)
        .groupby("org")
        .agg(panic=("_panic", "sum"), quarters=("quarter", "size"), peak=("panic_index", "max"))
        .sort_values(["panic", "peak"], ascending=False)
    )
    org, top = per_org.index[0], per_org.iloc[0]
    if top["panic"] == 0:
        peak = table.loc[table["panic_index"].idxmax()]
        basis = rests_on_sentence(index, scores)
        return (
            f"No organisation panicked in its complete quarters; the highest panic index was "
            f"{peak['panic_index']:.1f} ({peak['org']}, {peak['quarter']}, {peak['level']})."
        ) + (f" {basis}" if basis else "")
    latest = table[(table["org"] == org) & (table["level"] == PANIC)]["quarter"].max()
    rows = scores[(scores["org"] == org) & (scores["quarter"] == latest) & (scores["segment"] == ALL_SEGMENTS)]
    rows = rows.set_index("component")
    phrases = [
        effect_phrase({**rows.loc[name].to_dict(), "component": name}, short=True)
        for name in ("qualification_decay", "reactive_order_taking", "bookings_backloading")
        if name in rows.index and _finite(rows.loc[name, "estimate"])
    ]
    what = f"; in {latest} " + " and ".join(phrases) if phrases else f", most recently in {latest}"
    others = [
        f"{name}: {'none' if row['panic'] == 0 else int(row['panic'])} of {int(row['quarters'])}"
        for name, row in per_org.iloc[1:].iterrows()
    ]
    tail = (". " + "; ".join(others)) if others else ""
    basis = rests_on_sentence(index, scores)
    return f"{org} panicked in {int(top['panic'])} of its last {int(top['quarters'])} quarters{what}{tail}." + (
        f" {basis}" if basis else "")


def rests_on_sentence(index: pd.DataFrame, scores: pd.DataFrame) -> str:
    """What the org-wide index rests on, when some component could not be measured ("" when all were).

    E.g. "The index rests on reactive order-taking only; not measured: qualification decay, win rate
    ratio and discount uplift (needs BANT flags or next_step or ...)."
    """
    rows = index[index["segment"] == ALL_SEGMENTS]
    if "not_measured" not in rows or not rows["not_measured"].map(len).any():
        return ""
    used = [c.metric for c in COMPONENTS if any(c.metric in r for r in rows["rests_on"])]
    absent = [c.metric for c in COMPONENTS if any(c.metric in r for r in rows["not_measured"])]
    absent = [name for name in absent if name not in used] or absent
    named = scores[(scores["segment"] == ALL_SEGMENTS) & (scores["status"] == NOT_MEASURED)]
    needs: list[str] = []
    for value in named["needs"]:
        for need in value if isinstance(value, list) else []:
            if need not in needs:
                needs.append(need)

    def words(names: list[str]) -> str:
        labels = [n.replace("_", " ") for n in names]
        return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]

    need_text = f" (needs {'; '.join(needs)})" if needs else ""
    if not used:
        return f"No component of the index could be measured: {words(absent)} lack their inputs{need_text}."
    only = " only" if len(used) == 1 else ""
    return f"The index rests on {words(used)}{only}; not measured: {words(absent)}{need_text}."


def top_findings(scores: pd.DataFrame, index: pd.DataFrame, n: int = 8) -> pd.DataFrame:
    """The components that pushed quarters furthest towards panic, in plain words.

    Only quarters at ``watch`` or ``panic`` level and components with a
    positive contribution, largest first. Returns ``org``, ``quarter``,
    ``level``, ``panic_index``, ``component``, ``z``, ``contribution`` and
    ``sentence`` (:func:`effect_phrase`).
    """
    hot = index[index["level"].isin([WATCH, PANIC])][KEYS + ["level", "panic_index"]]
    rows = scores.merge(hot, on=KEYS, how="inner")
    rows = rows[(rows["contribution"] > 0) & rows["estimate"].notna()]
    rows = rows.sort_values("contribution", ascending=False).head(n).reset_index(drop=True)
    rows["sentence"] = [effect_phrase(row) for row in rows.to_dict("records")]
    return rows[["org", "quarter", "segment", "level", "panic_index", "component", "z", "contribution", "sentence"]]


def index_table(index: pd.DataFrame) -> pd.DataFrame:
    """Org-wide index and level per quarter, one row per organisation (a compact table for readers).

    A value with ``insufficient data`` reached ``watch`` without a detector confirming it: "(unconfirmed)",
    not "n/a", which is for a quarter with no index at all.
    """
    rows = index[index["segment"] == ALL_SEGMENTS]
    has_value = rows["panic_index"].notna()
    words = rows["level"].map({PANIC: "(panic)", WATCH: "(watch)", CALM: "", INSUFFICIENT_LEVEL: "n/a",
                               NOT_ENOUGH_EVIDENCE: "not measured"})
    words = words.where(~(has_value & (rows["level"] == INSUFFICIENT_LEVEL)), "(unconfirmed)")
    text = rows["panic_index"].map(lambda v: "" if pd.isna(v) else f"{round(v, 1) + 0.0:.1f}") + " " + words
    return rows.assign(cell=text.str.strip()).pivot(index="org", columns="quarter", values="cell").fillna("")


def money(value: float, currency: str = "") -> str:
    """12_345_678 → "12.3M EUR"; 45_600 → "45.6k EUR"."""
    if value is None or not np.isfinite(value):
        return "n/a"
    size = abs(value)
    text = f"{value / 1e6:.1f}M" if size >= 1e6 else f"{value / 1e3:.0f}k" if size >= 1e4 else f"{value:,.0f}"
    return f"{text} {currency}".strip()


# -- charts -------------------------------------------------------------------------------------------
def plot_index(index: pd.DataFrame, thresholds: Mapping[str, float], org: str, ax: Any = None) -> Any:
    """One organisation's panic index over its quarters: bars coloured by level, thresholds drawn.

    The title states the finding ("Globex Corporation panicked in 4 of 10 quarters").
    """
    rows = index[(index["org"] == org) & (index["segment"] == ALL_SEGMENTS)].sort_values("quarter")
    if rows.empty:
        return plots.label_axes(plots.no_data(ax), title=f"{org}: no complete quarter to index")
    ax = plots._axes(ax, figsize=(max(6, 0.7 * len(rows) + 2), 3.6))
    colors = [plots.LEVEL_COLORS.get(level, plots.BASELINE_COLOR) for level in rows["level"]]
    ax.bar(rows["quarter"], rows["panic_index"].fillna(0), color=colors)
    if {"index_low", "index_high"} <= set(rows.columns):
        # The index's own 95% interval: how big the quarter's departure from calm (0) may be.
        ax.errorbar(rows["quarter"], rows["panic_index"], color=plots.BASELINE_COLOR, linestyle="none",
                    yerr=[rows["panic_index"] - rows["index_low"], rows["index_high"] - rows["panic_index"]],
                    capsize=3, linewidth=1.0)
    for name, style in (("watch", ":"), ("panic", "--")):
        ax.axhline(float(thresholds[name]), color=plots.LEVEL_COLORS[name], linestyle=style, linewidth=1.2,
                   label=f"{name} from {float(thresholds[name]):g}")
    ax.axhline(0, color=plots.BASELINE_COLOR, linewidth=0.8)
    panic = int((rows["level"] == PANIC).sum())
    # Only quarters with an index were judged: the others cannot have "stayed clear" of anything.
    judged = int(rows["panic_index"].notna().sum())
    if not judged:
        verdict = "has no panic index: nothing it rests on could be measured"
    elif panic:
        verdict = f"panicked in {panic} of {judged} quarters"
    else:
        verdict = f"stayed clear of panic in all {judged} quarters"
    plots.label_axes(ax, title=f"{org} {verdict}", x="Fiscal quarter", y="Panic index (calm SDs, 95% CI)")
    ax.tick_params(axis="x", rotation=45 if len(rows) > 6 else 0)
    ax.legend(loc="upper left")
    return ax


def plot_contributions(scores: pd.DataFrame, org: str, ax: Any = None) -> Any:
    """Stacked contributions of the components to one organisation's index, quarter by quarter."""
    rows = scores[(scores["org"] == org) & (scores["segment"] == ALL_SEGMENTS)]
    grid = rows.pivot_table(index="quarter", columns="component", values="contribution", aggfunc="sum").fillna(0)
    grid = grid[[c.metric for c in COMPONENTS if c.metric in grid.columns]]
    if grid.empty:
        return plots.label_axes(plots.no_data(ax), title=f"{org}: no complete quarter to index")
    ax = plots._axes(ax, figsize=(max(6, 0.7 * len(grid) + 2), 3.6))
    colors = sns.color_palette("colorblind", n_colors=len(COMPONENTS))
    positive, negative = np.zeros(len(grid)), np.zeros(len(grid))
    for color, name in zip(colors, grid.columns):
        values = grid[name].to_numpy()
        bottom = np.where(values >= 0, positive, negative)
        ax.bar(grid.index, values, bottom=bottom, color=color, label=name.replace("_", " "))
        positive += np.clip(values, 0, None)
        negative += np.clip(values, None, 0)
    ax.axhline(0, color=plots.BASELINE_COLOR, linewidth=0.8)
    totals = grid.sum(axis=1)
    leader = rows[rows["quarter"] == totals.idxmax()].sort_values("contribution").iloc[-1]["component"] if len(rows) else ""
    title = f"{org}: {str(leader).replace('_', ' ')} drives the highest quarter ({totals.idxmax()})" if len(grid) else org
    if not rows["z"].notna().any():
        title = f"{org}: no component of the index could be measured"
    plots.label_axes(ax, title=title, x="Fiscal quarter", y="Contribution to the index")
    ax.tick_params(axis="x", rotation=45 if len(grid) > 6 else 0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return ax


# -- the early warning's chart ---------------------------------------------------------------------------------------------
def plot_charts(charts: pd.DataFrame, status: pd.DataFrame, org: str, ax: Any = None) -> Any:
    """One organisation's open-quarter CUSUMs, each as a share of its alarm line (1 = alarm).

    The title is the organisation's status sentence (without its name).
    """
    rows = charts[charts["org"] == org]
    if rows.empty:
        return plots.label_axes(plots.no_data(ax, figsize=(8, 3.6)), title=f"{org}: no open quarter to watch")
    ax = plots._axes(ax, figsize=(8, 3.6))
    colors = dict(zip(early_warning.CHARTS, sns.color_palette("colorblind", n_colors=len(early_warning.CHARTS))))
    for name, part in rows.groupby("chart", sort=False):
        part = part.sort_values("week_of_quarter")
        ax.plot(part["week_of_quarter"], part["cusum"] / part["h"], marker="o", color=colors[name],
                label=CHART_LABELS[name])
    ax.axhline(1.0, color=plots.PANIC_COLOR, linestyle="--", linewidth=1.2, label="alarm line")
    ax.axhline(0.5, color=plots.WATCH_COLOR, linestyle=":", linewidth=1.0, label="watch")
    row = status[status["org"] == org]
    sentence = str(row["sentence"].iloc[0]) if len(row) else org
    title = sentence.split(", as of ", 1)[-1] if ", as of " in sentence else sentence
    title = f"{org}: as of {title}" if ", as of " in sentence else title
    plots.label_axes(ax, title=textwrap.fill(title, 70), x="Week of fiscal quarter", y="CUSUM / alarm line")
    known = row["weeks_in_quarter"].dropna()
    weeks_in_quarter = int(known.iloc[0]) if len(known) else 13
    ax.set_xlim(0.5, weeks_in_quarter + 0.5)
    ax.set_ylim(bottom=0)
    plots.week_ticks(ax, range(1, weeks_in_quarter + 1))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return ax


def plot_index_by_org(index: pd.DataFrame, thresholds: Mapping[str, float], orgs: Sequence[str]) -> list[Any]:
    """:func:`plot_index` for each organisation, one figure each."""
    return [plot_index(index, thresholds, org) for org in orgs]


def plot_contributions_by_org(scores: pd.DataFrame, orgs: Sequence[str]) -> list[Any]:
    """:func:`plot_contributions` for each organisation, one figure each."""
    return [plot_contributions(scores, org) for org in orgs]


def plot_charts_by_org(charts: pd.DataFrame, status: pd.DataFrame) -> list[Any]:
    """:func:`plot_charts` for each organisation of ``status`` that has an early-warning chart."""
    return [plot_charts(charts, status, org) for org in status["org"] if (charts["org"] == org).any()]


def plot_size_classes(sizes: pd.DataFrame) -> Any:
    """The share of quarters in panic per size class (:func:`by_size_class`) with Wilson intervals, titled by
    :func:`size_class_headline`; None, drawing nothing, when ``sizes`` is empty."""
    if sizes.empty:
        return None
    ax = plots.interval_plot(sizes, x="size_class", estimate="panic_share", low="panic_share_low",
                             high="panic_share_high", order=list(sizes["size_class"]), percent=True)
    return plots.label_axes(ax, title=size_class_headline(sizes), x="Size class", y="Share of quarters in panic")


# -- did the change work? ------------------------------------------------------------------------------
def changes_markdown(estimates: pd.DataFrame) -> str:
    """Each change's before/after and difference-in-differences estimates of the panic index and the main
    findings as a Markdown bullet list (CRM text escaped), or how to ask for one."""
    rows = change.main_estimates(estimates)
    return markdown_lines(rows, lambda row: f"* {escape_text(change_sentence(row._asdict()))}",
                          "No change to judge: declare one in the organisation's org.yaml (`changes:` with the "
                          "date it took effect, optionally a segment and a label) or name one in the `changes` "
                          "parameter.")


def plot_changes(result: change.ChangeResult, quantity: str = change.INDEX) -> list[Any]:
    """One chart per change of ``quantity`` (default the panic index) before and after it, with the controls
    (:func:`quarterpanic.report.plots.change_plot`), titled by :func:`quarterpanic.report.words.change_title`."""
    axes = []
    rows = result.estimates[(result.estimates["quantity"] == quantity) & (result.estimates["method"] == change.ITS)]
    for row in rows.to_dict("records"):
        series = result.series[(result.series["change"] == row["change"]) & (result.series["quantity"] == quantity)]
        ok = row["status"] == OK
        ax = plots.change_plot(series, change_date=row["change_date"], before=row["before"] if ok else None,
                               after=row["after"] if ok else None, changed=change.CHANGED)
        axes.append(plots.label_axes(ax, title=plots.chart_text(change_title(row), 80), x="Fiscal quarter (start)",
                                     y=quantity.replace("_", " ")))
    return axes


# -- Markdown -------------------------------------------------------------------------------------------
def intro(as_of: pd.Timestamp, index: pd.DataFrame, size_classes: Mapping[str, str]) -> str:
    """The page's first line (Markdown, CRM text escaped): the as-of time, each organisation of ``index`` with
    its size class, how many complete quarters have an index."""
    orgs = ", ".join(f"**{escape_text(org)}** ({escape_text(size_classes.get(org, 'size unknown'))})"
                     for org in sorted(index["org"].unique()))
    return f"As of **{as_of:%Y-%m-%d %H:%M}**: {orgs}; {len(index)} complete quarters with an index."


def top_findings_markdown(top: pd.DataFrame) -> str:
    """:func:`top_findings` as a Markdown bullet list (CRM text escaped), or a note that none reached *watch*."""
    return markdown_lines(top, lambda row: (
        f"* **{escape_text(row.org)}, {escape_text(row.quarter)}** (index {row.panic_index:.1f}, {row.level}): "
        f"{escape_text(row.sentence)}."
    ), "No quarter reached the *watch* level.")


def discount_cost_markdown(totals: pd.DataFrame) -> str:
    """:func:`discount_cost_totals` as a Markdown bullet list per organisation (CRM text escaped), the interval
    labelled with its ``ci_level``."""
    label = ci_label(ci_level_of(totals))
    return markdown_lines(totals, lambda row: (
        f"* **{escape_text(row.org)}** gave away about **{money(row.cost, row.currency)}** in extra discount "
        f"in {row.quarters} panic quarter{'s' if row.quarters != 1 else ''} "
        f"({label} {money(row.cost_low, row.currency)} to {money(row.cost_high, row.currency)}), "
        f"on {money(row.won_amount, row.currency)} won late."
    ), "No panic quarter with a measurable discount uplift.")


def discount_cost_table(costs: pd.DataFrame) -> pd.DataFrame:
    """:func:`discount_cost` rows rounded for reading (shares to 0.001, amounts to whole units)."""
    return costs.round({"discount_uplift": 3, "won_amount": 0, "cost": 0, "cost_low": 0, "cost_high": 0})


OUTCOME_WORDS = {"won": "won", "lost": "lost", "open": "still open"}


def late_deals_headline(deals: pd.DataFrame) -> str:
    """One Markdown sentence (CRM text escaped) on :func:`late_unqualified_deals`: the largest such deal of
    each organisation, with its account and owner, or a note that there were none."""
    if deals.empty:
        return "No panic quarter with a measured qualification onset: no late unqualified deals to list."
    parts = []
    for org, rows in deals.groupby("org", sort=True):
        top = rows.iloc[0]
        parts.append(
            f"in **{escape_text(org)}** ({escape_text(top['quarter'])}), **{escape_text(top['account'])}** "
            f"({money(top['amount'], top['currency'])}, owned by **{escape_text(top['owner'])}**, "
            f"{OUTCOME_WORDS.get(top['outcome'], escape_text(top['outcome']))})"
        )
    return "The largest unqualified deal opened after the onset: " + "; ".join(parts) + "."


def late_deals_table(deals: pd.DataFrame) -> pd.DataFrame:
    """:func:`late_unqualified_deals` for the page: who owned which deal, for which account, and how it ended.

    Indexed by ``Organisation`` and ``Quarter``, with ``Opportunity``, ``Account``, ``Owner``, ``Week created``,
    ``Amount`` (:func:`money`) and ``Outcome``; pandas escapes the names when the table is shown as HTML.
    """
    return pd.DataFrame({
        "Organisation": deals["org"],
        "Quarter": deals["quarter"],
        "Opportunity": deals["name"],
        "Account": deals["account"],
        "Owner": deals["owner"],
        "Week created": deals["week_of_quarter"],
        "Amount": [money(amount, currency) for amount, currency in zip(deals["amount"], deals["currency"])],
        "Outcome": deals["outcome"].map(OUTCOME_WORDS),
    }).set_index(["Organisation", "Quarter"])


# -- key figures ----------------------------------------------------------------------------------------
def summary_figures(
    *, headline: str, as_of: pd.Timestamp, thresholds: Mapping[str, float], index: pd.DataFrame,
    scores: pd.DataFrame, top: pd.DataFrame, costs: pd.DataFrame, totals: pd.DataFrame, sizes: pd.DataFrame,
    status: pd.DataFrame, changes: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Key figures of the executive summary for :func:`quarterpanic.report.artifacts.save_summary`."""
    return {
        "headline": headline,
        "as_of": as_of,
        "index_thresholds": thresholds,
        "index": index[["org", "quarter", "segment", "size_class", "panic_index", "index_low", "index_high", "level",
                        "n_components", "top_component"]],
        "levels": {org: dict(index[index["org"] == org]["level"].value_counts())
                   for org in sorted(index["org"].unique())},
        "components": scores[["org", "quarter", "segment", "component", "estimate", "z", "weight", "contribution",
                              "status"]],
        "top_findings": top,
        "discount_cost": costs,
        "discount_cost_totals": totals,
        "size_classes": sizes,
        "early_warning": status.drop(columns=["signals"]).assign(signals=[list(s) for s in status["signals"]]),
        "changes": change.main_estimates(changes) if changes is not None else [],
    }
