"""What ``quarterpanic detect`` prints: the findings as a JSON document for scripts, or a readable table."""
from __future__ import annotations

import json
from typing import Any, Mapping

import pandas as pd

from quarterpanic import __version__
from quarterpanic.analysis.detect import detect
from quarterpanic.analysis.early_warning import early_warning
from quarterpanic.analysis.findings import main_findings, to_records
from quarterpanic.analysis.panic_index import index_from_findings, quarter_records
from quarterpanic.dataset import Dataset
from quarterpanic.params import defaults
from quarterpanic.report.words import early_warning_sentences


def report_document(dataset: Dataset, findings: pd.DataFrame, params: Mapping[str, Any]) -> str:
    """The JSON document ``quarterpanic detect --json`` prints.

    ``findings`` as given; beside them ``quarters``, the panic index of every
    complete org × quarter (× segment) shown, with its level and components
    (:func:`quarterpanic.analysis.panic_index.quarter_records`), and ``early_warning``,
    the status of each organisation's open quarter
    (:func:`quarterpanic.analysis.early_warning.early_warning`). Both compare with each
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
        "findings": to_records(findings),
        "quarters": quarter_records(scores, index, params.get("quarters")),
        "early_warning": [
            {"org": row.org, "quarter": row.quarter, "week": int(row.week), "status": row.status,
             "signals": row.signals, "sentence": row.sentence}
            for row in status.itertuples(index=False)
        ],
    }
    return json.dumps(document, indent=2)


def report_table(dataset: Dataset, findings: pd.DataFrame, params: Mapping[str, Any] | None = None) -> str:
    """A readable table of the main findings, flagged first, then the early warning of each open quarter."""
    params = {**defaults(), **(params or {})}
    # The open quarter has no findings yet: its early warning says how it is going so far.
    status, _ = early_warning(dataset, params, findings=None if params.get("quarters") else findings)
    open_quarters = "\n".join(f"  {sentence}" for sentence in early_warning_sentences(status)["sentence"])
    return _findings_table(dataset, findings) + "\n\nopen quarters (early warning):\n" + open_quarters


def _findings_table(dataset: Dataset, findings: pd.DataFrame) -> str:
    main = main_findings(findings)
    if main.empty:
        return f"no findings (data as of {dataset.as_of:%Y-%m-%d})"
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
    header = f"data as of {dataset.as_of:%Y-%m-%d}: {flagged} of {len(main)} main findings flagged"
    return header + "\n" + shown[columns].to_string(index=False)
