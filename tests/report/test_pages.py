"""quarterpanic.report.pages: code-free, script-free report pages and the run's index."""
import base64
import re

import markupsafe
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from quarterpanic.report.pages import (
    CONTENT_SECURITY_POLICY,
    OutputSanitizer,
    error_html,
    error_summary,
    export_report,
    report_groups,
    table_of_contents,
    write_index,
)

HOSTILE = "Brightline <img src=x onerror=alert(1)> Studio"
PIXEL = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")).decode()


def executed_notebook(path):
    """A small executed notebook with every kind of output a report page must handle."""
    cells = [
        new_markdown_cell("# Qualification decay\n\nWhat the data says."),
        new_code_cell("alpha = 0.05", metadata={"tags": ["parameters"]}),
        new_code_cell("SECRET_CODE_LINE = 1", outputs=[
            new_output("stream", name="stdout", text="kept on the page\n"),
            new_output("stream", name="stderr", text="a warning nobody should read\n"),
        ]),
        new_markdown_cell("## Findings"),
        new_code_cell("display(name)", outputs=[
            new_output("display_data", data={"text/html": f"<p>{HOSTILE}</p><script>alert(2)</script>"}),
            new_output("display_data", data={"text/markdown": "[click](javascript:alert(3)) **bold**"}),
            new_output("display_data", data={"application/javascript": "alert(4)"}),
            new_output("display_data", data={"image/png": PIXEL}, metadata={"alt": "Decay by week"}),
        ]),
        new_code_cell("hidden()", metadata={"tags": ["remove_output"]}, outputs=[
            new_output("display_data", data={"text/plain": "output the author removed"}),
        ]),
        new_code_cell("1 / 0", outputs=[
            new_output("error", ename="ZeroDivisionError", evalue="\x1b[31mdivision by zero\x1b[0m",
                       traceback=["Traceback (most recent call last)", "a long traceback"]),
        ]),
    ]
    nbformat.write(new_notebook(cells=cells), str(path))
    return path


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pages")
    out = export_report(executed_notebook(folder / "02.ipynb"), folder / "02.html", title=f"Decay for {HOSTILE}",
                        run_id="20261127T053000Z-1a2b3c4d", status="failed",
                        error={"cell_index": 6, "ename": "ZeroDivisionError", "evalue": "division by zero"})
    return out.read_text(encoding="utf-8")


def test_page_shows_outputs_but_no_code_and_no_parameters(page):
    assert "kept on the page" in page and "What the data says." in page
    assert "SECRET_CODE_LINE" not in page and "alpha = 0.05" not in page
    assert "output the author removed" not in page
    assert "a warning nobody should read" not in page


def test_page_runs_no_script_and_shows_crm_text_as_text(page):
    assert f'content="{CONTENT_SECURITY_POLICY}"' in page
    assert "<script" not in page.lower()
    assert "javascript:" not in page and "alert(4)" not in page
    assert "<img src=x" not in page and "onerror" not in re.sub(r"&lt;.*?&gt;", "", page)
    assert "Brightline &lt;img src=x onerror=alert(1)&gt; Studio" in page
    assert "<strong>bold</strong>" in page  # Markdown outputs are rendered, then sanitised


def test_page_embeds_charts_with_alt_text(page):
    assert f'alt="Decay by week" src="data:image/png;base64,{PIXEL}"' in page


def test_failed_page_names_the_failing_cell_and_shortens_the_traceback(page):
    assert "This report is incomplete." in page and "cell 7: ZeroDivisionError: division by zero" in page
    assert "This step stopped with an error:</strong> ZeroDivisionError: division by zero" in page
    assert "a long traceback" not in page and "\x1b[" not in page


def test_page_has_a_table_of_contents_of_its_headings(page):
    nav = re.search(r'<nav class="qp-toc".*?</nav>', page, re.DOTALL).group(0)
    assert [text for text in re.findall(r'<a href="#[^"]+">([^<]+)</a>', nav)] == ["Qualification decay", "Findings"]


def test_table_of_contents_needs_two_headings():
    assert table_of_contents('<h1 id="only">Only<a class="anchor-link" href="#only">¶</a></h1>') == ""
    nav = table_of_contents('<h1 id="a">A &amp; B</h1><p>text</p><h3 id="c">C</h3><h4 id="d">D</h4>')
    assert '<li class="qp-toc-h1"><a href="#a">A &amp; B</a></li>' in nav
    assert '<li class="qp-toc-h3"><a href="#c">C</a></li>' in nav and "#d" not in nav


def test_error_summary_and_error_html():
    assert error_summary({"cell_index": 0, "ename": "KeyError", "evalue": "'org'"}) == "cell 1: KeyError: 'org'"
    assert error_summary({"ename": "RuntimeError", "evalue": ""}) == "RuntimeError"
    assert error_html("ValueError", "<b>bad</b>") == (
        '<div class="qp-cell-error"><strong>This step stopped with an error:</strong> '
        "ValueError: &lt;b&gt;bad&lt;/b&gt;</div>")


def report(title, status="ok"):
    return {"name": title, "title": title, "html": f"{title}.html", "notebook": f"{title}.ipynb", "status": status,
            "duration_s": 1.5, "error": None if status == "ok" else "cell 2: KeyError", "headline": None}


def test_report_groups_by_org_then_segment_in_order_of_first_appearance():
    reports = [report("a"), report("b"), report("c"), report("d")]
    assert report_groups(reports, None) == [{"org": None, "heading": None, "sections": [
        {"segment": None, "heading": None, "level": 2, "reports": reports}]}]
    groups = report_groups(reports, ["Globex", None, "Globex", "Initech"], [None, None, "SMB", None])
    assert [(g["org"], g["heading"]) for g in groups] == [("Globex", "Globex"), (None, "All organisations"),
                                                       ("Initech", "Initech")]
    assert [(s["heading"], s["level"], [r["title"] for r in s["reports"]]) for s in groups[0]["sections"]] == [
        ("All segments", 3, ["a"]), ("SMB segment", 3, ["c"])]
    assert groups[2]["sections"][0]["heading"] is None  # a lone all-segments section needs no heading
    with pytest.raises(ValueError):
        report_groups(reports, ["Globex"])


def test_index_escapes_what_it_shows(tmp_path):
    reports = [report(HOSTILE), report("Reactive order-taking", status="failed")]
    reports[0]["headline"] = f"{HOSTILE} panicked in 4 of 10 quarters"
    path = write_index(tmp_path / "index.html", headline=f"Run for {HOSTILE}", run_id="r1",
                       started_at="2026-11-27T05:30:00+00:00", reports=reports, orgs=[HOSTILE, None])
    page = path.read_text(encoding="utf-8")
    assert "<img" not in page and "Brightline &lt;img src=x onerror=alert(1)&gt; Studio" in page
    assert f'content="{markupsafe.escape(CONTENT_SECURITY_POLICY)}"' in page and "<script" not in page.lower()
    assert "All organisations" in page and "Reactive order-taking" in page


def test_an_output_with_no_mimetype_a_page_may_show_is_dropped_not_rendered_empty():
    cell = new_code_cell("display(widget)", outputs=[
        new_output("display_data", data={"application/javascript": "alert(1)"}),
        new_output("display_data", data={"text/plain": "kept"}),
    ])
    cell, _ = OutputSanitizer().preprocess_cell(cell, {}, 0)
    assert [output["data"] for output in cell.outputs] == [{"text/plain": "kept"}]
