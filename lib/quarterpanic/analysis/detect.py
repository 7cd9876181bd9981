"""Run every detector on a dataset and control false discoveries in each family.

Each component is a function ``(dataset, params) -> findings`` in its own
module; :func:`detect` runs them, applies Benjamini–Hochberg within each
false-discovery family of ``params["fdr_family"]`` (default: one organisation's
tests of one metric; :func:`quarterpanic.analysis.findings.apply_fdr`) and
returns one findings table.
"""
from __future__ import annotations

import logging
from types import ModuleType
from typing import Any, Callable, Mapping

import pandas as pd

from quarterpanic.analysis import backloading, department_fields, qualification, reactive, sell_or_do, silos
from quarterpanic.analysis.findings import METRICS, apply_fdr_of, empty_findings, make_findings
from quarterpanic.analysis.inputs import mark_partial, not_measured_rows
from quarterpanic.dataset import Dataset, changes_to_judge
from quarterpanic.params import defaults

log = logging.getLogger(__name__)

# component name -> (module, function name) of a function (dataset, params, *, cache) -> findings; the function is
# looked up when it runs, so a detector patched in its module is the one detect calls
COMPONENTS: dict[str, tuple[ModuleType, str]] = {
    "qualification_decay": (qualification, "detect_qualification_decay"),
    "reactive_order_taking": (reactive, "detect_reactive_order_taking"),
    "bookings_backloading": (backloading, "detect_bookings_backloading"),
    "mid_size_silos": (silos, "detect_mid_size_silos"),
    "sell_or_do": (sell_or_do, "detect_sell_or_do"),
    "department_fields": (department_fields, "detect_department_fields"),
}


def component_function(name: str) -> Callable[..., pd.DataFrame]:
    """The detector function of one component of :data:`COMPONENTS`."""
    module, function_name = COMPONENTS[name]
    return getattr(module, function_name)


def detect(dataset: Dataset, params: Mapping[str, Any] | None = None, components: list[str] | None = None, *,
           cache: bool = False) -> pd.DataFrame:
    """All findings of the chosen components (default: all), flagged under BH control in each family.

    With ``cache``, each component reuses its findings from an earlier run on
    the same data, parameters and code (:mod:`quarterpanic.store.results`).
    A change to judge (:func:`quarterpanic.dataset.changes_to_judge`: ``params["changes"]`` and
    the organisations' ``org.yaml`` changes) that names a segment turns on ``by_segment``.
    """
    params = {**defaults(), **(params or {})}
    if any(change.get("segment") for change in changes_to_judge(dataset, params)):
        # A segment's change is judged on that segment's findings (and its sibling segments as controls).
        params = {**params, "by_segment": True}
    frames = []
    for name in components or list(COMPONENTS):
        log.info("running %s", name)
        frames.append(component_function(name)(dataset, params, cache=cache))
    if not frames:
        return empty_findings()
    findings = make_findings(pd.concat(frames, ignore_index=True))
    # An organisation a detector had no input for at all gets rows that say so, not silence.
    names = components or list(COMPONENTS)
    metrics = [name for name, metric in METRICS.items() if metric.component in names]
    missing = not_measured_rows(findings, dataset, metrics, params)
    if not missing.empty:
        # Every row records the run's interval level, measured or not (sentences and the index read it).
        missing = missing.assign(ci_level=float(params["ci_level"]))
        findings = make_findings(pd.concat([findings, missing], ignore_index=True))
    return apply_fdr_of(mark_partial(findings, dataset), params)
