"""What ``quarterpanic detect`` prints: the findings as a JSON document for scripts, or a readable table."""
from __future__ import annotations

import json
from typing import Any, Mapping

import pandas as pd

from quarterpanic import __version__
from quarterpanic.analysis.change import ESTIMATE_COLUMNS, changes_from_dataset, main_estimates
from quarterpanic.analysis.detect import detect
from quarterpanic.analysis.early_warning import early_warning
from quarterpanic.analysis.findings import FDR_FAMILIES, main_findings, to_records
from quarterpanic.analysis.panic_index import index_from_findings, quarter_records
from quarterpanic.dataset import Dataset, changes_to_judge
from quarterpanic.params import defaults
from quarterpanic.report.words import change_sentences, ci_label, early_warning_sentences, fdr_text
from quarterpanic.util import jsonable


def report_document(dataset: Dataset, findings: pd.DataFrame, params: Mapping[str, Any]) -> str:
    """The JSON document ``quarterpanic detect --json`` prints.

    ``ci_level`` is the confidence level of every interval and ``alpha`` the
    false discovery rate of the flags; ``false_discovery`` says how the flags
    were made: ``method``, ``alpha``, ``family`` (``params["fdr_family"]``),
    ``family_keys`` (the finding columns whose values make one family) and
    ``note`` (the same in words). ``files`` is the row accounting of
    every export read (:func:`accounting_records`). ``findings`` as given;
    beside them ``quarters``, the panic index of every
    complete org × quarter (× segment) shown, with its level and components
    (:func:`quarterpanic.analysis.panic_index.quarter_records`), and ``early_warning``,
    the status of each organisation's open quarter
    (:func:`quarterpanic.analysis.early_warning.early_warning`), and ``changes``, the before/after
    and difference-in-differences estimates of each change to judge (``params["changes"]`` and the
    organisations' ``org.yaml`` changes) with a sentence each
    (:func:`quarterpanic.analysis.change.assess_changes`; empty without changes). All compare with each
    organisation's calm baseline quarters, so when ``params["quarters"]``
    limits the findings to a few quarters the detectors run once more on all
    of them.
    """
    params = {**defaults(), **(params or {})}
    every_quarter = detect(dataset, {**params, "quarters": None}) if params.get("quarters") else findings
    scores, index = index_from_findings(every_quarter, params, dataset)
    status, _ = early_warning(dataset, params, findings=every_quarter)
    status = early_warning_sentences(status)
    document = {
        "as_of": dataset.as_of.isoformat() if dataset.as_of is not None else None,
        "quarterpanic": __version__,
        "ci_level": float(params["ci_level"]),
        "alpha": float(params["alpha"]),
        "false_discovery": {
            "method": "Benjamini-Hochberg",
            "alpha": float(params["alpha"]),
            "family": str(params["fdr_family"]),
            "family_keys": list(FDR_FAMILIES[str(params["fdr_family"])]),
            "note": fdr_text(params["alpha"], str(params["fdr_family"])),
        },
        "files": accounting_records(dataset.accounting),
        "findings": to_records(findings),
        "quarters": quarter_records(scores, index, params.get("quarters")),
        "early_warning": [
            {"org": row.org, "quarter": row.quarter, "week": int(row.week), "status": row.status,
             "signals": row.signals, "sentence": row.sentence}
            for row in status.itertuples(index=False)
        ],
        "changes": jsonable(change_estimates(dataset, every_quarter, params, index)),
    }
    return json.dumps(document, indent=2)


def report_table(dataset: Dataset, findings: pd.DataFrame, params: Mapping[str, Any] | None = None) -> str:
    """A readable table of the main findings, flagged first, then the early warning of each open quarter."""
    params = {**defaults(), **(params or {})}
    # The open quarter has no findings yet: its early warning says how it is going so far.
    status, _ = early_warning(dataset, params, findings=None if params.get("quarters") else findings)
    open_quarters = "\n".join(f"  {sentence}" for sentence in early_warning_sentences(status)["sentence"])
    changes = ""
    if changes_to_judge(dataset, params):
        every_quarter = detect(dataset, {**params, "quarters": None}) if params.get("quarters") else findings
        estimates = change_estimates(dataset, every_quarter, params)
        changes = ("\n\ndid the change work? (before/after; difference-in-differences against groups that did not "
                   "change):\n")
        changes += "\n".join(f"  {sentence}" for sentence in main_estimates(estimates)["sentence"])
        changes += "\n  (every other metric's estimates: --json)"
    return (_findings_table(dataset, findings, params) + changes + "\n\nopen quarters (early warning):\n"
            + open_quarters + "\n\nrows read per file:\n" + accounting_table(dataset.accounting))


def change_estimates(dataset: Dataset, findings: pd.DataFrame, params: Mapping[str, Any],
                     index: pd.DataFrame | None = None) -> pd.DataFrame:
    """The estimates of the changes to judge (``params["changes"]`` and the organisations' ``org.yaml``
    changes: :func:`quarterpanic.dataset.changes_to_judge`) with a ``sentence`` each (no rows without changes).

    ``findings`` must cover every quarter (the quarters before and after a change); ``index``
    defaults to the panic index of ``findings``.
    """
    if not changes_to_judge(dataset, params):
        return pd.DataFrame(columns=[*ESTIMATE_COLUMNS, "sentence"])
    if index is None:
        index = index_from_findings(findings, params, dataset)[1]
    return change_sentences(changes_from_dataset(dataset, findings, index, params).estimates)


#: Row-accounting counts, in order (read = accepted + rejected + ignored; unknown_deal counts accepted rows
#: naming a deal the organisation's opportunities lack).
COUNT_COLUMNS = ["read", "accepted", "rejected", "ignored", "unknown_deal"]


def accounting_records(accounting: pd.DataFrame) -> list[dict[str, Any]]:
    """One JSON-ready dict per export: ``file``, ``org``, ``table``, ``profile`` and its row counts."""
    return jsonable(accounting)


def accounting_table(accounting: pd.DataFrame) -> str:
    """The row accounting as a readable table with a total line."""
    if accounting.empty:
        return "  no export read"
    counts = [c for c in COUNT_COLUMNS if c in accounting]
    total = {"file": f"total ({len(accounting)} files)", **{c: int(accounting[c].sum()) for c in counts}}
    table = pd.concat([accounting, pd.DataFrame([total])], ignore_index=True).fillna("")
    return "\n".join("  " + line for line in table.to_string(index=False).splitlines())


def rejected_rows_warning(accounting: pd.DataFrame, data_dir: Any) -> str | None:
    """One line when rows were rejected (how many, in how many files, how to see them), else None."""
    if accounting.empty or not int(accounting["rejected"].sum()):
        return None
    rejected, read = int(accounting["rejected"].sum()), int(accounting["read"].sum())
    files = int((accounting["rejected"] > 0).sum())
    return (f"{rejected:,} of {read:,} rows rejected in {files} of {len(accounting)} files "
            f"— the findings leave them out; see them with `quarterpanic validate {data_dir}`")


def _as_of(dataset: Dataset) -> str:
    return "n/a (no dated record)" if pd.isna(dataset.as_of) else f"{dataset.as_of:%Y-%m-%d}"


def _findings_table(dataset: Dataset, findings: pd.DataFrame, params: Mapping[str, Any]) -> str:
    main = main_findings(findings)
    if main.empty:
        return f"no findings (data as of {_as_of(dataset)})"
    shown = main.sort_values(["flagged", "org", "quarter"], ascending=[False, True, True])
    shown = shown.assign(
        ci=lambda f: (f["ci_low"].map("{:.3g}".format) + " .. " + f["ci_high"].map("{:.3g}".format)).where(
            f["ci_low"].notna() & f["ci_high"].notna(), ""),
        estimate=lambda f: f["estimate"].map(lambda e: "" if pd.isna(e) else f"{e:.3g}"),
        needs=lambda f: f["needs"].map(lambda n: "; ".join(n) if isinstance(n, list) else ""),
        p_value=lambda f: f["p_value"].map(lambda p: "" if pd.isna(p) else f"{p:.2g}"),
        flagged=lambda f: f["flagged"].map({True: "FLAG", False: ""}),
    )
    columns = ["org", "quarter", "segment", "component", "estimate", "ci", "p_value", "onset_week", "n", "status",
               "flagged", "needs"]
    flagged = int(main["flagged"].sum())
    header = (f"data as of {_as_of(dataset)}: {flagged} of {len(main)} main findings flagged "
              f"({fdr_text(params['alpha'], str(params['fdr_family']))}; intervals: {ci_label(params['ci_level'])})")
    return header + "\n" + shown[columns].to_string(index=False)
