"""quarterpanic.report.reactive_report: the page's first line (the charts are tested with the analysis)."""
from types import SimpleNamespace

import pandas as pd

from quarterpanic.report import reactive_report as report


def test_intro_counts_requests_and_names_the_organisations_and_segment_escaped():
    analysis = SimpleNamespace(requests=pd.DataFrame({"request_id": range(1234)}))
    focus = pd.DataFrame({"org": ["Globex", "<b>Initech</b>"], "quarter": ["FY2026-Q3", "FY2026-Q2"]})
    as_of = pd.Timestamp("2025-11-15 14:05")
    assert report.intro(as_of, analysis, focus) == (
        "As of **2025-11-15 14:05**, 1,234 sales-ops requests of **Globex**, **&lt;b&gt;Initech&lt;/b&gt;**.")
    assert report.intro(as_of, analysis, focus, "Mid-Market").endswith(
        "**&lt;b&gt;Initech&lt;/b&gt;** (segment **Mid\\-Market**).")
