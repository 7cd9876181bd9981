"""Request history for the mid-size organisations: each request's trips to legal, finance and delivery.

A request of a ``size_class: mid`` organisation visits other departments a
Poisson number of times (mean :data:`VISITS_PER_REQUEST`); each visit is a
component change to the department, an exponential wait there (mean
:data:`HOURS_PER_VISIT`), and a component change back to ``Sales``, with time
back in sales between visits. Some requests also change assignee within sales
(a tracked change that hands the request to no other department).

Requests created in the last :data:`LATE_WEEKS` weeks of a panic quarter visit
:data:`HANDOFF_RATIO` times as often, and each visit lasts
``WAIT_RATIO / HANDOFF_RATIO`` times as long, so that in expectation

* handoffs per request (two per visit: there and back), late over early, is
  :data:`HANDOFF_RATIO` (``mid_size_silos``);
* hours waiting on other departments per request, late over early, is
  :data:`WAIT_RATIO` (``silo_wait_stretch``);

and both are 1 in calm quarters. ``truth["request_history"]`` holds these per
organisation × quarter. The hops are drawn apart from the request's resolution
time, from a random generator of their own (seeded by the sample's seed and the
organisation), so the rest of the sample is the same with or without them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from quarterpanic.ingest import schemas
from quarterpanic.sample.plan import OrgPlan

LATE_WEEKS = 4  # the same window as quarterpanic.analysis.silos.LATE_WEEKS
VISITS_PER_REQUEST = 0.8
HOURS_PER_VISIT = 30.0
HOURS_IN_SALES = 6.0
HANDOFF_RATIO = 1.5
WAIT_RATIO = 1.8
DEPARTMENTS = ("Legal", "Finance", "Delivery")
HOME = "Sales"
CHANGELOG_FILE = "changelog.csv"
CHANGELOG_HEADER = ["Issue key", "Issue id", "Created", "Author", "Field", "Field Type", "From", "From String",
                    "To", "To String"]
_SEED_TAG = 16  # keeps this generator's stream apart from any other derived from the sample's seed


def add_request_history(plan: OrgPlan, tables: dict[str, pd.DataFrame], seed: int, org_index: int) -> list[dict]:
    """Put the organisation's ``request_history`` table into ``tables``; its truth records.

    Only mid-size organisations with requests get one (others get an empty table and no records).
    """
    requests = tables.get("requests")
    if plan.spec.get("size_class") != "mid" or requests is None or requests.empty:
        tables["request_history"] = schemas.empty("request_history")
        return []
    rng = np.random.default_rng([int(seed), _SEED_TAG, int(org_index)])
    tables["request_history"] = request_history(plan, requests, rng)
    return [{"org": plan.name, "quarter": str(row["quarter"]), "open": bool(q == plan.nq - 1),
             "panic": bool(plan.panic[q]), "late_weeks": LATE_WEEKS,
             "mid_size_silos": HANDOFF_RATIO if plan.panic[q] else 1.0,
             "silo_wait_stretch": WAIT_RATIO if plan.panic[q] else 1.0}
            for q, row in plan.quarters.iterrows()]


def request_history(plan: OrgPlan, requests: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """The canonical request-history rows of ``requests`` (one organisation), up to ``plan.as_of``."""
    created = pd.to_datetime(requests["created_at"])
    day = plan.day_index(created.to_numpy(dtype="datetime64[ns]"))
    q = plan.day_q[day]
    late = plan.panic[q] & (plan.day_week[day] > plan.day_weeks[day] - LATE_WEEKS)
    visits = rng.poisson(VISITS_PER_REQUEST * np.where(late, HANDOFF_RATIO, 1.0))
    stay = HOURS_PER_VISIT * np.where(late, WAIT_RATIO / HANDOFF_RATIO, 1.0)
    rows = []
    ids = requests["request_id"].to_numpy()
    requesters = requests["requester"].fillna("Sales Ops").to_numpy()
    start = created.to_numpy(dtype="datetime64[m]")
    for i in np.flatnonzero(visits):
        clock = start[i] + _minutes(rng.exponential(HOURS_IN_SALES))
        for _ in range(visits[i]):
            department = DEPARTMENTS[rng.integers(len(DEPARTMENTS))]
            rows.append((ids[i], clock, "component", HOME, department, requesters[i]))
            clock = clock + _minutes(rng.exponential(stay[i]))
            rows.append((ids[i], clock, "component", department, HOME, f"{department} Desk"))
            clock = clock + _minutes(rng.exponential(HOURS_IN_SALES))
    reassigned = np.flatnonzero(rng.random(len(ids)) < 0.3)
    for i in reassigned:
        rows.append((ids[i], start[i] + _minutes(rng.exponential(HOURS_IN_SALES)), "assignee", "Ops Person",
                     "Ops Lead", "Ops Person"))
    frame = pd.DataFrame(rows, columns=["request_id", "changed_at", "field", "old_value", "new_value", "author"])
    frame["changed_at"] = pd.to_datetime(frame["changed_at"]).astype("datetime64[ns]")
    frame = frame[frame["changed_at"] <= plan.as_of].sort_values(["changed_at", "request_id"], kind="stable")
    # The first component of a request is a change from none, as Jira records it.
    first = ~frame.duplicated(["request_id", "field"]) & (frame["field"] == "component")
    frame.loc[first, "old_value"] = None
    frame["department"] = frame["new_value"].str.lower().where(frame["field"] == "component")
    frame.insert(0, "org", plan.name)
    frame.insert(1, "source_file", "<generated>")
    frame.insert(2, "source_row", np.arange(2, len(frame) + 2))
    return schemas.RequestHistory.validate(frame.reset_index(drop=True))


def _minutes(hours: float) -> np.timedelta64:
    """A duration of at least a minute, in whole minutes (a changelog's clock shows minutes)."""
    return np.timedelta64(max(1, int(round(hours * 60))), "m")


def write_changelog(folder: Path, request_history: pd.DataFrame) -> dict[str, str]:
    """Write the request history as a Jira changelog CSV; ``{file: profile}`` for ``org.yaml``'s ``files:``."""
    if request_history.empty:
        return {}
    rows = request_history.sort_values("source_row")
    number = rows["request_id"].astype(str).str.extract(r"(\d+)$")[0].astype(int) + 20_000
    stamp = rows["changed_at"].dt.strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    table = pd.DataFrame({
        "Issue key": rows["request_id"], "Issue id": number, "Created": stamp, "Author": rows["author"],
        "Field": rows["field"].map({"component": "Component", "assignee": "assignee", "status": "status"}),
        "Field Type": "jira", "From": "", "From String": rows["old_value"].fillna(""), "To": "",
        "To String": rows["new_value"].fillna(""),
    }, columns=CHANGELOG_HEADER)
    table.to_csv(folder / CHANGELOG_FILE, index=False, encoding="utf-8", lineterminator="\n")
    return {CHANGELOG_FILE: "jira_changelog"}
