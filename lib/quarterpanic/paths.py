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
PROFILES_DIR = PACKAGE_DIR / "ingest" / "vendor_profiles"
SCENARIOS_DIR = PACKAGE_DIR / "sample" / "scenarios"
#: The file that makes a sub-folder of a data folder an organisation (read by ingest, keyed by the snapshots).
ORG_FILE = "org.yaml"


def display_path(path: Path) -> str:
    """``path`` relative to the project folder when it lies inside it (for manifests and messages), else as is."""
    try:
        return Path(path).resolve().relative_to(PROJ_ROOT).as_posix()
    except ValueError:
        return str(path)
