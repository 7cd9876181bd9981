"""Key figures a notebook records for the runner, the index page and the tests.

The last cell of every notebook calls :func:`save_summary`; ``quarterpanic
run`` sets the ``summary_path`` parameter so the JSON lands next to the
executed notebook. Nobody scrapes HTML for numbers.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from quarterpanic.util import jsonable


def save_summary(summary: dict[str, Any], path: str | Path | None) -> dict[str, Any]:
    """Write ``summary`` as JSON to ``path`` (nothing when ``path`` is None); return it JSON-safe."""
    plain = jsonable(summary)
    if path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(plain, indent=2, sort_keys=True))
    return plain


def load_summary(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
