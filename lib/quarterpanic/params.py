"""Analysis parameters: one flat namespace shared by the notebooks, ``detect`` and ``run``.

The defaults below are the documentation of every key. Parameter files are
YAML mappings of the same keys; they layer like papermill's (``-f base.yaml
-f weekly.yaml -p alpha 0.01``): later files and ``-p`` pairs win. A key the
suite does not know, or a value of the wrong type, is refused with a message
that names the file and the key — a misspelt ``alhpa`` must not silently fall
back to the default.
"""
from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from quarterpanic.errors import ParameterError

REACTIVE_TYPES = [
    "Discount Approval",
    "Rush Quote",
    "Contract Redline",
    "Expedite",
    "Pricing Exception",
    "Credit Check",
]
EXCEPTION_TYPES = ["Discount Approval", "Pricing Exception"]
PLANNED_TYPES = [
    "Planned Work",
    "Territory Planning",
    "Enablement",
    "Data Clean-up",
    "Forecast Review",
    "Process Improvement",
]

DEFAULTS: dict[str, Any] = {
    # -- data ------------------------------------------------------------------------------------
    "data_dir": "salesdata",  # folder of exports, one sub-folder per organisation
    "profile": None,  # vendor profile name or mapping YAML; None picks it from each file's headers
    "fiscal_calendar": None,  # calendar spec that overrides every org.yaml (e.g. {start_month: 2})
    "as_of": None,  # analyse the data as it stood on this date (in-quarter runs); None = latest record
    # -- what to show ----------------------------------------------------------------------------
    "orgs": None,  # organisations to analyse; None = all
    "quarters": None,  # quarter labels to show (e.g. ["FY2026-Q3"]); None = all complete quarters
    "baseline_quarters": None,  # calm reference quarters for comparisons; None = the other complete quarters
    "segment": None,  # restrict every analysis to one segment
    "by_segment": False,  # also test each segment separately
    # -- statistics ------------------------------------------------------------------------------
    "alpha": 0.05,  # false discovery rate for flags (Benjamini-Hochberg across all tests)
    "onset_weeks": [5, 12],  # first and last week of quarter tried as the panic onset
    "min_n": 20,  # fewest opportunities on each side of the onset for a qualification verdict
    "min_requests": 20,  # fewest unplanned requests in a quarter for a reactive verdict
    # -- qualification decay ---------------------------------------------------------------------
    "qualification_rule": {
        "min_bant": 3,  # BANT flags (budget, authority, need, timeline) that must be true
        "require_next_step": True,  # a next step must be written down
        "min_lead_score": None,  # lowest lead score that counts as qualified; None = not used
        # signals the rule uses: None = whatever the org's data hold (BANT and next step when present, else
        # lead score, amount at creation, stage at creation, short planned cycle); or a list to pin them
        "signals": None,
        "short_cycle_days": 14,  # a close date set within this many days of creation, same quarter, is unqualified
    },
    "qualification_overrides": {},  # per-organisation rule changes: {org: {min_bant: 2}}
    # -- reactive order-taking -------------------------------------------------------------------
    "reactive_types": REACTIVE_TYPES,  # request types that are unplanned, deal-driven firefighting
    "exception_types": EXCEPTION_TYPES,  # request types that are exceptions to policy
    "planned_types": PLANNED_TYPES,  # request types that are planned, proactive work
    "urgent_priorities": ["Highest", "High", "Critical", "Urgent"],  # priorities that count as urgent
    # -- panic index and reports -----------------------------------------------------------------
    "index_thresholds": {"watch": 2.0, "panic": 3.0},  # panic index levels (in baseline SDs)
    "pseudonymize": False,  # replace owner and account names in exported reports
}


def defaults() -> dict[str, Any]:
    """A fresh copy of the defaults."""
    return copy.deepcopy(DEFAULTS)


def load_params(
    files: Iterable[str | Path] = (),
    overrides: Mapping[str, Any] | None = None,
    *,
    known: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge parameter files and overrides over the defaults, checking every key.

    Parameters
    ----------
    files:
        YAML files, applied in order.
    overrides:
        Final ``{key: value}`` pairs (e.g. from ``-p NAME VALUE``).
    known:
        The declared parameters to check against (defaults to :data:`DEFAULTS`).

    Returns
    -------
    The merged parameters. Nested mappings (``qualification_rule``) merge key
    by key.
    """
    base = copy.deepcopy(dict(known if known is not None else DEFAULTS))
    for path in files:
        base = merge(base, read_params_file(path), source=str(path), known=known)
    if overrides:
        base = merge(base, overrides, source="-p", known=known)
    return base


def read_params_file(path: str | Path) -> dict[str, Any]:
    """Read one YAML parameter file (an empty file is an empty mapping)."""
    path = Path(path)
    if not path.is_file():
        raise ParameterError("parameter file not found", path=path, hint="check the path given to -f")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ParameterError(f"not valid YAML{where}", path=path, hint="fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParameterError("must be a mapping of parameter names to values", path=path)
    return data


def merge(
    base: Mapping[str, Any], update: Mapping[str, Any], *, source: str, known: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``base`` updated by ``update``, refusing unknown keys and mistyped values."""
    known = DEFAULTS if known is None else known
    out = dict(base)
    for key, value in update.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "see `quarterpanic run --list-parameters`"
            raise ParameterError(f"unknown parameter {key!r}", path=source, hint=hint)
        default = known[key]
        check_type(key, value, default, source)
        if isinstance(default, dict) and isinstance(value, dict) and default and not _is_free_mapping(key):
            nested_known = {k: v for k, v in default.items()}
            out[key] = merge(out.get(key) or {}, value, source=source, known=nested_known)
            out[key] = {**default, **out[key]}
        else:
            out[key] = copy.deepcopy(value)
    return out


def _is_free_mapping(key: str) -> bool:
    # Mappings keyed by the user's own names (organisations) are not checked key by key.
    return key.endswith("_overrides")


def check_type(key: str, value: Any, default: Any, source: str) -> None:
    """Refuse ``value`` when it cannot stand where ``default`` stands."""
    if default is None or value is None:
        return
    expected: tuple[type, ...]
    if isinstance(default, bool):
        expected = (bool,)
    elif isinstance(default, (int, float)):
        expected = (int, float)
    elif isinstance(default, str):
        expected = (str,)
    elif isinstance(default, (list, tuple)):
        expected = (list, tuple)
    elif isinstance(default, dict):
        expected = (dict,)
    else:
        return
    if isinstance(value, bool) and bool not in expected:
        ok = False
    else:
        ok = isinstance(value, expected)
    if not ok:
        names = " or ".join(t.__name__ for t in expected)
        raise ParameterError(
            f"parameter {key!r} must be {names}, got {type(value).__name__} {value!r}", path=source
        )


def parse_cli_value(text: str) -> Any:
    """A ``-p NAME VALUE`` value: YAML scalars and lists (``0.01``, ``true``, ``[a, b]``)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text
