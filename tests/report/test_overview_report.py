"""quarterpanic.report.overview_report: the pipeline overview's headlines, Markdown, charts and key figures."""
import matplotlib.pyplot as plt
import pandas as pd
import pytest

from helpers import bernoulli_dataset
from quarterpanic.analysis import overview
from quarterpanic.report import overview_report as report
from quarterpanic.report.notebook import notebook_view

HOSTILE = "Brightline <img src=x onerror=alert(1)> Studio"


@pytest.fixture(scope="module")
def view():
    data = bernoulli_dataset(per_quarter=80, as_of=pd.Timestamp("2024-11-15"), org=HOSTILE)
    return notebook_view(data, {})


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def shares_frame():
    return pd.DataFrame({
        "org": [HOSTILE, "Globex"], "quarter": ["FY2024-Q1", "FY2024-Q2"], "estimate": [0.62, 0.3],
        "ci_low": [0.5, 0.2], "ci_high": [0.7, 0.4], "won_amount": [1234567.0, 1000.0], "won_deals": [12, 3],
        "back_loaded": [True, False], "even_share": [0.33, 0.33],
    })


def test_intro_names_the_folder_time_and_organisations_escaped(view):
    text = report.intro("/data/<x>", pd.Timestamp("2024-11-15 08:30"), [HOSTILE, "Globex"])
    assert text == ("Data folder /data/&lt;x&gt;, as of **2024-11-15 08:30**: "
                    "**Brightline &lt;img src=x onerror=alert\\(1\\)&gt; Studio**, **Globex**.")


def test_month3_lines_are_one_escaped_bullet_per_quarter():
    lines = report.month3_lines(shares_frame()).splitlines()
    assert len(lines) == 2 and "<img" not in lines[0]
    assert lines[0].endswith("(95% CI 50% to 70%; 12 won deals) — back-loaded")
    assert "62% of 1,234,567 booked in month 3" in lines[0]
    assert "back-loaded" not in lines[1]
    assert report.month3_lines(shares_frame().iloc[:0]) == "No won deals in the quarters shown."


def test_month3_count_headline_counts_the_back_loaded_quarters():
    assert report.month3_count_headline(HOSTILE, shares_frame()) == (
        f"{HOSTILE}: 1 of 1 quarters booked significantly more than an even pace in month 3")


def test_coverage_charts_one_per_organisation_titled_by_the_headline(view):
    axes = report.plot_coverage(view.coverage, view.orgs)
    assert len(axes) == len(view.orgs) == 1
    assert axes[0].get_title().replace("\n", " ") == report.coverage_headline(view.coverage)
    assert [t.get_text() for t in axes[0].get_xticklabels()]  # one column per quarter


def test_reject_reasons_chart_only_when_rows_were_rejected():
    assert report.plot_reject_reasons(pd.DataFrame(columns=["table", "reason", "rows"])) is None
    assert plt.get_fignums() == []
    reasons = pd.DataFrame({"table": ["opportunities"], "reason": ["close_date: not a date"], "rows": [1204]})
    ax = report.plot_reject_reasons(reasons)
    assert ax.get_title() == "Most rejected rows: close_date: not a date (1,204 rows)"


def test_hockey_sticks_and_month3_charts_have_a_panel_per_organisation(view):
    data = view.dataset
    weekly = view.shown(overview.bookings_by_week(data.opportunities, data.calendars))
    shares = view.shown(overview.month3_share(data.opportunities, data.calendars))
    fig = report.plot_hockey_sticks(weekly, shares, view.orgs)
    assert len(fig.axes) == 1
    assert fig.axes[0].get_title().replace("\n", " ") == report.month3_headline(HOSTILE, shares)
    # One line per complete quarter, plus the even-pace diagonal.
    assert len(fig.axes[0].get_lines()) == shares["quarter"].nunique() + 1
    fig = report.plot_month3_shares(shares, view.orgs)
    assert fig._suptitle.get_text().replace("\n", " ") == report.month3_spread_headline(shares)


def test_summary_figures_keep_the_complete_quarters_and_totals(view):
    data = view.dataset
    accounting = pd.DataFrame({"file": ["a.csv"], "org": [HOSTILE], "table": ["opportunities"], "profile": ["p"],
                               "read": [10], "accepted": [8], "rejected": [2]})
    shares = view.shown(overview.month3_share(data.opportunities, data.calendars))
    funnel = view.shown(overview.funnel_counts(data.opportunities, data.leads, data.history, data.calendars))
    pipeline = overview.pipeline_month3_share(view.shown_records(data.opportunities, "created_at"), data.calendars)
    figures = report.summary_figures(
        as_of=data.as_of, orgs=view.orgs, accounting=accounting,
        reasons=pd.DataFrame(columns=["table", "reason", "rows"]), coverage=view.coverage, shares=shares,
        funnel=funnel, pipeline_shares=pipeline)
    assert (figures["rows_read"], figures["rows_accepted"], figures["rows_rejected"]) == (10, 8, 2)
    assert figures["complete_quarters"] == {HOSTILE: sorted(shares["quarter"].unique())}
    assert figures["orgs"] == [HOSTILE]
