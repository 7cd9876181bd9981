"""The run's ``manifest.json``: inputs with their hashes, parameters, versions, git state and every notebook's outcome."""
from __future__ import annotations

import logging
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

import openpyxl
import pyarrow.parquet as pq

from quarterpanic import paths
from quarterpanic.run.executors import NotebookResult, NotebookTask
from quarterpanic.run.parameters import ResolvedParameters, plain_dates
from quarterpanic.util import file_sha256, utc_now

log = logging.getLogger(__name__)


VERSION_PACKAGES = ["quarterpanic", "pandas", "numpy", "statsmodels", "papermill", "nbconvert"]
ROW_COUNT_NOTE = (
    "rows: CSV/TSV/TXT = non-empty lines minus one header line (a quoted value spanning lines "
    "counts once per line); Parquet = row count from the file metadata; Excel = rows of the first "
    "sheet minus one header row; other files = null"
)
HEADLINE_NOTEBOOK_PREFIX = "04"
NEUTRAL_HEADLINE = "Quarter-end panic report"


def in_run(path: str | Path, run_folder: Path | None) -> str:
    """A task's file as a path inside the run folder (``01_x.html`` or ``acme/01_x.html``)."""
    return Path(path).relative_to(run_folder).as_posix() if run_folder is not None else Path(path).name


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
                "sha256": file_sha256(path),
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
            return pq.read_metadata(path).num_rows
        if suffix in {".xlsx", ".xlsm"}:
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
        "finished_at": utc_now(),
        "duration_s": round(duration_s, 3),
        "notebooks": [
            {
                "name": task.name,
                **({"org": task.org} if per_org is not None else {}),
                **({"segment": task.segment} if per_segment is not None else {}),
                "title": task.title,
                "source": paths.display_path(Path(task.source)),
                "source_sha256": file_sha256(Path(task.source)),
                "executed": in_run(task.executed, run_folder),
                "html": in_run(task.html, run_folder) if result.html_written else None,
                "summary_file": in_run(task.summary_path, run_folder) if result.summary is not None else None,
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
            {"path": str(f), "sha256": file_sha256(Path(f))} for f in parameter_files
        ],
        "overrides": plain_dates(dict(overrides)),
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
    source = headline_source(tasks)
    for task, result in zip(tasks, results):
        if task.name == source and result.summary and isinstance(result.summary.get("headline"), str):
            return result.summary["headline"]
    return NEUTRAL_HEADLINE


def headline_source(tasks: Sequence[NotebookTask]) -> str | None:
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


