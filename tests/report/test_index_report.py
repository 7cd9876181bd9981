"""quarterpanic.report.index_report: the executive summary's Markdown, tables, charts per organisation, key figures."""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from quarterpanic.analysis.panic_index import LATE_DEAL_COLUMNS
from quarterpanic.report import index_report as report

HOSTILE_ACCOUNT = "<img src=x onerror=alert(1)> Holdings"
HOSTILE_OWNER = "Eve <script>alert(2)</script>"


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def late_deals():
    rows = [
        ("Globex", "FY2026-Q3", 9, "g1", "Big deal", HOSTILE_ACCOUNT, HOSTILE_OWNER, 10, 2_500_000.0, "EUR", "lost"),
        ("Globex", "FY2026-Q3", 9, "g2", "Small deal", "Acme", "Bob", 12, 40_000.0, "EUR", "open"),
        ("Northwind", "FY2025-Q2", 10, "n1", "Mid deal", "Initech", "Carol", 11, 87_000.0, "", "won"),
    ]
    return pd.DataFrame(rows, columns=LATE_DEAL_COLUMNS)


def test_late_deals_headline_names_each_organisations_largest_deal_escaped():
    text = report.late_deals_headline(late_deals())
    assert text.startswith("The largest unqualified deal opened after the onset: in **Globex** (FY2026\\-Q3), ")
    assert "**&lt;img src=x onerror=alert\\(1\\)&gt; Holdings** (2.5M EUR, owned by **Eve &lt;script&gt;" in text
    assert "Small deal" not in text and "Acme" not in text  # only the largest per organisation
    assert text.endswith("**Initech** (87k, owned by **Carol**, won).")
    assert "<img" not in text and "<script>" not in text
    assert report.late_deals_headline(late_deals().iloc[:0]).startswith("No panic quarter")


def test_late_deals_table_shows_names_amounts_and_outcomes_and_escapes_them_as_html():
    table = report.late_deals_table(late_deals())
    assert list(table.index.names) == ["Organisation", "Quarter"]
    assert list(table.columns) == ["Opportunity", "Account", "Owner", "Week created", "Amount", "Outcome"]
    assert table["Amount"].tolist() == ["2.5M EUR", "40k EUR", "87k"]
    assert table["Outcome"].tolist() == ["lost", "still open", "won"]
    html = table._repr_html_()
    assert HOSTILE_ACCOUNT not in html and "&lt;img src=x onerror=alert(1)&gt; Holdings" in html
    assert "<script>" not in html and "Eve &lt;script&gt;alert(2)&lt;/script&gt;" in html


def test_top_findings_and_discount_costs_in_markdown():
    top = pd.DataFrame({"org": [HOSTILE_OWNER], "quarter": ["FY2026-Q3"], "panic_index": [3.14], "level": ["panic"],
                        "sentence": ["late-quarter deals were qualified 34 points less often"]})
    text = report.top_findings_markdown(top)
    assert text == ("* **Eve &lt;script&gt;alert\\(2\\)&lt;/script&gt;, FY2026\\-Q3** (index 3.1, panic): "
                    "late\\-quarter deals were qualified 34 points less often.")
    assert report.top_findings_markdown(top.iloc[:0]) == "No quarter reached the *watch* level."
    totals = pd.DataFrame({"org": ["Globex", "Initech"], "currency": ["EUR", "USD"], "quarters": [2, 1],
                           "won_amount": [5e6, 2e5], "cost": [1.2e5, 3e4], "cost_low": [8e4, 1e4],
                           "cost_high": [1.6e5, 5e4]})
    lines = report.discount_cost_markdown(totals).splitlines()
    assert lines[0] == ("* **Globex** gave away about **120k EUR** in extra discount in 2 panic quarters "
                        "(95% CI 80k EUR to 160k EUR), on 5.0M EUR won late.")
    assert "in 1 panic quarter (" in lines[1]
    assert report.discount_cost_markdown(totals.iloc[:0]) == "No panic quarter with a measurable discount uplift."


def index_frame():
    return pd.DataFrame({
        "org": ["A", "A", "B"], "quarter": ["FY2025-Q1", "FY2025-Q2", "FY2025-Q1"], "segment": "all",
        "size_class": ["mid", "mid", "small"], "panic_index": [3.5, 0.2, 2.1], "level": ["panic", "calm", "watch"],
        "n_components": 4, "top_component": "qualification_decay", "baseline": False,
        "index_low": [1.2, -1.5, 0.3], "index_high": [5.8, 1.9, 3.9],
    })


def test_intro_and_per_organisation_index_charts():
    index = index_frame()
    text = report.intro(pd.Timestamp("2025-07-01 09:00"), index, {"A": "mid"})
    assert text == "As of **2025-07-01 09:00**: **A** (mid), **B** (size unknown); 3 complete quarters with an index."
    axes = report.plot_index_by_org(index, {"watch": 2.0, "panic": 3.0}, ["A", "B"])
    assert [ax.get_title() for ax in axes] == ["A panicked in 1 of 2 quarters",
                                                "B stayed clear of panic in all 1 quarters"]


def test_early_warning_charts_only_for_organisations_with_a_chart():
    charts = pd.DataFrame({"org": ["A", "A"], "chart": ["qualification_decay"] * 2, "week_of_quarter": [1, 2],
                           "cusum": [0.1, 0.4], "h": [1.0, 1.0]})
    status = pd.DataFrame({"org": ["A", "B"], "sentence": ["A, as of week 2 of FY2025-Q3: fine.", "B: nothing."],
                           "weeks_in_quarter": [13, 13]})
    axes = report.plot_charts_by_org(charts, status)
    assert len(axes) == 1 and axes[0].get_title().startswith("A: as of week 2")


def test_size_class_chart_only_with_size_classes():
    assert report.plot_size_classes(pd.DataFrame()) is None
    sizes = pd.DataFrame({"size_class": ["small", "mid"], "panic_share": [0.0, 0.5], "panic_share_low": [0.0, 0.2],
                          "panic_share_high": [0.3, 0.8], "panic_quarters": [0, 2]})
    ax = report.plot_size_classes(sizes)
    assert ax.get_title() == report.size_class_headline(sizes)
    assert ax.get_title() == "Mid organisations panicked most often (50% of quarters)"


def test_summary_figures_count_levels_per_organisation():
    status = pd.DataFrame({"org": ["A"], "signals": [("qualification_decay",)], "sentence": ["A: fine."]})
    figures = report.summary_figures(
        headline="h", as_of=pd.Timestamp("2025-07-01"), thresholds={"watch": 2, "panic": 3}, index=index_frame(),
        scores=pd.DataFrame(columns=["org", "quarter", "segment", "component", "estimate", "z", "weight",
                                     "contribution", "status"]),
        top=pd.DataFrame(), costs=pd.DataFrame(), totals=pd.DataFrame(), sizes=pd.DataFrame(), status=status)
    assert figures["levels"] == {"A": {"panic": 1, "calm": 1}, "B": {"watch": 1}}
    assert figures["index"]["index_low"].tolist() == [1.2, -1.5, 0.3]
    assert figures["early_warning"]["signals"].tolist() == [["qualification_decay"]]


def test_index_bars_carry_the_index_interval():
    ax = report.plot_index(index_frame(), {"watch": 2.0, "panic": 3.0}, "A")
    bars = [c for c in ax.containers if type(c).__name__ == "ErrorbarContainer"]
    assert len(bars) == 1
    segments = bars[0].lines[2][0].get_segments()
    np.testing.assert_allclose([(s[0][1], s[1][1]) for s in segments], [(1.2, 5.8), (-1.5, 1.9)])


# -- did the change work? ---------------------------------------------------------------------------------------
def change_result(index_values=(4.0, 3.6, 4.2, 3.9, 0.3, 0.1, -0.2, 0.2)):
    """A change of an organisation with a hostile name on 2021-05-01, its panic index falling, one calm control."""
    from quarterpanic.analysis import change

    starts = [pd.Timestamp("2020-05-01") + pd.DateOffset(months=3 * i) for i in range(8)]
    dates = pd.DataFrame([{"org": org, "quarter": f"Q{i}", "quarter_start": start,
                           "quarter_end": start + pd.DateOffset(months=3) - pd.Timedelta(days=1), "complete": True}
                          for org in (HOSTILE_ACCOUNT, "Calm Co") for i, start in enumerate(starts)])
    index = pd.DataFrame({"org": [HOSTILE_ACCOUNT] * 8 + ["Calm Co"] * 8, "segment": "all",
                          "quarter": [f"Q{i}" for i in range(8)] * 2,
                          "panic_index": list(index_values) + [0.1, -0.3, 0.2, 0.0, 0.3, -0.1, 0.1, -0.2],
                          "level": "calm"})
    findings = pd.DataFrame(columns=["org", "segment", "quarter", "metric", "estimate", "ci_low", "ci_high",
                                     "ci_level", "status"])
    changes = [{"org": HOSTILE_ACCOUNT, "date": "2021-05-01", "label": "deal desk"}]
    return change.assess_changes(findings, index, changes, dates)


def test_changes_markdown_says_each_estimate_escaped_or_how_to_ask_for_one():
    text = report.changes_markdown(change_result().estimates)
    lines = text.splitlines()
    assert len(lines) == 2 and all(line.startswith("* ") for line in lines)
    assert "panic index went from 3.9 to 0.1" in lines[0] and "against Calm Co" in lines[1]
    assert "<img" not in text and "&lt;img" in text
    assert report.changes_markdown(change_result().estimates.iloc[:0]).startswith("No change to judge")


def test_the_headline_adds_a_significant_index_change():
    index = pd.DataFrame({"org": "Acme", "quarter": ["Q1"], "segment": "all", "panic_index": [0.4], "level": "calm"})
    scores = pd.DataFrame(columns=["org", "quarter", "segment", "component"])
    plain = report.headline(index, scores)
    with_change = report.headline(index, scores, change_result().estimates)
    assert with_change.startswith(plain + " Since deal desk began on 2021-05-01, the panic index of ")
    assert "against Calm Co, which did not change." in with_change
    flat = change_result(index_values=(0.1, -0.3, 0.2, 0.0, 0.3, -0.1, 0.1, -0.2)).estimates
    assert report.headline(index, scores, flat) == plain


def test_plot_changes_draws_one_chart_per_change_titled_by_its_estimate():
    (ax,) = report.plot_changes(change_result())
    title = ax.get_title().replace("\n", " ")
    assert title == f"{HOSTILE_ACCOUNT}: panic index fell from 3.9 to 0.1 after deal desk (from 2021-05-01)"
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "Calm Co (control)" in labels and "changed" in labels and "change (2021-05-01)" in labels


def test_the_index_table_marks_a_point_nothing_confirms_as_unconfirmed_not_as_missing():
    index = pd.DataFrame({
        "org": ["Acme"] * 4, "segment": ["all"] * 4, "quarter": ["FY2025-Q1", "FY2025-Q2", "FY2025-Q3", "FY2025-Q4"],
        "panic_index": [8.44, np.nan, 3.5, -0.04],
        "level": ["insufficient data", "insufficient data", "panic", "calm"],
    })
    row = report.index_table(index).loc["Acme"]
    assert row.tolist() == ["8.4 (unconfirmed)", "n/a", "3.5 (panic)", "0.0"]
