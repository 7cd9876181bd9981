import json

import numpy as np
import pandas as pd

from quarterpanic.analysis.findings import (
    FINDING_COLUMNS,
    INSUFFICIENT,
    apply_fdr,
    main_findings,
    make_findings,
    register_metric,
    to_json,
)

register_metric("test_decay", component="test_decay", null=0.0, direction=+1, unit="share", description="t")


def findings_with(p_values, estimates, status=None):
    n = len(p_values)
    return make_findings(
        {
            "org": ["o"] * n, "quarter": [f"FY2025-Q{i % 4 + 1}" for i in range(n)], "component": "test_decay",
            "metric": "test_decay", "estimate": estimates, "ci_low": np.nan, "ci_high": np.nan,
            "p_value": p_values, "n": 100, "status": status or ["ok"] * n,
        }
    )


def test_make_findings_has_standard_columns_and_defaults():
    f = findings_with([0.01], [0.3])
    assert list(f.columns[: len(FINDING_COLUMNS)]) == FINDING_COLUMNS
    assert f.loc[0, "segment"] == "all" and not f.loc[0, "flagged"]


def test_bh_flags_only_what_survives_and_only_on_the_panic_side():
    p = [0.001, 0.002, 0.04, 0.5, 0.001]
    est = [0.3, 0.3, 0.3, 0.3, -0.3]
    out = apply_fdr(findings_with(p, est), alpha=0.05)
    # BH with m=5: 0.001,0.001,0.002 pass (<= 0.01,0.02,0.03); 0.04 > 0.04*... 4/5*0.05=0.04 -> passes at rank 4.
    assert out["flagged"].tolist() == [True, True, True, False, False]
    assert out["q_value"].notna().all()


def test_insufficient_data_is_never_flagged_nor_tested():
    out = apply_fdr(findings_with([1e-9, 0.03], [0.5, 0.2], status=[INSUFFICIENT, "ok"]))
    assert out["flagged"].tolist() == [False, True]
    assert np.isnan(out.loc[0, "q_value"])


def test_json_has_the_documented_shape_and_nulls():
    f = findings_with([0.01], [0.3])
    doc = json.loads(to_json(f))
    assert set(doc["findings"][0]) == set(FINDING_COLUMNS)
    assert doc["findings"][0]["onset_week"] is None and doc["findings"][0]["ci_low"] is None


def test_main_findings_keeps_component_rows():
    f = pd.concat([findings_with([0.1], [0.1]), findings_with([0.1], [0.1]).assign(metric="other")])
    assert len(main_findings(make_findings(f))) == 1
