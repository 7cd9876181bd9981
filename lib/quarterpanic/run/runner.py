"""``quarterpanic run``: execute the notebooks with papermill, publish them with nbconvert.

One run writes ``OUT/<run-id>/`` (first as ``OUT/.<run-id>.partial``, renamed
when complete)::

    index.html                  headline + one line per report with its status
    manifest.json               inputs (sha256, rows), parameters, versions, git, per-notebook status
    01_pipeline_overview.ipynb  executed copy (papermill's output; an immutable record)
    01_pipeline_overview.html   code-free report page (nbconvert, see quarterpanic.report.pages)
    01_pipeline_overview.summary.json   key figures the notebook saved to its summary_path

With ``per_org`` (``--per-org``) every notebook that declares ``orgs`` runs
once per organisation, with ``orgs: [ORG]``, into ``OUT/<run-id>/<org-slug>/``;
with ``per_segment`` (``--per-segment``) every notebook that declares
``segment`` runs once per segment of the opportunities, into
``<segment-slug>/`` (``<org-slug>/<segment-slug>/`` with both). The index
groups the reports by organisation, then segment.

It then points ``OUT/latest`` at it (a symlink swapped with ``os.replace``)
when every notebook succeeded. A partial run (a notebook failed) keeps its own
folder, its index names the failures, and ``latest`` keeps showing the last
complete run (or does not exist before the first one). Parameters are checked before anything
executes (:mod:`quarterpanic.run.parameters`): every key must be a parameter of
the model (:class:`quarterpanic.params.Parameters`) with a value of its type and
range, or be declared by a notebook of the suite (papermill's
``inspect_notebook``); organisations, segments and quarters must be in the data.

Notebooks run through an executor (:mod:`quarterpanic.run.executors`): in this
process, in worker processes (``--jobs``) or on a Dask cluster.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import nbformat

from quarterpanic import paths
from quarterpanic.dataset import resolve_data_dir
from quarterpanic.errors import QuarterpanicError, RunError
from quarterpanic.paths import ORG_FILE
from quarterpanic.report.pages import error_summary, write_index
from quarterpanic.run.executors import (
    STATUS_KERNEL_DIED,
    EventHandler,
    Executor,
    LocalExecutor,
    NotebookResult,
    NotebookTask,
)
from quarterpanic.run.manifest import build_manifest, describe_inputs, headline_source, in_run
from quarterpanic.run.parameters import (
    check_has_opportunities,
    check_scope,
    data_scope,
    declared_default,
    organisations,
    resolve_parameters,
    segments_by_org,
)
from quarterpanic.run.publish import claim_run_folder, latest_run, new_run_id, run_fingerprint, switch_latest
from quarterpanic.util import utc_now

log = logging.getLogger("quarterpanic.run.runner")
# Exit codes: every notebook ran / a cell raised / a kernel died (papermill's own code for it).
EXIT_OK = 0
EXIT_CELL_ERROR = 1
EXIT_KERNEL_DIED = 138


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


@dataclass
class RunReport:
    """What :func:`run` did."""

    run_id: str
    run_dir: Path
    exit_code: int
    results: list[NotebookResult]
    published: bool  # whether OUT/latest now points at this run
    latest: str | None = None  # the run OUT/latest points at afterwards (None: no complete run yet)
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

    data_dir = resolve_data_dir(resolved.chosen.get("data_dir", declared_default(resolved, "data_dir")), must_exist=False)
    check_scope(resolved.chosen, resolved.sources, data_scope(data_dir, resolved.chosen))
    check_has_opportunities(data_dir, resolved.chosen)
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
    started_at = utc_now()
    run_id = run_id or new_run_id(run_fingerprint(selected, effective, inputs, org_folders,
                                               segments.slugs if segments else None))
    out_dir = Path(out_dir).resolve()
    run_dir, partial = claim_run_folder(out_dir, run_id)
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
    except KeyboardInterrupt:  # the executor has stopped its kernels and workers
        log.warning("run %s interrupted; its unfinished folder %s is left for inspection (delete it)",
                    run_id, partial)
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
                "name": task.name,
                "title": task.title,
                "html": in_run(task.html, partial) if result.html_written else None,
                "notebook": in_run(task.executed, partial),
                "status": result.status,
                "duration_s": result.duration_s,
                "error": error_summary(result.error) if result.error else None,
                "headline": (result.summary or {}).get("headline") if task.name != headline_source(tasks) else None,
            }
            for task, result in zip(tasks, results)
        ],
        links=[("manifest.json", "manifest.json")]
        + [(in_run(t.executed, partial), in_run(t.executed, partial)) for t in tasks if Path(t.executed).is_file()],
        orgs=[task.org for task in tasks] if org_folders is not None else None,
        segments=[task.segment for task in tasks] if segments is not None else None,
    )
    os.rename(partial, run_dir)
    # A reader of latest must never land on a failure page: only a complete run is published.
    complete = bool(results) and all(r.ok for r in results)
    published = complete and switch_latest(out_dir, run_id, started_at)
    for result in results:
        if not result.ok:
            log.info("%s %s: %s", result.name, result.status, error_summary(result.error or {}))
    log.info("run %s finished with exit code %d%s", run_id, exit_code, "; latest updated" if published else "")
    return RunReport(run_id=run_id, run_dir=run_dir, exit_code=exit_code, results=results,
                     published=published, latest=latest_run(out_dir), manifest=manifest)


def select_orgs(names: Sequence[str], data_dir: Path) -> list[str]:
    """The organisations of a per-org run: ``names``, checked against the data folder, or all of them.

    Names come from each ``<data_dir>/*/org.yaml`` (its ``org:`` key, else the
    folder's name, as the loader names them); the exports are not read.
    """
    found = organisations(data_dir)
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
