import pandas as pd
import pytest

from helpers import canonical_table as table
from quarterpanic.dataset import Dataset, changes_to_judge, require_opportunities
from quarterpanic.errors import NoDataError


def small_dataset(as_of=None):
    opps = table("opportunities", [
        dict(org="A", opportunity_id="1", size_class="mid", created_at="2025-01-10", close_date="2025-02-01",
             stage="Closed Won", is_closed=True, is_won=True, segment="SMB"),
        dict(org="A", opportunity_id="2", size_class="mid", created_at="2025-01-20", close_date="2025-04-01",
             stage="Closed Lost", is_closed=True, is_won=False, segment="Enterprise"),
        dict(org="B", opportunity_id="3", size_class="small", created_at="2025-03-01", close_date="2025-03-20",
             stage="Proposal", is_closed=False, is_won=False, segment="SMB"),
    ])
    requests = table("requests", [
        dict(org="A", request_id="R1", created_at="2025-01-15", resolved_at="2025-02-10", request_type="Rush Quote",
             planned=False, opportunity_id="1"),
        dict(org="A", request_id="R2", created_at="2025-03-15", resolved_at=None, request_type="Expedite",
             planned=False, opportunity_id="2"),
    ])
    return Dataset.from_tables(
        {"opportunities": opps, "requests": requests},
        {"A": {"size_class": "mid", "fiscal_calendar": {"start_month": 2},
               "changes": [{"date": "2025-02-01", "segment": "SMB", "label": "deal desk"}]},
         "B": {"size_class": "small", "changes": [{"date": "2025-03-01"}]}},
        as_of=as_of,
    )


def test_as_of_defaults_to_the_latest_record():
    # Of any kind: deal 2 closed on 2025-04-01, after the last creation (request R2 on 2025-03-15).
    assert small_dataset().as_of == pd.Timestamp("2025-04-01")


def test_cut_forgets_what_was_not_known_yet():
    cut = small_dataset(as_of="2025-02-05")
    assert list(cut.opportunities["opportunity_id"]) == ["1", "2"]
    # Deal 2 closed on 2025-04-01, after as_of: then it was still open.
    assert cut.opportunities.set_index("opportunity_id").loc["2", "is_closed"] == False  # noqa: E712
    assert cut.opportunities.set_index("opportunity_id").loc["1", "is_won"] == True  # noqa: E712
    assert cut.requests["resolved_at"].isna().all() and len(cut.requests) == 1


def test_filter_by_org_and_segment():
    data = small_dataset()
    assert data.filter(orgs=["B"]).orgs == ["B"]
    smb = data.filter(segment="SMB")
    assert set(smb.opportunities["opportunity_id"]) == {"1", "3"}
    assert list(smb.requests["request_id"]) == ["R1"]


def test_each_org_keeps_its_calendar():
    data = small_dataset()
    assert data.calendar("A").start_month == 2 and data.calendar("B").start_month == 1
    assert data.size_classes == {"A": "mid", "B": "small"}


# -- changes: org.yaml's, overridden per organisation by the parameters ------------------------------
def test_org_yaml_changes_are_judged_unless_the_parameters_name_the_organisation():
    data = small_dataset()
    declared_a = {"org": "A", "segment": "SMB", "date": "2025-02-01", "label": "deal desk", "pre_trend": False}
    declared_b = {"org": "B", "segment": None, "date": "2025-03-01", "label": None, "pre_trend": False}
    assert changes_to_judge(data, {"changes": []}) == [declared_a, declared_b]
    given = {"org": "A", "segment": None, "date": "2025-03-10", "label": "new plan", "pre_trend": False}
    # A's own change gives way to the parameters' change of A; B keeps its org.yaml change.
    assert changes_to_judge(data, {"changes": [given]}) == [given, declared_b]
    assert changes_to_judge(data.filter(orgs=["A"]), {"changes": []}) == [declared_a]
    assert data.cut("2025-02-05").changes == data.changes


# -- no opportunity at all ---------------------------------------------------------------------------


def test_require_opportunities_says_the_exports_hold_none(tmp_path):
    accounting = pd.DataFrame({"table": ["opportunities"], "read": [3], "accepted": [0], "rejected": [3]})
    empty = Dataset.from_tables({"opportunities": pd.DataFrame()}, {})
    empty.accounting = accounting
    with pytest.raises(NoDataError, match="no opportunity to analyse") as raised:
        require_opportunities(empty, tmp_path, {})
    assert f"quarterpanic validate {tmp_path}" in str(raised.value)


def test_require_opportunities_names_the_filters_that_left_none(tmp_path):
    empty = Dataset.from_tables({"opportunities": pd.DataFrame()}, {})
    empty.accounting = pd.DataFrame({"table": ["opportunities"], "read": [3], "accepted": [3], "rejected": [0]})
    with pytest.raises(NoDataError, match="after as_of '2020-01-01'"):
        require_opportunities(empty, tmp_path, {"as_of": "2020-01-01", "orgs": None})
