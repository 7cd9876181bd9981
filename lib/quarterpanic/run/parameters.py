"""A run's parameters: what each notebook declares, and the layered files and ``-p`` values checked against it."""
from __future__ import annotations

import ast
import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import papermill

from quarterpanic import params as qparams
from quarterpanic import paths
from quarterpanic.errors import ParameterError

_TYPE_SAMPLES: dict[str, Any] = {"str": "", "int": 0, "float": 0.0, "bool": False, "list": [], "dict": {}}


@dataclass(frozen=True)
class DeclaredParameter:
    """One line of a notebook's ``parameters`` cell, as papermill infers it."""

    name: str
    type_name: str | None  # the annotation or ``# type:`` comment, if any
    default_text: str  # the right-hand side as written
    help: str  # the trailing comment
    default: Any  # the value used for type checks (literal default, else the suite default)


def declared_parameters(notebook: str | Path) -> dict[str, DeclaredParameter]:
    """The parameters ``notebook`` declares in its cell tagged ``parameters``.

    Uses :func:`papermill.inspect_notebook`; defaults that are Python literals
    are evaluated, others (``str(SALESDATA_DIR)``) fall back to the suite
    default of the same name, then to the annotation's type.
    """
    out = {}
    for name, info in papermill.inspect_notebook(str(notebook)).items():
        type_name = info.get("inferred_type_name")
        type_name = None if type_name in (None, "None") else type_name
        out[name] = DeclaredParameter(
            name=name,
            type_name=type_name,
            default_text=info.get("default", ""),
            help=info.get("help", ""),
            default=_typed_default(name, info.get("default", ""), type_name),
        )
    return out


def _typed_default(name: str, text: str, type_name: str | None) -> Any:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        value = None
    if value is None:
        value = qparams.DEFAULTS.get(name)
    if value is None and type_name:
        inner = re.sub(r"^Optional\[(.*)\]$", r"\1", type_name.strip())
        value = _TYPE_SAMPLES.get(inner.split("[")[0].strip())
    return value


@dataclass
class ResolvedParameters:
    """The parameters of a run, checked against what the notebooks declare."""

    chosen: dict[str, Any]  # keys set by -f files and -p, merged in order
    sources: dict[str, str]  # key -> the file (or "-p") that set it last
    declared: dict[str, dict[str, DeclaredParameter]]  # notebook stem -> its parameters
    unused: list[str]  # suite keys set but declared by none of the selected notebooks

    def for_notebook(self, stem: str) -> dict[str, Any]:
        """The chosen values this notebook declares (the others keep the notebook's defaults)."""
        return {k: v for k, v in self.chosen.items() if k in self.declared[stem]}


def resolve_parameters(
    notebooks: Sequence[Path],
    files: Iterable[str | Path] = (),
    overrides: Mapping[str, Any] | None = None,
    *,
    suite_notebooks: Iterable[Path] = (),
) -> ResolvedParameters:
    """Layer ``files`` then ``overrides`` and check every key and type before anything runs.

    A key is accepted when a selected notebook declares it; a key that only
    another notebook of the suite (``suite_notebooks``) or
    :data:`quarterpanic.params.DEFAULTS` knows is accepted but not passed (so
    ``-f parameters/default.yaml --notebooks 02`` works); anything else is a
    :class:`ParameterError` naming the key and the file it came from.
    """
    declared = {path.stem: declared_parameters(path) for path in notebooks}
    known: dict[str, Any] = dict(qparams.DEFAULTS)
    for path in suite_notebooks:
        if path.stem not in declared:
            known.update({k: p.default for k, p in declared_parameters(path).items() if p.default is not None})
    selected: dict[str, Any] = {}
    for parameters in declared.values():
        for name, parameter in parameters.items():
            if name not in selected or selected[name] is None:
                selected[name] = parameter.default
    known.update({k: v for k, v in selected.items() if v is not None or k not in known})

    chosen: dict[str, Any] = {}
    sources: dict[str, str] = {}
    layers = [(str(f), qparams.read_params_file(f)) for f in files]
    if overrides:
        layers.append(("-p", dict(overrides)))
    for source, update in layers:
        if "summary_path" in update:
            raise ParameterError("summary_path is set by `quarterpanic run` (next to each executed notebook)",
                                 path=source, hint="remove it")
        update = {key: plain_dates(value) for key, value in update.items()}
        chosen = qparams.merge(chosen, update, source=source, known=known)
        sources.update({key: source for key in update})
    unused = sorted(k for k in chosen if k not in selected)
    return ResolvedParameters(chosen=chosen, sources=sources, declared=declared, unused=unused)


def plain_dates(value: Any) -> Any:
    # YAML reads `as_of: 2025-11-01` as a date; notebooks and the manifest want the ISO string.
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: plain_dates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_dates(v) for v in value]
    return value


def format_parameters(notebooks: Sequence[Path]) -> str:
    """Every notebook's parameters with type, default and help (``--list-parameters``)."""
    lines = []
    for path in notebooks:
        lines.append(f"{path.stem}  ({paths.display_path(path)})")
        declared = declared_parameters(path)
        if not declared:
            lines.append("  (no cell tagged 'parameters')")
        for p in declared.values():
            type_name = p.type_name or (type(p.default).__name__ if p.default is not None else "any")
            lines.append(f"  {p.name}: {type_name} = {p.default_text}")
            if p.help:
                lines.append(f"      {p.help}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def declared_default(resolved: ResolvedParameters, name: str) -> Any:
    for parameters in resolved.declared.values():
        if name in parameters and isinstance(parameters[name].default, str):
            return parameters[name].default
    return None
