"""quarterpanic.report.safe: CRM text escaped for Markdown, names replaced by stable pseudonyms."""
import re

import pandas as pd
from nbconvert.filters.markdown_mistune import markdown2html_mistune

from quarterpanic.report.safe import escape_text, pseudonym_map, pseudonymize_names, pseudonymize_tables

HOSTILE = "Brightline <img src=x onerror=alert(1)> *Studio* [x](javascript:alert(1))\n# Heading"


def rendered(text: str) -> str:
    """Markdown as the published pages render it."""
    return markdown2html_mistune(text)


def test_escape_text_renders_hostile_names_literally_on_one_line():
    text = escape_text(HOSTILE)
    assert "\n" not in text
    html = rendered(f"Largest late deal: **{text}**")
    assert "<img" not in html and "<a " not in html and "<em>" not in html and "<h1>" not in html
    # What the reader sees is the name as written (newline folded to a space).
    visible = re.sub(r"<[^>]+>", "", html).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    assert " ".join(HOSTILE.splitlines()) in visible


def test_escape_text_of_missing_and_plain_values():
    assert escape_text(None) == ""
    assert escape_text("Globex Corporation") == "Globex Corporation"
    assert escape_text(42) == "42"


def test_pseudonym_map_is_stable_unrelated_to_order_and_skips_missing():
    names = ["Ann", "Bob", None, "Cid", "Ann", float("nan")]
    first = pseudonym_map(names, "Owner")
    assert first == pseudonym_map(list(reversed(names)), "Owner")
    assert set(first) == {"Ann", "Bob", "Cid"}
    assert sorted(first.values()) == ["Owner 01", "Owner 02", "Owner 03"]
    wide = pseudonym_map([f"seller {i}" for i in range(120)], "Owner")
    assert all(re.fullmatch(r"Owner \d{3}", value) for value in wide.values())


def test_pseudonymize_names_replaces_only_the_name_columns_and_keeps_missing():
    frame = pd.DataFrame({"owner": ["Ann", None, "Bob"], "account": ["Globex", "Initech", "Globex"],
                          "amount": [1.0, 2.0, 3.0]})
    before = frame.copy()
    out = pseudonymize_names(frame, ["owner", "account"])
    pd.testing.assert_frame_equal(frame, before)  # the input is left alone
    assert pd.isna(out["owner"].iloc[1])
    assert set(out["owner"].dropna()) <= {"Owner 01", "Owner 02"} and out["owner"].nunique() == 2
    assert out["account"].iloc[0] == out["account"].iloc[2] != out["account"].iloc[1]
    assert out["account"].str.startswith("Account ").all()
    assert out["amount"].tolist() == [1.0, 2.0, 3.0]


def test_a_name_outside_the_given_universe_is_marked_unknown():
    frame = pd.DataFrame({"owner": ["Ann", "Zed"]})
    out = pseudonymize_names(frame, {"owner": "Owner"}, names={"Owner": ["Ann", "Bob"]})
    assert out["owner"].iloc[0].startswith("Owner ") and out["owner"].iloc[1] == "Owner ?"


def test_pseudonymize_tables_numbers_owners_and_requesters_together():
    tables = {
        "opportunities": pd.DataFrame({"name": ["Big deal"], "account": ["Globex"], "owner": ["Ann"]}),
        "requests": pd.DataFrame({"requester": ["Bob", "Ann"]}),
        "history": pd.DataFrame({"owner": ["Bob"]}),
    }
    out = pseudonymize_tables(tables)
    ann = out["opportunities"]["owner"].iloc[0]
    assert out["requests"]["requester"].tolist()[1] == ann
    assert out["history"]["owner"].iloc[0] == out["requests"]["requester"].iloc[0] != ann
    assert out["opportunities"]["name"].iloc[0].startswith("Opportunity ")
    assert out["opportunities"]["account"].iloc[0].startswith("Account ")
