import numpy as np
import pandas as pd

import quarterpanic.analysis.backloading  # noqa: F401  (registers the back-loading metrics)
import quarterpanic.analysis.outcomes  # noqa: F401  (registers the outcome metrics)
import quarterpanic.analysis.qualification  # noqa: F401
import quarterpanic.analysis.reactive  # noqa: F401
from quarterpanic.report.words import (bold_names, bold_sentence, bold_text, bullet_list, ci_text, describe,
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
