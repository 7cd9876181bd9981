"""Publishing a run: its folder claimed under a unique id, and ``latest`` switched to it atomically."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

from quarterpanic.errors import RunError
from quarterpanic.util import file_sha256, utc_now

log = logging.getLogger(__name__)


_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def new_run_id(fingerprint: str, now: dt.datetime | None = None) -> str:
    """``20261127T053000Z-1a2b3c4d``: UTC start time, then 8 hex digits of the inputs' hash
    (runs with equal suffixes had the same notebooks, parameters and data)."""
    now = now or dt.datetime.fromisoformat(utc_now())
    return f"{now.astimezone(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{fingerprint[:8]}"


def run_fingerprint(notebooks: Sequence[Path], effective: Mapping[str, Any], inputs: Mapping[str, Any],
                 per_org: Mapping[str, str] | None = None, per_segment: Mapping[str, str] | None = None) -> str:
    digest = hashlib.sha256()
    for path in notebooks:
        digest.update(path.name.encode() + b"\0" + file_sha256(path).encode())
    digest.update(json.dumps(effective, sort_keys=True, default=str).encode())
    digest.update(json.dumps([(f["path"], f["sha256"]) for f in inputs["files"]]).encode())
    if per_org is not None:
        digest.update(json.dumps(["per_org", list(per_org)]).encode())
    if per_segment is not None:
        digest.update(json.dumps(["per_segment", list(per_segment)]).encode())
    return digest.hexdigest()


def claim_run_folder(out_dir: Path, run_id: str) -> tuple[Path, Path]:
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


def latest_run(out_dir: Path) -> str | None:
    """The run folder ``out_dir/latest`` points at, or None when there is no such link."""
    try:
        return os.readlink(Path(out_dir) / "latest")
    except OSError:
        return None


def _manifest_of(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}
