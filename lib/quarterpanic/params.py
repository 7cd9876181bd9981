"""Analysis parameters: one model, shared by the notebooks, ``detect`` and ``run``.

:class:`Parameters` is the only place a parameter is declared: its name, type,
default, the values it may take and its help text. Everything else derives
from it: :data:`DEFAULTS`, ``parameters/default.yaml`` (a test holds it to the
model), ``quarterpanic run --list-parameters``, the checks ``run`` and
``detect`` make before anything runs, and the notebooks, whose parameters cell
repeats the names and defaults as papermill literals (a test holds each cell
to the model) and whose next cell reads them back with :func:`from_notebook`.

Parameter files are YAML mappings of the same keys; they layer like
papermill's (``-f base.yaml -f weekly.yaml -p alpha 0.01``): later files and
``-p`` pairs win. A key the suite does not know, a value of the wrong type or
out of range is refused with one line that names the file and the key — a
misspelt ``alhpa`` must not silently fall back to the default.
"""
from __future__ import annotations

import copy
import datetime as dt
import difflib
import re
import sys
import textwrap
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal, Mapping, Union

import pandas as pd
import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from quarterpanic.calendar import FiscalCalendar
from quarterpanic.errors import CalendarError, ParameterError

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
#: Keys a notebook may declare that are not analysis parameters: ``quarterpanic run`` sets them.
RUN_KEYS = {"summary_path": "where to write the key figures as JSON; set by `quarterpanic run`"}
#: Weeks a fiscal quarter can have (13, or 14 in a 53-week year).
MAX_WEEK = 14
QUARTER_LABEL = re.compile(r"^FY\d{4}-Q[1-4]$")


def _open_unit(value: float) -> float:
    if not 0 < value < 1:
        raise ValueError("must be between 0 and 1 (exclusive)")
    return value


def plain_dates(value: Any) -> Any:
    """``value`` with every date as ISO text, in lists and mappings too.

    YAML reads ``as_of: 2025-11-14`` as a date; notebooks, the manifest and the caches want the text.
    """
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: plain_dates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_dates(v) for v in value]
    return value


def _parses_as_date(value: str) -> str:
    try:
        # "" and "NaT" parse, as no date; the data's timestamps are nanoseconds (years 1677 to 2262).
        missing = pd.isna(pd.Timestamp(value).as_unit("ns"))
    except (ValueError, TypeError, OverflowError):
        missing = True
    if missing:
        raise ValueError("must be a date between 1677 and 2262, such as 2025-11-14")
    return value


def _quarter_labels(value: list[str]) -> list[str]:
    bad = [label for label in value if not QUARTER_LABEL.match(label)]
    if bad:
        raise ValueError(f"must be quarter labels such as FY2026-Q3 (not {', '.join(map(repr, bad))})")
    return value


def _onset_pair(value: list[int]) -> list[int]:
    if len(value) != 2 or not 1 <= value[0] <= value[1] <= MAX_WEEK:
        raise ValueError(f"must be [first, last] weeks of the quarter with 1 <= first <= last <= {MAX_WEEK}")
    return value


def _calendar_spec(value: dict[str, Any]) -> dict[str, Any]:
    try:
        FiscalCalendar.from_spec(value)
    except (CalendarError, TypeError) as err:
        raise ValueError(str(err)) from None
    return value


def _text_path(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def _lists(value: Any) -> Any:
    # Python callers may pass tuples where YAML gives lists.
    return list(value) if isinstance(value, tuple) else value


Level = Annotated[float, AfterValidator(_open_unit)]
DateText = Annotated[str, BeforeValidator(plain_dates), AfterValidator(_parses_as_date)]
QuarterLabels = Annotated[list[str], BeforeValidator(_lists), AfterValidator(_quarter_labels)]
Names = Annotated[list[str], BeforeValidator(_lists)]
OnsetWeeks = Annotated[list[int], BeforeValidator(_lists), AfterValidator(_onset_pair)]
Count = Annotated[int, Field(ge=1)]


class _Strict(BaseModel):
    # Strict: `by_segment: 1` or `alpha: "0.05"` are mistakes to report, not values to coerce.
    model_config = ConfigDict(extra="forbid", strict=True)


#: The qualification signals a rule may pin (quarterpanic.analysis.rule.SIGNAL_INPUTS says what each needs).
QualificationSignal = Literal["bant", "next_step", "lead_score", "amount_at_creation", "stage_at_creation",
                              "short_cycle"]


class QualificationRule(_Strict):
    """When a new deal counts as qualified."""

    min_bant: int = Field(3, ge=0, le=4, description="BANT flags (budget, authority, need, timeline) that must be true")
    require_next_step: bool = Field(True, description="a next step must be written down")
    min_lead_score: float | None = Field(
        None, description="lowest lead score that counts as qualified; null = not used")
    signals: list[QualificationSignal] | None = Field(
        None, description="signals the rule uses: null = whatever each org's data hold (BANT and next step where "
                          "present, else lead score, amount at creation, stage at creation, short planned cycle); "
                          "or a list to pin them")
    short_cycle_days: int = Field(
        14, ge=0, description="a close date set within this many days of creation, same quarter, is unqualified")


class IndexThresholds(_Strict):
    """Panic index levels, in baseline standard deviations."""

    watch: float = Field(2.0, description="index from which a quarter is on watch")
    panic: float = Field(3.0, description="index from which a quarter panicked")

    @model_validator(mode="after")
    def _ordered(self) -> IndexThresholds:
        if not self.watch < self.panic:
            raise ValueError(f"watch ({self.watch}) must be below panic ({self.panic})")
        return self


class Change(_Strict):
    """A change an organisation (or one of its segments) made on a date: the before/after comparison turns on."""

    org: str = Field(description="organisation that made the change, e.g. Globex Corporation")
    segment: str | None = Field(None, description="the one segment that changed, e.g. SMB; null = the whole org")
    date: DateText = Field(description='the day the change took effect ("2024-10-01"); its quarter is left out')
    label: str | None = Field(None, description='what changed, in the reports\' words, e.g. "deal desk"')
    pre_trend: bool = Field(False, description="also fit a linear trend before the change, so that a drift already "
                                               "under way is not credited to the change (needs more quarters)")


Changes = Annotated[list[Change], BeforeValidator(_lists)]


def _rule_overrides(value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    for org, override in value.items():
        try:
            QualificationRule.model_validate({**QualificationRule().model_dump(), **override})
        except ValidationError as err:
            problem = err.errors(include_url=False)[0]
            key = problem["loc"][0] if problem["loc"] else "?"
            words = "is not a rule key" if problem["type"] == "extra_forbidden" else _plain(problem["msg"])
            raise ValueError(f"{org}: {key!r} {words} (rule keys: {', '.join(QualificationRule.model_fields)})") from None
    return value


def _plain(message: str) -> str:
    # pydantic's "Value error, must be ..." and "Input should be ..." as the suite's "must be ...".
    return re.sub(r"^Value error, ", "", re.sub(r"^Input should be ", "must be ", message))


class Parameters(_Strict):
    """Every analysis parameter: what the notebooks, ``detect`` and ``run`` take."""

    # -- data ------------------------------------------------------------------------------------
    data_dir: Annotated[str, BeforeValidator(_text_path)] = Field(
        "salesdata", description="folder of exports, one sub-folder per organisation (relative: the current "
                                 "folder if it exists there, else the project folder)")
    profile: str | None = Field(
        None, description="vendor profile name or mapping YAML; null = pick it from each file's headers")
    fiscal_calendar: Annotated[dict[str, Any], AfterValidator(_calendar_spec)] | None = Field(
        None, description="calendar spec overriding every org.yaml, e.g. {start_month: 2}; null = org.yaml")
    as_of: DateText | None = Field(
        None, description='analyse the data as it stood on this date ("2025-11-14"); null = latest record')
    # -- what to show ----------------------------------------------------------------------------
    orgs: Names | None = Field(None, description="organisations to analyse, e.g. [Northwind Traders]; null = all")
    quarters: QuarterLabels | None = Field(
        None, description="quarter labels to show, e.g. [FY2026-Q3]; null = all complete quarters")
    baseline_quarters: QuarterLabels | None = Field(
        None, description="calm reference quarters; null = the other complete quarters")
    segment: str | None = Field(None, description="restrict every analysis to one segment, e.g. SMB; null = all")
    by_segment: bool = Field(False, description="also test each segment separately")
    # -- statistics ------------------------------------------------------------------------------
    alpha: Level = Field(0.05, description="false discovery rate for flags (Benjamini-Hochberg within each family)")
    fdr_family: Literal["organisation", "metric", "run"] = Field(
        "organisation", description="false-discovery family: organisation = one organisation's quarters and "
                                    "segments of one metric (another org's data never change its flags); metric = "
                                    "one metric across all organisations; run = every test of the run")
    ci_level: Level = Field(0.95, description="confidence level of every interval (0.95 = 95% intervals)")
    onset_weeks: OnsetWeeks = Field(
        [5, 12], description="first and last week of quarter tried as the panic onset")
    min_n: Count = Field(20, description="fewest opportunities on each side of the onset for a qualification verdict")
    min_requests: Count = Field(20, description="fewest unplanned requests in a quarter for a reactive verdict")
    # -- qualification decay ---------------------------------------------------------------------
    qualification_rule: QualificationRule = Field(
        default_factory=QualificationRule, description="when a new deal counts as qualified")
    qualification_overrides: Annotated[dict[str, dict[str, Any]], AfterValidator(_rule_overrides)] = Field(
        {}, description="per-organisation rule changes, e.g. {Globex Corporation: {min_bant: 2}}")
    # -- reactive order-taking -------------------------------------------------------------------
    reactive_types: Names = Field(
        REACTIVE_TYPES, description="request types that are unplanned, deal-driven firefighting")
    exception_types: Names = Field(EXCEPTION_TYPES, description="request types that are exceptions to policy")
    planned_types: Names = Field(PLANNED_TYPES, description="request types that are planned, proactive work")
    urgent_priorities: Names = Field(
        ["Highest", "High", "Critical", "Urgent"], description="priorities that count as urgent")
    # -- size lenses -----------------------------------------------------------------------------
    large_win_amount: float | None = Field(
        None, gt=0, description="won amount from which a win is large (sell or do: does selling stop after it?); "
                                "null = each organisation's 90th percentile of won amounts")
    large_win_weeks: Count = Field(4, description="weeks after a large win's week that count as the weeks after it")
    crunch_weeks: Count = Field(3, description="last weeks of a quarter that count as its delivery crunch")
    trend_min_quarters: Count = Field(
        6, description="fewest quarters with a panic index for a trend over the quarters (slow change)")
    # -- did the change work? ----------------------------------------------------------------------
    changes: Changes = Field(
        [], description="changes to judge before and after, e.g. [{org: Globex Corporation, segment: SMB, "
                        "date: 2024-10-01, label: deal desk}]; an organisation named here is judged on these "
                        "instead of its org.yaml changes; [] = only those org.yaml declares")
    # -- panic index and reports -----------------------------------------------------------------
    index_thresholds: IndexThresholds = Field(
        default_factory=IndexThresholds, description="panic index levels, in baseline standard deviations")
    pseudonymize: bool = Field(False, description="replace owner, account and opportunity names in the reports (Owner 01, "
                                      "Account 017); turn on before sharing reports widely")


#: The sections of ``parameters/default.yaml``: title and the first parameter of each.
SECTIONS = {"data_dir": "data", "orgs": "what to show", "alpha": "statistics", "qualification_rule": "qualification decay",
            "reactive_types": "reactive order-taking", "large_win_amount": "size lenses",
            "changes": "did the change work?", "index_thresholds": "panic index and reports"}
#: Parameters whose value is a mapping merged key by key (a file can change one key of the rule).
NESTED = {name: field.annotation for name, field in Parameters.model_fields.items()
          if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)}
#: Parameters whose value is a list of mappings of one model (each entry checked key by key).
LISTED = {"changes": Change}
DEFAULTS: dict[str, Any] = Parameters().model_dump()


def defaults() -> dict[str, Any]:
    """A fresh copy of the defaults."""
    return copy.deepcopy(DEFAULTS)


def load_params(files: Iterable[str | Path] = (), overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Merge parameter files and overrides over the defaults, checking every key and value.

    Parameters
    ----------
    files:
        YAML files, applied in order.
    overrides:
        Final ``{key: value}`` pairs (e.g. from ``-p NAME VALUE``).

    Returns
    -------
    The merged parameters, every key present. Nested mappings
    (``qualification_rule``) merge key by key.

    Raises
    ------
    ParameterError
        For an unreadable file, an unknown key or a bad value, naming the file
        (or ``-p``) and the key.
    """
    layers = [(str(path), read_params_file(path)) for path in files]
    if overrides:
        layers.append(("-p", dict(overrides)))
    return resolve(layers)[0]


def resolve(layers: Iterable[tuple[str, Mapping[str, Any]]]) -> tuple[dict[str, Any], dict[str, str]]:
    """The parameters of ``(source, {key: value})`` layers over the defaults, checked, and the source of each key set."""
    merged, sources = layer(layers)
    return {**defaults(), **validate(merged, sources).model_dump(include=set(merged))}, sources


def layer(
    layers: Iterable[tuple[str, Mapping[str, Any]]], *, extra: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """Merge ``(source, {key: value})`` layers in order, validating after each one.

    ``extra`` are keys outside the model that are known all the same (what a
    notebook declares, with its default): their values must fit the default's type.
    Returns the keys the layers set (nested mappings merged key by key) and,
    for each, the source that set it last.
    """
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, update in layers:
        merged = merge(merged, update, source=source, extra=extra)
        sources.update({key: source for key in update})
        validate({key: value for key, value in merged.items() if key in Parameters.model_fields}, sources)
    return merged, sources


def merge(
    base: Mapping[str, Any], update: Mapping[str, Any], *, source: str, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``base`` updated by ``update``, refusing unknown keys (model values are checked by :func:`validate`)."""
    extra = extra or {}
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        refuse_unknown(key, [*Parameters.model_fields, *extra], source)
        if key not in Parameters.model_fields:
            check_type(key, value, extra[key], source)
        if key in NESTED and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **copy.deepcopy(value)}
        else:
            out[key] = copy.deepcopy(value)
    return out


def check_type(key: str, value: Any, default: Any, source: str) -> None:
    """Refuse ``value`` when it cannot stand where ``default`` stands (keys outside the model)."""
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
    if isinstance(value, expected) and not (isinstance(value, bool) and bool not in expected):
        return
    names = " or ".join(t.__name__ for t in expected)
    raise ParameterError(f"parameter {key!r} must be {names}, got {type(value).__name__} {value!r}", path=source)


def refuse_unknown(key: Any, known: Iterable[str], source: str) -> None:
    """A :class:`ParameterError` for ``key`` unless it is ``known``, suggesting the closest known key."""
    known = list(known)
    if key in known:
        return
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "see `quarterpanic run --list-parameters`"
    raise ParameterError(f"unknown parameter {key!r}", path=source, hint=hint)


def validate(values: Mapping[str, Any], sources: Mapping[str, str] | str = "parameters") -> Parameters:
    """``values`` over the defaults as a :class:`Parameters`, or the first problem as a :class:`ParameterError`.

    ``sources`` names where each key came from (a file, ``-p``), or one name for all.
    """
    try:
        return Parameters.model_validate({**DEFAULTS, **values})
    except ValidationError as err:
        problem = err.errors(include_url=False)[0]
        key = problem["loc"][0] if problem["loc"] else "?"
        source = sources if isinstance(sources, str) else sources.get(str(key), "parameters")
        message, hint = describe_problem(problem, values)
        raise ParameterError(message, path=source, hint=hint) from None


def describe_problem(problem: Mapping[str, Any], values: Mapping[str, Any]) -> tuple[str, str | None]:
    """One pydantic error as the suite's sentence (``parameter 'alpha' must be ..., got 5``) and a hint."""
    loc = list(problem["loc"])
    name, value = str(loc[0]), values.get(loc[0])
    nested = NESTED.get(name)
    field = Parameters.model_fields.get(name)
    if nested is not None and len(loc) > 1 and isinstance(loc[1], str) and isinstance(value, dict):
        if problem["type"] == "extra_forbidden":
            close = difflib.get_close_matches(loc[1], list(nested.model_fields), n=1)
            return (f"unknown key {loc[1]!r} in parameter {name!r}",
                    f"did you mean {close[0]!r}?" if close else f"keys: {', '.join(nested.model_fields)}")
        name, field, value = f"{name}.{loc[1]}", nested.model_fields.get(loc[1]), value.get(loc[1])
    item = LISTED.get(name)
    if item is not None and len(loc) > 2 and isinstance(loc[1], int) and isinstance(loc[2], str):
        entries = value if isinstance(value, list) else []
        entry = entries[loc[1]] if loc[1] < len(entries) and isinstance(entries[loc[1]], dict) else {}
        if problem["type"] == "extra_forbidden":
            return (f"unknown key {loc[2]!r} in parameter {name!r} (entry {loc[1] + 1})",
                    f"keys: {', '.join(item.model_fields)}")
        if problem["type"] == "missing":
            return f"parameter {name!r} (entry {loc[1] + 1}) lacks {loc[2]!r}", f"keys: {', '.join(item.model_fields)}"
        name, field, value = f"{name}[{loc[1]}].{loc[2]}", item.model_fields.get(loc[2]), entry.get(loc[2])
    if problem["type"].endswith("_type") and field is not None:
        return f"parameter {name!r} must be {expected_type(field.annotation)}, got {type(value).__name__} {value!r}", None
    message = _plain(problem["msg"])
    if message.startswith("must"):
        return f"parameter {name!r} {message}, got {value!r}", None
    return f"parameter {name!r}: {message}", None


def type_name(annotation: Any) -> str:
    """A field's type as a notebook's parameters cell writes it (``float``, ``Optional[list[str]]``).

    ``Optional[...]`` rather than ``... | None``: papermill reads annotations of
    names, brackets and commas only.
    """
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return type_name(args[0])
    if origin in (Union, types.UnionType):
        kept = [arg for arg in args if arg is not type(None)]
        inner = type_name(kept[0]) if len(kept) == 1 else f"Union[{', '.join(type_name(arg) for arg in kept)}]"
        return f"Optional[{inner}]" if len(kept) < len(args) else inner
    if (isinstance(annotation, type) and issubclass(annotation, BaseModel)) or origin is dict:
        return "dict"
    if origin is not None:
        return f"{origin.__name__}[{', '.join(type_name(arg) for arg in args)}]"
    return getattr(annotation, "__name__", str(annotation))


def expected_type(annotation: Any) -> str:
    """What a value of this field must be, in words: ``int or float``, ``list[str] or None``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return expected_type(args[0])
    if origin in (Union, types.UnionType):
        return " or ".join(expected_type(arg) for arg in args)
    if annotation is type(None):
        return "None"
    name = type_name(annotation)
    return "int or float" if name == "float" else name


def help_text(name: str) -> str:
    """A parameter's help: the model field's description, or a run key's."""
    field = Parameters.model_fields.get(name)
    if field is not None:
        return field.description or ""
    return RUN_KEYS.get(name, "")


def from_notebook(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """A notebook's parameters: those its parameters cell declares, at their current values, over the defaults.

    Call it as ``params = from_notebook(globals())`` in the cell after the
    ``parameters`` cell. The declared parameters are the annotated names
    (``alpha: float = 0.05``): papermill's injected cell and an analyst's edit
    change their values, which are read at call time, while a later cell that
    reuses a name (``orgs = ...``) declares nothing. Names outside the model
    (``summary_path``) are the notebook's own.

    Raises
    ------
    ParameterError
        When no parameter is declared, or a value is mistyped or out of range (``alpha = 5``).
    """
    declared = [name for name in namespace.get("__annotations__", {}) if name in Parameters.model_fields]
    if not declared:
        raise ParameterError("no annotated parameter in the namespace", path="notebook parameters",
                             hint="declare them with types in the parameters cell, e.g. `alpha: float = 0.05`")
    chosen = {name: namespace[name] for name in declared}
    return {**defaults(), **validate(chosen, "notebook parameters").model_dump(include=set(chosen))}


def read_params_file(path: str | Path) -> dict[str, Any]:
    """Read one YAML parameter file (an empty file is an empty mapping)."""
    path = Path(path)
    if not path.is_file():
        raise ParameterError("parameter file not found", path=path, hint="check the path given to -f")
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ParameterError("not a YAML text file (it is not UTF-8 text)", path=path,
                             hint="give a YAML file of parameter names and values") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ParameterError(f"not valid YAML{where}", path=path, hint="fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParameterError("must be a mapping of parameter names to values", path=path)
    return data


DEFAULT_YAML_HEADER = """\
# Defaults for every notebook, on the bundled sample (salesdata/).
# Generated from the parameter model (lib/quarterpanic/params.py, Parameters) by
#   python -m quarterpanic.params > parameters/default.yaml
# (a test fails when they disagree): change the model, then regenerate.
#
#   quarterpanic run -f parameters/default.yaml --out reports
#   papermill notebooks/02_qualification_decay.ipynb out.ipynb -f parameters/default.yaml
#
# Layer other files on top (later files win), then single values with -p:
#   quarterpanic run -f parameters/default.yaml -f parameters/weekly.yaml -p alpha 0.01
#
# `quarterpanic run` and `quarterpanic detect` refuse an unknown key, a value of the
# wrong type or out of range, and organisations, segments or quarters the data does
# not have, before anything executes; `quarterpanic run --list-parameters` prints
# what each notebook declares. Plain papermill passes every key and only warns about
# the ones a notebook does not declare, which is fine.
"""
_COMMENT_AT = 29
_WIDTH = 112


def default_yaml() -> str:
    """``parameters/default.yaml``: every parameter of the model with its default and help."""
    lines = [DEFAULT_YAML_HEADER.rstrip("\n")]
    for name, field in Parameters.model_fields.items():
        if name in SECTIONS:
            lines += ["", f"# -- {SECTIONS[name]} ".ljust(_WIDTH - 12, "-")]
        value = DEFAULTS[name]
        nested = NESTED.get(name)
        if nested is not None:
            lines += _commented(f"{name}:", field.description)
            for key, sub in nested.model_fields.items():
                lines += _commented(f"  {key}: {_flow(value[key])}", sub.description)
        elif isinstance(value, list) and len(f"{name}: {_flow(value)}") >= _COMMENT_AT:
            lines += _commented(f"{name}:", field.description) + [f"  - {_flow(item)}" for item in value]
        else:
            lines += _commented(f"{name}: {_flow(value)}", field.description)
    return "\n".join(lines) + "\n"


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).removesuffix("\n...\n").strip()


def _commented(text: str, help: str | None) -> list[str]:
    if not help:
        return [text]
    width = max(_COMMENT_AT, len(text) + 1)
    wrapped = textwrap.wrap(help, _WIDTH - width - 2, break_on_hyphens=False) or [""]
    return [f"{text:<{width}}# {wrapped[0]}"] + [f"{'':<{width}}# {more}" for more in wrapped[1:]]


def parse_cli_value(text: str) -> Any:
    """A ``-p NAME VALUE`` value: YAML scalars and lists (``0.01``, ``true``, ``[a, b]``)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


if __name__ == "__main__":
    sys.stdout.write(default_yaml())
