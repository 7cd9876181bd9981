"""History exports that record values, not changes, turned into change rows.

Two kinds of export hold an opportunity field's *values* over time rather than its changes:

* **snapshots** (Salesforce ``OpportunityHistory``): one row per save of the opportunity, with
  its stage, amount and close date at that moment (wide);
* **values** (HubSpot deal property history): one row per value a property took, with the
  time it was set (long).

:func:`changes_from_values` turns either (snapshots melted to long form first) into the
canonical history table's shape: one row per field whose value differs from the same
opportunity's previous value, ``old_value`` being that previous value. The first value of
an opportunity's field is where its history starts (the value at creation, which
Salesforce's field history does not record either), not a change. Source rows that give no
change are returned apart, to be counted as ignored.
"""
from __future__ import annotations

import pandas as pd

#: How a profile's ``changes:`` key says its rows hold values.
CHANGE_KINDS = ("snapshots", "values")
KEY = "opportunity_id"


def changes_from_values(long: pd.DataFrame, tracked: tuple[str, ...],
                        passthrough: pd.Index) -> tuple[pd.DataFrame, pd.Index]:
    """Change rows from value rows; the source rows that hold no change.

    Args:
        long: indexed by source row (a row may repeat: a snapshot's several fields), with
            ``opportunity_id``, ``changed_at``, ``field`` and ``new_value`` (normalised text,
            so equal values compare equal) and any other columns, kept as they are.
        tracked: the fields whose values are compared; rows of other fields pass through
            unchanged (loading counts them as ignored).
        passthrough: source rows that are not compared (a value failed to parse): they pass
            through unchanged, to be rejected.

    Returns:
        The change rows plus the rows passed through (same columns, ``old_value`` added),
        in source-row order, and the compared source rows none of whose values changed.
    """
    comparable = (long["field"].isin(list(tracked)).fillna(False).astype(bool)
                  & long[KEY].notna() & long["changed_at"].notna() & ~long.index.isin(passthrough))
    values = long[comparable].copy()
    values["_row"] = values.index.to_numpy()
    values = values.sort_values([KEY, "field", "changed_at", "_row"], kind="stable")
    text = values["new_value"].astype("object").where(values["new_value"].notna(), None)
    group = values.groupby([KEY, "field"], sort=False)
    previous = group["new_value"].shift()
    first = ~values.duplicated([KEY, "field"], keep="first")
    same = text.fillna("\0").eq(previous.astype("object").where(previous.notna(), None).fillna("\0"))
    changed = ~first & ~same
    values["old_value"] = previous
    changes = values[changed]
    kept = long[~comparable].copy()
    if "old_value" not in kept:
        kept["old_value"] = None
    out = pd.concat([changes.drop(columns="_row"), kept[changes.columns.drop("_row")]]).sort_index(kind="stable")
    unchanged = pd.Index(values["_row"].unique()).difference(pd.Index(changes["_row"].unique()))
    return out, unchanged


def melt_snapshots(frame: pd.DataFrame, fields: dict[str, pd.Series]) -> pd.DataFrame:
    """Wide snapshot rows as long value rows: one per snapshot and field (index: source row).

    Args:
        frame: the snapshot's other canonical columns (``opportunity_id``, ``changed_at``, ...).
        fields: canonical field name -> its normalised values, indexed like ``frame``.
    """
    parts = [frame.assign(field=name, new_value=values) for name, values in fields.items()]
    return pd.concat(parts).sort_index(kind="stable")
