"""Scenarios: which organisations, which quarters panic, and how strongly (``scenarios/*.yaml``)."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

import yaml

from quarterpanic.errors import ParameterError
from quarterpanic.paths import SCENARIOS_DIR

SCALES = ("small", "default", "large")
EFFECTS = (
    "qualification_decay",
    "reactive_order_taking",
    "planned_work_deferral",
    "turnaround_stretch",
    "after_hours_share",
    "win_rate_ratio",
    "discount_uplift",
    "last_week_deal_size_change",
    "month3_bookings_share",
    "close_date_push_rate",
    "lead_score_drop",
    "stage_skip_rate",
)


# -- scenarios ------------------------------------------------------------------------------------
def load_scenario(scenario: str | Path | Mapping | None = None) -> dict:
    """The resolved scenario: the shipped default with ``scenario`` deep-merged over it.

    ``scenario`` is ``None`` (the default), a shipped scenario name (``"null"``),
    a YAML file path, or a mapping with the same keys. Mappings merge key by key;
    an org's ``panic_quarters`` is replaced whole.
    """
    base = _default_scenario()
    if scenario is None:
        return _checked(base)
    if isinstance(scenario, Mapping):
        override = copy.deepcopy(dict(scenario))
    else:
        path = Path(scenario)
        shipped = SCENARIOS_DIR / f"{scenario}.yaml"
        if not path.suffix and shipped.exists():
            path = shipped
        if not path.exists():
            names = sorted(p.stem for p in SCENARIOS_DIR.glob("*.yaml"))
            raise ParameterError(f"no scenario {str(scenario)!r}", hint=f"use one of {names} or a YAML file")
        override = _read_yaml(path)
        override.setdefault("name", path.stem)
    return _checked(_merge(base, override))


def _default_scenario() -> dict:
    """A fresh copy of the shipped default scenario (parsed once)."""
    global _DEFAULT_SCENARIO
    if _DEFAULT_SCENARIO is None:
        _DEFAULT_SCENARIO = _read_yaml(SCENARIOS_DIR / "default.yaml")
    return copy.deepcopy(_DEFAULT_SCENARIO)


_DEFAULT_SCENARIO: dict | None = None


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ParameterError(f"scenario is not valid YAML: {err}", path=path) from None
    if not isinstance(data, dict):
        raise ParameterError("scenario must be a mapping", path=path)
    return data


def _merge(base: dict, override: Mapping) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key != "panic_quarters" and isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _checked(scenario: dict) -> dict:
    known = {"name", "description", "as_of", "scales", "calm", "panic", "win_probability", "orgs", "export"}
    unknown = sorted(set(scenario) - known)
    if unknown:
        raise ParameterError(f"unknown scenario key(s) {unknown}", hint=f"use only {sorted(known)}")
    for section in ("calm", "panic"):
        bad = sorted(set(scenario[section]) - set(EFFECTS))
        if bad:
            raise ParameterError(f"unknown effect(s) {bad} under {section!r}", hint=f"effects are {list(EFFECTS)}")
    for org, spec in scenario["orgs"].items():
        for key in ("size_class", "format", "teams", "sellers", "opportunities_per_quarter"):
            if key not in spec:
                raise ParameterError(f"org {org!r} lacks {key!r} in the scenario")
        for key, onset in panic_entries(spec).items():
            if not 2 <= onset[0] <= 12:
                raise ParameterError(f"org {org!r}: onset week of panic quarter {key!r} must be 2..12")
    return scenario


def panic_entries(spec: Mapping) -> dict[Any, tuple[int, dict]]:
    """``panic_quarters`` as {key: (onset_week, effect overrides)}."""
    out = {}
    for key, value in (spec.get("panic_quarters") or {}).items():
        if isinstance(value, Mapping):
            out[key] = (int(value["onset_week"]), dict(value.get("effects") or {}))
        else:
            out[key] = (int(value), {})
    return out
