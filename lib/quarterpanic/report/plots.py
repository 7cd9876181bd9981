"""Chart helpers: tidy frame in, matplotlib ``Axes`` out, one house theme.

Every helper takes the frame an analysis function returned plus column
names, draws on ``ax`` (a new figure when omitted) and returns the axes.
Titles are the caller's: they should state the finding ("Qualification fell
by half after week 10"), not name the metric.
"""
from __future__ import annotations

import textwrap
from typing import Any, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

PANIC_COLOR = "#c0392b"
CALM_COLOR = "#2c7fb8"
WATCH_COLOR = "#e69f00"
BASELINE_COLOR = "#7f7f7f"
LEVEL_COLORS = {"calm": CALM_COLOR, "watch": WATCH_COLOR, "panic": PANIC_COLOR}


def chart_text(text: Any, width: int | None = None) -> str:
    """CRM text made safe for a matplotlib label (``$`` would start mathtext), wrapped at ``width`` characters."""
    text = str(text).replace("$", r"\$")
    return textwrap.fill(text, width, break_long_words=False) if width else text


def set_theme() -> None:
    """The house style: white grid, readable fonts, a colour-blind-safe palette."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", font_scale=1.0)
    plt.rcParams.update(
        {
            "figure.figsize": (9, 4.5),
            "figure.dpi": 100,
            "axes.titlesize": 13,
            "axes.titleweight": "bold",
            "axes.titlelocation": "left",
            "axes.spines.top": False,
            "axes.spines.right": False,
            "legend.frameon": False,
        }
    )


def _axes(ax: plt.Axes | None, figsize: tuple[float, float] | None = None) -> plt.Axes:
    if ax is not None:
        return ax
    _, ax = plt.subplots(figsize=figsize)
    return ax


NO_DATA = "no data"


def no_data(ax: plt.Axes | None = None, message: str = NO_DATA, figsize: tuple[float, float] | None = None) -> plt.Axes:
    """An empty axes that says ``message`` in its middle: what a chart of no rows (or no finite values) shows."""
    ax = _axes(ax, figsize)
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color=BASELINE_COLOR, fontsize=12)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    return ax


def _no_values(data: pd.DataFrame, *columns: str) -> bool:
    """True when no row of ``data`` has a finite value in every one of ``columns`` (nothing to draw, no limits)."""
    if data.empty:
        return True
    values = data[list(columns)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    return not np.isfinite(values).all(axis=1).any()


def band_plot(
    data: pd.DataFrame,
    *,
    x: str,
    y: str,
    low: str,
    high: str,
    hue: str | None = None,
    ax: plt.Axes | None = None,
    percent: bool = False,
    palette: dict | None = None,
) -> plt.Axes:
    """Lines with shaded confidence bands, one per ``hue`` level ("no data" when there is nothing to draw)."""
    if _no_values(data, x, y):
        return no_data(ax)
    ax = _axes(ax)
    groups = data.groupby(hue, sort=False) if hue else [(None, data)]
    colors = iter(sns.color_palette("colorblind", n_colors=max(1, data[hue].nunique() if hue else 1)))
    for level, frame in groups:
        frame = frame.sort_values(x)
        color = (palette or {}).get(level) or next(colors)
        ax.plot(frame[x], frame[y], marker="o", markersize=3, color=color, label=level)
        ax.fill_between(frame[x], frame[low], frame[high], color=color, alpha=0.18, linewidth=0)
    if percent:
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    if hue:
        ax.legend(title=None)
    return ax


def forest_plot(
    data: pd.DataFrame,
    *,
    label: str,
    estimate: str = "estimate",
    low: str = "ci_low",
    high: str = "ci_high",
    flagged: str | None = "flagged",
    null: float = 0.0,
    ax: plt.Axes | None = None,
    percent: bool = False,
    log_scale: bool = False,
) -> plt.Axes:
    """Estimates with their intervals, one row each; flagged rows in the panic colour ("no data" without rows)."""
    if _no_values(data, estimate):
        return no_data(ax)
    data = data.reset_index(drop=True)
    ax = _axes(ax, figsize=(9, max(2.5, 0.32 * len(data) + 1)))
    y = np.arange(len(data))[::-1]
    colors = [PANIC_COLOR if (flagged and bool(f)) else CALM_COLOR for f in (data[flagged] if flagged else [False] * len(data))]
    ax.hlines(y, data[low], data[high], color=colors, linewidth=2)
    ax.scatter(data[estimate], y, color=colors, zorder=3, s=28)
    ax.axvline(null, color=BASELINE_COLOR, linestyle="--", linewidth=1)
    ax.set_yticks(y)
    ax.set_yticklabels(data[label])
    if log_scale:
        ax.set_xscale("log")
    if percent:
        ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.grid(axis="y", visible=False)
    return ax


def week_heatmap(
    data: pd.DataFrame,
    *,
    row: str,
    column: str = "week_of_quarter",
    value: str,
    ax: plt.Axes | None = None,
    percent: bool = False,
    cmap: str = "RdYlBu",
    center: float | None = None,
) -> plt.Axes:
    """A row × week-of-quarter heatmap of ``value`` (e.g. quarter × week qualification rate)."""
    if _no_values(data, value):
        return no_data(ax)
    grid = data.pivot_table(index=row, columns=column, values=value, aggfunc="mean", observed=True)
    ax = _axes(ax, figsize=(10, max(2.5, 0.35 * len(grid) + 1.2)))
    sns.heatmap(
        grid, ax=ax, cmap=cmap, center=center, annot=len(grid.columns) <= 14, fmt=".0%" if percent else ".2g",
        cbar_kws={"format": matplotlib.ticker.PercentFormatter(1.0)} if percent else None, linewidths=0.5,
    )
    ax.set_xlabel("Week of fiscal quarter")
    ax.set_ylabel("")
    return ax


def shade_window(ax: plt.Axes, start: float, end: float, label: str = "late-quarter window") -> plt.Axes:
    """Shade a span of weeks (e.g. the panic window) behind the data."""
    ax.axvspan(start - 0.5, end + 0.5, color=PANIC_COLOR, alpha=0.07, label=label, zorder=0)
    return ax


def percent_axis(ax: plt.Axes, axis: str = "y") -> plt.Axes:
    formatter = matplotlib.ticker.PercentFormatter(1.0)
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(formatter)
    return ax


def label_axes(ax: plt.Axes, *, title: str, x: str | None = None, y: str | None = None) -> plt.Axes:
    """Set the finding-stating title and the axis labels in one call."""
    ax.set_title(title)
    if x is not None:
        ax.set_xlabel(x)
    if y is not None:
        ax.set_ylabel(y)
    return ax


def week_ticks(ax: plt.Axes, weeks: Sequence[int] = tuple(range(1, 14))) -> plt.Axes:
    ax.set_xticks(list(weeks))
    return ax


def cumulative_plot(
    data: pd.DataFrame,
    *,
    x: str,
    y: str,
    hue: str,
    ax: plt.Axes | None = None,
    highlight: Sequence[str] = (),
    even_pace: float | None = None,
) -> plt.Axes:
    """Cumulative shares (0 to 1) over ``x``, one line per ``hue`` level, with an even-pace diagonal.

    Lines of ``highlight`` levels are drawn in the panic colour, the rest in
    the calm colour, thinner; ``even_pace`` is the last ``x`` of the diagonal
    from (0, 0) to (``even_pace``, 1) (default: the largest ``x``).
    """
    if _no_values(data, x, y):
        return no_data(ax)
    ax = _axes(ax)
    end = float(even_pace if even_pace is not None else data[x].max())
    ax.plot([0, end], [0, 1], color=BASELINE_COLOR, linestyle="--", linewidth=1, label="even pace")
    highlight, others_labelled = set(highlight), False
    for level, frame in data.groupby(hue, sort=True):
        frame = frame.sort_values(x)
        hot = level in highlight
        label = level if hot else (None if others_labelled else "other quarters")
        others_labelled = others_labelled or not hot
        ax.plot(
            np.r_[0, frame[x].to_numpy(dtype=float)], np.r_[0, frame[y].to_numpy(dtype=float)],
            color=PANIC_COLOR if hot else CALM_COLOR, alpha=0.95 if hot else 0.45, linewidth=2 if hot else 1.2,
            label=label,
        )
    ax.set_ylim(0, 1.02)
    ax.set_xlim(0, end + 0.3)
    percent_axis(ax)
    return ax


def interval_plot(
    data: pd.DataFrame,
    *,
    x: str,
    estimate: str = "estimate",
    low: str = "ci_low",
    high: str = "ci_high",
    hue: str | None = None,
    ax: plt.Axes | None = None,
    order: Sequence[str] | None = None,
    reference: float | None = None,
    reference_label: str | None = None,
    percent: bool = False,
) -> plt.Axes:
    """Point estimates with interval whiskers on a categorical ``x`` (e.g. quarters), dodged by ``hue``."""
    if _no_values(data, estimate):
        return no_data(ax)
    ax = _axes(ax)
    order = list(order) if order is not None else sorted(data[x].astype(str).unique())
    position = {label: i for i, label in enumerate(order)}
    levels = list(data[hue].drop_duplicates()) if hue else [None]
    colors = sns.color_palette("colorblind", n_colors=max(1, len(levels)))
    width = 0.6 / max(1, len(levels))
    for i, level in enumerate(levels):
        frame = data[data[hue] == level] if hue else data
        frame = frame[frame[x].astype(str).isin(position)]
        xs = frame[x].astype(str).map(position).to_numpy(dtype=float) + (i - (len(levels) - 1) / 2) * width
        est = frame[estimate].to_numpy(dtype=float)
        err = np.vstack([est - frame[low].to_numpy(dtype=float), frame[high].to_numpy(dtype=float) - est])
        ax.errorbar(xs, est, yerr=np.clip(np.nan_to_num(err), 0, None), fmt="o", color=colors[i], capsize=3,
                    markersize=5, linewidth=1.5, label=level)
    if reference is not None:
        ax.axhline(reference, color=BASELINE_COLOR, linestyle="--", linewidth=1, label=reference_label)
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels(order, rotation=45 if len(order) > 6 else 0, ha="right" if len(order) > 6 else "center")
    ax.grid(axis="x", visible=False)
    if percent:
        percent_axis(ax)
    if hue or reference_label:
        ax.legend(title=None)
    return ax


def count_heatmap(
    data: pd.DataFrame,
    *,
    row: str,
    column: str,
    value: str,
    ax: plt.Axes | None = None,
    cmap: str = "Blues",
    column_order: Sequence[str] | None = None,
) -> plt.Axes:
    """A ``row`` × ``column`` heatmap of counts, annotated with whole numbers (e.g. org × quarter rows)."""
    if _no_values(data, value):
        return no_data(ax)
    grid = data.pivot_table(index=row, columns=column, values=value, aggfunc="sum", observed=True)
    if column_order is not None:
        grid = grid.reindex(columns=list(column_order))
    ax = _axes(ax, figsize=(max(6, 0.75 * len(grid.columns) + 2), max(2.2, 0.45 * len(grid) + 1.2)))
    sns.heatmap(grid, ax=ax, cmap=cmap, annot=len(grid.columns) <= 20, fmt=",.0f", linewidths=0.5, cbar=False)
    ax.set_ylabel("")
    return ax


def bar_plot(
    data: pd.DataFrame,
    *,
    label: str,
    value: str,
    hue: str | None = None,
    ax: plt.Axes | None = None,
    percent: bool = False,
    color: str | None = None,
) -> plt.Axes:
    """Horizontal bars of ``value`` per ``label`` (in the frame's order), grouped by ``hue``."""
    if _no_values(data, value):
        return no_data(ax)
    n_labels = data[label].nunique()
    ax = _axes(ax, figsize=(9, max(2.2, 0.32 * n_labels * (1 + 0.3 * (data[hue].nunique() - 1 if hue else 0)) + 1)))
    sns.barplot(data=data, y=label, x=value, hue=hue, ax=ax, orient="h", color=None if hue else (color or CALM_COLOR),
                palette="colorblind" if hue else None, errorbar=None)
    if percent:
        percent_axis(ax, axis="x")
    ax.grid(axis="y", visible=False)
    if hue:
        ax.legend(title=None)
    return ax


def change_plot(
    series: pd.DataFrame,
    *,
    change_date: Any,
    before: float | None = None,
    after: float | None = None,
    role: str = "role",
    changed: str = "changed",
    ax: plt.Axes | None = None,
) -> plt.Axes:
    """One quantity around a change: the changed group's quarters with their intervals, each control's as a grey
    line, the change date as a vertical line and the fitted levels before and after it as horizontal segments.

    ``series`` has ``quarter_start``, ``estimate``, ``ci_low``, ``ci_high``, ``org``, ``segment`` and ``role``
    (rows whose ``role`` is ``changed`` are the changed group's; the others are controls).
    """
    if _no_values(series, "estimate"):
        return no_data(ax)
    ax = _axes(ax, figsize=(9, 3.8))
    date = pd.Timestamp(change_date)
    for (org, segment), rows in series[series[role] != changed].groupby(["org", "segment"], sort=True):
        rows = rows.sort_values("quarter_start")
        name = org if segment == "all" else f"{org} ({segment})"
        ax.plot(rows["quarter_start"], rows["estimate"], color=BASELINE_COLOR, alpha=0.6, linewidth=1, marker=".",
                label=chart_text(f"{name} (control)", 40))
    mine = series[series[role] == changed].sort_values("quarter_start")
    est = mine["estimate"].to_numpy(dtype=float)
    err = np.vstack([est - mine["ci_low"].to_numpy(dtype=float), mine["ci_high"].to_numpy(dtype=float) - est])
    ax.errorbar(mine["quarter_start"], est, yerr=np.clip(np.nan_to_num(err), 0, None), fmt="o", color=CALM_COLOR,
                capsize=3, markersize=5, linewidth=1.5, label="changed")
    start, end = series["quarter_start"].min(), series["quarter_start"].max()
    for level, (left, right) in ((before, (start, date)), (after, (date, end))):
        if level is not None and np.isfinite(level):
            ax.hlines(level, left, right, color=PANIC_COLOR, linestyle="--", linewidth=1.5)
    ax.axvline(date, color=WATCH_COLOR, linewidth=2, label=f"change ({date:%Y-%m-%d})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return ax
