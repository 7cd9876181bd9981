"""The plot helpers draw a "no data" axes for a frame with no rows or no finite values, instead of failing."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from quarterpanic.report import index_report, plots  # noqa: E402

CURVE = {"week_of_quarter": [1, 2], "share": [0.2, 0.4], "ci_low": [0.1, 0.3], "ci_high": [0.3, 0.5],
         "role": ["a", "a"]}
FOREST = {"label": ["A · Q1"], "estimate": [0.3], "ci_low": [0.1], "ci_high": [0.5], "flagged": [True]}
COUNTS = {"table": ["opportunities"], "label": ["Q1"], "rows": [12]}

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
}


def says_no_data(ax) -> bool:
    return any(text.get_text() == plots.NO_DATA for text in ax.texts)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


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
