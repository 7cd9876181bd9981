"""quarterpanic.report.plots: chart helpers take a tidy frame and return the axes they drew on."""
import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from quarterpanic.report import plots


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_chart_text_keeps_dollars_literal_and_wraps():
    assert plots.chart_text("Deal $5M") == r"Deal \$5M"
    assert plots.chart_text("aaa bbb ccc", 7) == "aaa bbb\nccc"


def test_band_plot_draws_a_line_and_band_per_level_with_the_given_palette():
    data = pd.DataFrame({"week": [1, 2, 1, 2], "rate": [0.5, 0.6, 0.4, 0.3], "low": 0.1, "high": 0.9,
                         "quarter": ["Q1", "Q1", "baseline", "baseline"]})
    ax = plots.band_plot(data, x="week", y="rate", low="low", high="high", hue="quarter",
                         palette={"baseline": plots.BASELINE_COLOR}, percent=True)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"Q1", "baseline"}
    assert mcolors.to_hex(lines["baseline"].get_color()) == plots.BASELINE_COLOR
    assert len(ax.collections) == 2  # one band each
    assert ax.yaxis.get_major_formatter()(0.5, 0) == "50%"


def test_forest_plot_puts_flagged_rows_in_the_panic_colour_top_down():
    data = pd.DataFrame({"label": ["a", "b"], "estimate": [0.3, 0.0], "ci_low": [0.1, -0.1], "ci_high": [0.5, 0.1],
                         "flagged": [True, False]})
    ax = plots.forest_plot(data, label="label")
    at = dict(zip(ax.get_yticks(), (t.get_text() for t in ax.get_yticklabels())))
    assert [at[y] for y in sorted(at, reverse=True)] == ["a", "b"]  # the first row is drawn at the top
    colors = [mcolors.to_hex(c) for c in ax.collections[1].get_facecolors()]
    assert colors == [plots.PANIC_COLOR.lower(), plots.CALM_COLOR.lower()]


def test_interval_plot_orders_the_categories_and_draws_the_reference():
    data = pd.DataFrame({"quarter": ["Q2", "Q1"], "estimate": [0.4, 0.2], "ci_low": [0.3, 0.1], "ci_high": [0.5, 0.3]})
    ax = plots.interval_plot(data, x="quarter", order=["Q1", "Q2"], reference=0.33, reference_label="even pace")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Q1", "Q2"]
    reference = [line for line in ax.get_lines() if line.get_label() == "even pace"]
    assert len(reference) == 1 and reference[0].get_ydata()[0] == pytest.approx(0.33)


def test_count_heatmap_keeps_the_column_order():
    data = pd.DataFrame({"table": ["opps", "opps", "leads"], "label": ["Q2", "Q1", "Q1"], "rows": [5, 3, 2]})
    ax = plots.count_heatmap(data, row="table", column="label", value="rows", column_order=["Q1", "Q2"])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Q1", "Q2"]
    assert sorted(t.get_text() for t in ax.texts) == ["2", "3", "5"]


def test_cumulative_plot_highlights_hot_quarters_and_draws_the_even_pace():
    data = pd.DataFrame({"week": [1, 2, 1, 2], "share": [0.3, 1.0, 0.1, 1.0], "quarter": ["Q1", "Q1", "Q2", "Q2"]})
    ax = plots.cumulative_plot(data, x="week", y="share", hue="quarter", highlight=["Q2"], even_pace=2)
    by_label = {line.get_label(): line for line in ax.get_lines()}
    assert set(by_label) == {"even pace", "Q2", "other quarters"}
    assert mcolors.to_hex(by_label["Q2"].get_color()) == plots.PANIC_COLOR.lower()
    assert np.allclose(by_label["even pace"].get_xdata(), [0, 2])


def test_label_axes_and_week_ticks():
    _, ax = plt.subplots()
    plots.label_axes(ax, title="Qualification fell", x="Week", y="Share")
    plots.week_ticks(ax, range(1, 5))
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == ("Qualification fell", "Week", "Share")
    assert list(ax.get_xticks()) == [1, 2, 3, 4]
