"""Scenarios: which organisations, which quarters panic, and how strongly (``scenarios/*.yaml``)."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

import numpy as np
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
    "last_week_win_rate_change",
)
# Effects that multiply (a rate, a turnaround, a win probability, an amount): their value at
# intensity s is interpolated on the log scale, calm * (panic / calm) ** s; the others add,
# calm + s * (panic - calm). ``*_change`` effects are relative: 1 + value multiplies.
MULTIPLICATIVE = frozenset(("reactive_order_taking", "planned_work_deferral", "turnaround_stretch", "win_rate_ratio"))
RELATIVE = frozenset(("last_week_deal_size_change", "last_week_win_rate_change"))
SHAPES = ("step", "ramp", "plateau")
# How a panic unfolds (scenario ``pattern:``, an org's ``pattern:``, or a panic quarter entry).
PATTERN_KEYS = ("shape", "ramp_weeks", "seller_fraction", "spread", "segments")
PATTERN_DEFAULTS = {"shape": "step", "ramp_weeks": None, "seller_fraction": 1.0, "spread": False, "segments": None}
DISTRIBUTIONS = ("uniform", "choice", "integers")
# Keys of ``panic_quarters: {draw: {...}}`` besides the entry keys (onset_week, effects, pattern keys).
DRAW_KEYS = ("probability", "count", "open")
CONFOUNDER_DEFAULTS = {"q4_volume": 1.0, "month_end_close_share": 0.0}


# -- scenarios ------------------------------------------------------------------------------------
def load_scenario(scenario: str | Path | Mapping | None = None) -> dict:
    """The resolved scenario: the shipped default with ``scenario`` deep-merged over it.

    ``scenario`` is ``None`` (the default), a shipped scenario name (``"null"``),
    a YAML file path, or a mapping with the same keys. Mappings merge key by key;
    an org's ``panic_quarters`` is replaced whole, and takes the org's ``changes`` with it
    unless the override gives its own (a change is part of the panic schedule it ends: a new
    schedule would otherwise lose its later panics to the default's change).
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
    merged = _merge(base, override)
    for org, spec in (override.get("orgs") or {}).items():
        if isinstance(spec, Mapping) and "panic_quarters" in spec and "changes" not in spec:
            merged["orgs"][org].pop("changes", None)
    return _checked(merged)


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
    known = {"name", "description", "as_of", "scales", "calm", "panic", "win_probability", "orgs", "export",
             "pattern", "seller_sd", "confounders"}
    unknown = sorted(set(scenario) - known)
    if unknown:
        raise ParameterError(f"unknown scenario key(s) {unknown}", hint=f"use only {sorted(known)}")
    bad = sorted(set(scenario.get("confounders") or {}) - set(CONFOUNDER_DEFAULTS))
    if bad:
        raise ParameterError(f"unknown confounder(s) {bad}", hint=f"use {list(CONFOUNDER_DEFAULTS)}")
    for section in ("calm", "panic"):
        bad = sorted(set(scenario[section]) - set(EFFECTS))
        if bad:
            raise ParameterError(f"unknown effect(s) {bad} under {section!r}", hint=f"effects are {list(EFFECTS)}")
    _check_pattern(scenario.get("pattern"), "the scenario's pattern")
    for org, spec in scenario["orgs"].items():
        for key in ("size_class", "format", "teams", "sellers", "opportunities_per_quarter"):
            if key not in spec:
                raise ParameterError(f"org {org!r} lacks {key!r} in the scenario")
        _check_pattern(spec.get("pattern"), f"org {org!r} pattern")
        bad = sorted(set(spec.get("confounders") or {}) - set(CONFOUNDER_DEFAULTS))
        if bad:
            raise ParameterError(f"org {org!r}: unknown confounder(s) {bad}", hint=f"use {list(CONFOUNDER_DEFAULTS)}")
        draw = (spec.get("panic_quarters") or {}).get("draw")
        if draw is not None:
            bad = sorted(set(draw) - set(DRAW_KEYS) - set(PATTERN_KEYS) - {"onset_week", "effects"})
            if bad or ("probability" in draw) == ("count" in draw):
                raise ParameterError(f"org {org!r}: panic_quarters draw needs exactly one of probability or count"
                                     + (f" and knows no {bad}" if bad else ""),
                                     hint=f"keys: {list(DRAW_KEYS) + list(PATTERN_KEYS)}, onset_week, effects")
        for key, entry in panic_entries(spec).items():
            onset = entry["onset_week"]
            if not isinstance(onset, Mapping) and not 2 <= onset <= 12:
                raise ParameterError(f"org {org!r}: onset week of panic quarter {key!r} must be 2..12")
            _check_pattern(entry, f"org {org!r} panic quarter {key!r}")
    return scenario


def _check_pattern(pattern: Mapping | None, where: str) -> None:
    """A pattern's shape is one of :data:`SHAPES` and its seller fraction in (0, 1] (unless drawn)."""
    pattern = pattern or {}
    shape = pattern.get("shape")
    if shape is not None and not isinstance(shape, Mapping) and shape not in SHAPES:
        raise ParameterError(f"{where}: shape {shape!r} is not one of {list(SHAPES)}")
    fraction = pattern.get("seller_fraction")
    if fraction is not None and not isinstance(fraction, Mapping) and not 0 < float(fraction) <= 1:
        raise ParameterError(f"{where}: seller_fraction must be in (0, 1]")


def panic_entries(spec: Mapping) -> dict[Any, dict]:
    """``panic_quarters`` as {key: {"onset_week", "effects", and any of PATTERN_KEYS given}}.

    An entry is an onset week (``9``) or a mapping with ``onset_week`` and optional
    ``effects`` and pattern keys. The ``draw:`` key (quarters drawn per seed) is left out.
    """
    out = {}
    for key, value in (spec.get("panic_quarters") or {}).items():
        if key == "draw":
            continue
        if isinstance(value, Mapping):
            entry = {k: value[k] for k in PATTERN_KEYS if k in value}
            onset = value["onset_week"]
            entry.update(onset_week=onset if isinstance(onset, Mapping) else int(onset),
                         effects=dict(value.get("effects") or {}))
        else:
            entry = {"onset_week": int(value), "effects": {}}
        out[key] = entry
    return out


def is_distribution(value: Any) -> bool:
    """True for ``{uniform: [a, b]}``, ``{integers: [a, b]}`` or ``{choice: [...]}`` (optionally ``p:``)."""
    return isinstance(value, Mapping) and len(set(value) & set(DISTRIBUTIONS)) == 1


def draw(value: Any, rng: np.random.Generator) -> Any:
    """One draw of a scenario value: a distribution is drawn from ``rng``, anything else returned as is.

    ``{uniform: [a, b]}`` a float in [a, b); ``{integers: [a, b]}`` an integer in a..b inclusive;
    ``{choice: [x, y, ...], p: [...]}`` one of the options (equally likely unless ``p`` is given).
    """
    if not is_distribution(value):
        return value
    kind = next(k for k in DISTRIBUTIONS if k in value)
    args = value[kind]
    if kind == "uniform":
        low, high = (float(x) for x in args)
        return float(rng.uniform(low, high))
    if kind == "integers":
        low, high = (int(x) for x in args)
        return int(rng.integers(low, high + 1))
    options = list(args)
    chosen = options[int(rng.choice(len(options), p=value.get("p")))]
    return draw(chosen, rng)
