"""Chart helpers: tidy frame in, matplotlib ``Axes`` out, one house theme.

Every helper takes the frame an analysis function returned plus column
names, draws on ``ax`` (a new figure when omitted) and returns the axes.
Titles are the caller's: they should state the finding ("Qualification fell
by half after week 10"), not name the metric.
"""
from __future__ import annotations

from typing import Sequence

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
    """Lines with shaded confidence bands, one per ``hue`` level."""
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
    """Estimates with 95% intervals, one row each; flagged rows in the panic colour."""
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
