"""Each organisation's findings in the terms of its size class, and what its data could not measure."""
from __future__ import annotations

import numpy as np
import pandas as pd

from quarterpanic.analysis import silos
from quarterpanic.analysis.findings import INSUFFICIENT, NOT_MEASURED, OK, apply_fdr, make_findings
from quarterpanic.report import size_report

SIZES = {"Tiny <b>Co</b>": "small", "Middle": "mid", "Huge": "enterprise"}


def sell_or_do_rows(org, *, status=OK, estimate=-0.55, low=-0.7, high=-0.35, p=0.001, needs=None):
    base = dict(org=org, quarter="FY2025-Q4", component="sell_or_do", since_quarter="FY2024-Q1",
                win_amount=45_000.0, currency="EUR", weeks_after=4, post_weeks=20, n=300)
    rows = [dict(base, metric="sell_or_do", status=status, needs=needs,
                 **({} if status != OK else dict(estimate=estimate, ci_low=low, ci_high=high, p_value=p))),
            dict(base, metric="sell_or_do_crunch", estimate=0.05, ci_low=-0.1, ci_high=0.2, p_value=0.7),
            dict(base, metric="sell_or_do_leads", status=NOT_MEASURED, needs=["leads export"])]
    return rows


def trends(rows):
    columns = ["org", "segment", "first_quarter", "last_quarter", "n_quarters", "slope_per_year", "ci_low",
               "ci_high", "p_value", "ci_level", "status"]
    return pd.DataFrame(rows, columns=columns)


def lenses(findings_rows, index_rows=(), component_rows=()):
    findings = apply_fdr(make_findings(pd.DataFrame(findings_rows)))
    component = pd.DataFrame(list(component_rows), columns=["org", "segment", "component", "slope_per_year",
                                                            "ci_low", "ci_high", "n_quarters", "first_quarter",
                                                            "status"])
    return size_report.size_lenses(findings, trends(list(index_rows)), component, SIZES)


def test_a_small_firm_hears_that_selling_stops_after_a_large_win():
    table = lenses(sell_or_do_rows("Tiny <b>Co</b>"))
    own = table[(table["org"] == "Tiny <b>Co</b>") & table["own_lens"]]
    assert (own["lens"] == "sell or do").all()
    first = own["sentence"].iloc[0]
    assert first.startswith("In the 4 weeks after a win above 45k EUR, new pipeline fell 55%")
    assert "95% CI -70% to -35%" in first and "since FY2024-Q1" in first and "selling stops" in first
    assert "no clear stop" in own["sentence"].iloc[1]
    unmeasured = own.loc[~own["measured"], "sentence"].tolist()
    assert unmeasured == ["Whether new leads logged slows after a large win could not be measured: "
                          "the data have no leads export"]


def test_a_mid_size_company_without_ticket_history_is_told_what_would_unlock_the_silos():
    table = lenses(sell_or_do_rows("Middle"))
    own = table[(table["org"] == "Middle") & table["own_lens"]]
    assert own["lens"].tolist() == ["silos", "silos"] and not own["measured"].any()
    assert size_report.SILO_NEEDS in own["sentence"].iloc[0]
    assert size_report.DEPARTMENT_FIELDS_NEEDS in own["sentence"].iloc[1]
    # Sell or do is computed for every organisation: it still shows, after the size's own lens.
    assert table[table["org"] == "Middle"]["lens"].iloc[-1] == "slow change"
    assert "sell or do" in table[table["org"] == "Middle"]["lens"].tolist()


def test_measured_silo_findings_are_described_from_the_latest_quarter():
    # The silo detector's own metric names: the lens once filtered on name prefixes the main silo metric
    # (mid_size_silos) does not have, so only the wait stretch was ever described.
    rows = [dict(org="Middle", quarter=q, component=silos.COMPONENT, metric=metric, estimate=e, ci_low=e - 0.5,
                 ci_high=e + 0.5, p_value=0.5)
            for q, e in (("FY2025-Q3", 1.5), ("FY2025-Q4", 2.0)) for metric in (silos.COMPONENT, silos.WAIT_METRIC)]
    own = lenses(rows).query("org == 'Middle' and own_lens")
    measured = own[own["measured"]]
    assert len(measured) == 2 and measured["sentence"].str.contains("FY2025-Q4").all()
    # The CRM side of the silos was not in these findings: said, not hidden.
    assert own.loc[~own["measured"], "sentence"].str.contains("department_fields:").all()


def test_an_enterprise_hears_the_trend_and_the_components_that_moved():
    index_rows = [dict(org="Huge", segment="all", first_quarter="FY2024-Q1", last_quarter="FY2026-Q2",
                       n_quarters=10, slope_per_year=-0.4, ci_low=-0.7, ci_high=-0.1, p_value=0.01, ci_level=0.95,
                       status=OK)]
    component_rows = [dict(org="Huge", segment="all", component="reactive_order_taking", slope_per_year=-0.6,
                           ci_low=-0.9, ci_high=-0.2, n_quarters=10, first_quarter="FY2024-Q1", status=OK),
                      dict(org="Huge", segment="all", component="qualification_decay", slope_per_year=0.1,
                           ci_low=-0.2, ci_high=0.3, n_quarters=10, first_quarter="FY2024-Q1", status=OK)]
    own = lenses(sell_or_do_rows("Huge"), index_rows, component_rows).query("org == 'Huge' and own_lens")
    assert own["sentence"].tolist() == [
        "Since FY2024-Q1, panic has eased by 0.4 SD a year (95% CI 0.1 to 0.7; 10 quarters)",
        "Since FY2024-Q1, reactive order-taking has eased by 0.6 SD a year (95% CI 0.2 to 0.9; 10 quarters)",
    ]


def test_a_small_but_clear_trend_is_not_rounded_to_zero():
    row = dict(org="Huge", segment="all", first_quarter="FY2024-Q1", last_quarter="FY2026-Q2", n_quarters=10,
               slope_per_year=-0.04, ci_low=-0.07, ci_high=-0.012, p_value=0.01, ci_level=0.95, status=OK)
    assert size_report.trend_sentence(row) == (
        True, "Since FY2024-Q1, panic has eased by 0.04 SD a year (95% CI 0.01 to 0.07; 10 quarters)")
    flat = dict(row, slope_per_year=0.03, ci_low=-0.05, ci_high=0.11)
    assert size_report.trend_sentence(flat)[1] == (
        "Since FY2024-Q1, no clear trend in panic: +0.03 SD a year (95% CI -0.05 to +0.11; 10 quarters)")


def test_too_few_quarters_and_too_little_data_are_said_not_hidden():
    index_rows = [dict(org="Huge", segment="all", first_quarter="FY2025-Q1", last_quarter="FY2025-Q4",
                       n_quarters=4, slope_per_year=np.nan, ci_low=np.nan, ci_high=np.nan, p_value=np.nan,
                       ci_level=0.95, status=INSUFFICIENT)]
    table = lenses(sell_or_do_rows("Huge", status=INSUFFICIENT), index_rows)
    huge = table[table["org"] == "Huge"]
    assert "Too few quarters with a panic index (4)" in huge["sentence"].iloc[0]
    assert any(s.startswith("Too little data to tell whether new pipeline slows") for s in huge["sentence"])
    assert not huge["sentence"].str.contains(r"\bnan\b").any()  # a missing number, not "finance"


def test_the_markdown_escapes_names_and_lists_what_could_not_be_measured():
    text = size_report.size_lenses_markdown(lenses(sell_or_do_rows("Tiny <b>Co</b>")))
    assert "<b>" not in text and "Tiny" in text
    assert "(small: sell or do)" in text and "* Not measured: Whether new leads logged" in text
    assert "**Middle** (mid: silos)" in text and "* Not measured: Handoffs between departments" in text


def department_rows(org, *, flagged_p=0.001, needs=None):
    base = dict(org=org, quarter="FY2025-Q4", component="department_fields", n=120)
    if needs is not None:
        return [dict(base, metric=metric, status=NOT_MEASURED, needs=needs)
                for metric in ("department_fields", "department_field_gap")]
    return [dict(base, metric="department_fields", department="any", estimate=0.29, ci_low=0.15, ci_high=0.42,
                 p_value=flagged_p, share_early=0.12, share_late=0.41),
            dict(base, metric="department_field_gap", department="legal", estimate=0.21, ci_low=0.08,
                 ci_high=0.33, p_value=0.002),
            dict(base, metric="department_field_gap", department="finance", estimate=0.05, ci_low=-0.05,
                 ci_high=0.15, p_value=0.2)]


def test_a_mid_size_company_hears_which_departments_fields_deals_close_without():
    own = lenses(department_rows("Middle")).query("org == 'Middle' and own_lens")
    sentence = own.loc[own["measured"], "sentence"].tolist()
    assert sentence == ["In FY2025-Q4, 41% of the deals won in the last 4 weeks missed a field finance or legal owns "
                        "when they closed, against 12% earlier in the quarter (+29 points, 95% CI +15 to +42; most "
                        "in legal: +21 points): deals close before the other departments have done their part"]
    calm = lenses(department_rows("Middle", flagged_p=0.4)).query("org == 'Middle' and own_lens and measured")
    assert calm["sentence"].iloc[0].endswith("no clear gap between late and earlier deals")
    assert "most in" not in calm["sentence"].iloc[0]


def test_without_department_fields_the_sentence_names_the_org_yaml_entry_that_unlocks_them():
    need = size_report.DEPARTMENT_FIELDS_NEEDS
    assert "org.yaml department_fields:" in need
    table = lenses(department_rows("Middle", needs=[need]))
    own = table.query("org == 'Middle' and own_lens and not measured")
    assert own["sentence"].iloc[-1] == ("Whether deals closing late miss the fields other departments (legal, finance, "
                                        f"delivery) own could not be measured: the data have no {need}")
    text = size_report.size_lenses_markdown(table)
    assert "* Not measured: Whether deals closing late miss the fields other departments" in text
