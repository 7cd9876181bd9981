"""Run every detector on a dataset and control false discoveries across all of them.

Each component is a function ``(dataset, params) -> findings`` in its own
module; :func:`detect` runs them, applies Benjamini–Hochberg per metric across
the whole run (:func:`quarterpanic.findings.apply_fdr`) and returns one
findings table.
"""
from __future__ import annotations

import importlib
import logging
from typing import Any, Callable, Mapping

import pandas as pd

from quarterpanic.dataset import Dataset
from quarterpanic.findings import apply_fdr, empty_findings, make_findings, to_records
from quarterpanic.params import defaults

log = logging.getLogger(__name__)

# component name -> "module:function", a function (dataset, params, *, cache) -> findings
COMPONENTS: dict[str, str] = {
    "qualification_decay": "quarterpanic.qualification:detect_qualification_decay",
    "reactive_order_taking": "quarterpanic.reactive:detect_reactive_order_taking",
}


def component_function(name: str) -> Callable[..., pd.DataFrame]:
    module_name, function_name = COMPONENTS[name].split(":")
    return getattr(importlib.import_module(module_name), function_name)


def detect(dataset: Dataset, params: Mapping[str, Any] | None = None, components: list[str] | None = None, *,
           cache: bool = False) -> pd.DataFrame:
    """All findings of the chosen components (default: all), flagged under BH control.

    With ``cache``, each component reuses its findings from an earlier run on
    the same data, parameters and code (:mod:`quarterpanic.results_cache`).
    """
    params = {**defaults(), **(params or {})}
    frames = []
    for name in components or list(COMPONENTS):
        log.info("running %s", name)
        frames.append(component_function(name)(dataset, params, cache=cache))
    if not frames:
        return empty_findings()
    findings = make_findings(pd.concat(frames, ignore_index=True))
    return apply_fdr(findings, alpha=float(params["alpha"]))


def report_document(dataset: Dataset, findings: pd.DataFrame, params: Mapping[str, Any]) -> str:
    """The JSON document ``quarterpanic detect --json`` prints.

    ``findings`` as given; beside them ``quarters``, the panic index of every
    complete org × quarter (× segment) shown, with its level and components
    (:func:`quarterpanic.panic_index.quarter_records`), and ``early_warning``,
    the status of each organisation's open quarter
    (:func:`quarterpanic.early_warning.early_warning`). Both compare with each
    organisation's calm baseline quarters, so when ``params["quarters"]``
    limits the findings to a few quarters the detectors run once more on all
    of them.
    """
    import json

    from quarterpanic import __version__
    from quarterpanic.early_warning import early_warning
    from quarterpanic.panic_index import index_from_findings, quarter_records

    params = {**defaults(), **(params or {})}
    every_quarter = detect(dataset, {**params, "quarters": None}) if params.get("quarters") else findings
    scores, index = index_from_findings(every_quarter, params, dataset)
    status, _ = early_warning(dataset, params, findings=every_quarter)
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


def report_table(dataset: Dataset, findings: pd.DataFrame) -> str:
    """A readable table of the main findings, flagged first, then the counts."""
    from quarterpanic.findings import main_findings

    main = main_findings(findings)
    if main.empty:
        return f"no findings (data as of {dataset.as_of:%Y-%m-%d})"
    shown = main.sort_values(["flagged", "org", "quarter"], ascending=[False, True, True])
    shown = shown.assign(
        ci=lambda f: f["ci_low"].map("{:.3g}".format) + " .. " + f["ci_high"].map("{:.3g}".format),
        estimate=lambda f: f["estimate"].map("{:.3g}".format),
        p_value=lambda f: f["p_value"].map(lambda p: "" if pd.isna(p) else f"{p:.2g}"),
        flagged=lambda f: f["flagged"].map({True: "FLAG", False: ""}),
    )
    columns = ["org", "quarter", "segment", "component", "estimate", "ci", "p_value", "onset_week", "n", "status", "flagged"]
    flagged = int(main["flagged"].sum())
    header = f"data as of {dataset.as_of:%Y-%m-%d}: {flagged} of {len(main)} main findings flagged"
    return header + "\n" + shown[columns].to_string(index=False)
