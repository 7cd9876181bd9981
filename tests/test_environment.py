"""The install story stays consistent: pyproject, environment.yml and the lock agree."""
import json
import re
import tomllib

import yaml

from helpers import ROOT

# conda-forge spells a few packages differently; pip extras become separate packages.
CONDA_NAMES = {"dask[distributed]": ["dask", "distributed"]}


def split(requirement: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9_.\-\[\]]+)\s*(.*)$", requirement)
    return match.group(1).lower(), match.group(2).replace(" ", "")


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["test"]
    out = {}
    for requirement in requirements:
        name, spec = split(requirement)
        for conda_name in CONDA_NAMES.get(name, [name]):
            out[conda_name] = spec
    return out


def conda_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    out = {}
    for item in env["dependencies"]:
        if isinstance(item, str) and not item.startswith(("python", "pip")):
            name, spec = split(item)
            out[name] = spec
    return out


def test_environment_yml_lists_the_same_packages_and_bounds_as_pyproject():
    assert conda_requirements() == pyproject_requirements()


def test_environment_yml_installs_the_project_editable():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_sections = [item["pip"] for item in env["dependencies"] if isinstance(item, dict) and "pip" in item]
    assert pip_sections and "-e ." in pip_sections[0]


def test_lock_pins_every_declared_package_within_its_bounds():
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    locked = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            locked[canonicalize_name(name)] = version.strip()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"] + project["optional-dependencies"]["test"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not pinned in requirements.lock"
        assert requirement.specifier.contains(locked[name]), f"{name}=={locked[name]} violates {requirement}"


def test_committed_notebooks_carry_no_outputs():
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    for path in notebooks:
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            assert not cell.get("outputs"), f"{path.name} has outputs: clear them before committing"
            assert not cell.get("execution_count"), f"{path.name} has execution counts"


def test_notebooks_have_a_documented_parameters_cell():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"
        for line in "".join(tagged[0]["source"]).splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                assert "#" in line, f"{path.name}: parameter line without a help comment: {line!r}"
