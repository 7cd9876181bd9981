"""quarterpanic.report.qualification_report: the qualification-decay page's charts, tables and Markdown."""
import re

import matplotlib.pyplot as plt
import pytest

from helpers import bernoulli_dataset
from quarterpanic.analysis import qualification
from quarterpanic.analysis.features import opportunity_features
from quarterpanic.analysis.findings import apply_fdr
from quarterpanic.report import qualification_report as report

HOSTILE = "Initech <script>alert(1)</script>"


@pytest.fixture(scope="module")
def analysed():
    data = bernoulli_dataset(per_quarter=400, quarters=6, panic=(2, 4), org=HOSTILE)
    params = {"min_n": 20}
    features = opportunity_features(data, params)
    findings = apply_fdr(qualification.detect_qualification_decay(data, params, features=features))
    roles = report.chart_roles(features, params, findings=findings)
    return data, features, findings, roles


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_intro_carries_the_count_and_the_escaped_headline(analysed):
    data, features, findings, _ = analysed
    text = report.intro(data.as_of, features, findings)
    assert text.startswith(f"Data as of **{data.as_of:%Y-%m-%d %H:%M}**, {len(features):,} opportunities. **")
    assert text.endswith(".**") and "<script>" not in text and "&lt;script&gt;" in text


def test_findings_table_escapes_crm_text_and_bolds_flagged_rows(analysed):
    _, _, findings, _ = analysed
    words = report.findings_in_words(findings, ["qualification_decay"])
    flagged = int(words["flagged"].sum())
    assert 0 < flagged < len(words)
    html = report.findings_styler(words, bold_flagged=True).to_html()
    assert "<script>" not in html and "&lt;script&gt;" in html
    selectors = html.split("font-weight: bold")[0].rsplit("}", 1)[-1]
    bold_rows = {int(row) for row in re.findall(r"_row(\d+)_col", selectors)}
    assert bold_rows == set(words.index[words["flagged"]])
    assert len(re.findall(r"_row\d+_col", selectors)) == flagged * 4  # the four shown columns of each row
    assert "font-weight: bold" not in report.findings_styler(words).to_html()


def test_flagged_outcome_words_are_only_flagged_outcome_metrics(analysed):
    _, _, findings, _ = analysed
    words = report.flagged_outcome_words(findings)
    assert words["flagged"].all()
    assert "qualification_decay" not in set(words["metric"])


def test_decay_forest_has_a_line_per_judged_quarter_and_marks_the_open_one(analysed):
    _, _, findings, _ = analysed
    ok = findings[(findings["metric"] == "qualification_decay") & (findings["segment"] == "all")
                  & (findings["status"] == "ok")]
    ax = report.plot_decay_forest(findings)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == len(ok)
    assert ax.get_title().replace("\n", " ") == report.forest_headline(findings)
    assert report.plot_decay_forest(findings.iloc[:0]) is None


def test_weekly_charts_have_one_panel_per_organisation(analysed):
    data, features, findings, roles = analysed
    orgs = sorted(features["org"].unique())
    fig = report.plot_rate_curves(features, roles, findings, orgs)
    assert len(fig.axes) == 1
    assert fig.axes[0].get_title().replace("\n", " ") == report.decay_headline(
        findings, HOSTILE, roles.loc[roles["shown"], "quarter"])
    assert len(report.plot_rate_heatmaps(features, findings, orgs)) == 1
    for draw in (report.plot_lead_score, report.plot_win_rate, report.plot_discount, report.plot_deal_size):
        fig = draw(features, roles, findings, orgs)
        assert fig.axes[0].get_title() == HOSTILE
        assert fig._suptitle.get_text()  # the contrast headline
    fig = report.plot_push_rates(features, data, findings, orgs)
    assert fig.axes[0].get_title() == HOSTILE
