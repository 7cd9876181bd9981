"""The findings table every detector returns, and its multiple-testing control.

A finding is one estimate for one organisation × fiscal quarter (× segment):
its size, confidence interval (at the run's ``ci_level``, recorded in a
``ci_level`` column), p-value, onset week, sample size and
whether it is flagged. Each component (``qualification_decay``,
``reactive_order_taking``, ...) has one *main* finding per org × quarter whose
``metric`` equals the component name; secondary metrics follow.

Flags come from :func:`apply_fdr`: Benjamini–Hochberg (statsmodels'
``multipletests``) within a false-discovery family, and only in the metric's
panic direction. The default family is one organisation's tests of one metric
(its quarters × segments), so one organisation's flags do not depend on how
hard another panics (:data:`FDR_FAMILIES`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from quarterpanic.params import DEFAULTS
from quarterpanic.util import jsonable

FINDING_COLUMNS = [
    "org",
    "quarter",
    "segment",
    "component",
    "metric",
    "estimate",
    "ci_low",
    "ci_high",
    "p_value",
    "onset_week",
    "flagged",
    "n",
    "status",
    "needs",
    "signals",
    "direction",
    "p_sided",
]

OK = "ok"
INSUFFICIENT = "insufficient data"
# The input the finding needs is absent from the data (see quarterpanic.analysis.inputs): no verdict possible.
NOT_MEASURED = "not measured"
# The data cover only part of the quarter (they begin after its first week): shown, never judged.
PARTIAL = "partial"
# Which way a finding points (its 95% interval clear of the metric's null on one side, or neither).
TOWARD_PANIC, AWAY_FROM_PANIC, NEITHER = "toward panic", "away from panic", "neither"
SIDED = ("one-sided", "two-sided")
ALL_SEGMENTS = "all"
#: The level of an interval whose row does not record one (the default of the ``ci_level`` parameter).
DEFAULT_CI_LEVEL = float(DEFAULTS["ci_level"])


@dataclass(frozen=True)
class Metric:
    """What a metric means, so that flags and sentences can be made from it.

    ``null`` is the value of no effect; ``direction`` is +1 when panic makes the
    estimate larger than ``null`` and -1 when smaller; ``unit`` says how
    :mod:`quarterpanic.report.words` prints it: ``"share"`` (a difference of
    probabilities, in percentage points), ``"proportion"`` (a level, in
    percent), ``"relative"`` (a relative change, in signed percent),
    ``"ratio"`` (×) or ``"count"`` (plain number). ``sided`` says how its
    p-value is defined: ``"one-sided"`` (in the panic direction) or
    ``"two-sided"``. ``weak_test`` marks a metric whose test finds fewer than
    :data:`WEAK_POWER` of panic quarters at realistic effects (measured over
    generator seeds by the statistical tests), so that "not flagged" is said
    to be no sign of calm. ``per_quarter`` is False for a metric pooled over
    an organisation's quarters (one row, filed under the last quarter), which
    has no quarter-by-quarter series to compare before and after a change.
    """

    name: str
    component: str
    null: float
    direction: int
    unit: str
    description: str
    sided: str = "two-sided"
    weak_test: bool = False
    per_quarter: bool = True


#: The power below which a metric's test is a weak test (:attr:`Metric.weak_test`).
WEAK_POWER = 0.8
METRICS: dict[str, Metric] = {}
UNITS = ("share", "proportion", "relative", "ratio", "count")


def register_metric(
    name: str, *, component: str, null: float, direction: int, unit: str, description: str, sided: str = "two-sided",
    weak_test: bool = False, per_quarter: bool = True,
) -> Metric:
    """Declare a metric a detector reports (called once at import of the detector)."""
    if unit not in UNITS:
        raise ValueError(f"metric {name}: unit must be one of {UNITS}, got {unit!r}")
    if sided not in SIDED:
        raise ValueError(f"metric {name}: sided must be one of {SIDED}, got {sided!r}")
    metric = Metric(name, component, float(null), int(direction), unit, description, sided, bool(weak_test),
                    bool(per_quarter))
    METRICS[name] = metric
    return metric


def ci_level_of(row: Mapping[str, Any] | pd.DataFrame) -> float:
    """The confidence level of the intervals of a row or a frame: its ``ci_level``, else the default 0.95.

    Detectors record the level they used in a ``ci_level`` column, so that a
    sentence or a chart names the level of the interval it shows, and a
    standard error taken back from an interval uses the right quantile.
    """
    if isinstance(row, pd.DataFrame):
        levels = row["ci_level"].dropna().unique() if "ci_level" in row else []
        if len(levels) > 1:
            raise ValueError(f"intervals of several confidence levels in one frame: {sorted(levels)}")
        return float(levels[0]) if len(levels) else DEFAULT_CI_LEVEL
    level = row.get("ci_level")
    return DEFAULT_CI_LEVEL if level is None or pd.isna(level) else float(level)


def z_of(ci_level: float | pd.Series) -> Any:
    """The normal quantile of a two-sided interval at ``ci_level``: a float, or an array for a column.

    Missing levels in a column count as the default.
    """
    if np.ndim(ci_level) == 0:
        return float(stats.norm.ppf((1 + float(ci_level)) / 2))
    level = pd.to_numeric(pd.Series(ci_level), errors="coerce").fillna(DEFAULT_CI_LEVEL).to_numpy(dtype=float)
    return stats.norm.ppf((1 + level) / 2)


def make_findings(records: Iterable[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """A findings frame with the standard columns and dtypes.

    Missing ``segment`` means all segments; missing ``flagged`` is False.
    ``needs`` (what a ``not measured`` finding lacks) and ``signals`` (the
    qualification signals used) are lists or None.
    """
    frame = pd.DataFrame(records) if not isinstance(records, pd.DataFrame) else records.copy()
    defaults = {"segment": ALL_SEGMENTS, "flagged": False, "status": OK}
    for column in FINDING_COLUMNS:
        if column not in frame:
            frame[column] = defaults.get(column, np.nan)
    for column, default in defaults.items():
        frame[column] = frame[column].astype("object").where(frame[column].notna(), default)
    frame["flagged"] = frame["flagged"].astype(bool)
    for column in ("estimate", "ci_low", "ci_high", "p_value"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    frame["onset_week"] = pd.array(pd.to_numeric(frame["onset_week"], errors="coerce"), dtype="Int64")
    frame["n"] = pd.array(pd.to_numeric(frame["n"], errors="coerce"), dtype="Int64")
    for column in ("org", "quarter", "segment", "component", "metric", "status", "needs", "signals", "direction",
                   "p_sided"):
        frame[column] = frame[column].astype("object")
    for column in ("needs", "signals"):
        frame[column] = [list(v) if isinstance(v, (list, tuple, np.ndarray)) else None for v in frame[column]]
    for column in ("direction", "p_sided"):
        frame[column] = pd.Series([v if isinstance(v, str) else None for v in frame[column]], index=frame.index,
                                  dtype=object)
    extra = [c for c in frame.columns if c not in FINDING_COLUMNS]
    return frame[FINDING_COLUMNS + extra].reset_index(drop=True)


def empty_findings() -> pd.DataFrame:
    """A findings frame with no rows."""
    return make_findings(pd.DataFrame(columns=FINDING_COLUMNS))


#: The false-discovery families :func:`apply_fdr` can control, and the columns whose values make one family.
#: ``organisation`` (the default) answers an organisation's reader: of this organisation's quarters flagged on
#: this metric, how many are false? Its metrics are separate families so that the many secondary metrics do not
#: thin out the main ones. ``metric`` is one family per metric across the run's organisations; ``run`` is every
#: test of the run in one family. Under the last two, one organisation's flags change when another's data do.
FDR_FAMILIES: dict[str, tuple[str, ...]] = {
    "organisation": ("org", "metric"),
    "metric": ("metric",),
    "run": (),
}
DEFAULT_FDR_FAMILY = str(DEFAULTS["fdr_family"])


def benjamini_hochberg(frame: pd.DataFrame, p_value: str, by: Sequence[str], alpha: float) -> tuple[pd.Series, pd.Series]:
    """Benjamini–Hochberg at ``alpha`` within each group of ``frame``'s ``by`` columns (one family without ``by``).

    Rows with a missing ``p_value`` (or a missing key) are not tests. Returns ``(rejected, q_value)``
    indexed like ``frame``: False and NaN where there was no test.
    """
    rejected = pd.Series(False, index=frame.index)
    q_value = pd.Series(np.nan, index=frame.index)
    tested = frame[frame[p_value].notna()]
    groups = [rows.index for _, rows in tested.groupby(list(by), sort=False)] if by else [tested.index]
    for rows in groups:
        if len(rows):
            reject, q_values, _, _ = multipletests(frame.loc[rows, p_value].to_numpy(float), alpha=alpha,
                                                   method="fdr_bh")
            rejected.loc[rows], q_value.loc[rows] = reject, q_values
    return rejected, q_value


def apply_fdr(findings: pd.DataFrame, alpha: float = 0.05, family: str = DEFAULT_FDR_FAMILY) -> pd.DataFrame:
    """Flag findings under Benjamini–Hochberg control within each false-discovery family.

    A finding is flagged when its family's BH-adjusted test rejects at
    ``alpha`` *and* its estimate lies on the panic side of its metric's null.
    ``family`` names the families (:data:`FDR_FAMILIES`; default: one per
    organisation × metric). Findings with ``status != "ok"`` or no p-value are
    never flagged and do not count as tests. Adds a ``q_value`` column (the
    BH-adjusted p-value) and sets ``direction`` and ``p_sided``
    (:func:`with_direction`).
    """
    if family not in FDR_FAMILIES:
        raise ValueError(f"false-discovery family must be one of {sorted(FDR_FAMILIES)}, got {family!r}")
    out = findings.copy()
    out["flagged"] = False
    tests = out.assign(_p=out["p_value"].where(out["status"] == OK))
    rejected, out["q_value"] = benjamini_hochberg(tests, "_p", FDR_FAMILIES[family], alpha)
    metrics = out["metric"].map(METRICS.get)
    null = metrics.map(lambda m: m.null if m else np.nan).astype(float)
    sign = metrics.map(lambda m: m.direction if m else np.nan).astype(float)
    # A metric nobody registered has no panic side: any rejection flags it.
    on_panic_side = (sign * (out["estimate"].astype(float) - null) > 0) | metrics.isna()
    out["flagged"] = rejected & on_panic_side
    return with_direction(out)


def apply_fdr_of(findings: pd.DataFrame, params: Mapping[str, Any]) -> pd.DataFrame:
    """:func:`apply_fdr` at the run's ``alpha`` and ``fdr_family``."""
    return apply_fdr(findings, alpha=float(params["alpha"]), family=str(params.get("fdr_family", DEFAULT_FDR_FAMILY)))


def detect_in_segment(analyse: Callable[..., pd.DataFrame], dataset: Any, params: Mapping[str, Any],
                      cache: bool = False) -> pd.DataFrame:
    """Findings of ``analyse(data, params, segment=..., cache=...)`` on the run's segment, flagged under BH control.

    With ``params["segment"]`` only that segment's records are analysed (``dataset.filter``) and the rows are
    filed under it; otherwise everything, under :data:`ALL_SEGMENTS`. ``params`` are complete (defaults merged).
    """
    segment = str(params["segment"]) if params.get("segment") else ALL_SEGMENTS
    data = dataset.filter(segment=params["segment"]) if params.get("segment") else dataset
    return apply_fdr_of(make_findings(analyse(data, params, segment=segment, cache=cache)), params)


def with_direction(findings: pd.DataFrame) -> pd.DataFrame:
    """``findings`` with ``direction`` and ``p_sided`` from the metrics' definitions.

    ``direction`` is ``toward panic`` when a measured finding's 95% interval
    lies wholly on the panic side of its metric's null, ``away from panic``
    when wholly on the other side, ``neither`` when it covers the null, and
    None when nothing was measured (no estimate) or the metric has no null. ``p_sided`` is the
    metric's ``sided`` where a p-value exists.
    """
    out = findings.copy()
    metrics = out["metric"].map(METRICS.get)
    null = metrics.map(lambda m: m.null if m else np.nan).astype(float)
    sign = metrics.map(lambda m: m.direction if m else np.nan).astype(float)
    low = sign * (out["ci_low"].astype(float) - null)
    high = sign * (out["ci_high"].astype(float) - null)
    # A level with no fixed null (NaN: e.g. a push rate) points nowhere.
    measured = (out["status"] == OK) & out["estimate"].notna() & null.notna()
    direction = np.where(np.minimum(low, high) > 0, TOWARD_PANIC,
                         np.where(np.maximum(low, high) < 0, AWAY_FROM_PANIC, NEITHER)).astype(object)
    out["direction"] = pd.Series(np.where(measured, direction, None), index=out.index, dtype=object)
    sided = metrics.map(lambda m: m.sided if m else None).to_numpy(dtype=object)
    out["p_sided"] = pd.Series(np.where(out["p_value"].notna(), sided, None), index=out.index, dtype=object)
    return out


def main_findings(findings: pd.DataFrame) -> pd.DataFrame:
    """Only the main finding of each component (``metric == component``)."""
    return findings[findings["metric"] == findings["component"]].reset_index(drop=True)


#: Columns a metric adds to some of its rows, kept in those rows' JSON records: the department of a finding
#: reported per department (``department_field_gap``), without which its rows could not be told apart.
RECORD_EXTRAS = ("department",)


def to_records(findings: pd.DataFrame) -> list[dict[str, Any]]:
    """Findings as JSON-ready dicts with the standard keys (NaN → null), plus the :data:`RECORD_EXTRAS` a row sets."""
    records = []
    extras = [column for column in RECORD_EXTRAS if column in findings]
    for row, more in zip(findings[FINDING_COLUMNS].itertuples(index=False),
                         findings[extras].itertuples(index=False)):
        record = {}
        for key, value in zip(FINDING_COLUMNS, row):
            record[key] = jsonable(value)
        record.update({key: jsonable(value) for key, value in zip(extras, more) if isinstance(value, str)})
        records.append(record)
    return records


def to_json(findings: pd.DataFrame, **extra: Any) -> str:
    """The ``{"findings": [...]}`` document ``quarterpanic detect --json`` prints."""
    return json.dumps({"findings": to_records(findings), **extra}, indent=2, default=jsonable)
