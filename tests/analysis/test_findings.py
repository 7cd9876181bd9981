import json
import typing

import numpy as np
import pandas as pd
import pytest

from quarterpanic.analysis.findings import (
    FDR_FAMILIES,
    FINDING_COLUMNS,
    INSUFFICIENT,
    apply_fdr,
    main_findings,
    make_findings,
    register_metric,
    to_json,
)
from quarterpanic.params import DEFAULTS, Parameters

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


def two_orgs(calm_p, panic_p):
    calm = findings_with(calm_p, [0.1] * len(calm_p)).assign(org="calm")
    panic = findings_with(panic_p, [0.3] * len(panic_p)).assign(org="panic")
    return make_findings(pd.concat([calm, panic], ignore_index=True))


def test_organisation_family_keeps_one_orgs_flags_apart_from_anothers_panic():
    calm_p, panic_p = [0.01, 0.03, 0.2, 0.5], [1e-6] * 8
    alone = apply_fdr(findings_with(calm_p, [0.1] * 4).assign(org="calm"))
    together = apply_fdr(two_orgs(calm_p, panic_p))
    # BH on the calm org alone (m = 4): only 0.01 passes (0.03 > 2/4 · 0.05).
    assert alone["flagged"].tolist() == [True, False, False, False]
    assert together.loc[together["org"] == "calm", "flagged"].tolist() == alone["flagged"].tolist()
    np.testing.assert_allclose(together.loc[together["org"] == "calm", "q_value"], alone["q_value"])


@pytest.mark.parametrize("family", ["run", "metric"])
def test_pooled_families_let_another_orgs_panic_move_the_flags(family):
    together = apply_fdr(two_orgs([0.01, 0.03, 0.2, 0.5], [1e-6] * 8), family=family)
    # m = 12: 0.03 at rank 10 passes (10/12 · 0.05 ≈ 0.042) once the other org's eight tiny p-values lead.
    assert together.loc[together["org"] == "calm", "flagged"].tolist() == [True, True, False, False]


def test_organisation_family_is_per_metric_too():
    one = findings_with([0.01, 0.03, 0.2, 0.5], [0.1] * 4)
    other = findings_with([1e-6] * 8, [0.3] * 8).assign(metric="test_other")
    out = apply_fdr(make_findings(pd.concat([one, other], ignore_index=True)))
    assert out.loc[out["metric"] == "test_decay", "flagged"].tolist() == [True, False, False, False]


def test_families_are_the_parameters_choices_and_others_are_refused():
    assert set(FDR_FAMILIES) == set(typing.get_args(Parameters.model_fields["fdr_family"].annotation))
    assert DEFAULTS["fdr_family"] == "organisation"
    with pytest.raises(ValueError, match="family"):
        apply_fdr(findings_with([0.01], [0.3]), family="org")
