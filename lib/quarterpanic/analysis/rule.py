"""The qualification rule: whether a deal was qualified when it was created, and whether its stage path skipped a stage."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from quarterpanic.errors import ParameterError
from quarterpanic.params import defaults

BANT_COLUMNS = ("bant_budget", "bant_authority", "bant_need", "bant_timeline")
STAGE_ORDER = ("Prospecting", "Qualification", "Needs Analysis", "Proposal", "Negotiation", "Closed")

# Qualification signals: each is usable only when all of its inputs (names of
# quarterpanic.analysis.inputs.INPUT_LABELS) are in the organisation's data.
SIGNAL_INPUTS: dict[str, tuple[str, ...]] = {
    "bant": ("bant",),  # at least min_bant BANT flags true
    "next_step": ("next_step",),  # a next step written down
    "lead_score": ("lead_score",),  # lead score at least min_lead_score (else the org's median)
    "amount_at_creation": ("amount", "history.amount"),  # an amount entered when the deal was created
    "stage_at_creation": ("history.stage",),  # not created directly in a late stage (Proposal or later)
    "short_cycle": ("history.close_date",),  # close date at creation not within short_cycle_days, same quarter
}
SIGNALS = tuple(SIGNAL_INPUTS)
CLASSIC_SIGNALS = ("bant", "next_step")  # today's rule, kept wherever its fields exist
FALLBACK_SIGNALS = ("lead_score", "amount_at_creation", "stage_at_creation", "short_cycle")
LATE_STAGE = STAGE_ORDER.index("Proposal")


# -- the rule -------------------------------------------------------------------------------------
def rule_for(org: str, rule: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None) -> dict:
    """The qualification rule of one organisation: defaults, then ``rule``, then its override."""
    base = dict(defaults()["qualification_rule"])
    base.update(rule or {})
    base.update((overrides or {}).get(org) or {})
    return base


def rule_signals(rule: Mapping[str, Any], present: set[str] | frozenset[str]) -> tuple[list[str], list[str]]:
    """The signals a rule uses on data with ``present`` inputs, and the signals it lacks.

    A pinned rule (``rule["signals"]`` a list) uses exactly its signals and
    lacks those whose inputs are absent (then nothing is used). The default
    (``signals`` None) keeps today's rule where its fields exist — at least
    ``min_bant`` BANT flags and a written next step (and ``min_lead_score``
    when set), whichever of them the data hold — and otherwise combines every
    usable fallback signal (:data:`FALLBACK_SIGNALS`). When nothing is usable,
    the second list names every signal that would do.

    Returns
    -------
    ``(used, lacking)``: ``used`` empty means qualification cannot be measured.
    """
    def usable(signal: str) -> bool:
        return all(name in present for name in SIGNAL_INPUTS[signal])

    pinned = rule.get("signals")
    if pinned:
        unknown = [s for s in pinned if s not in SIGNAL_INPUTS]
        if unknown:
            raise ParameterError(f"unknown qualification signal(s) {unknown}", hint=f"use some of {list(SIGNALS)}")
        lacking = [s for s in pinned if not usable(s)]
        return ([], lacking) if lacking else (list(pinned), [])
    classic = [s for s, on in (("bant", rule.get("min_bant")), ("next_step", rule.get("require_next_step")))
               if on and usable(s)]
    if classic:
        if rule.get("min_lead_score") is not None and usable("lead_score"):
            classic.append("lead_score")
        return classic, []
    fallback = [s for s in FALLBACK_SIGNALS if usable(s)]
    return (fallback, []) if fallback else ([], list(SIGNALS))


def qualified_by_signals(
    opportunities: pd.DataFrame,
    history: pd.DataFrame,
    signals: Mapping[str, Sequence[str]],
    rule: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    quarter_end: pd.Series | None = None,
) -> pd.Series:
    """Whether each opportunity passed every qualification signal its organisation uses.

    Parameters
    ----------
    opportunities:
        Canonical opportunities.
    history:
        Canonical history: the first change of ``amount``, ``stage`` or
        ``close_date`` gives the value at creation (the current value when the
        field never changed).
    signals:
        ``{org: signals used}`` (:func:`rule_signals`); an organisation with
        none gets ``<NA>`` (not measured, never "unqualified").
    rule, overrides:
        As for :func:`qualified_at_creation`.
    quarter_end:
        Last day of each opportunity's creation quarter (for ``short_cycle``:
        a close date past it is not a short planned cycle).

    Returns
    -------
    Nullable boolean Series named ``qualified``, indexed like ``opportunities``.
    """
    org = opportunities["org"].astype(str)
    out = pd.Series(pd.NA, index=opportunities.index, dtype="boolean", name="qualified")
    for name, rows in opportunities.groupby(org, sort=False).groups.items():
        used = list(signals.get(name) or [])
        if not used:
            continue
        opps = opportunities.loc[rows]
        org_rule = rule_for(name, rule, overrides)
        passed = pd.Series(True, index=opps.index)
        classic = [s for s in used if s in CLASSIC_SIGNALS]
        if classic:
            # Today's rule on the fields it uses (lead score only through min_lead_score).
            classic_rule = {**org_rule, "min_bant": org_rule["min_bant"] if "bant" in used else 0,
                            "require_next_step": "next_step" in used,
                            "min_lead_score": org_rule["min_lead_score"] if "lead_score" in used else None}
            passed &= qualified_at_creation(opps, classic_rule)
        else:
            passed &= _fallback_signals(opps, history[history["org"] == name], used, org_rule,
                                        None if quarter_end is None else quarter_end.loc[rows])
        out.loc[rows] = passed.to_numpy(dtype=bool)
    return out


def _fallback_signals(opps: pd.DataFrame, history: pd.DataFrame, used: Sequence[str], rule: Mapping[str, Any],
                      quarter_end: pd.Series | None) -> pd.Series:
    """Every fallback signal of ``used`` on one organisation's opportunities."""
    passed = pd.Series(True, index=opps.index)
    if "lead_score" in used:
        score = pd.to_numeric(opps["lead_score"], errors="coerce")
        floor = rule.get("min_lead_score")
        # Without a set floor, the organisation's median: a change in the share above it is what is measured.
        floor = float(score.median()) if floor is None else float(floor)
        passed &= (score >= floor).fillna(False).astype(bool)
    if "amount_at_creation" in used:
        amount = value_at_creation(opps, history, "amount", opps["amount"].astype(object))
        passed &= (pd.to_numeric(amount, errors="coerce") > 0).fillna(False).astype(bool)
    if "stage_at_creation" in used:
        stage = value_at_creation(opps, history, "stage", opps["stage"].astype(object))
        rank = stage_rank(pd.Series(stage, dtype="string"))
        passed &= ~(rank >= LATE_STAGE).fillna(False).astype(bool)
    if "short_cycle" in used:
        planned = pd.to_datetime(value_at_creation(opps, history, "close_date", opps["close_date"].astype(object)),
                                 errors="coerce")
        days = (planned - opps["created_at"].dt.normalize()).dt.days
        short = days <= int(rule.get("short_cycle_days") or 0)
        if quarter_end is not None:
            short &= planned <= pd.to_datetime(quarter_end)
        passed &= ~short.fillna(False).astype(bool)
    return passed


def value_at_creation(opps: pd.DataFrame, history: pd.DataFrame, field: str, current: pd.Series) -> pd.Series:
    """The value of ``field`` when each opportunity was created: the old value of its first change, else ``current``."""
    changes = history[history["field"] == field].sort_values("changed_at", kind="stable")
    first = changes.drop_duplicates("opportunity_id").set_index("opportunity_id")["old_value"]
    at_creation = opps["opportunity_id"].map(first)
    return at_creation.where(opps["opportunity_id"].isin(first.index), current)


def qualified_at_creation(
    opportunities: pd.DataFrame,
    rule: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    org_column: str = "org",
    bant_columns: Sequence[str] = BANT_COLUMNS,
    next_step_column: str = "next_step",
    lead_score_column: str = "lead_score",
) -> pd.Series:
    """Whether each opportunity met the qualification rule.

    Parameters
    ----------
    opportunities:
        Canonical opportunities (BANT flags, ``next_step``, ``lead_score``).
    rule:
        ``{"min_bant": 3, "require_next_step": True, "min_lead_score": None}``
        (missing keys take the defaults of :data:`quarterpanic.params.DEFAULTS`).
    overrides:
        ``{org: {key: value}}`` rule changes for single organisations.

    Returns
    -------
    Boolean Series named ``qualified``, indexed like ``opportunities``. A
    missing BANT flag counts as not met (unknown is not confirmed); a blank
    next step is no next step; with ``min_lead_score`` set, a missing score
    fails.
    """
    codes, orgs = pd.factorize(opportunities[org_column].astype(str))
    rules = [rule_for(org, rule, overrides) for org in orgs]

    def per_row(key: str, convert) -> pd.Series:
        """The rule's ``key`` of each row's organisation: converted once per organisation, gathered by code."""
        values = convert(pd.Series([r.get(key) for r in rules], dtype=object)).to_numpy()
        return pd.Series(values[codes], index=opportunities.index)

    flags = pd.DataFrame({c: opportunities[c].astype("boolean").fillna(False).astype(bool) for c in bant_columns})
    enough_bant = flags.sum(axis=1) >= per_row("min_bant", lambda v: v.astype(float))
    next_step = opportunities[next_step_column].astype("string").str.strip().fillna("").ne("").astype(bool)
    needs_step = per_row("require_next_step", lambda v: v.fillna(False).astype(bool))
    has_step = ~needs_step | next_step
    min_score = per_row("min_lead_score", lambda v: pd.to_numeric(v, errors="coerce").astype(float))
    score = pd.to_numeric(opportunities[lead_score_column], errors="coerce")
    score_ok = min_score.isna() | (score >= min_score).fillna(False)
    return (enough_bant & has_step & score_ok).astype(bool).rename("qualified")


# -- stage paths ----------------------------------------------------------------------------------
def _stage_key(names: pd.Series) -> pd.Series:
    """Stage names compared without case, spaces, hyphens or underscores ("Closed Won" == "closedwon")."""
    codes, distinct = pd.factorize(names.astype("string"))
    keys = pd.Series(distinct, dtype="string").str.casefold().str.replace(r"[\s_\-]+", "", regex=True)
    return pd.Series(pd.array(keys.to_numpy(dtype=object)[codes], dtype="string"), index=names.index).where(codes >= 0)


def stage_rank(stages: pd.Series, stage_order: Sequence[str] = STAGE_ORDER) -> pd.Series:
    """Position of each stage name in ``stage_order`` (0-based; ``<NA>`` when unknown).

    Names match without regard to case, spaces, hyphens and underscores; any
    ``Closed ...`` stage (``Closed Won``, ``Closed Lost``, HubSpot's
    ``closedwon``) takes the position of the last stage.
    """
    keys = _stage_key(stages)
    closed = _stage_key(pd.Series([stage_order[-1]])).iloc[0]
    keys = keys.where(~keys.str.startswith(closed).fillna(False), closed)
    ranks = dict(zip(_stage_key(pd.Series(list(stage_order))), range(len(stage_order))))
    return pd.Series(pd.array(keys.map(ranks), dtype="Int64"), index=stages.index)


def stage_skips(history: pd.DataFrame, *, stage_order: Sequence[str] = STAGE_ORDER) -> pd.DataFrame:
    """Whether each opportunity's stage path skipped a stage of ``stage_order``.

    A move forward by more than one position skips the stages in between
    (``Prospecting → Needs Analysis`` skips ``Qualification``; ``Proposal →
    Closed Won`` skips ``Negotiation``). A move into a *lost* stage never
    counts — deals are lost from any stage — and neither does a move back.

    Parameters
    ----------
    history:
        Canonical opportunity history; its ``field == "stage"`` rows are used.

    Returns
    -------
    One row per ``org`` × ``opportunity_id`` with a stage change:
    ``stage_changes``, ``stages_skipped`` (stages jumped over) and
    ``stage_skipped`` (bool).
    """
    stage = (history["field"] == "stage").to_numpy(dtype=bool)
    # A history has a handful of distinct stage names over millions of rows: rank each name once, gather by code.
    old_codes, old_names = pd.factorize(history["old_value"][stage])
    new_codes, new_names = pd.factorize(history["new_value"][stage])
    old_rank = _with_missing(stage_rank(pd.Series(old_names, dtype="string"), stage_order).astype(float))
    new_rank = _with_missing(stage_rank(pd.Series(new_names, dtype="string"), stage_order).astype(float))
    lost = _with_missing(_stage_key(pd.Series(new_names, dtype="string")).str.contains("lost").fillna(False)
                         .astype(float))
    jumped = new_rank[new_codes] - old_rank[old_codes] - 1
    jumped = np.where(np.isnan(jumped) | (lost[new_codes] > 0), 0, np.maximum(jumped, 0)).astype(int)
    orgs, opportunities = history["org"][stage], history["opportunity_id"][stage]
    org_codes, _ = pd.factorize(orgs)
    opportunity_codes, _ = pd.factorize(opportunities)
    keep = (org_codes >= 0) & (opportunity_codes >= 0)  # as group-by, rows without keys are left out
    pair = org_codes.astype(np.int64) * (int(opportunity_codes.max(initial=0)) + 1) + opportunity_codes
    groups, _ = pd.factorize(pair[keep])  # in order of first appearance, as groupby(sort=False)
    first = np.full(groups.max(initial=-1) + 1, len(groups), dtype=np.int64)
    np.minimum.at(first, groups, np.arange(len(groups)))
    rows = np.flatnonzero(keep)[first]
    out = pd.DataFrame(
        {
            "org": orgs.iloc[rows].reset_index(drop=True),
            "opportunity_id": opportunities.iloc[rows].reset_index(drop=True),
            "stage_changes": np.bincount(groups, minlength=len(first)).astype(np.int64),
            "stages_skipped": np.bincount(groups, weights=jumped[keep], minlength=len(first)).astype(np.int64),
        }
    )
    out["stage_skipped"] = out["stages_skipped"] > 0
    return out


def _with_missing(values: pd.Series) -> np.ndarray:
    """``values`` as floats with NaN appended, so that the code -1 of a missing name gathers NaN."""
    return np.append(values.to_numpy(dtype=float, na_value=np.nan), np.nan)
