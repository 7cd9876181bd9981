"""notebooks/04_panic_index.ipynb runs on a small generated sample and records its key figures."""

import html
import json

import pytest

from helpers import (NAME_PAYLOAD, ROOT, TODAYS_EFFECT, NotebookOutputChecks, execute_notebook_on_sample,
                     notebook_outputs, run_cli, write_hostile_names_sample)
from quarterpanic.analysis.panic_index import COMPONENTS
from quarterpanic.report.safe import escape_text

NOTEBOOK = ROOT / "notebooks" / "04_panic_index.ipynb"
HOSTILE_ORG = "Northwind <img src=x onerror=alert(1)> Traders"
LEVELS = {"calm", "watch", "panic", "insufficient data"}
# The sample's Globex declares its deal desk in its org.yaml (no parameter names it); Globex's fiscal quarters
# start in February: the sample's 8 complete quarters fall 4 either side of the date.
CHANGE = {"org": "Globex Corporation", "segment": None, "date": "2024-11-01", "label": "deal desk"}


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    summary, notebook, sample = execute_notebook_on_sample(
        "04_panic_index.ipynb", tmp_path_factory.mktemp("nb04"), seed=7, rename_org="Northwind Traders",
        new_name=HOSTILE_ORG, scenario=TODAYS_EFFECT)
    assert sample.truth["changes"] == [CHANGE]
    truth = sample.truth_frame().replace({"org": {"Northwind Traders": HOSTILE_ORG}})
    return summary, notebook, truth


@pytest.mark.slow
def test_summary_has_a_headline_and_valid_levels(executed):
    summary, _, truth = executed
    assert isinstance(summary["headline"], str) and len(summary["headline"]) > 20
    assert "panicked" in summary["headline"]
    index = summary["index"]
    assert index and {row["level"] for row in index} <= LEVELS
    assert {row["org"] for row in index} == {HOSTILE_ORG, "Globex Corporation", "Brightline Studio"}
    # Panic is injected into every organisation, the small studio too; the index calls an organisation's
    # quarter a panic only where truth.json has one, and finds the mid-size and enterprise panics.
    panics = set(map(tuple, truth.loc[truth["panic"], ["org", "quarter"]].to_numpy()))
    called = {(row["org"], row["quarter"]) for row in index if row["level"] == "panic"}
    assert called <= panics, f"calm quarters called panic: {called - panics}"
    assert {org for org, _ in called} >= {HOSTILE_ORG, "Globex Corporation"}
    for org, counts in summary["levels"].items():
        assert set(counts) <= LEVELS and sum(counts.values()) == sum(1 for r in index if r["org"] == org)


@pytest.mark.slow
def test_summary_records_costs_sizes_and_the_open_quarter(executed):
    summary, _, _ = executed
    assert {"discount_cost", "discount_cost_totals", "size_classes", "top_findings", "components"} <= set(summary)
    for row in summary["discount_cost_totals"]:
        assert row["cost_low"] <= row["cost"] <= row["cost_high"]
    assert {row["size_class"] for row in summary["size_classes"]} == {"small", "mid", "enterprise"}
    warning = {row["org"]: row for row in summary["early_warning"]}
    assert set(warning) == {HOSTILE_ORG, "Globex Corporation", "Brightline Studio"}
    # Northwind's open quarter panics from week 9 and the sample ends in its week 11.
    assert warning[HOSTILE_ORG]["status"] == "panic signals"
    assert all(row["sentence"].startswith(row["org"]) for row in warning.values())


@pytest.mark.slow
def test_each_organisation_is_described_in_the_terms_of_its_size(executed):
    _, notebook, _ = executed
    text = "".join("".join(output.get("data", {}).get("text/markdown", "")) for output in notebook_outputs(notebook))
    assert "**Brightline Studio** (small: sell or do)" in text
    assert "**Globex Corporation** (" in text and escape_text(HOSTILE_ORG) in text
    # The sample's small studio has amounts and won deals, so its sell-or-do question is answered in numbers.
    studio = text.split("**Brightline Studio** (small: sell or do)")[1].split("\n\n")[0]
    assert "weeks after a win above" in studio and "CI" in studio
    # The mid-size company's lens reads its department-owned deal fields (missing at close, late vs earlier).
    northwind = text.split(escape_text(HOSTILE_ORG) + "** (mid: silos)")[1].split("\n\n")[0]
    assert "missed a field" in northwind and "owns when they closed" in northwind


def test_the_change_is_judged_before_and_after_and_against_the_orgs_that_did_not_change(executed):
    summary, notebook, truth = executed
    rows = {(row["quantity"], row["method"]): row for row in summary["changes"]}
    assert {quantity for quantity, _ in rows} == {"panic_index", "qualification_decay", "reactive_order_taking",
                                                 "bookings_backloading"}
    its, did = rows[("panic_index", "before/after")], rows[("panic_index", "difference-in-differences")]
    assert its["status"] == "ok" and (its["n_before"], its["n_after"]) == (4, 4)
    assert its["ci_low"] <= its["estimate"] <= its["ci_high"] and its["label"] == "deal desk"
    assert did["control"] == f"Brightline Studio, {HOSTILE_ORG}"
    section = "".join("".join(o.get("data", {}).get("text/markdown", "")) for cell in notebook["cells"]
                      for o in cell.get("outputs", []))
    assert escape_text("Globex Corporation, deal desk (from 2024-11-01): panic index went from") in section
    assert escape_text(HOSTILE_ORG) in section
    # Globex panicked in each of the 4 quarters before its change and in none of the 4 since (truth.json):
    # the index fell, significantly, and the headline says so.
    globex = truth[(truth["org"] == "Globex Corporation") & ~truth["open"]]
    assert globex["panic"].tolist() == [True] * 4 + [False] * 4
    assert its["estimate"] < 0 and its["significant"] and its["direction"] == "away from panic"
    assert "Since deal desk began on 2024-11-01, the panic index of Globex Corporation fell by" in summary["headline"]


@pytest.mark.slow
class TestOutputs(NotebookOutputChecks):
    min_images = 8  # the seven of the page and the change's chart


# -- real name fields: owners and accounts carrying markup, shown escaped or replaced by pseudonyms ---------
@pytest.fixture(scope="module")
def named_pages(tmp_path_factory):
    """The published 04 page on a sample whose Globex owners and accounts end in markup, without and with pseudonyms."""
    root = tmp_path_factory.mktemp("nb04names")
    names = write_hostile_names_sample(root / "data")
    pages = {}
    for pseudonymize in ("false", "true"):
        out = root / f"reports-{pseudonymize}"
        code, stderr = run_cli("--notebooks", str(NOTEBOOK), "-p", "data_dir", str(root / "data"),
                               "-p", "pseudonymize", pseudonymize, "--out", str(out))
        assert code == 0, stderr
        pages[pseudonymize] = (out / "latest" / "04_panic_index.html").read_text()
    return names, pages


def spellings(name):
    """How a name can appear in a page: as is, HTML-escaped, Markdown-escaped."""
    return {name, html.escape(name, quote=False), escape_text(name)}


@pytest.mark.slow
def test_the_deals_behind_the_panic_show_real_names_escaped(named_pages):
    names, pages = named_pages
    page = pages["false"]
    assert "The deals behind the panic" in page and "Globex Corporation" in page
    shown = [owner for owner in names["owners"] if any(f"{s} &lt;img" in page for s in spellings(owner))]
    assert shown, "no Globex owner in the names table"
    assert any(f"{s} &lt;img src=x onerror=alert(7)&gt;" in page for a in names["accounts"] for s in spellings(a))
    assert NAME_PAYLOAD.strip() not in page  # never markup


@pytest.mark.slow
def test_with_pseudonymize_no_real_name_reaches_the_page(named_pages):
    names, pages = named_pages
    page = pages["true"]
    assert "The deals behind the panic" in page
    leaked = [n for n in names["owners"] + names["accounts"] if any(s in page for s in spellings(n))]
    assert leaked == []
    assert "onerror" not in page  # the payload went with the names
    assert "Owner " in page and "Account " in page


def test_the_words_on_what_drives_the_index_name_every_component_and_its_relative_weight():
    # The reader's explanation of the weights must follow analysis.panic_index.COMPONENTS (it once said "a third
    # each" for two components after a third main one had joined).
    cells = ["".join(c["source"]) for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "markdown"]
    words = " ".join(next(c for c in cells if c.startswith("## What drives the index")).split())
    for symptom in {c.symptom for c in COMPONENTS}:
        assert symptom in words, symptom
    heaviest = [c for c in COMPONENTS if c.weight == max(k.weight for k in COMPONENTS)]
    lightest = [c for c in COMPONENTS if c.weight == min(k.weight for k in COMPONENTS)]
    assert len(heaviest) == 3 and len(lightest) == 2 and heaviest[0].weight == 2 * lightest[0].weight
    assert "weigh twice as much as each of the two outcome" in words
