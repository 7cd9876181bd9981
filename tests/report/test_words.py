import numpy as np
import pandas as pd

import quarterpanic.analysis.backloading  # noqa: F401  (registers the back-loading metrics)
import quarterpanic.analysis.outcomes  # noqa: F401  (registers the outcome metrics)
import quarterpanic.analysis.qualification  # noqa: F401
import quarterpanic.analysis.reactive  # noqa: F401
from quarterpanic.analysis.findings import FDR_FAMILIES
from quarterpanic.report.words import (FDR_FAMILY_WORDS, WEAK_TEST_NOTE, bold_names, bold_sentence, bold_text,
                                      bullet_list, change_headline, change_sentence, ci_text, describe, fdr_text,
                                      findings_in_words, markdown_lines, pct, points, size_text)


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


# -- did the change work? ------------------------------------------------------------------------
def change_row(**fields):
    row = dict(change="deal desk", label="deal desk", org="Northwind Traders", segment="all",
               change_date=pd.Timestamp("2024-10-01"), quantity="qualification_decay", method="before/after",
               scale="difference", control=None, n_before=4, n_after=4, n_control_before=pd.NA,
               n_control_after=pd.NA, before=0.38, after=0.06, estimate=-0.32, ci_low=-0.41, ci_high=-0.23,
               ci_level=0.95, p_value=0.0004, q_value=0.001, significant=True, direction="away from panic",
               pre_trend=False, status="ok")
    row.update(fields)
    return row


def test_a_change_reads_as_before_and_after_with_its_interval_counts_and_verdict():
    text = change_sentence(change_row())
    assert text == ("Northwind Traders, deal desk (from 2024-10-01): qualification decay went from 38 points to "
                    "6 points (-32 points, 95% CI -41 points to -23 points; 4 quarters before, 4 after): "
                    "away from panic.")


def test_a_ratio_change_reads_as_a_factor_and_a_did_names_its_control():
    text = change_sentence(change_row(quantity="reactive_order_taking", scale="ratio",
                                      method="difference-in-differences", control="Globex Corporation",
                                      estimate=0.35, ci_low=0.25, ci_high=0.5, before=2.9, after=1.0, label=None,
                                      segment="SMB"))
    assert text.startswith("Northwind Traders (SMB), the change of 2024-10-01: reactive order taking, against "
                           "Globex Corporation (which did not change): ×0.35 (95% CI ×0.25 to ×0.50;")


def test_too_few_quarters_give_the_counts_and_no_number():
    text = change_sentence(change_row(status="insufficient data", n_before=2, n_after=5, estimate=np.nan,
                                      ci_low=np.nan, ci_high=np.nan, before=np.nan, after=np.nan, direction=None,
                                      significant=False))
    assert "too few complete quarters to judge qualification decay (2 quarters before, 5 after; 3 needed" in text
    assert "nan" not in text and "points" not in text


def test_a_did_without_a_control_says_so():
    text = change_sentence(change_row(method="difference-in-differences", control=np.nan, status="insufficient data",
                                      estimate=np.nan))
    assert text == ("Northwind Traders, deal desk (from 2024-10-01): no organisation or segment that did not change "
                    "has 3 complete quarters of qualification decay on each side to compare with.")


def test_an_interval_across_no_change_says_so():
    text = change_sentence(change_row(ci_high=0.05, direction="neither", significant=False))
    assert text.endswith(": no clear change.")


def test_the_headline_speaks_of_significant_index_changes_only_preferring_the_controlled_estimate():
    rows = pd.DataFrame([
        change_row(quantity="panic_index", scale="difference", estimate=-3.1, ci_low=-4.0, ci_high=-2.2),
        change_row(quantity="panic_index", method="difference-in-differences", control="Globex Corporation",
                   estimate=-2.9, ci_low=-4.1, ci_high=-1.7),
        change_row(),
    ])
    assert change_headline(rows) == ("Since deal desk began on 2024-10-01, the panic index of Northwind Traders fell "
                                     "by 2.9 (95% CI 1.7 to 4.1) against Globex Corporation, which did not change.")
    assert change_headline(rows.assign(significant=False)) == ""


def test_backloading_sentences_picture_the_share_with_its_interval():
    row = {"org": "Globex", "quarter": "FY2025-Q4", "metric": "month3_share_above_even", "estimate": 0.43 - 1 / 3,
           "ci_low": 0.39 - 1 / 3, "ci_high": 0.47 - 1 / 3, "reference": 1 / 3, "p_value": 0.0004,
           "p_sided": "one-sided", "flagged": True, "direction": "toward panic", "status": "ok", "ci_level": 0.95,
           "signals": ["won amount"]}
    assert describe(row) == ("Globex, FY2025-Q4: 43% of the quarter's bookings closed in its last month "
                             "(95% CI 39–47%; p < 0.001, one-sided; flagged), above an even pace of 33%.")
    level = {**row, "metric": "month3_bookings_share", "estimate": 0.43, "ci_low": 0.39, "ci_high": 0.47,
             "reference": float("nan"), "p_value": float("nan"), "signals": ["won deal count"]}
    assert describe(level) == ("Globex, FY2025-Q4: 43% of the quarter's bookings (counted in deals: no amounts) "
                               "closed in its last month (95% CI 39–47%).")
    main = {**row, "metric": "bookings_backloading", "estimate": 0.10, "ci_low": 0.02, "ci_high": 0.18,
            "reference": 0.33, "p_value": 0.01, "flagged": False, "direction": "toward panic"}
    assert describe(main) == ("Globex, FY2025-Q4: 43% of the quarter's bookings closed in its last month, 10 points "
                              "more than in the organisation's other quarters (33%; 95% CI 2 to 18 points; "
                              "p = 0.010, one-sided) — above its usual pace.")
    # An interval that reaches the even pace is not "above" it.
    unclear = {**row, "ci_low": -0.01, "direction": "neither", "flagged": False, "p_value": 0.08}
    assert ", not clearly above an even pace of 33%." in describe(unclear)
