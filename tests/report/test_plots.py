"""quarterpanic.report.plots: chart helpers take a tidy frame and return the axes they drew on, or a "no data" axes
for a frame with no rows or no finite values instead of failing."""
import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from quarterpanic.report import index_report, plots


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


# -- no data ---------------------------------------------------------------------------------------------------
CURVE = {"week_of_quarter": [1, 2], "share": [0.2, 0.4], "ci_low": [0.1, 0.3], "ci_high": [0.3, 0.5],
         "role": ["a", "a"]}
FOREST = {"label": ["A · Q1"], "estimate": [0.3], "ci_low": [0.1], "ci_high": [0.5], "flagged": [True]}
COUNTS = {"table": ["opportunities"], "label": ["Q1"], "rows": [12]}
AROUND = {"quarter_start": pd.to_datetime(["2024-08-01", "2024-11-01", "2024-08-01", "2024-11-01"]),
          "estimate": [0.4, 0.1, 0.3, 0.3], "ci_low": [0.3, 0.0, np.nan, np.nan], "ci_high": [0.5, 0.2, np.nan, np.nan],
          "org": ["Acme", "Acme", "Bolt", "Bolt"], "segment": "all",
          "role": ["changed", "changed", "control", "control"]}

CHARTS = {
    "band_plot": (lambda d, ax: plots.band_plot(d, x="week_of_quarter", y="share", low="ci_low", high="ci_high",
                                                hue="role", ax=ax), CURVE),
    "forest_plot": (lambda d, ax: plots.forest_plot(d, label="label", ax=ax), FOREST),
    "week_heatmap": (lambda d, ax: plots.week_heatmap(d, row="role", value="share", ax=ax), CURVE),
    "cumulative_plot": (lambda d, ax: plots.cumulative_plot(d, x="week_of_quarter", y="share", hue="role", ax=ax),
                        CURVE),
    "interval_plot": (lambda d, ax: plots.interval_plot(d, x="label", ax=ax), FOREST),
    "count_heatmap": (lambda d, ax: plots.count_heatmap(d, row="table", column="label", value="rows", ax=ax), COUNTS),
    "bar_plot": (lambda d, ax: plots.bar_plot(d, label="label", value="estimate", ax=ax), FOREST),
    "change_plot": (lambda d, ax: plots.change_plot(d, change_date="2024-11-01", before=0.4, after=0.1, ax=ax),
                    AROUND),
}


def says_no_data(ax) -> bool:
    return any(text.get_text() == plots.NO_DATA for text in ax.texts)


@pytest.mark.parametrize("name", CHARTS)
def test_a_chart_with_rows_draws_them(name):
    draw, rows = CHARTS[name]
    ax = draw(pd.DataFrame(rows), plt.subplots()[1])
    assert not says_no_data(ax)


@pytest.mark.parametrize("name", CHARTS)
def test_a_chart_of_no_rows_says_no_data(name):
    draw, rows = CHARTS[name]
    ax = draw(pd.DataFrame(rows).iloc[:0], plt.subplots()[1])
    assert says_no_data(ax)
    ax.figure.canvas.draw()


@pytest.mark.parametrize("name", CHARTS)
def test_a_chart_of_only_missing_values_says_no_data(name):
    """Sparse data: rows whose numbers are all NaN ("Axis limits cannot be NaN or Inf" before)."""
    draw, rows = CHARTS[name]
    frame = pd.DataFrame(rows)
    numbers = [c for c in frame if pd.api.types.is_numeric_dtype(frame[c]) and c != "flagged"]
    frame[numbers] = np.nan
    ax = draw(frame, plt.subplots()[1])
    assert says_no_data(ax)
    ax.figure.canvas.draw()


def test_index_charts_of_an_organisation_without_quarters_say_no_data():
    index = pd.DataFrame(columns=["org", "quarter", "segment", "panic_index", "level"])
    scores = pd.DataFrame(columns=["org", "quarter", "segment", "component", "contribution"])
    charts = pd.DataFrame(columns=["org", "chart", "week_of_quarter", "cusum", "h"])
    status = pd.DataFrame(columns=["org", "sentence", "weeks_in_quarter"])
    for ax in (index_report.plot_index(index, {"watch": 2.0, "panic": 3.0}, "Empty Org"),
               index_report.plot_contributions(scores, "Empty Org"),
               index_report.plot_charts(charts, status, "Empty Org")):
        assert says_no_data(ax) and "Empty Org" in ax.get_title()
        ax.figure.canvas.draw()
