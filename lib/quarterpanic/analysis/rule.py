"""The qualification rule: whether a deal was qualified when it was created, and whether its stage path skipped a stage."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from quarterpanic.params import defaults

BANT_COLUMNS = ("bant_budget", "bant_authority", "bant_need", "bant_timeline")
STAGE_ORDER = ("Prospecting", "Qualification", "Needs Analysis", "Proposal", "Negotiation", "Closed")


# -- the rule -------------------------------------------------------------------------------------
def rule_for(org: str, rule: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None) -> dict:
    """The qualification rule of one organisation: defaults, then ``rule``, then its override."""
    base = dict(defaults()["qualification_rule"])
    base.update(rule or {})
    base.update((overrides or {}).get(org) or {})
    return base


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
