"""The HTML a run publishes: one code-free page per executed notebook, and the index.

Report pages are nbconvert's ``lab`` template with the inputs and prompts
excluded, images embedded, stderr streams (warnings, log noise) dropped, error
tracebacks shortened to one line, and every HTML or Markdown *output* passed
through nbconvert's bleach-based :class:`SanitizeHTML` — outputs are where CRM
text lands, and a name like ``<script>alert(1)</script>`` must stay text.
Markdown *cells* are authored in the repository and trusted like code.

Pages load nothing from the network (no require.js, MathJax or Mermaid) and
carry a Content-Security-Policy that forbids every script, so a report opens
offline, from a file share or an e-mail attachment, and a sanitiser miss still
cannot run code.
"""
from __future__ import annotations

import html
import logging
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import bleach
import jinja2
import nbformat
from bleach.css_sanitizer import CSSSanitizer
from nbconvert import HTMLExporter
from nbconvert.filters.markdown_mistune import markdown2html_mistune
from nbconvert.preprocessors import Preprocessor, TagRemovePreprocessor
from nbconvert.preprocessors.sanitize import SanitizeHTML

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"

# What a report page may load: inline styles and data: images/fonts, nothing else, no scripts.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src data:; font-src data:; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'"
)

# Cells tagged like this are left out of the page: papermill's error banners, and the parameter
# cells (no output; their ids change per run, which would make pages differ for no reason).
REMOVE_CELL_TAGS = {"remove_cell", "papermill-error-cell-tag", "parameters", "injected-parameters"}
REMOVE_OUTPUT_TAGS = {"remove_output"}

# Markup a report output may contain: tables, headings, text formatting. No <img>: an image in a
# text output is far more likely a CRM value (`<img src=x onerror=...>`) than a chart, so it is
# escaped and shown as text; charts arrive as image/png outputs, which are not HTML.
OUTPUT_TAGS = sorted(
    set(bleach.ALLOWED_TAGS)
    | {"p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "div", "span", "pre", "small", "sub", "sup"}
    | {"table", "thead", "tbody", "tfoot", "tr", "th", "td", "caption", "colgroup", "col"}
    | {"dl", "dt", "dd", "del", "ins", "details", "summary", "figure", "figcaption", "style"}
)
OUTPUT_ATTRIBUTES = {
    "*": ["class", "id", "title", "style", "align", "colspan", "rowspan"],
    "a": ["href", "title"],
    "table": ["border"],
    "style": ["scoped", "type"],
}
OUTPUT_PROTOCOLS = ["http", "https", "mailto"]

# nbconvert logs every sanitised output at INFO; keep its warnings, drop the chatter.
NBCONVERT_LOG = logging.getLogger("quarterpanic.report.pages.nbconvert")
NBCONVERT_LOG.setLevel(logging.WARNING)

_HEADING = re.compile(r'<h([1-3]) id="([^"]+)"[^>]*>(.*?)</h\1>', re.DOTALL)
_ANCHOR_LINK = re.compile(r'<a class="anchor-link"[^>]*>.*?</a>', re.DOTALL)
_TAG = re.compile(r"<[^>]+>")
TOC_PLACEHOLDER = "<!-- quarterpanic:toc -->"


class OutputSanitizer(SanitizeHTML):
    """:class:`SanitizeHTML` for code-cell outputs only, with a report-friendly allow-list.

    Markdown outputs are rendered to HTML first. Disallowed markup (``<script>``,
    ``<img>``, ``<svg>``) is escaped, so it shows as the text it is; ``on*=``
    attributes and ``javascript:`` links are removed. Outputs of other mimetypes
    than plain text, PNG/JPEG, JSON, LaTeX, HTML and Markdown (JavaScript,
    widgets, SVG) are dropped.
    """

    def preprocess_cell(self, cell, resources, cell_index):
        if cell.cell_type == "code":
            for output in cell.outputs:
                _render_markdown_output(output)
            # An output left with no mimetype (a JavaScript- or widget-only display) shows nothing; kept, it
            # would only make nbconvert warn that it cannot be represented.
            cell.outputs = [output for output in self.sanitize_code_outputs(cell.outputs)
                            if output.get("output_type") not in ("display_data", "execute_result")
                            or output.get("data")]
        return cell, resources

    def sanitize_html_tags(self, html_str):
        return bleach.clean(
            html_str,
            tags=self.tags,
            attributes=self.attributes,
            protocols=OUTPUT_PROTOCOLS,
            strip=self.strip,
            strip_comments=self.strip_comments,
            css_sanitizer=_css_sanitizer(),
        )


def _render_markdown_output(output) -> None:
    # Markdown is sanitised as the HTML it becomes: a `[x](javascript:...)` link is only visible
    # as a link after rendering, and raw HTML inside Markdown passes through the renderer.
    data = output.get("data", {})
    if "text/markdown" in data and "text/html" not in data:
        data["text/html"] = markdown2html_mistune(data.pop("text/markdown"))


class ReaderOutputs(Preprocessor):
    """Keep what a reader needs: drop stderr streams, turn tracebacks into one line."""

    def preprocess_cell(self, cell, resources, cell_index):
        if cell.cell_type != "code":
            return cell, resources
        kept = []
        for output in cell.get("outputs", []):
            if output.output_type == "stream" and output.get("name") == "stderr":
                continue
            if output.output_type == "error":
                output = nbformat.v4.new_output(
                    "display_data",
                    data={"text/html": error_html(output.get("ename", "Error"), output.get("evalue", ""))},
                )
            kept.append(output)
        cell.outputs = kept
        return cell, resources


def error_html(ename: str, evalue: str) -> str:
    """The one-line notice that replaces a traceback on a report page."""
    return (
        '<div class="qp-cell-error"><strong>This step stopped with an error:</strong> '
        f"{html.escape(_strip_ansi(ename))}: {html.escape(_strip_ansi(evalue))}</div>"
    )


def export_report(
    executed: str | Path,
    html_path: str | Path,
    *,
    title: str,
    run_id: str,
    status: str = "ok",
    error: Mapping[str, Any] | None = None,
    resources_dir: str | Path | None = None,
) -> Path:
    """Export an executed notebook as a code-free HTML page.

    Parameters
    ----------
    executed:
        The executed notebook (papermill's output).
    html_path:
        Where to write the page.
    title:
        Page title and header.
    run_id, status, error:
        Shown in the page header; a failed notebook gets a banner naming the
        failing cell and its exception.
    resources_dir:
        Folder that relative image paths in Markdown cells are read from (the
        source notebook's folder); those images are embedded.
    """
    nb = nbformat.read(str(executed), as_version=4)
    exporter = report_exporter()
    resources = {
        "metadata": {"name": title, "path": str(resources_dir or Path(executed).parent)},
        "quarterpanic": {
            "title": title,
            "run_id": run_id,
            "status": status,
            "error": error_summary(error) if error else None,
            "csp": CONTENT_SECURITY_POLICY,
        },
    }
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    body = body.replace(TOC_PLACEHOLDER, table_of_contents(body), 1)
    html_path = Path(html_path)
    html_path.write_text(body, encoding="utf-8")
    return html_path


def report_exporter() -> HTMLExporter:
    """nbconvert's HTML exporter set up for report pages (lab template, no code, sanitised outputs)."""
    exporter = HTMLExporter(
        template_name="lab",
        template_file=str(TEMPLATES_DIR / "report.html.j2"),
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        exclude_raw=True,
        embed_images=True,
        log=NBCONVERT_LOG,
    )
    exporter.register_preprocessor(
        TagRemovePreprocessor(
            remove_cell_tags=REMOVE_CELL_TAGS, remove_all_outputs_tags=REMOVE_OUTPUT_TAGS, log=NBCONVERT_LOG
        ),
        enabled=True,
    )
    exporter.register_preprocessor(
        OutputSanitizer(tags=OUTPUT_TAGS, attributes=OUTPUT_ATTRIBUTES, log=NBCONVERT_LOG), enabled=True
    )
    exporter.register_preprocessor(ReaderOutputs(log=NBCONVERT_LOG), enabled=True)
    return exporter


def table_of_contents(body: str) -> str:
    """A ``<nav>`` linking the h1–h3 headings nbconvert rendered (empty below two headings)."""
    entries = []
    for level, anchor, inner in _HEADING.findall(body):
        text = html.unescape(_TAG.sub("", _ANCHOR_LINK.sub("", inner))).strip()
        if text:
            entries.append((int(level), anchor, text))
    if len(entries) < 2:
        return ""
    items = "\n".join(
        f'<li class="qp-toc-h{level}"><a href="#{html.escape(anchor)}">{html.escape(text)}</a></li>'
        for level, anchor, text in entries
    )
    return f'<nav class="qp-toc" aria-label="Contents"><h2>Contents</h2>\n<ul>\n{items}\n</ul></nav>'


def error_summary(error: Mapping[str, Any]) -> str:
    """``cell 7: KeyError: 'org'`` (cell numbers count from 1, as a reader counts)."""
    where = f"cell {error['cell_index'] + 1}: " if error.get("cell_index") is not None else ""
    message = f"{error.get('ename', 'Error')}: {error.get('evalue', '')}".rstrip(": ")
    return where + message


def write_index(
    path: str | Path,
    *,
    headline: str,
    run_id: str,
    started_at: str,
    reports: Sequence[Mapping[str, Any]],
    links: Sequence[tuple[str, str]] = (),
    orgs: Sequence[str | None] | None = None,
    segments: Sequence[str | None] | None = None,
) -> Path:
    """Write the run's ``index.html``.

    ``reports`` holds one mapping per notebook with ``name`` (the task's, named in the
    notice an incomplete run gets), ``title``, ``html`` (file
    name or None), ``notebook`` (executed copy), ``status``, ``duration_s``,
    ``error`` (text or None) and ``headline`` (the notebook's own summary line or None).
    ``links`` are extra ``(label, href)`` pairs for the footer. ``orgs`` (one per
    report, None for a report over every organisation) groups the reports under a
    heading per organisation, in order of first appearance; ``segments`` (likewise, None
    for a report over every segment) groups them further under a heading per segment.
    """
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    page = env.get_template("run_index.html.j2").render(
        headline=headline,
        run_id=run_id,
        started_at=started_at,
        groups=report_groups(reports, orgs, segments),
        reports=reports,
        links=links,
        csp=CONTENT_SECURITY_POLICY,
        ok_count=sum(1 for r in reports if r["status"] == "ok"),
    )
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path


def report_groups(
    reports: Sequence[Mapping[str, Any]],
    orgs: Sequence[str | None] | None,
    segments: Sequence[str | None] | None = None,
) -> list[dict[str, Any]]:
    """The index's sections: ``[{"org", "heading", "sections": [{"segment", "heading", "level", "reports"}]}]``.

    One group without a heading when ``orgs`` is None, else one per organisation in
    order of first appearance (reports over every organisation under "All
    organisations"). Inside each, one section without a heading when ``segments`` is
    None, else one per segment ("Enterprise segment"; reports over every segment under
    "All segments", which goes without a heading when a group has no other section).
    """
    def org_heading(org: str | None) -> str | None:
        return None if orgs is None else (org if org is not None else "All organisations")

    def segment_heading(segment: str | None, alone: bool) -> str | None:
        if segments is None or (segment is None and alone):
            return None
        return f"{segment} segment" if segment is not None else "All segments"

    no_keys = [None] * len(reports)
    groups: dict[str | None, dict[str | None, list[Mapping[str, Any]]]] = {}
    for report, org, segment in zip(reports, orgs or no_keys, segments or no_keys, strict=True):
        groups.setdefault(org, {}).setdefault(segment, []).append(report)
    return [
        {
            "org": org,
            "heading": org_heading(org),
            "sections": [
                {"segment": segment, "heading": segment_heading(segment, len(sections) == 1),
                 "level": 3 if orgs is not None else 2, "reports": members}
                for segment, members in sections.items()
            ],
        }
        for org, sections in groups.items()
    ]


def _css_sanitizer():
    return CSSSanitizer()


_ANSI = re.compile("\x1b\\[[0-9;]*[A-Za-z]")


def _strip_ansi(text: str) -> str:
    return _ANSI.sub("", str(text))
