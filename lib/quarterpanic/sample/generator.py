"""``generate`` and ``write_sample``: every organisation of a scenario from one random generator."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import yaml

from quarterpanic.errors import ParameterError
from quarterpanic.ingest import schemas
from quarterpanic.sample import vendor_writers
from quarterpanic.sample.department_fields import add_department_fields
from quarterpanic.sample.export import apply_export, is_full, measurable_effects
from quarterpanic.sample.history import add_request_history
from quarterpanic.sample.plan import OrgPlan
from quarterpanic.sample.scenario import load_scenario
from quarterpanic.sample.tables import canonical, generate_org
from quarterpanic.sample.trends import trend_records


@dataclass
class Sample:
    """A generated sample CRM.

    Attributes
    ----------
    tables:
        The canonical tables ``opportunities``, ``history``, ``leads``, ``requests``, ``request_history``.
    truth:
        What ``truth.json`` holds: ``as_of``, ``seed``, ``scenario``, ``scale`` and one
        record per org x fiscal quarter with data (``org``, ``quarter``, ``open``,
        ``panic``, ``onset_week``, the pattern: ``shape``, ``ramp_weeks``, ``seller_fraction``,
        ``spread``, ``segments``, ``intensity`` (mean over deals created after the onset),
        ``sellers_reached`` where only some panic; ``effects`` as post-onset averages and,
        for panic quarters, ``peak_effects`` at full intensity). When a scenario's ``export`` leaves
        things out (:mod:`quarterpanic.sample.export`), ``exports`` says what each org's
        export holds, the effects it gives no input for are ``None`` and each record
        says whether its quarter is ``partial`` (the data begin inside it). Where a scenario
        has them: ``trends`` (a slow change: :mod:`quarterpanic.sample.trends`; each quarter record
        then has its ``trend_strength``), ``segments`` (per quarter and segment, when panic differs by segment),
        ``changes`` (panic stops in a segment from a date) and ``sell_or_do`` (the stated
        creation ratio after large wins). ``request_history`` holds the silo truths of the
        mid-size organisations per quarter (:mod:`quarterpanic.sample.history`), ``department_fields``
        the truths of their department-owned deal fields (:mod:`quarterpanic.sample.department_fields`).
    orgs:
        Org name -> ``{"size_class", "fiscal_calendar", "format"}`` (and ``export``
        when the export leaves something out, ``changes`` (``date``, ``segment``, ``label``)
        when the organisation made any: what its ``org.yaml`` declares).
    as_of:
        The moment of the export; nothing after it exists.
    scenario:
        The resolved scenario (default merged with overrides).
    """

    tables: dict[str, pd.DataFrame]
    truth: dict
    orgs: dict[str, dict]
    as_of: pd.Timestamp
    scenario: dict = field(repr=False, default_factory=dict)

    def truth_frame(self) -> pd.DataFrame:
        """``truth["quarters"]`` as a frame, one column per effect (the post-onset average), plus the
        pattern columns (``shape``, ``ramp_weeks``, ``seller_fraction``, ``spread``, ``segments``,
        ``intensity``); a panic quarter's full-intensity values stay in ``truth["quarters"][i]["peak_effects"]``."""
        rows = [{k: v for k, v in r.items() if k not in ("effects", "peak_effects")} | r["effects"]
                for r in self.truth["quarters"]]
        return pd.DataFrame(rows)


# -- public API -----------------------------------------------------------------------------------
def generate(scenario: str | Path | Mapping | None = None, seed: int = 0, scale: str = "default") -> Sample:
    """Generate a sample CRM in memory.

    Parameters
    ----------
    scenario:
        ``None`` (the shipped default), ``"null"`` (no panic), a YAML path or a mapping
        deep-merged over the default (see :func:`load_scenario`).
    seed:
        Seed of the one ``numpy.random.default_rng`` every draw comes from.
    scale:
        ``"small"`` (8 complete quarters, ~60 % volume: for tests), ``"default"``
        (10 quarters) or ``"large"`` (20 quarters, ~1M opportunities).

    Returns
    -------
    :class:`Sample` with canonical tables (provenance ``source_file="<generated>"``,
    ``source_row`` 2..n+1 per org and table), truth, orgs and as_of.
    """
    return _collect(load_scenario(scenario), seed, scale)


def write_sample(
    out_dir: str | Path,
    scenario: str | Path | Mapping | None = None,
    seed: int = 0,
    scale: str = "default",
) -> Sample:
    """Generate a sample and write it as a data folder of vendor exports.

    Writes one sub-folder per org (its exports and ``org.yaml``), ``truth.json``
    and ``scenario.yaml`` into ``out_dir``. Organisations are generated and
    written one at a time; at scale ``large`` the returned :class:`Sample` keeps
    no tables (they would not fit comfortably in memory), otherwise it is what
    :func:`generate` returns for the same arguments.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keep = scale != "large"

    def write(org: str, info: dict, tables: dict[str, pd.DataFrame], as_of: pd.Timestamp) -> None:
        vendor_writers.write_org(out, org, info, tables, as_of)

    sample = _collect(load_scenario(scenario), seed, scale, on_org=write, keep_tables=keep)
    (out / "truth.json").write_text(json.dumps(sample.truth, indent=1) + "\n", encoding="utf-8")
    (out / "scenario.yaml").write_text(
        "# The resolved scenario this sample was generated from (quarterpanic.sample).\n"
        + yaml.safe_dump(sample.scenario, sort_keys=False, allow_unicode=True),
        encoding="utf-8",
    )
    return sample


def _collect(resolved: dict, seed: int, scale: str, on_org=None, keep_tables: bool = True) -> Sample:
    """Generate every org in scenario order from one rng; ``on_org(org, info, tables, as_of)`` sees each."""
    if scale not in resolved["scales"]:
        raise ParameterError(f"unknown scale {scale!r}", hint=f"use one of {sorted(resolved['scales'])}")
    rng = np.random.default_rng(seed)
    # Scenario draws (panic quarters, onsets, shapes, effect sizes) come from their own stream of the seed.
    draws = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
    as_of = pd.Timestamp(resolved["as_of"])
    parts: dict[str, list[pd.DataFrame]] = {t: [] for t in schemas.TABLES}
    records: list[dict] = []
    segment_records: list[dict] = []
    changes: list[dict] = []
    sell_or_do: list[dict] = []
    request_history_truth: list[dict] = []
    department_fields_truth: list[dict] = []
    orgs: dict[str, dict] = {}
    for org_index, (org_name, spec) in enumerate(resolved["orgs"].items()):
        plan = OrgPlan(org_name, spec, resolved, scale, as_of, draws)
        tables = {name: canonical(name, frame) for name, frame in generate_org(plan, rng).items()}
        tables = apply_export(tables, plan.export)
        request_history_truth.extend(add_request_history(plan, tables, seed, org_index))
        department_fields_truth.extend(add_department_fields(plan, tables, seed, org_index))
        records.extend(plan.truth_records())
        segment_records.extend(plan.segment_records())
        changes.extend(plan.change_records())
        if plan.spec.get("sell_or_do"):
            dip = plan.spec["sell_or_do"]
            sell_or_do.append({"org": org_name, "min_amount": float(dip["min_amount"]), "weeks": float(dip["weeks"]),
                               "creation_ratio": float(dip["factor"]), "wins": plan.sell_or_do_wins})
        orgs[org_name] = {
            "size_class": spec["size_class"],
            "fiscal_calendar": plan.calendar.to_spec(),
            "format": spec["format"],
        }
        if plan.changes:
            # A change is a fact about the organisation, like its calendar: its org.yaml declares it.
            orgs[org_name]["changes"] = [{k: v for k, v in change.items() if k != "org" and v is not None}
                                         for change in plan.change_records()]
        if not is_full(plan.export):
            orgs[org_name]["export"] = {**plan.export, "data_start": plan.data_start.isoformat(),
                                        "measurable_effects": measurable_effects(plan.export)}
        if on_org is not None:
            on_org(org_name, orgs[org_name], tables, as_of)
        if keep_tables:
            for name, frame in tables.items():
                parts[name].append(frame)
        del tables
    tables = {name: pd.concat(frames, ignore_index=True) if frames else schemas.empty(name)
              for name, frames in parts.items()}
    truth = {
        "as_of": as_of.isoformat(),
        "seed": int(seed),
        "scenario": resolved.get("name", "custom"),
        "scale": scale,
        "quarters": records,
    }
    # Only where a scenario has them, so samples without keep their truth.json.
    for key, value in (("segments", segment_records), ("changes", changes), ("sell_or_do", sell_or_do),
                       ("request_history", request_history_truth),
                       ("department_fields", department_fields_truth)):
        if value:
            truth[key] = value
    if any(spec.get("trend") for spec in resolved["orgs"].values()):
        truth["trends"] = trend_records(records, resolved["orgs"])
    exports = {org: info["export"] for org, info in orgs.items() if "export" in info}
    if exports:
        truth["exports"] = exports
    return Sample(tables=tables, truth=truth, orgs=orgs, as_of=as_of, scenario=resolved)
