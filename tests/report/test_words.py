import numpy as np
import pandas as pd

import quarterpanic.analysis.outcomes  # noqa: F401  (registers the outcome metrics)
import quarterpanic.analysis.qualification  # noqa: F401
import quarterpanic.analysis.reactive  # noqa: F401
from quarterpanic.analysis.findings import FDR_FAMILIES
from quarterpanic.report.words import (FDR_FAMILY_WORDS, WEAK_TEST_NOTE, bold_names, bold_sentence, bold_text,
                                      bullet_list, ci_text, describe, fdr_text, findings_in_words, markdown_lines, pct,
                                      points, size_text)


def finding(**fields):
    row = dict(org="Globex", quarter="FY2026-Q3", segment="all", metric="qualification_decay", estimate=0.34,
               ci_low=0.25, ci_high=0.43, p_value=0.0001, onset_week=10, flagged=True, n=500, status="ok")
    row.update(fields)
    return row


def test_decay_sentence_states_size_onset_uncertainty_and_verdict():
    text = describe(finding())
    assert text.startswith("Globex, FY2026-Q3: the share of new deals meeting the qualification rule fell by 34 points")
    assert "from week 10 on" in text and "95% CI 25 to 43 points" in text and "p < 0.001" in text
    assert text.endswith("flagged).")


def test_a_negative_drop_reads_as_a_rise_with_its_interval_turned_round():
    text = describe(finding(estimate=-0.12, ci_low=-0.2, ci_high=0.05, flagged=False, p_value=0.4))
    assert "rose by 12 points" in text and "95% CI -5 to 20 points" in text and "-12" not in text


def test_missing_p_value_leaves_no_empty_clause():
    text = describe(finding(p_value=np.nan, flagged=False))
    assert "; ;" not in text and "(95% CI 25 to 43 points; not flagged)" in text


def test_units_print_in_their_own_terms():
    assert size_text(-0.12, "relative") == "-12%"
    assert size_text(0.31, "proportion") == "31%"
    assert size_text(2.95, "ratio") == "2.95×"
    assert ci_text(2.5, 3.8, "ratio") == "95% CI 2.50× to 3.80×"
    assert ci_text(pd.NA, 1.0, "ratio") == "uncertainty not estimable"
    assert pct(0.314) == "31%" and points(0.35) == "35 points"
    text = describe(finding(metric="last_week_deal_size_change", estimate=-0.11, ci_low=-0.2, ci_high=-0.02))
    assert "changed by -11%" in text and "95% CI -20% to -2%" in text


def test_insufficient_data_says_so_without_numbers():
    text = describe(finding(status="insufficient data", estimate=np.nan, n=12))
    assert text == ("Globex, FY2026-Q3: too little data to judge the share of new deals meeting the "
                    "qualification rule (n = 12).")


def test_findings_in_words_has_one_shape_for_every_notebook():
    findings = pd.DataFrame([
        finding(),
        finding(metric="reactive_order_taking", estimate=3.1, ci_low=2.2, ci_high=4.4, flagged=False, p_value=0.2),
        finding(quarter="FY2026-Q2", flagged=False, p_value=0.3),
    ])
    every = findings_in_words(findings)
    assert list(every.columns) == ["org", "quarter", "segment", "metric", "flagged", "finding"]
    assert every["finding"].tolist() == [describe(row) for row in findings.to_dict("records")]
    decay = findings_in_words(findings, ["qualification_decay"])
    assert decay["quarter"].tolist() == ["FY2026-Q3", "FY2026-Q2"]
    flagged = findings_in_words(findings, flagged_only=True)
    assert flagged[["quarter", "metric"]].values.tolist() == [["FY2026-Q3", "qualification_decay"]]
    assert findings_in_words(findings, ["reactive_order_taking"], flagged_only=True).empty


# -- Markdown for the pages ----------------------------------------------------------------------
HOSTILE = "Globex <img src=x onerror=alert(1)> *Corp*"


def test_bold_sentence_escapes_crm_text_and_ends_with_one_full_stop():
    text = bold_sentence(f"{HOSTILE} panicked")
    assert text.startswith("**Globex &lt;img") and text.endswith(" panicked.**")
    assert "<img" not in text and r"\*Corp\*" in text
    assert bold_text("a_b") == r"**a\_b**"


def test_bullet_list_has_one_escaped_bullet_per_sentence():
    text = bullet_list([HOSTILE, "second"])
    assert text.splitlines() == [f"* Globex &lt;img src=x onerror=alert\\(1\\)&gt; \\*Corp\\*", "* second"]
    assert bullet_list([]) == ""


def test_bold_names_lists_each_name_bold_and_escaped():
    assert bold_names(["A", "<b>B</b>"]) == "**A**, **&lt;b&gt;B&lt;/b&gt;**"


def test_markdown_lines_give_one_line_per_row_or_the_note_for_none():
    rows = pd.DataFrame({"org": ["A", "B"], "n": [1, 2]})
    assert markdown_lines(rows, lambda row: f"* {row.org}: {row.n}", "none") == "* A: 1\n* B: 2"
    assert markdown_lines(rows.iloc[:0], lambda row: f"* {row.org}", "none") == "none"


def test_an_unflagged_weak_test_says_that_it_is_no_sign_of_calm():
    weak = dict(metric="last_week_deal_size_change", estimate=-0.08, ci_low=-0.3, ci_high=0.2, p_value=0.5,
                onset_week=None)
    assert WEAK_TEST_NOTE in describe(finding(**weak, flagged=False))
    assert WEAK_TEST_NOTE not in describe(finding(**weak, flagged=True))
    assert WEAK_TEST_NOTE not in describe(finding(flagged=False, p_value=0.5))  # the main decay test is not weak


def test_a_level_without_a_null_is_shown_not_judged():
    text = describe(finding(metric="close_date_push_rate", estimate=0.3, ci_low=0.22, ci_high=0.4, p_value=np.nan,
                            flagged=False, onset_week=None))
    assert "was 30% (95% CI 22% to 40%; a level, with no null to test it against)" in text


def test_the_fdr_note_names_alpha_and_family():
    assert fdr_text(0.05, "organisation").startswith(
        "flags keep the false discovery rate at 5% (Benjamini–Hochberg) within each organisation and metric")
    assert set(FDR_FAMILY_WORDS) == set(FDR_FAMILIES)
