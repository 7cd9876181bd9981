"""quarterpanic.report.notebook: the view every notebook reads (pseudonyms, quarter selection)."""
import pandas as pd

from helpers import bernoulli_dataset
from quarterpanic.analysis import overview
from quarterpanic.analysis.features import opportunity_features
from quarterpanic.report.notebook import notebook_view

REAL = ["Alice Archer", "Bob Baker", "Carol <b>Cole</b>"]


def named_dataset(**kwargs):
    data = bernoulli_dataset(per_quarter=60, **kwargs)
    opps = data.opportunities
    owners = pd.Series(REAL * len(opps))[: len(opps)].to_numpy()
    opps = opps.assign(owner=owners, account=[f"Acme {i % 7}" for i in range(len(opps))],
                       name=[f"Deal {i}" for i in range(len(opps))])
    data.opportunities = opps
    return data


def test_names_are_replaced_by_pseudonyms_only_when_asked():
    data = named_dataset()
    plain = notebook_view(data, {"pseudonymize": False})
    assert set(plain.dataset.opportunities["owner"]) == set(REAL)
    hidden = notebook_view(data, {"pseudonymize": True}).dataset.opportunities
    text = hidden[["owner", "account", "name"]].to_string()
    assert not any(name in text for name in REAL + ["Acme", "Deal 1"])
    assert set(hidden["owner"]) == {"Owner 01", "Owner 02", "Owner 03"}
    assert hidden["account"].str.fullmatch(r"Account \d\d").all()
    # One owner, one pseudonym: the deals of each real owner keep a single name.
    pairs = pd.DataFrame({"real": data.opportunities["owner"].to_numpy(), "pseudonym": hidden["owner"].to_numpy()})
    assert (pairs.groupby("real")["pseudonym"].nunique() == 1).all()
    # Everything else is as loaded.
    pd.testing.assert_frame_equal(hidden.drop(columns=["owner", "account", "name"]),
                                  data.opportunities.drop(columns=["owner", "account", "name"]))


def test_default_selection_shows_complete_quarters_and_never_the_open_one():
    data = bernoulli_dataset(per_quarter=60, as_of=pd.Timestamp("2024-11-15"))
    view = notebook_view(data, {})
    features = opportunity_features(data)
    rows = features[["org", "quarter"]].drop_duplicates()
    status = overview.quarter_status(view.coverage)
    open_quarter = status.loc[status["status"] == "open", "quarter"].tolist()
    complete = status.loc[status["status"] == "complete", "quarter"].tolist()
    assert open_quarter and complete
    shown = view.shown(rows)
    assert sorted(shown["quarter"]) == sorted(complete)
    assert not set(open_quarter) & set(shown["quarter"])


def test_a_quarters_parameter_selects_those_labels_whatever_their_status():
    data = bernoulli_dataset(per_quarter=60, as_of=pd.Timestamp("2024-11-15"))
    labels = sorted(opportunity_features(data)["quarter"].unique())
    view = notebook_view(data, {"quarters": [labels[-1]]})
    frame = pd.DataFrame({"org": "A", "quarter": labels, "value": range(len(labels))})
    assert view.shown(frame)["quarter"].tolist() == [labels[-1]]  # the open quarter, since it was asked for
    assert view.chosen(frame)["quarter"].tolist() == [labels[-1]]
    records = view.shown_records(data.opportunities, "created_at")
    assert len(records) and (records["created_at"] >= pd.Timestamp("2024-10-01")).all()
    assert notebook_view(data, {}).chosen(frame).equals(frame)  # no parameter: every row
