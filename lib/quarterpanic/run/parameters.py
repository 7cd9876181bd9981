"""A run's parameters: what each notebook declares, the layered files and ``-p`` values checked against the
parameter model (:mod:`quarterpanic.params`), and the values that must name something in the data folder."""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd
import papermill

from quarterpanic import params as qparams
from quarterpanic import paths
from quarterpanic.dataset import Dataset, load_dataset, no_opportunity_error
from quarterpanic.errors import ParameterError, ProfileError, QuarterpanicError
from quarterpanic.ingest.loading import load_crm
from quarterpanic.ingest.orgs import OrgInfo, org_folders, read_org_yaml
from quarterpanic.params import plain_dates

_TYPE_SAMPLES: dict[str, Any] = {"str": "", "int": 0, "float": 0.0, "bool": False, "list": [], "dict": {}}


@dataclass(frozen=True)
class DeclaredParameter:
    """One line of a notebook's ``parameters`` cell, as papermill infers it."""

    name: str
    type_name: str | None  # the annotation or ``# type:`` comment, if any
    default_text: str  # the right-hand side as written
    help: str  # the trailing comment
    default: Any  # the value used for type checks (literal default, else the suite default)


def declared_parameters(notebook: str | Path) -> dict[str, DeclaredParameter]:
    """The parameters ``notebook`` declares in its cell tagged ``parameters``.

    Uses :func:`papermill.inspect_notebook`; defaults that are Python literals
    are evaluated, others (``str(SALESDATA_DIR)``) fall back to the suite
    default of the same name, then to the annotation's type.
    """
    out = {}
    for name, info in papermill.inspect_notebook(str(notebook)).items():
        type_name = info.get("inferred_type_name")
        type_name = None if type_name in (None, "None") else type_name
        out[name] = DeclaredParameter(
            name=name,
            type_name=type_name,
            default_text=info.get("default", ""),
            help=info.get("help", ""),
            default=_typed_default(name, info.get("default", ""), type_name),
        )
    return out


def _typed_default(name: str, text: str, type_name: str | None) -> Any:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        value = None
    if value is None:
        value = qparams.DEFAULTS.get(name)
    if value is None and type_name:
        inner = re.sub(r"^Optional\[(.*)\]$", r"\1", type_name.strip())
        value = _TYPE_SAMPLES.get(inner.split("[")[0].strip())
    return value


@dataclass
class ResolvedParameters:
    """The parameters of a run, checked against what the notebooks declare."""

    chosen: dict[str, Any]  # keys set by -f files and -p, merged in order
    sources: dict[str, str]  # key -> the file (or "-p") that set it last
    declared: dict[str, dict[str, DeclaredParameter]]  # notebook stem -> its parameters
    unused: list[str]  # suite keys set but declared by none of the selected notebooks

    def for_notebook(self, stem: str) -> dict[str, Any]:
        """The chosen values this notebook declares (the others keep the notebook's defaults)."""
        return {k: v for k, v in self.chosen.items() if k in self.declared[stem]}


def resolve_parameters(
    notebooks: Sequence[Path],
    files: Iterable[str | Path] = (),
    overrides: Mapping[str, Any] | None = None,
    *,
    suite_notebooks: Iterable[Path] = (),
) -> ResolvedParameters:
    """Layer ``files`` then ``overrides`` and check every key and value before anything runs.

    A key of the parameter model (:class:`quarterpanic.params.Parameters`) is
    checked against the model; a key outside it is accepted when a selected
    notebook declares it, and its value must fit the declared default's type.
    A key only another notebook of the suite (``suite_notebooks``) declares or
    the model knows is accepted but not passed (so ``-f parameters/default.yaml
    --notebooks 02`` works); anything else is a :class:`ParameterError` naming
    the key and the file it came from.
    """
    declared = {path.stem: declared_parameters(path) for path in notebooks}
    extra: dict[str, Any] = {}
    for path in suite_notebooks:
        if path.stem not in declared:
            extra.update({k: p.default for k, p in declared_parameters(path).items() if p.default is not None})
    selected: dict[str, Any] = {}
    for parameters in declared.values():
        for name, parameter in parameters.items():
            if name not in selected or selected[name] is None:
                selected[name] = parameter.default
    extra.update({k: v for k, v in selected.items() if v is not None or k not in extra})
    extra = {k: v for k, v in extra.items() if k not in qparams.Parameters.model_fields}

    layers = [(str(f), qparams.read_params_file(f)) for f in files]
    if overrides:
        layers.append(("-p", dict(overrides)))
    for source, update in layers:
        if "summary_path" in update:
            raise ParameterError("summary_path is set by `quarterpanic run` (next to each executed notebook)",
                                 path=source, hint="remove it")
    chosen, sources = qparams.layer([(source, {key: plain_dates(value) for key, value in update.items()})
                                     for source, update in layers], extra=extra)
    unused = sorted(k for k in chosen if k not in selected)
    return ResolvedParameters(chosen=chosen, sources=sources, declared=declared, unused=unused)


def format_parameters(notebooks: Sequence[Path]) -> str:
    """Every notebook's parameters with type, default and help (``--list-parameters``).

    Type and help of a model parameter come from :class:`quarterpanic.params.Parameters`;
    a key outside the model shows what the notebook declares.
    """
    lines = []
    for path in notebooks:
        lines.append(f"{path.stem}  ({paths.display_path(path)})")
        declared = declared_parameters(path)
        if not declared:
            lines.append("  (no cell tagged 'parameters')")
        for p in declared.values():
            field = qparams.Parameters.model_fields.get(p.name)
            if field is not None:
                type_name, help = qparams.type_name(field.annotation), qparams.help_text(p.name)
            else:
                type_name = p.type_name or (type(p.default).__name__ if p.default is not None else "any")
                help = p.help or qparams.help_text(p.name)
            lines.append(f"  {p.name}: {type_name} = {p.default_text}")
            if help:
                lines.append(f"      {help}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def declared_default(resolved: ResolvedParameters, name: str) -> Any:
    for parameters in resolved.declared.values():
        if name in parameters and isinstance(parameters[name].default, str):
            return parameters[name].default
    return None


# -- values checked against the data ---------------------------------------------------------------


@dataclass(frozen=True)
class DataScope:
    """What a data folder holds, for checking ``orgs``, ``segment`` and ``quarters`` against it."""

    orgs: list[str]  # organisation names (empty: not known, not checked)
    segments: dict[str, list[str]] | None = None  # organisation -> its segments; None: not looked at
    quarters: dict[str, list[str]] | None = None  # organisation -> the quarters its data spans; None: not looked at
    # The changes the organisations declare in org.yaml (``org``, ``segment``, ...), each with ``source``: the file.
    declared_changes: tuple[dict, ...] = ()

    @classmethod
    def of_dataset(cls, dataset: Dataset, data_dir: str | Path | None = None) -> DataScope:
        """Everything from a loaded (unfiltered) dataset (``data_dir``: where its org.yaml files are)."""
        declared = declared_changes(org_yamls(Path(data_dir))) if data_dir is not None else tuple(
            {**change, "source": f"org.yaml of {change['org']}", "entry": number}
            for number, change in enumerate(dataset.changes, start=1))
        return cls(orgs=dataset.orgs, segments=segments_of(dataset.opportunities), quarters=quarters_by_org(dataset),
                   declared_changes=declared)


def org_yamls(data_dir: Path) -> list[tuple[Path, OrgInfo]]:
    """Each organisation folder of ``data_dir`` with its ``org.yaml`` read (:func:`read_org_yaml`)."""
    return [(folder, read_org_yaml(folder)) for folder in org_folders(data_dir)]


def declared_changes(orgs: list[tuple[Path, OrgInfo]]) -> tuple[dict, ...]:
    """The ``changes:`` of each :func:`org_yamls` entry, each with its ``org``, ``source`` (the file) and ``entry``
    (its number in the file)."""
    out = []
    for folder, info in orgs:
        out += [{**change, "org": info.name, "source": str(folder / "org.yaml"), "entry": number}
                for number, change in enumerate(info.changes, start=1)]
    return tuple(out)


def organisations(data_dir: Path) -> list[str]:
    """The organisations of a data folder: each ``*/org.yaml``'s ``org:`` (else the folder's name), as the
    loader names them; the exports are not read."""
    return [info.name for _, info in org_yamls(data_dir)]


def segments_of(opportunities: pd.DataFrame) -> dict[str, list[str]]:
    """Organisation -> the segments its opportunities carry (sorted; blank segments left out)."""
    segments = opportunities[["org", "segment"]].dropna()
    segments = segments[segments["segment"].astype(str).str.strip() != ""].drop_duplicates()
    return {str(org): sorted(map(str, group["segment"])) for org, group in segments.groupby("org", sort=True)}


def quarters_by_org(dataset: Dataset) -> dict[str, list[str]]:
    """Organisation -> the labels of the fiscal quarters from its first opportunity to the data's as-of date."""
    out = {}
    for org, created in dataset.opportunities.groupby("org", sort=True)["created_at"]:
        if created.notna().any():
            out[str(org)] = list(dataset.calendar(org).quarters(created.min(), dataset.as_of)["quarter"])
    return out


def data_scope(data_dir: Path, chosen: Mapping[str, Any]) -> DataScope | None:
    """What ``quarterpanic run`` must know of ``data_dir`` to check ``chosen``, reading no more than needed.

    Organisations come from the ``org.yaml`` files; the opportunities are read
    (through the reload cache the notebooks then reuse) only when ``segment``
    (or a change's segment) is set, and the whole dataset only when ``quarters`` or
    ``baseline_quarters`` are. None when the folder does not exist (the
    notebooks report that).
    """
    if not data_dir.is_dir():
        return None
    if not (chosen.get("quarters") or chosen.get("baseline_quarters")):
        orgs = org_yamls(data_dir)
        declared = declared_changes(orgs)
        wanted = chosen.get("segment") or any(change.get("segment") for change in
                                              [*(chosen.get("changes") or []), *declared])
        segments = segments_by_org(data_dir, chosen.get("profile")) if wanted else None
        return DataScope(orgs=[info.name for _, info in orgs], segments=segments, declared_changes=declared)
    load = {key: value for key, value in chosen.items() if key in qparams.Parameters.model_fields}
    return DataScope.of_dataset(load_dataset(data_dir, {**load, "orgs": None, "segment": None}), data_dir)


def segments_by_org(data_dir: Path, profile: str | None = None) -> dict[str, list[str]]:
    """Organisation -> the segments its opportunities carry (sorted; blank segments left out).

    Loads only the opportunity exports, through the reload cache
    (:mod:`quarterpanic.ingest.reload_cache`), which the notebooks then reuse.
    """
    return segments_of(load_crm(data_dir, profile=profile, table="opportunities", cache=True).opportunities)


def check_has_opportunities(data_dir: Path, chosen: Mapping[str, Any]) -> None:
    """Refuse a run on a data folder whose exports hold no opportunity at all (:class:`NoDataError`).

    A folder emptied by a failed extract would otherwise produce four failed
    pages (or, worse, a "complete" report of nothing); the run stops before
    any notebook starts, with the one line ``quarterpanic detect`` gives, and
    ``latest`` keeps the last real report. Reads the opportunity exports
    through the reload cache, which the notebooks then reuse.
    """
    if not data_dir.is_dir():
        return  # the notebooks say the folder is missing
    try:
        crm = load_crm(data_dir, profile=chosen.get("profile"), table="opportunities", cache=True)
    except QuarterpanicError:
        return  # an export the loader refuses: each notebook's first cell says which and why
    if crm.opportunities.empty:
        raise no_opportunity_error(crm.accounting, data_dir, {})


def check_scope(chosen: Mapping[str, Any], sources: Mapping[str, str], scope: DataScope | None) -> None:
    """Refuse ``orgs``, ``segment``, ``quarters``, ``baseline_quarters`` and ``changes`` that name nothing in the data.

    Each message names the file (or ``-p``) that set the key and lists what exists.
    """
    if scope is None:
        return
    orgs = chosen.get("orgs") or []
    unknown = [org for org in orgs if org not in scope.orgs]
    if scope.orgs and unknown:
        raise ParameterError(f"parameter 'orgs': {', '.join(map(repr, unknown))} not in the data folder",
                             path=sources.get("orgs"), hint=f"organisations: {', '.join(scope.orgs)}")
    whose = f" of {', '.join(orgs)}" if orgs else ""
    segment = chosen.get("segment")
    if segment and scope.segments is not None:
        found = sorted({s for org, segments in scope.segments.items() if not orgs or org in orgs for s in segments})
        if segment not in found:
            raise ParameterError(f"parameter 'segment': {segment!r} not among the segments of the opportunities{whose}",
                                 path=sources.get("segment"), hint=f"segments: {', '.join(found) or 'none'}")
    for number, change in enumerate(chosen.get("changes") or [], start=1):
        org, changed = change.get("org"), change.get("segment")
        if scope.orgs and org not in scope.orgs:
            raise ParameterError(f"parameter 'changes' (entry {number}): organisation {org!r} not in the data folder",
                                 path=sources.get("changes"), hint=f"organisations: {', '.join(scope.orgs)}")
        if changed and scope.segments is not None and changed not in scope.segments.get(org, []):
            raise ParameterError(f"parameter 'changes' (entry {number}): {changed!r} not among the segments of {org}",
                                 path=sources.get("changes"),
                                 hint=f"segments: {', '.join(scope.segments.get(org, [])) or 'none'}")
    # An organisation's own changes are judged unless the parameters name it (dataset.changes_to_judge).
    overridden = {str(change.get("org")) for change in chosen.get("changes") or []}
    for change in scope.declared_changes:
        org, changed = str(change["org"]), change.get("segment")
        if org in overridden or not changed or scope.segments is None or changed in scope.segments.get(org, []):
            continue
        raise ProfileError(f"changes: entry {change['entry']}: segment {changed!r} is not among the segments of "
                           f"{org}'s opportunities", path=change["source"],
                           hint=f"segments: {', '.join(scope.segments.get(org, [])) or 'none'}; fix the segment "
                                "or drop it to mean the whole organisation")
    for key in ("quarters", "baseline_quarters"):
        if not chosen.get(key) or scope.quarters is None:
            continue
        found = sorted({q for org, quarters in scope.quarters.items() if not orgs or org in orgs for q in quarters})
        unknown = [label for label in chosen[key] if label not in found]
        if unknown:
            raise ParameterError(f"parameter {key!r}: {', '.join(map(repr, unknown))} not quarters of the data{whose}",
                                 path=sources.get(key), hint=f"quarters: {', '.join(found) or 'none'}")
