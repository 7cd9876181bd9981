"""Where things are, found from the package so notebooks run from any folder."""
from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJ_ROOT = PACKAGE_DIR.parents[1]
SALESDATA_DIR = PROJ_ROOT / "salesdata"
NOTEBOOKS_DIR = PROJ_ROOT / "notebooks"
PARAMETERS_DIR = PROJ_ROOT / "parameters"
REPORTS_DIR = PROJ_ROOT / "reports"
CACHE_DIR = PROJ_ROOT / ".cache"
PROFILES_DIR = PACKAGE_DIR / "profiles"
SCENARIOS_DIR = PACKAGE_DIR / "scenarios"
