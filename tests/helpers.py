"""Helpers shared by the test modules (importable because pytest puts tests/ on sys.path)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from quarterpanic.ingest import schemas

ROOT = Path(__file__).resolve().parents[1]
HOSTILE_ORG = "Brightline <img src=x onerror=alert(1)> Studio"


def canonical_table(name: str, rows, source_file: str = "f.csv") -> pd.DataFrame:
    """A validated canonical table from a few hand-written rows; unnamed columns are empty."""
    frame = pd.DataFrame(rows).copy()
    base = schemas.empty(name)
    for column in base.columns:
        if column not in frame:
            frame[column] = None
    frame["source_file"] = source_file
    frame["source_row"] = range(2, len(frame) + 2)
    return schemas.TABLES[name].validate(frame[base.columns])


def execute_notebook_on_sample(notebook: str, tmp_path: Path, *, seed: int, rename_org: str | None = None,
                               new_name: str = HOSTILE_ORG, parameters: dict | None = None):
    """Write a small sample, execute ``notebooks/<notebook>`` on it with papermill.

    ``rename_org`` gives that organisation a hostile name (CRM text that looks
    like HTML), which must never reach a page as markup.

    Returns (summary JSON, executed notebook JSON, Sample).
    """
    import papermill

    from quarterpanic.sample import write_sample

    data_dir = tmp_path / "data"
    sample = write_sample(data_dir, seed=seed, scale="small")
    if rename_org:
        folder = next(p.parent for p in data_dir.glob("*/org.yaml") if f"org: {rename_org}" in p.read_text())
        org_yaml = folder / "org.yaml"
        org_yaml.write_text(org_yaml.read_text().replace(f"org: {rename_org}", f"org: '{new_name}'"))
    summary_path = tmp_path / "summary.json"
    out = tmp_path / notebook
    papermill.execute_notebook(
        str(ROOT / "notebooks" / notebook), str(out),
        parameters={"data_dir": str(data_dir), "summary_path": str(summary_path), **(parameters or {})},
        cwd=str(tmp_path), progress_bar=False,
    )
    return json.loads(summary_path.read_text()), json.loads(out.read_text()), sample
