"""One row per opportunity with what every analysis of deals reads, and the role of each quarter."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from quarterpanic.analysis.inputs import qualification_signals, quarter_coverage
from quarterpanic.analysis.rule import qualified_by_signals, stage_skips
from quarterpanic.calendar import fiscal_features_by_org
from quarterpanic.dataset import Dataset
from quarterpanic.params import defaults
from quarterpanic.store import results as results_cache

UNKNOWN = "Unknown"
# -- one row per opportunity ----------------------------------------------------------------------
FEATURE_COLUMNS = [
    "org", "opportunity_id", "quarter", "quarter_start", "quarter_end", "week_of_quarter", "weeks_in_quarter",
    "quarter_complete", "created_at", "segment", "team", "owner", "lead_source", "qualified", "lead_score",
    "stage_skipped", "outcome", "won", "amount", "discount", "close_date", "close_quarter", "close_week",
    "close_weeks_in_quarter",
]


def opportunity_features(dataset: Dataset, params: Mapping[str, Any] | None = None, *,
                         cache: bool = False) -> pd.DataFrame:
    """One row per opportunity with everything the detector and its charts use.

    Parameters
    ----------
    dataset:
        The canonical tables and calendars.
    params:
        Analysis parameters; uses ``qualification_rule``,
        ``qualification_overrides``, ``orgs`` and ``segment``.
    cache:
        Reuse the features of an earlier run on the same data, parameters and
        code (:mod:`quarterpanic.store.results`).

    Returns
    -------
    :data:`FEATURE_COLUMNS`: the creation ``quarter`` label, ``week_of_quarter``
    and ``quarter_complete`` (quarter ended before ``dataset.as_of`` and the
    organisation's records begin in its first week:
    :func:`quarterpanic.analysis.inputs.quarter_coverage`) by the
    organisation's fiscal calendar; ``qualified`` (the rule at creation);
    ``stage_skipped`` (``<NA>`` for an organisation without stage history);
    ``outcome`` ``won`` / ``lost`` / ``open`` and ``won`` (1.0 / 0.0, NaN while
    open: an open deal is censored, not lost); ``close_date`` (the expected
    one while open); for closed deals only, ``close_quarter`` and
    ``close_week`` of their close date.
    """
    params = {**defaults(), **(params or {})}
    return results_cache.cached("quarterpanic.analysis.features.opportunity_features",
                                lambda: _opportunity_features(dataset, params), dataset, params, use=cache)


def _opportunity_features(dataset: Dataset, params: Mapping[str, Any]) -> pd.DataFrame:
    opps = dataset.opportunities
    if params.get("orgs"):
        opps = opps[opps["org"].isin(params["orgs"])]
    if params.get("segment"):
        opps = opps[opps["segment"] == params["segment"]]
    calendars = {org: dataset.calendar(org) for org in opps["org"].unique()}
    created = fiscal_features_by_org(opps, "created_at", calendars)
    closed = opps["is_closed"].astype(bool)
    close = fiscal_features_by_org(opps.assign(closed_on=opps["close_date"].where(closed)), "closed_on", calendars,
                                   prefix="close_")
    won = opps["is_won"].astype(bool)
    out = pd.DataFrame(
        {
            "org": opps["org"].astype(str),
            "opportunity_id": opps["opportunity_id"].astype(str),
            "quarter": created["quarter"].astype(str),
            "quarter_start": created["quarter_start"],
            "quarter_end": created["quarter_end"],
            "week_of_quarter": created["week_of_quarter"].astype(int),
            "weeks_in_quarter": created["weeks_in_quarter"].astype(int),
            "quarter_complete": quarter_coverage(dataset, opps["org"], created["quarter_start"],
                                                 created["quarter_end"])["complete"],
            "created_at": opps["created_at"],
            "segment": _label(opps["segment"]),
            "team": _label(opps["team"]),
            "owner": _label(opps["owner"]),
            "lead_source": _label(opps["lead_source"]),
            "qualified": _qualified(dataset, opps, params, created["quarter_end"]),
            "lead_score": pd.to_numeric(opps["lead_score"], errors="coerce").astype(float),
            "outcome": np.where(won, "won", np.where(closed, "lost", "open")),
            "won": np.where(closed, won.astype(float), np.nan),
            "amount": pd.to_numeric(opps["amount"], errors="coerce").astype(float),
            "discount": pd.to_numeric(opps["discount"], errors="coerce").astype(float),
            "close_date": opps["close_date"],
            "close_quarter": close["close_quarter"],
            "close_week": close["close_week_of_quarter"],
            "close_weeks_in_quarter": close["close_weeks_in_quarter"],
        },
        index=opps.index,
    )
    skips = stage_skips(dataset.history[dataset.history["org"].isin(out["org"].unique())])
    out = out.merge(skips[["org", "opportunity_id", "stage_skipped"]], on=["org", "opportunity_id"], how="left")
    # A deal without stage changes skipped nothing, unless its organisation exported no stage history at all.
    has_history = out["org"].isin(skips["org"].unique())
    out["stage_skipped"] = out["stage_skipped"].astype("boolean").fillna(False).where(has_history, pd.NA)
    return out[FEATURE_COLUMNS].reset_index(drop=True)


def _qualified(dataset: Dataset, opps: pd.DataFrame, params: Mapping[str, Any], quarter_end: pd.Series) -> pd.Series:
    """The qualification rule at creation on the signals each organisation's data hold (False where none)."""
    # An organisation without any usable signal is "not measured" in the findings (analysis.inputs); its
    # deals count as unqualified here only so that the frame stays boolean for the curves.
    signals = qualification_signals(dataset, params)
    qualified = qualified_by_signals(opps, dataset.history, signals, params["qualification_rule"],
                                     params["qualification_overrides"], quarter_end=quarter_end)
    return qualified.fillna(False).astype(bool)


def _label(values: pd.Series) -> pd.Series:
    """Category labels with missing values spelt out (so they stay in group-bys)."""
    labels = values.astype("string").str.strip()
    return labels.where(labels.notna() & labels.ne(""), UNKNOWN).astype(str)


# -- which quarters ------------------------------------------------------------------------------
def quarter_roles(features: pd.DataFrame, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The role of every organisation × quarter: shown and judged, open, baseline.

    Returns one row per ``org`` × ``quarter`` with ``quarter_start``,
    ``quarter_complete``, ``shown`` (in ``params["quarters"]``, or every
    quarter when that is None), ``judged`` (shown and complete: only complete
    quarters get a p-value and can be flagged) and ``baseline`` (complete and
    in ``params["baseline_quarters"]``; None = the complete quarters not
    shown, or every complete quarter when all are shown).
    """
    params = {**defaults(), **(params or {})}
    table = (
        features.groupby(["org", "quarter"], sort=False)
        .agg(quarter_start=("quarter_start", "first"), quarter_complete=("quarter_complete", "first"))
        .reset_index()
        .sort_values(["org", "quarter_start"])
        .reset_index(drop=True)
    )
    shown = table["quarter"].isin(params["quarters"]) if params.get("quarters") else pd.Series(True, index=table.index)
    table["shown"] = shown.to_numpy()
    table["judged"] = table["shown"] & table["quarter_complete"]
    if params.get("baseline_quarters"):
        baseline = table["quarter"].isin(params["baseline_quarters"])
    elif params.get("quarters"):
        baseline = ~table["shown"]
    else:
        baseline = pd.Series(True, index=table.index)
    table["baseline"] = (baseline & table["quarter_complete"]).to_numpy()
    return table
