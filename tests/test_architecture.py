"""The package's layers, read from its source with :mod:`ast` (nothing is imported).

Imports point one way only, down the stages (docs/ARCHITECTURE.md draws them)::

    cli -> run -> report -> analysis -> dataset -> ingest -> params -> calendar -> errors/paths/util

``store`` (the caches) sits beside ``ingest`` and serves ``dataset`` and ``analysis``; ``sample`` sits beside
``dataset``, builds exports with ``ingest``'s profiles and schemas, and only the CLI imports it. A layer may
import its own modules and the layers of lower tiers, never a layer of its own tier or above.

Every import counts, at module top or inside a function; an import inside a function needs a reason in
:data:`LOCAL_IMPORTS` and a comment beside it saying why.
"""
from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "lib" / "quarterpanic"

# Lowest first. ``quarterpanic`` is the root package (it holds ``__version__`` and nothing else).
TIERS: tuple[frozenset[str], ...] = (
    frozenset({"quarterpanic", "errors", "paths", "util"}),
    frozenset({"calendar"}),
    frozenset({"params"}),  # checks calendar specs with the calendar
    frozenset({"store"}),  # verified entries on disk, for whatever a layer above gives it (loaded files too)
    frozenset({"ingest"}),
    frozenset({"dataset", "sample"}),
    frozenset({"analysis"}),
    frozenset({"report"}),
    frozenset({"run"}),
    frozenset({"cli"}),
)
TIER = {layer: rank for rank, layers in enumerate(TIERS) for layer in layers}

# Layers only the named layers may import, whatever their tier.
IMPORTED_ONLY_BY = {"sample": {"sample", "cli"}}

# Lower layers a layer may not reach past the one between them, and why.
NO_SKIPPING = {
    ("analysis", "ingest"): "analyses read the Dataset, never exports (and a notebook reading a snapshot never "
                            "imports pandera)",
    ("report", "ingest"): "reports show what the analysis returned, never exports",
}

# Third-party packages only one layer may import: charts are drawn in the report, never in the analysis.
THIRD_PARTY_OWNERS = {"matplotlib": "report", "seaborn": "report"}

# (importing module, imported module or package) -> why the import waits until the function runs.
LOCAL_IMPORTS = {
    ("quarterpanic.run.executors", "distributed"):
        "dask.distributed takes seconds to import and only `quarterpanic run --executor dask` uses it",
    ("quarterpanic.cli", "quarterpanic.run"):
        "run/ imports papermill, nbformat and nbconvert (seconds); only `run` and detect's data-scope check use it",
    ("quarterpanic.cli", "quarterpanic.ingest"):
        "pandera (and dask.dataframe through it) takes a second or more; `detect` on a snapshot never needs it",
    ("quarterpanic.cli", "quarterpanic.analysis"):
        "analysis/ imports statsmodels and scipy (seconds); `quarterpanic --help` and `sample` never need it",
    ("quarterpanic.cli", "quarterpanic.report"):
        "report/ imports the analysis (statsmodels) and matplotlib; `quarterpanic --help` never needs it",
    ("quarterpanic.cli", "quarterpanic.sample"):
        "the generator validates with pandera, which only `quarterpanic sample` needs",
    ("quarterpanic.dataset", "quarterpanic.ingest"):
        "a dataset read back from a snapshot never imports pandera; only building or loading tables does",
    ("quarterpanic.calendar", "holidays"):
        "holidays takes about half a second to import; only an organisation that names a country needs it",
}


def local_reason(imp: "Import") -> str | None:
    for (module, target), reason in LOCAL_IMPORTS.items():
        if imp.module == module and (imp.target == target or imp.target.startswith(target + ".")):
            return reason
    return None


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # what it imports, as a module name (a package's submodule when the name is one)
    line: int
    function: str | None  # the enclosing function, or None at module level

    @property
    def where(self) -> str:
        place = f" in {self.function}()" if self.function else ""
        return f"{self.module} line {self.line}{place}"


def module_name(path: Path, package_dir: Path) -> str:
    parts = path.relative_to(package_dir.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules(package_dir: Path) -> dict[str, Path]:
    """Every module of the package by dotted name."""
    return {module_name(path, package_dir): path for path in sorted(package_dir.rglob("*.py"))}


def _enclosing_functions(tree: ast.AST) -> dict[ast.AST, str]:
    owner: dict[ast.AST, str] = {}

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            if function is not None:
                owner[child] = function
            visit(child, inner)

    visit(tree, None)
    return owner


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """The imports of one module, relative ones resolved, ``from pkg import submodule`` read as the submodule."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    owner = _enclosing_functions(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                       for alias in node.names]
        else:
            continue
        found += [Import(module, target, node.lineno, owner.get(node)) for target in dict.fromkeys(targets)]
    return found


def import_graph(package_dir: Path) -> list[Import]:
    modules = package_modules(package_dir)
    return [imp for module, path in modules.items() for imp in imports_of(module, path, modules)]


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer_violations(imports: list[Import], root: str = "quarterpanic") -> list[str]:
    """Imports that point up or sideways between layers, or into a layer that is not theirs to use."""
    problems = []
    for imp in imports:
        if imp.target != root and not imp.target.startswith(root + "."):
            owner = THIRD_PARTY_OWNERS.get(imp.target.partition(".")[0])
            if owner is not None and layer_of(imp.module) != owner:
                problems.append(f"{imp.where} imports {imp.target}: only {owner}/ may")
            continue
        source, target = layer_of(imp.module), layer_of(imp.target)
        if source == target:
            continue
        if source not in TIER or target not in TIER:
            problems.append(f"{imp.where} imports {imp.target}: give {source!r} and {target!r} a tier in TIERS")
        elif TIER[target] >= TIER[source]:
            problems.append(f"{imp.where} imports {imp.target}: {source} may not import {target} "
                            f"(tier {TIER[source]} -> tier {TIER[target]})")
        elif source not in IMPORTED_ONLY_BY.get(target, {source}):
            problems.append(f"{imp.where} imports {imp.target}: only {sorted(IMPORTED_ONLY_BY[target])} "
                            f"may import {target}")
        elif (source, target) in NO_SKIPPING:
            problems.append(f"{imp.where} imports {imp.target}: {NO_SKIPPING[source, target]}")
    return problems


def cycles(imports: list[Import], root: str = "quarterpanic") -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        graph.setdefault(imp.module, set())
        if imp.target.startswith(root + ".") and imp.target != imp.module:
            graph[imp.module].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups = []

    def strongconnect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                strongconnect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            strongconnect(node)
    return groups


def unexplained_local_imports(imports: list[Import], package_dir: Path) -> list[str]:
    """Imports inside functions without a reason in LOCAL_IMPORTS and a comment beside them."""
    modules = package_modules(package_dir)
    problems = []
    for imp in imports:
        if imp.function is None:
            continue
        if local_reason(imp) is None:
            problems.append(f"{imp.where} imports {imp.target} inside a function: move it to the module top")
            continue
        lines = modules[imp.module].read_text(encoding="utf-8").splitlines()
        above = imp.line - 2  # the line before the import, 0-based
        while above >= 0 and lines[above].strip().startswith(("import ", "from ")):
            above -= 1  # one comment may explain a block of local imports
        if "#" not in lines[imp.line - 1] and not (above >= 0 and lines[above].strip().startswith("#")):
            problems.append(f"{imp.where} imports {imp.target} inside a function: say why in a comment beside it")
    return problems


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    return import_graph(PACKAGE_DIR)


def test_every_layer_has_a_tier():
    layers = {layer_of(module) for module in package_modules(PACKAGE_DIR)}
    assert layers <= set(TIER), f"layers without a tier: {sorted(layers - set(TIER))}"
    assert layers == set(TIER), f"tiers naming no layer: {sorted(set(TIER) - layers)}"


def test_imports_point_down_the_layers(imports):
    assert layer_violations(imports) == []


def test_analysis_neither_draws_nor_writes_words(imports):
    offending = [f"{imp.where} imports {imp.target}" for imp in imports
                 if layer_of(imp.module) == "analysis"
                 and (imp.target.partition(".")[0] in {"matplotlib", "seaborn"}
                      or imp.target.startswith("quarterpanic.report"))]
    assert offending == []


def test_no_import_cycles(imports):
    assert cycles(imports) == []


def test_imports_sit_at_module_top(imports):
    assert unexplained_local_imports(imports, PACKAGE_DIR) == []


def test_every_local_import_reason_is_still_used(imports):
    stale = [key for key in LOCAL_IMPORTS
             if not any(imp.function and local_reason(imp) == LOCAL_IMPORTS[key] and imp.module == key[0]
                        for imp in imports)]
    assert stale == []


def test_library_never_imports_the_benchmarks_or_tests(imports):
    assert [imp.where for imp in imports if imp.target.partition(".")[0] in {"benchmarks", "tests", "helpers"}] == []


def test_every_sub_package_says_what_it_owns_and_may_import():
    missing = []
    for init in sorted(PACKAGE_DIR.rglob("__init__.py")):
        docstring = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        if init.parent != PACKAGE_DIR and "may import" not in " ".join(docstring.split()).lower():
            missing.append(str(init.relative_to(PACKAGE_DIR.parent)))
    assert missing == []


# The checks above must be able to fail: each is run once on a tiny package that breaks its rule.

def tiny_package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "quarterpanic"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def test_an_upward_import_is_reported(tmp_path):
    root = tiny_package(tmp_path, {
        "analysis/__init__.py": "",
        "analysis/detector.py": "from quarterpanic.report import words\n",
        "report/__init__.py": "",
        "report/words.py": "from ..analysis import detector\n",
        "ingest/__init__.py": "",
        "ingest/loader.py": "import quarterpanic.dataset\n",
        "dataset.py": "from quarterpanic import errors\n",
        "errors.py": "",
    })
    problems = layer_violations(import_graph(root))
    assert any("quarterpanic.analysis.detector line 1 imports quarterpanic.report.words" in p for p in problems)
    assert any("quarterpanic.ingest.loader line 1 imports quarterpanic.dataset" in p for p in problems)
    assert not any(p.startswith("quarterpanic.report.words") for p in problems)
    assert not any(p.startswith("quarterpanic.dataset") for p in problems)


def test_sideways_imports_and_private_layers_are_reported(tmp_path):
    root = tiny_package(tmp_path, {
        "store/__init__.py": "",
        "store/entries.py": "from quarterpanic.ingest import loader\n",
        "ingest/__init__.py": "",
        "ingest/loader.py": "",
        "analysis/__init__.py": "",
        "analysis/detector.py": "from quarterpanic.sample import generate\nimport matplotlib.pyplot as plt\n",
        "analysis/reader.py": "from quarterpanic.ingest.loader import load\n",
        "sample/__init__.py": "def generate():\n    pass\n",
    })
    problems = layer_violations(import_graph(root))
    assert any("store may not import ingest" in p for p in problems)
    assert any("may import sample" in p for p in problems)
    assert any("imports matplotlib.pyplot: only report/ may" in p for p in problems)
    assert any(p.startswith("quarterpanic.analysis.reader line 1") and "never exports" in p for p in problems)


def test_a_cycle_is_reported(tmp_path):
    root = tiny_package(tmp_path, {
        "analysis/__init__.py": "",
        "analysis/detect.py": "from quarterpanic.analysis.early_warning import warn\n",
        "analysis/early_warning.py": "def warn():\n    from quarterpanic.analysis import detect\n",
        "analysis/onset.py": "from quarterpanic.analysis import detect\n",
    })
    assert cycles(import_graph(root)) == [["quarterpanic.analysis.detect", "quarterpanic.analysis.early_warning"]]


def test_a_local_import_needs_a_listed_reason_and_a_comment(tmp_path):
    root = tiny_package(tmp_path, {
        "run/__init__.py": "",
        "run/executors.py": """\
            def execute():
                from distributed import Client
            def helper():
                import pandas as pd
            """,
    })
    problems = unexplained_local_imports(import_graph(root), root)
    assert problems == [
        "quarterpanic.run.executors line 2 in execute() imports distributed inside a function: "
        "say why in a comment beside it",
        "quarterpanic.run.executors line 4 in helper() imports pandas inside a function: move it to the module top",
    ]
