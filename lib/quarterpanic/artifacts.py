"""Key figures a notebook records for the runner, the index page and the tests.

The last cell of every notebook calls :func:`save_summary`; ``quarterpanic
run`` sets the ``summary_path`` parameter so the JSON lands next to the
executed notebook. Nobody scrapes HTML for numbers.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, pd.DataFrame):
        return [_plain(r) for r in value.to_dict(orient="records")]
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not np.isfinite(value) else float(value)
    if value is pd.NA or value is pd.NaT or value is None:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def save_summary(summary: dict[str, Any], path: str | Path | None) -> dict[str, Any]:
    """Write ``summary`` as JSON to ``path`` (nothing when ``path`` is None); return it JSON-safe."""
    plain = _plain(summary)
    if path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(plain, indent=2, sort_keys=True))
    return plain


def load_summary(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
