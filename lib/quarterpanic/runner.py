"""``quarterpanic run``: execute the notebooks with papermill, publish them with nbconvert.

One run writes ``OUT/<run-id>/`` (first as ``OUT/.<run-id>.partial``, renamed
when complete)::

    index.html                  headline + one line per report with its status
    manifest.json               inputs (sha256, rows), parameters, versions, git, per-notebook status
    01_pipeline_overview.ipynb  executed copy (papermill's output; an immutable record)
    01_pipeline_overview.html   code-free report page (nbconvert, see quarterpanic.pages)
    01_pipeline_overview.summary.json   key figures the notebook saved to its summary_path

With ``per_org`` (``--per-org``) every notebook that declares ``orgs`` runs
once per organisation, with ``orgs: [ORG]``, into ``OUT/<run-id>/<org-slug>/``;
with ``per_segment`` (``--per-segment``) every notebook that declares
``segment`` runs once per segment of the opportunities, into
``<segment-slug>/`` (``<org-slug>/<segment-slug>/`` with both). The index
groups the reports by organisation, then segment.

It then points ``OUT/latest`` at it (a symlink swapped with ``os.replace``)
when at least one notebook succeeded. Parameters are checked before anything
executes: every key must be declared by a selected notebook (papermill's
``inspect_notebook``) or be a suite parameter (:data:`quarterpanic.params.DEFAULTS`),
and its value must fit the declared default's type.

Notebooks run through an executor (:mod:`quarterpanic.executors`): in this
process, in worker processes (``--jobs``) or on a Dask cluster.
"""
from __future__ import annotations

import ast
import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import nbformat
import papermill

from quarterpanic import params as qparams
from quarterpanic import paths
from quarterpanic.errors import ParameterError, QuarterpanicError
from quarterpanic.executors import (
    STATUS_KERNEL_DIED,
    EventHandler,
    Executor,
    LocalExecutor,
    NotebookResult,
    NotebookTask,
    RunError,
    _utc_now,
)
from quarterpanic.pages import error_summary, write_index

log = logging.getLogger("quarterpanic.runner")

# Exit codes: every notebook ran / a cell raised / a kernel died (papermill's own code for it).
EXIT_OK = 0
EXIT_CELL_ERROR = 1
EXIT_KERNEL_DIED = 138

VERSION_PACKAGES = ["quarterpanic", "pandas", "numpy", "statsmodels", "papermill", "nbconvert"]
ROW_COUNT_NOTE = (
    "rows: CSV/TSV/TXT = non-empty lines minus one header line (a quoted value spanning lines "
    "counts once per line); Parquet = row count from the file metadata; Excel = rows of the first "
    "sheet minus one header row; other files = null"
)
HEADLINE_NOTEBOOK_PREFIX = "04"
NEUTRAL_HEADLINE = "Quarter-end panic report"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TYPE_SAMPLES: dict[str, Any] = {"str": "", "int": 0, "float": 0.0, "bool": False, "list": [], "dict": {}}


# -- parameters ------------------------------------------------------------------------------------


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
    """Layer ``files`` then ``overrides`` and check every key and type before anything runs.

    A key is accepted when a selected notebook declares it; a key that only
    another notebook of the suite (``suite_notebooks``) or
    :data:`quarterpanic.params.DEFAULTS` knows is accepted but not passed (so
    ``-f parameters/default.yaml --notebooks 02`` works); anything else is a
    :class:`ParameterError` naming the key and the file it came from.
    """
    declared = {path.stem: declared_parameters(path) for path in notebooks}
    known: dict[str, Any] = dict(qparams.DEFAULTS)
    for path in suite_notebooks:
        if path.stem not in declared:
            known.update({k: p.default for k, p in declared_parameters(path).items() if p.default is not None})
    selected: dict[str, Any] = {}
    for parameters in declared.values():
        for name, parameter in parameters.items():
            if name not in selected or selected[name] is None:
                selected[name] = parameter.default
    known.update({k: v for k, v in selected.items() if v is not None or k not in known})

    chosen: dict[str, Any] = {}
    sources: dict[str, str] = {}
    layers = [(str(f), qparams.read_params_file(f)) for f in files]
    if overrides:
        layers.append(("-p", dict(overrides)))
    for source, update in layers:
        if "summary_path" in update:
            raise ParameterError("summary_path is set by `quarterpanic run` (next to each executed notebook)",
                                 path=source, hint="remove it")
        update = {key: _plain_dates(value) for key, value in update.items()}
        chosen = qparams.merge(chosen, update, source=source, known=known)
        sources.update({key: source for key in update})
    unused = sorted(k for k in chosen if k not in selected)
    return ResolvedParameters(chosen=chosen, sources=sources, declared=declared, unused=unused)


def _plain_dates(value: Any) -> Any:
    # YAML reads `as_of: 2025-11-01` as a date; notebooks and the manifest want the ISO string.
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain_dates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_dates(v) for v in value]
    return value


def resolve_data_dir(value: str | Path | None) -> Path:
    """The data folder as an absolute path: relative to the current folder if it exists there,
    else to the project root (where ``salesdata/`` lives)."""
    path = Path(value if value is not None else qparams.DEFAULTS["data_dir"]).expanduser()
    if path.is_absolute():
        return path
    here = Path.cwd() / path
    return here.resolve() if here.exists() else (paths.PROJ_ROOT / path).resolve()


def format_parameters(notebooks: Sequence[Path]) -> str:
    """Every notebook's parameters with type, default and help (``--list-parameters``)."""
    lines = []
    for path in notebooks:
        lines.append(f"{path.stem}  ({_display_path(path)})")
        declared = declared_parameters(path)
        if not declared:
            lines.append("  (no cell tagged 'parameters')")
        for p in declared.values():
            type_name = p.type_name or (type(p.default).__name__ if p.default is not None else "any")
            lines.append(f"  {p.name}: {type_name} = {p.default_text}")
            if p.help:
                lines.append(f"      {p.help}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# -- notebooks and tasks ---------------------------------------------------------------------------


def select_notebooks(names: Sequence[str] | None = None, notebooks_dir: str | Path | None = None) -> list[Path]:
    """The notebooks to run: every ``0*.ipynb`` of ``notebooks_dir`` in order, or those named.

    A name is a path to a notebook, a file name in ``notebooks_dir``, its stem
    (``02_qualification_decay``), or a unique prefix of the stem (``02``).
    """
    folder = Path(notebooks_dir) if notebooks_dir is not None else paths.NOTEBOOKS_DIR
    available = sorted(folder.glob("0*.ipynb")) if folder.is_dir() else []
    if not names:
        if not available:
            raise RunError(
                f"no notebooks to run in {folder} (expected files named 0*.ipynb)",
                hint="add the notebooks, or name some with --notebooks",
            )
        return available
    chosen: list[Path] = []
    for name in names:
        path = Path(name)
        if path.suffix == ".ipynb" and path.is_file():
            chosen.append(path.resolve())
            continue
        matches = [p for p in available if p.name == name or p.stem == name]
        matches = matches or [p for p in available if p.stem.startswith(name)]
        if len(matches) != 1:
            known = ", ".join(p.stem for p in available) or f"none in {folder}"
            what = "matches several notebooks" if matches else "is not a notebook"
            raise RunError(f"--notebooks {name!r} {what}", hint=f"choose from: {known}")
        chosen.append(matches[0])
    stems = [p.stem for p in chosen]
    if len(set(stems)) != len(stems):
        raise RunError("two selected notebooks have the same name", hint=", ".join(stems))
    return chosen


# -- the run ---------------------------------------------------------------------------------------


@dataclass
class RunReport:
    """What :func:`run` did."""

    run_id: str
    run_dir: Path
    exit_code: int
    results: list[NotebookResult]
    published: bool  # whether OUT/latest now points at this run
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)


def run(
    *,
    out_dir: str | Path,
    notebooks: Sequence[str] | None = None,
    parameter_files: Sequence[str | Path] = (),
    overrides: Mapping[str, Any] | None = None,
    executor: Executor | None = None,
    run_id: str | None = None,
    notebooks_dir: str | Path | None = None,
    on_event: EventHandler | None = None,
    kernel_name: str | None = None,
    cell_timeout: int | None = None,
    per_org: Sequence[str] | None = None,
    per_segment: Sequence[str] | None = None,
) -> RunReport:
    """Execute the notebooks and publish the run folder; see the module docstring.

    Parameters
    ----------
    out_dir:
        Folder holding the run folders and the ``latest`` link.
    notebooks:
        Names or paths (see :func:`select_notebooks`); default every ``0*.ipynb``.
    parameter_files, overrides:
        Layered like papermill's ``-f`` and ``-p``.
    executor:
        Where notebooks run (default :class:`LocalExecutor` with one job).
    run_id:
        Folder name of the run; default ``<UTC time>-<8 hex of the inputs' hash>``.
    notebooks_dir:
        Where default notebooks are found (default ``notebooks/`` of the project).
    on_event:
        Called on each notebook start and finish (e.g. a :class:`Progress`).
    kernel_name:
        Kernel for every notebook (default: each notebook's own kernelspec).
    cell_timeout:
        Seconds one cell may run before its notebook is stopped as failed (default: no limit).
    per_org:
        Run each notebook that declares ``orgs`` once per organisation named here
        (an empty sequence: every organisation of the data folder), as separate tasks
        into ``<org-slug>/`` sub-folders. None (the default): one run per notebook.
    per_segment:
        Run each notebook that declares ``segment`` once per segment named here (an
        empty sequence: every segment in the opportunities of the data folder), into
        ``<segment-slug>/`` sub-folders (inside the organisation's with ``per_org``).
        An organisation without opportunities in a segment is not run for it.

    Raises
    ------
    QuarterpanicError
        Before anything executes, for unknown or mistyped parameters, missing
        notebooks or an unusable output folder.
    """
    executor = executor or LocalExecutor()
    on_event = on_event or (lambda event: None)
    selected = select_notebooks(notebooks, notebooks_dir)
    suite = sorted({p for folder in {s.parent for s in selected} for p in folder.glob("0*.ipynb")})
    resolved = resolve_parameters(selected, parameter_files, overrides, suite_notebooks=suite)
    for key in resolved.unused:
        log.info("parameter %r (from %s) is not declared by the selected notebooks; not passed",
                 key, resolved.sources.get(key, "?"))

    data_dir = resolve_data_dir(resolved.chosen.get("data_dir", _declared_default(resolved, "data_dir")))
    inputs = describe_inputs(data_dir)
    effective = {**resolved.chosen, "data_dir": str(data_dir)}
    org_folders = org_slugs(select_orgs(per_org, data_dir)) if per_org is not None else None
    segments = None
    if per_segment is not None and not any("segment" in declared for declared in resolved.declared.values()):
        log.info("--per-segment: none of the selected notebooks declares `segment`; each runs once")
    elif per_segment is not None:
        covered = list(org_folders) if org_folders is not None else resolved.chosen.get("orgs") or []
        segments = select_segments(per_segment, data_dir, orgs=covered, profile=resolved.chosen.get("profile"),
                                   taken=(org_folders or {}).values())
    started_at = _utc_now()
    run_id = run_id or new_run_id(_fingerprint(selected, effective, inputs, org_folders,
                                               segments.slugs if segments else None))
    out_dir = Path(out_dir).resolve()
    run_dir, partial = _claim_run_folder(out_dir, run_id)
    log.info("run %s: %d notebook(s) into %s", run_id, len(selected), run_dir)

    tasks = []
    for path in selected:
        stem = path.stem
        declared = resolved.declared[stem]
        for org, segment, folder in _task_scopes(declared, partial, org_folders, segments, resolved.chosen):
            folder.mkdir(parents=True, exist_ok=True)
            passed = resolved.for_notebook(stem)
            if "data_dir" in declared:
                passed["data_dir"] = str(data_dir)
            if org is not None:
                passed["orgs"] = [org]
            if segment is not None:
                passed["segment"] = segment
            summary_path = str(folder / f"{stem}.summary.json")
            if "summary_path" in declared:
                passed["summary_path"] = summary_path
            tasks.append(NotebookTask(
                name=(folder / stem).relative_to(partial).as_posix(),
                source=str(path),
                executed=str(folder / f"{stem}.ipynb"),
                html=str(folder / f"{stem}.html"),
                summary_path=summary_path,
                parameters=passed,
                cwd=str(path.parent),
                title=notebook_title(path),
                run_id=run_id,
                kernel_name=kernel_name,
                execution_timeout=cell_timeout,
                org=org,
                segment=segment,
            ))

    clock = time.perf_counter()
    try:
        results = executor.execute(tasks, on_event)
    except QuarterpanicError:  # e.g. no Dask scheduler at that address: nothing ran, nothing to keep
        shutil.rmtree(partial, ignore_errors=True)
        raise
    exit_code = exit_code_for(results)
    manifest = build_manifest(
        run_id=run_id,
        started_at=started_at,
        duration_s=time.perf_counter() - clock,
        tasks=tasks,
        results=results,
        resolved=resolved,
        effective=effective,
        parameter_files=parameter_files,
        overrides=overrides or {},
        inputs=inputs,
        executor=executor.describe(),
        exit_code=exit_code,
        run_folder=partial,
        per_org=list(org_folders) if org_folders is not None else None,
        per_segment=list(segments.slugs) if segments is not None else None,
    )
    (partial / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n")
    write_index(
        partial / "index.html",
        headline=manifest["headline"],
        run_id=run_id,
        started_at=started_at,
        reports=[
            {
                "title": task.title,
                "html": _in_run(task.html, partial) if result.html_written else None,
                "notebook": _in_run(task.executed, partial),
                "status": result.status,
                "duration_s": result.duration_s,
                "error": error_summary(result.error) if result.error else None,
                "headline": (result.summary or {}).get("headline") if task.name != _headline_source(tasks) else None,
            }
            for task, result in zip(tasks, results)
        ],
        links=[("manifest.json", "manifest.json")]
        + [(_in_run(t.executed, partial), _in_run(t.executed, partial)) for t in tasks if Path(t.executed).is_file()],
        orgs=[task.org for task in tasks] if org_folders is not None else None,
        segments=[task.segment for task in tasks] if segments is not None else None,
    )
    os.rename(partial, run_dir)
    published = any(r.ok for r in results) and switch_latest(out_dir, run_id, started_at)
    for result in results:
        if not result.ok:
            log.info("%s %s: %s", result.name, result.status, error_summary(result.error or {}))
    log.info("run %s finished with exit code %d%s", run_id, exit_code, "; latest updated" if published else "")
    return RunReport(run_id=run_id, run_dir=run_dir, exit_code=exit_code, results=results,
                     published=published, manifest=manifest)


def _declared_default(resolved: ResolvedParameters, name: str) -> Any:
    for parameters in resolved.declared.values():
        if name in parameters and isinstance(parameters[name].default, str):
            return parameters[name].default
    return None


def select_orgs(names: Sequence[str], data_dir: Path) -> list[str]:
    """The organisations of a per-org run: ``names``, checked against the data folder, or all of them.

    Names come from each ``<data_dir>/*/org.yaml`` (its ``org:`` key, else the
    folder's name, as the loader names them); the exports are not read.
    """
    from quarterpanic.loading import ORG_FILE, read_org_yaml

    found = [read_org_yaml(f.parent).name for f in sorted(Path(data_dir).glob(f"*/{ORG_FILE}"))]
    if not found:
        raise RunError(f"--per-org: no organisation folders (*/{ORG_FILE}) in the data folder", path=data_dir,
                       hint="set data_dir to the folder holding one sub-folder per organisation")
    unknown = [name for name in names if name not in found]
    if unknown:
        raise RunError(f"--per-org: {', '.join(map(repr, unknown))} not in the data folder", path=data_dir,
                       hint=f"organisations: {', '.join(found)}")
    return list(dict.fromkeys(names)) if names else list(dict.fromkeys(found))


def org_slugs(orgs: Sequence[str]) -> dict[str, str]:
    """Organisation name -> folder name (``Globex Corporation`` -> ``globex-corporation``), unique."""
    return folder_slugs(orgs, fallback="org")


def folder_slugs(names: Sequence[str], *, fallback: str, taken: Iterable[str] = ()) -> dict[str, str]:
    """Name -> folder name: lower case, every run of other characters than ``a-z0-9`` a ``-``.

    Unique among ``names`` and different from every name in ``taken``: a clash
    gets ``-2``, ``-3``, ... A name with no usable character is ``fallback``.
    """
    used = set(taken)
    slugs: dict[str, str] = {}
    for name in names:
        base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or fallback
        slug, n = base, 1
        while slug in used:
            n += 1
            slug = f"{base}-{n}"
        slugs[name] = slug
        used.add(slug)
    return slugs


@dataclass(frozen=True)
class SegmentPlan:
    """The segments of a per-segment run: their folders, and which organisation has which."""

    slugs: dict[str, str]  # segment -> folder name, in run order
    by_org: dict[str, list[str]]  # organisation -> the segments of the run it has opportunities in

    def segments_of(self, orgs: Iterable[str] | None = None) -> list[str]:
        """The run's segments found in ``orgs`` (default: every organisation), in run order."""
        present = {s for org, found in self.by_org.items() if not orgs or org in orgs for s in found}
        return [segment for segment in self.slugs if segment in present]


def segments_by_org(data_dir: Path, profile: str | None = None) -> dict[str, list[str]]:
    """Organisation -> the segments its opportunities carry (sorted; blank segments left out).

    Loads only the opportunity exports, through the reload cache
    (:mod:`quarterpanic.cache`), which the notebooks then reuse.
    """
    from quarterpanic.loading import load_crm

    opportunities = load_crm(data_dir, profile=profile, table="opportunities", cache=True).opportunities
    segments = opportunities[["org", "segment"]].dropna()
    segments = segments[segments["segment"].astype(str).str.strip() != ""].drop_duplicates()
    return {str(org): sorted(map(str, group["segment"])) for org, group in segments.groupby("org", sort=True)}


def select_segments(names: Sequence[str], data_dir: Path, *, orgs: Sequence[str] = (), profile: str | None = None,
                    taken: Iterable[str] = ()) -> SegmentPlan:
    """The segments of a per-segment run: ``names``, checked against the data, or every segment found.

    ``orgs`` (default: every organisation) are the organisations the run covers;
    a name must be a segment of at least one of them. Folder names avoid ``taken``
    (the organisations' folders) so that no segment folder is also an organisation's.
    """
    by_org = segments_by_org(data_dir, profile)
    found = sorted({s for org, segments in by_org.items() if not orgs or org in orgs for s in segments})
    whose = f" of {', '.join(orgs)}" if orgs else ""
    if not found:
        raise RunError(f"--per-segment: the opportunities{whose} have no segment", path=data_dir,
                       hint="fill the segment column of the opportunity exports, or run without --per-segment")
    unknown = [name for name in names if name not in found]
    if unknown:
        named = ", ".join(map(repr, unknown))
        raise RunError(f"--per-segment: {named} not among the segments of the opportunities{whose}",
                       path=data_dir, hint=f"segments: {', '.join(found)}")
    chosen = list(dict.fromkeys(names)) if names else found
    return SegmentPlan(slugs=folder_slugs(chosen, fallback="segment", taken=taken),
                       by_org={org: [s for s in chosen if s in segments] for org, segments in by_org.items()})


def _task_scopes(declared: Mapping[str, Any], run_folder: Path, org_folders: Mapping[str, str] | None,
                 segments: SegmentPlan | None, chosen: Mapping[str, Any]) -> list[tuple[str | None, str | None, Path]]:
    """``(org, segment, folder)`` for each run of one notebook: per organisation if it declares
    ``orgs`` and the run is per-org, per segment (that organisation has) if it declares ``segment``."""
    if org_folders is not None and "orgs" in declared:
        org_runs = [(org, run_folder / slug) for org, slug in org_folders.items()]
    else:
        org_runs = [(None, run_folder)]
    scopes = []
    for org, folder in org_runs:
        if segments is None or "segment" not in declared:
            scopes.append((org, None, folder))
            continue
        # A notebook over every organisation that takes `orgs` sees only the chosen ones.
        covered = [org] if org is not None else (chosen.get("orgs") if "orgs" in declared else None)
        scopes += [(org, segment, folder / segments.slugs[segment]) for segment in segments.segments_of(covered)]
    return scopes


def _in_run(path: str | Path, run_folder: Path | None) -> str:
    """A task's file as a path inside the run folder (``01_x.html`` or ``acme/01_x.html``)."""
    return Path(path).relative_to(run_folder).as_posix() if run_folder is not None else Path(path).name


def exit_code_for(results: Sequence[NotebookResult]) -> int:
    """0 when every notebook ran, 138 when a kernel died, else 1."""
    if any(r.status == STATUS_KERNEL_DIED for r in results):
        return EXIT_KERNEL_DIED
    if any(not r.ok for r in results):
        return EXIT_CELL_ERROR
    return EXIT_OK


def notebook_title(path: Path) -> str:
    """The first Markdown heading of the notebook, else its file name in words."""
    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception:
        nb = None
    for cell in nb.cells if nb else []:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                match = re.match(r"^#{1,6}\s+(.+?)\s*#*\s*$", line)
                if match:
                    return match.group(1)
    words = re.sub(r"^\d+[_-]*", "", path.stem).replace("_", " ").strip()
    return words.capitalize() or path.stem


def new_run_id(fingerprint: str, now: dt.datetime | None = None) -> str:
    """``20261127T053000Z-1a2b3c4d``: UTC start time, then 8 hex digits of the inputs' hash
    (runs with equal suffixes had the same notebooks, parameters and data)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{now.astimezone(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{fingerprint[:8]}"


def _fingerprint(notebooks: Sequence[Path], effective: Mapping[str, Any], inputs: Mapping[str, Any],
                 per_org: Mapping[str, str] | None = None, per_segment: Mapping[str, str] | None = None) -> str:
    digest = hashlib.sha256()
    for path in notebooks:
        digest.update(path.name.encode() + b"\0" + _sha256(path).encode())
    digest.update(json.dumps(effective, sort_keys=True, default=str).encode())
    digest.update(json.dumps([(f["path"], f["sha256"]) for f in inputs["files"]]).encode())
    if per_org is not None:
        digest.update(json.dumps(["per_org", list(per_org)]).encode())
    if per_segment is not None:
        digest.update(json.dumps(["per_segment", list(per_segment)]).encode())
    return digest.hexdigest()


def _claim_run_folder(out_dir: Path, run_id: str) -> tuple[Path, Path]:
    if not _RUN_ID.match(run_id) or run_id == "latest":
        raise RunError(f"--run-id {run_id!r} is not a usable folder name",
                       hint="use letters, digits, '.', '_' and '-', not starting with '.'")
    out_dir.mkdir(parents=True, exist_ok=True)
    run_dir = out_dir / run_id
    partial = out_dir / f".{run_id}.partial"
    if run_dir.exists() or partial.exists():
        raise RunError(f"run folder {run_id} already exists", path=out_dir, hint="choose another --run-id")
    partial.mkdir()
    return run_dir, partial


def switch_latest(out_dir: Path, run_id: str, started_at: str | None = None) -> bool:
    """Point ``out_dir/latest`` at ``run_id`` atomically (symlink under a temp name, then ``os.replace``).

    A run that started before the one ``latest`` shows already (runs that
    overlapped) leaves it alone. Returns whether ``latest`` was switched.
    """
    latest = out_dir / "latest"
    if latest.exists() and not latest.is_symlink():
        raise RunError("exists and is not a symlink; move it away so runs can publish", path=latest)
    current = _manifest_of(latest)
    if started_at and current.get("started_at") and current["started_at"] > started_at:
        log.info("latest shows %s, which started after this run; not switched", current.get("run_id"))
        return False
    temp = out_dir / f".latest.{os.getpid()}.{threading.get_ident()}.tmp"
    if temp.is_symlink() or temp.exists():
        temp.unlink()
    os.symlink(run_id, temp)  # relative target: the reports folder can be moved or mounted elsewhere
    os.replace(temp, latest)
    return True


def _manifest_of(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


# -- manifest --------------------------------------------------------------------------------------


def describe_inputs(data_dir: Path) -> dict[str, Any]:
    """Every file under ``data_dir`` (hidden files and folders skipped) with size, sha256 and rows."""
    files = []
    if data_dir.is_dir():
        for path in sorted(data_dir.rglob("*")):
            relative = path.relative_to(data_dir)
            if not path.is_file() or any(part.startswith(".") for part in relative.parts):
                continue
            files.append({
                "path": relative.as_posix(),
                "bytes": path.stat().st_size,
                "sha256": _sha256(path),
                "rows": count_rows(path),
            })
    return {"data_dir": str(data_dir), "exists": data_dir.is_dir(), "files": files, "rows_note": ROW_COUNT_NOTE}


def count_rows(path: Path) -> int | None:
    """Data rows of an export file (see :data:`ROW_COUNT_NOTE` for how); None when not tabular."""
    suffix = path.suffix.lower()
    try:
        if suffix in {".csv", ".tsv", ".txt"}:
            with path.open("rb") as handle:
                lines = sum(1 for line in handle if line.strip())
            return max(lines - 1, 0)
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_metadata(path).num_rows
        if suffix in {".xlsx", ".xlsm"}:
            import openpyxl

            book = openpyxl.load_workbook(path, read_only=True)
            try:
                return max((book.worksheets[0].max_row or 0) - 1, 0)
            finally:
                book.close()
    except Exception as err:  # an unreadable file is recorded, not fatal; the notebooks will say more
        log.warning("could not count rows of %s: %s", path, err)
    return None


def build_manifest(
    *,
    run_id: str,
    started_at: str,
    duration_s: float,
    tasks: Sequence[NotebookTask],
    results: Sequence[NotebookResult],
    resolved: ResolvedParameters,
    effective: Mapping[str, Any],
    parameter_files: Sequence[str | Path],
    overrides: Mapping[str, Any],
    inputs: Mapping[str, Any],
    executor: Mapping[str, Any],
    exit_code: int,
    run_folder: Path | None = None,
    per_org: Sequence[str] | None = None,
    per_segment: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The run's ``manifest.json`` as a dict (see docs/RUNNING.md for every key).

    File names are relative to ``run_folder`` (default: bare file names). A
    per-org run (``per_org`` set) records its organisations and each entry's ``org``,
    a per-segment run (``per_segment`` set) its segments and each entry's ``segment``.
    """
    ok = sum(r.ok for r in results)
    manifest = {
        "run_id": run_id,
        "status": "ok" if ok == len(results) else ("failed" if ok == 0 else "partial"),
        "exit_code": exit_code,
        "headline": headline_for(tasks, results),
        "started_at": started_at,
        "finished_at": _utc_now(),
        "duration_s": round(duration_s, 3),
        "notebooks": [
            {
                "name": task.name,
                **({"org": task.org} if per_org is not None else {}),
                **({"segment": task.segment} if per_segment is not None else {}),
                "title": task.title,
                "source": _display_path(Path(task.source)),
                "source_sha256": _sha256(Path(task.source)),
                "executed": _in_run(task.executed, run_folder),
                "html": _in_run(task.html, run_folder) if result.html_written else None,
                "summary_file": _in_run(task.summary_path, run_folder) if result.summary is not None else None,
                "status": result.status,
                "started_at": result.started_at,
                "duration_s": result.duration_s,
                "error": result.error,
                "parameters": {k: v for k, v in task.parameters.items() if k != "summary_path"},
                "summary": result.summary,
            }
            for task, result in zip(tasks, results)
        ],
        "parameters": dict(effective),
        "parameter_sources": dict(resolved.sources),
        "parameters_not_passed": list(resolved.unused),
        "parameter_files": [
            {"path": str(f), "sha256": _sha256(Path(f))} for f in parameter_files
        ],
        "overrides": _plain_dates(dict(overrides)),
        "inputs": dict(inputs),
        "versions": package_versions(),
        "git": git_state(),
        "executor": dict(executor),
        "command": sys.argv[:],
    }
    if per_org is not None:
        manifest["per_org"] = list(per_org)
    if per_segment is not None:
        manifest["per_segment"] = list(per_segment)
    return manifest


def headline_for(tasks: Sequence[NotebookTask], results: Sequence[NotebookResult]) -> str:
    """The ``headline`` of the panic-index (04) notebook's summary, else a neutral one."""
    source = _headline_source(tasks)
    for task, result in zip(tasks, results):
        if task.name == source and result.summary and isinstance(result.summary.get("headline"), str):
            return result.summary["headline"]
    return NEUTRAL_HEADLINE


def _headline_source(tasks: Sequence[NotebookTask]) -> str | None:
    # A per-org or per-segment panic index speaks for part of the data: it keeps its headline on its own line.
    return next((t.name for t in tasks if t.name.startswith(HEADLINE_NOTEBOOK_PREFIX)
                 and t.org is None and t.segment is None), None)


def package_versions() -> dict[str, str | None]:
    """Versions of the packages a result depends on, and of Python."""
    versions: dict[str, str | None] = {}
    for name in VERSION_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = sys.version.split()[0]
    return versions


def git_state(root: Path | None = None) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the project checkout, or None outside git."""
    root = root or paths.PROJ_ROOT
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _display_path(path: Path) -> str:
    try:
        return path.resolve().relative_to(paths.PROJ_ROOT).as_posix()
    except ValueError:
        return str(path)


def _utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")

