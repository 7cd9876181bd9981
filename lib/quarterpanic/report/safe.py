"""CRM text in reports: escaping it and replacing names with pseudonyms.

Account, owner and opportunity names come from the exports, so they are data,
not markup: a name like ``<img src=x onerror=alert(1)>`` must print as text.
pandas escapes DataFrame HTML by default (keep ``escape=True``), but Markdown
built with ``display(Markdown(f"... {name}"))`` is not escaped — wrap every
CRM value in :func:`escape_text` there. ``quarterpanic run`` sanitises every
HTML and Markdown output again when it exports the reports.

With the ``pseudonymize`` parameter set, :func:`quarterpanic.report.notebook.notebook_view`
calls :func:`pseudonymize_tables` right after loading (:func:`pseudonymize_names`
does one frame), so every table, chart and summary shows ``Owner 03`` and
``Account 017`` instead of real names.
"""
from __future__ import annotations

import hashlib
import html
import re
from typing import Any, Iterable, Mapping

import pandas as pd

# Characters with a meaning in Markdown; CommonMark lets any ASCII punctuation be backslash-escaped.
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+\-!|~])")

# Canonical columns that hold names of people or companies, and the label of their pseudonyms.
# Owners and requesters are the same people (sellers), so they share one numbering.
NAME_COLUMNS: dict[str, dict[str, str]] = {
    "opportunities": {"name": "Opportunity", "account": "Account", "owner": "Owner"},
    "history": {"owner": "Owner"},
    "leads": {"owner": "Owner"},
    "requests": {"requester": "Owner"},
}


def escape_text(value: Any) -> str:
    """``value`` as Markdown text that renders literally (no HTML, no formatting, one line).

    Use it for every CRM value placed into ``display(Markdown(...))``::

        display(Markdown(f"Largest late deal: **{escape_text(row.account)}**"))
    """
    text = "" if value is None else str(value)
    text = " ".join(text.splitlines())
    text = _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)
    return html.escape(text, quote=False)


def pseudonym_map(names: Iterable[Any], label: str) -> dict[str, str]:
    """``{name: "<label> NN"}`` for the distinct non-empty ``names``.

    Names are numbered in the order of their SHA-256 digest, so the same set of
    names always gives the same pseudonyms (in every notebook of a run, and in
    every run on the same data) and the numbering reveals nothing about the
    names themselves. Numbers have at least two digits.
    """
    distinct = sorted({str(n) for n in names if not _missing(n)}, key=lambda n: _digest(label, n))
    width = max(2, len(str(len(distinct))))
    return {name: f"{label} {i:0{width}d}" for i, name in enumerate(distinct, start=1)}


def pseudonymize_names(
    frame: pd.DataFrame,
    columns: Iterable[str] | Mapping[str, str],
    *,
    names: Mapping[str, Iterable[Any]] | None = None,
) -> pd.DataFrame:
    """A copy of ``frame`` with the names in ``columns`` replaced by pseudonyms.

    Parameters
    ----------
    frame:
        Any table with name columns (missing values stay missing).
    columns:
        Column names, or ``{column: label}``. Without labels a column's label is
        its name title-cased (``owner`` -> ``Owner 01``, ``account`` -> ``Account 017``).
        Columns sharing a label share one numbering.
    names:
        ``{label: all names}`` to number from, so that several frames agree;
        defaults to the names found in ``frame``.
    """
    labels = dict(columns) if isinstance(columns, Mapping) else {c: _label_for(c) for c in columns}
    out = frame.copy()
    for label in sorted(set(labels.values())):
        cols = [c for c, lab in labels.items() if lab == label and c in out.columns]
        universe = names[label] if names and label in names else pd.unique(out[cols].to_numpy().ravel())
        mapping = pseudonym_map(universe, label)
        for col in cols:
            out[col] = out[col].map(lambda v: v if _missing(v) else mapping.get(str(v), f"{label} ?"))
    return out


def pseudonymize_tables(
    tables: Mapping[str, pd.DataFrame], columns: Mapping[str, Mapping[str, str]] = NAME_COLUMNS
) -> dict[str, pd.DataFrame]:
    """Pseudonymise the name columns of several tables with one numbering per label.

    ``tables`` is ``{table name: frame}`` (the canonical tables: ``opportunities``,
    ``history``, ``leads``, ``requests``); ``columns`` says which columns of each
    table hold names. The same owner gets the same pseudonym in every table.
    """
    pooled: dict[str, list[Any]] = {}
    for table, frame in tables.items():
        for col, label in columns.get(table, {}).items():
            if col in frame.columns:
                pooled.setdefault(label, []).extend(frame[col].tolist())
    return {
        table: pseudonymize_names(frame, {c: lab for c, lab in columns.get(table, {}).items()}, names=pooled)
        for table, frame in tables.items()
    }


def _label_for(column: str) -> str:
    base = column.removesuffix("_name").removesuffix("_id")
    return base.replace("_", " ").strip().title() or "Name"


def _digest(label: str, name: str) -> str:
    return hashlib.sha256(f"{label}\x00{name}".encode()).hexdigest()


def _missing(value: Any) -> bool:
    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False
