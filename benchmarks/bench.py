"""Speed and memory of quarterpanic against baselines run beside it: ``make bench``.

``python benchmarks/bench.py [--out benchmarks/RESULTS.md] [--scale large|medium]``
measures, in one run on one machine, six ratios of quarterpanic against a
baseline doing the same work in the same session, prints them and writes them
with the machine, the versions and the date to ``--out``:

========  ===============================================================  ==========
ingest    ``load_crm`` of the CSV exports / ``pyarrow.csv.read_csv`` of     ≤ 2×
          the same files (the parse floor)
reload    first load through the cache / second load through it             ≥ 10× faster
features  the calendar features and weekly curves both detectors use        ≤ 2×
          (qualification rate, unplanned requests per org × quarter ×
          week) / the same aggregations as DuckDB SQL on the same tables
detect    ``quarterpanic.analysis.detect.detect`` / its own ingest time               ≤ 3×
suite     ``quarterpanic run`` on the bundled sample / executing and         ≤ 3×
          exporting as many empty notebooks with papermill and nbconvert
memory    peak RSS while ``detect`` runs (in a subprocess) / the in-memory   ≤ 3×
          size of the canonical tables
========  ===============================================================  ==========

The workload is ``quarterpanic sample --scale large`` (≈1M opportunities,
6M history rows, 2M leads, 1M requests over five years), generated once into
``benchmarks/data/large/`` and reused while the generator is unchanged;
``--scale medium`` is a tenth of it, for a quicker run, and ``--scale small``
is for smoke tests. This is a benchmark, not a test: a missed target is
reported (by how much, and where the time went), never an error.
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from quarterpanic.analysis.features import opportunity_features
from quarterpanic.analysis.rule import stage_skips
from quarterpanic.paths import CACHE_DIR, NOTEBOOKS_DIR, PACKAGE_DIR, PROJ_ROOT, SALESDATA_DIR
from quarterpanic.store import results as results_cache

BENCH_DIR = PROJ_ROOT / "benchmarks"
DATA_DIR = BENCH_DIR / "data"
SEED = 2026
#: Extra scales merged into the default scenario (``large`` is the scenario's own).
SCALES: dict[str, dict | None] = {
    "large": None,
    "medium": {"complete_quarters": 20, "volume": 5.5},
    "small": {"complete_quarters": 4, "volume": 0.3},
}
STAMP = ".bench-workload.json"
GENERATOR_FILES = ("sample/*.py", "sample/scenarios/default.yaml", "ingest/vendor_profiles/*.yaml")


@dataclass
class Ratio:
    """One measured ratio, its target and the times behind it."""

    name: str
    value: float | None
    target: float
    higher_is_better: bool = False
    detail: str = ""
    note: str = ""
    breakdown: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    @property
    def target_text(self) -> str:
        return f"≥ {self.target:g}× faster" if self.higher_is_better else f"≤ {self.target:g}×"

    @property
    def value_text(self) -> str:
        if self.value is None:
            return "not measured"
        return f"{self.value:.1f}× faster" if self.higher_is_better else f"{self.value:.2f}×"

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "MISS", None: "n/a"}[self.passed]

    @property
    def shortfall(self) -> str:
        """How far a miss is from its target, in words."""
        if self.passed is not False or self.value is None:
            return ""
        factor = self.target / self.value if self.higher_is_better else self.value / self.target
        if factor < 2:
            return f"{(factor - 1) * 100:.0f} % {'short of' if self.higher_is_better else 'over'} the target"
        return f"{factor:.1f}× {'short of' if self.higher_is_better else 'over'} the target"


# --------------------------------------------------------------------------- timing


def timed(function: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """Best wall time of ``repeat`` calls (after a garbage collection each) and the last result."""
    best, result = float("inf"), None
    for _ in range(max(1, repeat)):
        result = None
        gc.collect()
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def _say(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------- workload


def generator_fingerprint(scale: str, seed: int) -> str:
    """What the workload depends on: the generator's code, its scenario, the scale and the seed."""
    from quarterpanic import __version__

    digest = hashlib.sha256()
    for pattern in GENERATOR_FILES:
        for path in sorted(PACKAGE_DIR.glob(pattern)):
            digest.update(path.read_bytes())
    digest.update(json.dumps({"scale": scale, "spec": SCALES.get(scale), "seed": seed, "version": __version__},
                             sort_keys=True).encode())
    return digest.hexdigest()


def prepare_workload(scale: str, data_dir: Path = DATA_DIR, seed: int = SEED) -> Path:
    """The sample data folder of ``scale`` under ``data_dir``, generated unless already there and current."""
    from quarterpanic.sample import write_sample

    folder = Path(data_dir) / scale
    stamp = folder / STAMP
    fingerprint = generator_fingerprint(scale, seed)
    try:
        if json.loads(stamp.read_text())["fingerprint"] == fingerprint:
            _say(f"workload: reusing {folder}")
            return folder
    except (OSError, ValueError, KeyError):
        pass
    _say(f"workload: generating scale {scale} into {folder} ...")
    shutil.rmtree(folder, ignore_errors=True)
    spec = SCALES[scale]
    scenario = {"scales": {scale: spec}} if spec else None
    seconds, _ = timed(lambda: write_sample(folder, scenario=scenario, seed=seed, scale=scale))
    stamp.write_text(json.dumps({"fingerprint": fingerprint, "scale": scale, "seed": seed,
                                 "generated_s": round(seconds, 1)}))
    _say(f"workload: generated in {seconds:.0f} s")
    return folder


def csv_files(data: Path) -> list[Path]:
    """The export files ``load_crm`` reads in ``data``."""
    from quarterpanic.ingest.loading import discover

    return discover([data])


# --------------------------------------------------------------------------- ingest and reload


def parse_floor(files: list[Path]) -> float:
    """Seconds for ``pyarrow.csv.read_csv`` to read every file (encoding, delimiter and footer handled)."""
    import pyarrow.csv as pa_csv

    from quarterpanic.ingest.exports import _decode, _sniff_delimiter

    settings = []
    for path in files:
        with open(path, "rb") as handle:
            head = handle.read(1 << 16)
        text, encoding = _decode(head, "auto", path, partial=True)
        settings.append((path, "utf8" if encoding in ("utf-8", "utf-8-sig") else encoding,
                         _sniff_delimiter(text, "auto")))

    def read_all() -> int:
        rows = 0
        for path, encoding, delimiter in settings:
            table = pa_csv.read_csv(
                path,
                read_options=pa_csv.ReadOptions(encoding=encoding),
                parse_options=pa_csv.ParseOptions(delimiter=delimiter, newlines_in_values=True,
                                                  invalid_row_handler=lambda row: "skip"),
            )
            rows += table.num_rows
        return rows

    seconds, _ = timed(read_all, repeat=3)
    return seconds


class StepClock:
    """Seconds spent in named functions of a module while the block runs (wrapped, then restored)."""

    def __init__(self, module: Any, names: list[str]):
        self.module, self.names = module, names
        self.seconds: dict[str, float] = {name: 0.0 for name in names}
        self._saved: dict[str, Any] = {}

    def __enter__(self) -> StepClock:
        for name in self.names:
            original = self._saved[name] = getattr(self.module, name)

            def wrapper(*args, _name=name, _original=original, **kwargs):
                start = time.perf_counter()
                try:
                    return _original(*args, **kwargs)
                finally:
                    self.seconds[_name] += time.perf_counter() - start

            setattr(self.module, name, wrapper)
        return self

    def __exit__(self, *exc: Any) -> None:
        for name, original in self._saved.items():
            setattr(self.module, name, original)


INGEST_STEPS = ["read_headers", "read_export", "map_export", "validate_table", "_assemble"]
LOADING_STEPS = ["read_headers", "_assemble"]  # looked up in quarterpanic.ingest.loading
FILE_STEPS = ["read_export", "map_export", "validate_table"]  # looked up in quarterpanic.ingest.files
INGEST_NAMES = {
    "read_headers": "profile detection (read_headers)",
    "read_export": "read_export: bytes to UTF-8, head and tail scan, pyarrow split, to pandas",
    "map_export": "map_export: rename, parse dates / numbers / yes-no",
    "validate_table": "validate_table: pandera, per file",
    "_assemble": "_assemble: duplicate ids, pandera on the whole table, accounting",
}


EXPORT_STEPS = ["_utf8_bytes", "_scan", "_pyarrow_body", "_read_csv_fast"]
MAPPING_STEPS = ["parse_dates", "parse_numbers", "parse_bools", "clean_text", "_normalise_history"]
EXPORT_STEP_NAMES = {
    "_utf8_bytes": "_utf8_bytes (validate UTF-8, or decode Windows-1252 and encode UTF-8)",
    "_scan": "_scan (quotes and line breaks of the head and the tail)",
    "_pyarrow_body": "_pyarrow_body (pyarrow split, line accounting, to pandas)",
    "_read_csv_fast": "_read_csv_fast (whole-file scan: files the slices could not read)",
}


def bench_ingest(data: Path, repeat: int) -> tuple[Ratio, float, Any]:
    """``load_crm`` without cache against the parse floor; also returns the load time and the CRM."""
    from quarterpanic.ingest import exports, loading, mapping
    from quarterpanic.ingest import files as ingest_files

    files = csv_files(data)
    floor = parse_floor(files)
    _say(f"ingest: pyarrow read_csv {floor:.2f} s")
    cpu = time.process_time()
    seconds, crm = timed(lambda: loading.load_crm(data, cache=False), repeat=repeat)
    cpu = (time.process_time() - cpu) / max(1, repeat)
    rows = int(crm.accounting["read"].sum())
    _say(f"ingest: load_crm {seconds:.2f} s ({rows:,} records, {len(files)} files)")
    ratio = Ratio("ingest", seconds / floor, 2.0,
                  detail=f"load_crm {seconds:.2f} s / pyarrow.csv.read_csv {floor:.2f} s "
                         f"({rows:,} records in {len(files)} files; load_crm CPU {cpu:.1f} s)")
    if ratio.passed is False:
        del crm
        threads, loading.LOAD_THREADS = loading.LOAD_THREADS, 1  # steps on threads would overlap
        try:
            with StepClock(loading, LOADING_STEPS) as clock, StepClock(ingest_files, FILE_STEPS) as file_clock, \
                    StepClock(exports, EXPORT_STEPS) as reading, StepClock(mapping, MAPPING_STEPS) as parsing:
                total, crm = timed(lambda: loading.load_crm(data, cache=False))
            clock.seconds.update(file_clock.seconds)
        finally:
            loading.LOAD_THREADS = threads
        breakdown = {}
        for name in INGEST_STEPS:
            breakdown[INGEST_NAMES[name]] = clock.seconds[name]
            inner = reading if name == "read_export" else parsing if name == "map_export" else None
            for step, seconds_in in (inner.seconds.items() if inner else ()):
                breakdown[f"  of which {EXPORT_STEP_NAMES.get(step, step)}"] = seconds_in
        breakdown["everything else (load_file: provenance columns, rejects)"] = total - sum(clock.seconds.values())
        breakdown["load_crm, one file at a time (this timed run)"] = total
        ratio.breakdown = breakdown
        ratio.note = (
            f"pyarrow.csv.read_csv only splits the bytes into typed Arrow columns, on both cores. Reading "
            f"(read_export) takes {clock.seconds['read_export'] / floor:.1f}× the floor: besides pyarrow's split "
            f"it reads the bytes into memory, makes them UTF-8 (Globex's Salesforce files are Windows-1252: "
            f"decoded and encoded again), scans the head for the header and the tail for the report footer, "
            f"and counts quotes and line breaks so that every record keeps its source line (the check that lets "
            f"it skip scanning the whole file). Mapping (map_export, {clock.seconds['map_export'] / floor:.1f}× "
            f"the floor on its own) cleans every text column and parses every date, number and yes/no by the "
            f"profile, in Arrow kernels and pandas, one column at a time. load_crm loads {loading.LOAD_THREADS} "
            f"files at once, but much of the work holds the GIL: loading one file at a time took "
            f"{total:.1f} s, {total / seconds:.2f}× the threaded load. The steps below were timed in that "
            f"run (on threads they overlap); their 'of which' rows overlap too (dates inside history values "
            f"are parsed by _normalise_history).")
    return ratio, seconds, crm


def bench_reload(data: Path, cache_dir: Path) -> Ratio:
    """First load through an empty cache against the second load through it."""
    from quarterpanic.ingest.loading import load_crm
    from quarterpanic.ingest.reload_cache import LoadCache

    store = LoadCache(cache_dir)
    store.clear()
    first, _ = timed(lambda: load_crm(data, cache=store))
    second, crm = timed(lambda: load_crm(data, cache=store), repeat=3)
    if store.stats.misses != len(crm.accounting) or store.stats.hits != 3 * len(crm.accounting):
        note = f"unexpected cache traffic {store.stats}"
    else:
        note = ""
    _say(f"reload: first {first:.2f} s, second {second:.2f} s")
    return Ratio("reload", first / second, 10.0, higher_is_better=True,
                 detail=f"first load {first:.2f} s (reading and writing the cache) / second load {second:.2f} s",
                 note=note)


def notebook_reload(cache_dir: Path) -> dict[str, float]:
    """How long the bundled sample takes through a warm cache, in a fresh interpreter (as in a notebook)."""
    code = (
        "import json, time\n"
        "t0 = time.perf_counter()\n"
        "from quarterpanic.dataset import load_dataset\n"
        "t1 = time.perf_counter()\n"
        f"load_dataset({str(SALESDATA_DIR)!r}, cache={str(cache_dir)!r})\n"
        "t2 = time.perf_counter()\n"
        f"load_dataset({str(SALESDATA_DIR)!r}, cache={str(cache_dir)!r})\n"
        "t3 = time.perf_counter()\n"
        "print(json.dumps({'import_s': t1 - t0, 'first_call_s': t2 - t1, 'next_call_s': t3 - t2}))\n"
    )
    from quarterpanic.dataset import load_dataset

    load_dataset(SALESDATA_DIR, cache=cache_dir)  # warm the cache
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- features


def library_features(dataset, params: dict) -> dict[str, pd.DataFrame]:
    """The features and weekly curves, the way the detectors compute them."""
    from quarterpanic.analysis.features import opportunity_features
    from quarterpanic.analysis.qualification import qualification_rate_by_week
    from quarterpanic.analysis.workload import request_features, week_grid, weekly_requests

    features = opportunity_features(dataset, params)
    curve = qualification_rate_by_week(features)
    grid = week_grid(dataset, params)
    requests = request_features(dataset, params)
    weekly = weekly_requests(requests, grid)
    return {"features": features, "qualification": curve, "weekly": weekly}


def _sql_list(values) -> str:
    return "(" + ", ".join("'" + str(v).strip().casefold().replace("'", "''") + "'" for v in values) + ")"


def _stage_rank(key: str) -> str:
    """SQL for the position of a stage key (lower case, no spaces, hyphens or underscores) in STAGE_ORDER."""
    from quarterpanic.analysis.rule import STAGE_ORDER

    closed = STAGE_ORDER[-1].lower()
    whens = " ".join(f"WHEN {key} = '{name.lower().replace(' ', '')}' THEN {i}" for i, name in enumerate(STAGE_ORDER))
    return f"CASE WHEN {key} LIKE '{closed}%' THEN {len(STAGE_ORDER) - 1} {whens} END"


def sql_features(dataset, params: dict) -> dict[str, pd.DataFrame]:
    """The same features and curves as :func:`library_features`, as DuckDB SQL over the same tables.

    The fiscal calendar enters as a small table of each organisation's quarter
    boundaries (:meth:`FiscalCalendar.quarters`); every per-row step is SQL.
    """
    import duckdb

    from quarterpanic.analysis.rule import rule_for
    from quarterpanic.analysis.workload import BUSINESS_HOURS

    opps, history, requests = dataset.opportunities, dataset.history, dataset.requests
    as_of = pd.Timestamp(dataset.as_of)
    starts = pd.concat([requests[["org", "created_at"]], opps[["org", "created_at"]]]).groupby("org")["created_at"].min()
    latest = max(as_of, opps["close_date"].max())
    quarters = []
    for org, first in starts.items():
        table = dataset.calendar(org).quarters(first.normalize(), latest)
        quarters.append(table.assign(org=org, data_start=first.normalize()))
    quarters = pd.concat(quarters, ignore_index=True)[
        ["org", "quarter", "quarter_start", "quarter_end", "weeks_in_quarter", "data_start"]]
    rules = pd.DataFrame([{"org": org, **rule_for(org, params["qualification_rule"], params["qualification_overrides"])}
                          for org in quarters["org"].unique()])
    rules["min_lead_score"] = pd.to_numeric(rules["min_lead_score"], errors="coerce").astype(float)
    start_hour, end_hour = BUSINESS_HOURS
    con = duckdb.connect()
    con.execute("SET threads TO 2")
    for name, frame in (("opportunities", opps), ("history", history), ("requests", requests),
                        ("quarter_table", quarters), ("rules", rules)):
        con.register(name, frame)
    con.execute("CREATE TEMP VIEW quarters AS SELECT org, quarter, quarter_start::DATE AS quarter_start, "
                "quarter_end::DATE AS quarter_end, weeks_in_quarter FROM quarter_table")
    features = con.execute(f"""
        WITH moves AS (
            SELECT org, opportunity_id, regexp_replace(lower(old_value), '[\\s_\\-]+', '', 'g') AS old_key,
                   regexp_replace(lower(new_value), '[\\s_\\-]+', '', 'g') AS new_key
            FROM history WHERE field = 'stage'
        ),
        skips AS (
            SELECT org, opportunity_id,
                   sum(CASE WHEN new_key LIKE '%lost%' THEN 0
                            ELSE greatest(coalesce(({_stage_rank('new_key')}) - ({_stage_rank('old_key')}) - 1, 0), 0)
                       END) AS stages_skipped
            FROM moves GROUP BY ALL
        ),
        opp AS (
            SELECT o.org, o.opportunity_id, o.created_at, o.close_date, o.is_closed, o.is_won,
                   (coalesce(o.bant_budget, false)::INT + coalesce(o.bant_authority, false)::INT
                    + coalesce(o.bant_need, false)::INT + coalesce(o.bant_timeline, false)::INT) >= r.min_bant
                   AND (NOT coalesce(r.require_next_step, false) OR coalesce(trim(o.next_step), '') <> '')
                   AND (r.min_lead_score IS NULL OR coalesce(o.lead_score >= r.min_lead_score, false)) AS qualified
            FROM opportunities o JOIN rules r USING (org)
        )
        SELECT opp.org, opp.opportunity_id, q.quarter,
               least(date_diff('day', q.quarter_start, opp.created_at::DATE) // 7 + 1, q.weeks_in_quarter)
                   AS week_of_quarter,
               q.quarter_end + INTERVAL 1 DAY <= TIMESTAMP '{as_of}' AS quarter_complete,
               opp.qualified,
               CASE WHEN opp.is_won THEN 'won' WHEN opp.is_closed THEN 'lost' ELSE 'open' END AS outcome,
               c.quarter AS close_quarter,
               least(date_diff('day', c.quarter_start, opp.close_date::DATE) // 7 + 1, c.weeks_in_quarter)
                   AS close_week,
               CASE WHEN opp.org IN (SELECT org FROM skips) THEN coalesce(s.stages_skipped, 0) > 0 END
                   AS stage_skipped
        FROM opp
        JOIN quarters q ON q.org = opp.org AND opp.created_at::DATE BETWEEN q.quarter_start AND q.quarter_end
        LEFT JOIN quarters c ON opp.is_closed AND c.org = opp.org
                             AND opp.close_date::DATE BETWEEN c.quarter_start AND c.quarter_end
        LEFT JOIN skips s ON s.org = opp.org AND s.opportunity_id = opp.opportunity_id
    """).df()
    con.register("features", features)
    z = 1.959963984540054
    qualification = con.execute(f"""
        SELECT org, quarter, week_of_quarter, events, n, events / n AS rate,
               (events / n + {z * z} / (2 * n) - {z} * sqrt(events / n * (1 - events / n) / n + {z * z} / (4 * n * n)))
                   / (1 + {z * z} / n) AS ci_low,
               (events / n + {z * z} / (2 * n) + {z} * sqrt(events / n * (1 - events / n) / n + {z * z} / (4 * n * n)))
                   / (1 + {z * z} / n) AS ci_high
        FROM (SELECT org, quarter, week_of_quarter, sum(qualified::INT) AS events, count(*) AS n
              FROM features GROUP BY ALL)
        ORDER BY org, quarter, week_of_quarter
    """).df()
    weekly = con.execute(f"""
        WITH grid AS (
            SELECT q.org, q.quarter, q.quarter_start, q.quarter_end, q.weeks_in_quarter, w AS week_of_quarter,
                   q.quarter_start + (7 * (w - 1))::INT AS week_start,
                   CASE WHEN w = q.weeks_in_quarter THEN q.quarter_end ELSE q.quarter_start + (7 * (w - 1) + 6)::INT END
                       AS week_end
            FROM quarters q, range(1, q.weeks_in_quarter + 1) AS t(w)
            WHERE q.quarter_start <= TIMESTAMP '{as_of}'
        ),
        exposure AS (
            SELECT g.*, (SELECT count(*) FROM range(g.week_start::TIMESTAMP,
                            least(g.week_end + 1, DATE '{as_of.ceil("D").date()}')::TIMESTAMP, INTERVAL 1 DAY) AS d(day)
                         WHERE isodow(d.day) < 6) AS working_days
            FROM grid g
        ),
        classified AS (
            SELECT org, request_id, created_at, handling_hours,
                   lower(trim(request_type)) IN {_sql_list(params["reactive_types"])} AS reactive,
                   lower(trim(request_type)) IN {_sql_list(params["planned_types"])} AS planned_type,
                   coalesce(planned, false) AS planned_flag,
                   coalesce(lower(trim(priority)) IN {_sql_list(params["urgent_priorities"])}, false) AS urgent,
                   coalesce(lower(trim(request_type)) IN {_sql_list(params["exception_types"])}, false) AS exception,
                   coalesce(hour(created_at) + minute(created_at) / 60 < {start_hour}
                            OR hour(created_at) + minute(created_at) / 60 >= {end_hour}, false) AS after_hours,
                   coalesce(isodow(created_at) >= 6, false) AS weekend
            FROM requests
        ),
        flagged AS (
            SELECT *, coalesce(reactive, false) OR (NOT coalesce(planned_type AND NOT coalesce(reactive, false), false)
                                                   AND NOT planned_flag) AS unplanned
            FROM classified
        ),
        counts AS (
            SELECT f.org, q.quarter,
                   least(date_diff('day', q.quarter_start, f.created_at::DATE) // 7 + 1, q.weeks_in_quarter)
                       AS week_of_quarter,
                   count(*) AS requests, sum(coalesce(handling_hours, 0)) AS handling_hours,
                   sum(unplanned::INT) AS unplanned, sum((NOT unplanned)::INT) AS planned,
                   sum(urgent::INT) AS urgent, sum(exception::INT) AS exception,
                   sum(after_hours::INT) AS after_hours, sum(weekend::INT) AS weekend
            FROM flagged f JOIN quarters q ON q.org = f.org AND f.created_at::DATE BETWEEN q.quarter_start AND q.quarter_end
            GROUP BY ALL
        )
        SELECT e.org, e.quarter, e.week_of_quarter, e.working_days,
               coalesce(c.requests, 0) AS requests, coalesce(c.unplanned, 0) AS unplanned,
               coalesce(c.planned, 0) AS planned, coalesce(c.urgent, 0) AS urgent,
               coalesce(c.exception, 0) AS exception, coalesce(c.after_hours, 0) AS after_hours,
               coalesce(c.weekend, 0) AS weekend, coalesce(c.handling_hours, 0) AS handling_hours,
               CASE WHEN c.requests > 0 THEN c.unplanned / c.requests END AS unplanned_share,
               CASE WHEN e.working_days > 0 THEN coalesce(c.unplanned, 0) / e.working_days END AS unplanned_per_day
        FROM exposure e LEFT JOIN counts c USING (org, quarter, week_of_quarter)
        ORDER BY e.org, e.quarter_start, e.week_of_quarter
    """).df()
    con.close()
    return {"features": features, "qualification": qualification, "weekly": weekly}


def compare_features(library: dict[str, pd.DataFrame], sql: dict[str, pd.DataFrame]) -> list[str]:
    """Where the SQL results differ from the library's (empty when they agree)."""
    problems = []
    keys = ["org", "quarter", "week_of_quarter"]
    left = library["qualification"].set_index(keys)[["events", "n"]].sort_index()
    right = sql["qualification"].set_index(keys)[["events", "n"]].sort_index()
    if not left.astype("int64").equals(right.astype("int64")):
        problems.append("qualification events/n per org × quarter × week differ")
    lw = library["weekly"].set_index(keys)[["working_days", "requests", "unplanned", "after_hours"]].sort_index()
    rw = sql["weekly"].set_index(keys)[["working_days", "requests", "unplanned", "after_hours"]].sort_index()
    lw = lw[lw.index.isin(rw.index)] if len(lw) > len(rw) else lw
    if not lw.astype("int64").equals(rw.reindex(lw.index).fillna(-1).astype("int64")):
        problems.append("weekly request counts / working days differ")
    skipped_lib = int(library["features"]["stage_skipped"].fillna(False).sum())
    skipped_sql = int(sql["features"]["stage_skipped"].fillna(False).sum())
    if skipped_lib != skipped_sql:
        problems.append(f"stage skips differ ({skipped_lib} vs {skipped_sql})")
    return problems


def bench_features(dataset, params: dict, repeat: int) -> Ratio:
    """Library features and curves against DuckDB SQL on the same canonical tables."""
    try:
        import duckdb  # noqa: F401
    except ImportError:
        return Ratio("features", None, 2.0, note="duckdb is not installed (pip install duckdb)")
    from quarterpanic.analysis import qualification, workload

    library_s, library = timed(lambda: library_features(dataset, params), repeat=repeat)
    sql_s, sql = timed(lambda: sql_features(dataset, params), repeat=repeat)
    _say(f"features: library {library_s:.2f} s, DuckDB {sql_s:.2f} s")
    problems = compare_features(library, sql)
    library_grid = workload.week_grid(dataset, params)
    library_requests = workload.request_features(dataset, params)
    parts = {
        "opportunity_features": lambda: opportunity_features(dataset, params),
        "  of which stage_skips": lambda: stage_skips(dataset.history),
        "qualification_rate_by_week": lambda: qualification.qualification_rate_by_week(library["features"]),
        "week_grid": lambda: workload.week_grid(dataset, params),
        "request_features": lambda: workload.request_features(dataset, params),
        "weekly_requests": lambda: workload.weekly_requests(library_requests, library_grid),
    }
    breakdown = {name: timed(step)[0] for name, step in parts.items()}
    agree = ("The SQL results differ from the library's: " + "; ".join(problems) + "."
             if problems else "Same results: qualification events and n per org × quarter × week, weekly request "
                              "counts and working days, and stage skips agree.")
    ratio = Ratio("features", library_s / sql_s, 2.0,
                  detail=f"library {library_s:.2f} s / DuckDB SQL {sql_s:.2f} s", note=agree,
                  breakdown={**breakdown, "library, all steps": library_s, "DuckDB SQL, all steps": sql_s})
    if ratio.passed is False:
        ratio.note += (" DuckDB runs each query on both cores in one vectorised plan; the library's steps are "
                       "separate pandas passes on one core (calendar annotation per organisation, the rule, "
                       f"stage skips over the whole history: {breakdown['  of which stage_skips']:.1f} s), each "
                       "materialising its intermediate frames.")
    return ratio


# --------------------------------------------------------------------------- detect and memory


def bench_detect(dataset, params: dict, ingest_s: float) -> Ratio:
    """``detect`` on the workload against the time it took to ingest it (components timed on a miss)."""
    from quarterpanic.analysis.detect import detect

    seconds, findings = timed(lambda: detect(dataset, params))
    _say(f"detect: {seconds:.1f} s ({len(findings)} findings)")
    ratio = Ratio("detect", seconds / ingest_s, 3.0,
                  detail=f"detect {seconds:.1f} s / ingest (load_crm) {ingest_s:.1f} s")
    if ratio.passed is False:
        ratio.breakdown = detect_breakdown(dataset, params)
        ratio.note = "Seconds of each detector component, run on its own:"
    return ratio


def detect_breakdown(dataset, params: dict) -> dict[str, float]:
    """Seconds of each detector component on its own."""
    from quarterpanic.analysis.detect import COMPONENTS, component_function

    return {name: timed(lambda name=name: component_function(name)(dataset, params))[0] for name in COMPONENTS}


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_probe(data: Path, cache_dir: Path) -> dict[str, float]:
    """In this process: load ``data`` (through the cache), then sample RSS while ``detect`` runs."""
    import ctypes
    import resource

    from quarterpanic.analysis.detect import detect
    from quarterpanic.dataset import load_dataset

    dataset = load_dataset(data, cache=cache_dir)
    table_bytes = int(sum(frame.memory_usage(deep=True).sum() for frame in dataset.tables().values()))
    gc.collect()
    try:  # hand the loader's freed memory back, so the samples show detect's own use
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    before = _rss_bytes()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    detect(dataset)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    peak[0] = max(peak[0], _rss_bytes())
    return {"table_bytes": table_bytes, "rss_before": before, "rss_peak": peak[0],
            "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "detect_s": seconds}


def bench_memory(data: Path, cache_dir: Path) -> Ratio:
    """Peak RSS of ``detect`` in a fresh subprocess against the size of its canonical tables."""
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--memory-probe", str(data), "--cache-dir", str(cache_dir)],
        capture_output=True, text=True,
    )
    if out.returncode != 0:
        return Ratio("memory", None, 3.0, note=f"probe failed: {out.stderr.strip().splitlines()[-1:]}")
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    gb = 1e9
    _say(f"memory: tables {probe['table_bytes'] / gb:.2f} GB, RSS peak during detect {probe['rss_peak'] / gb:.2f} GB")
    grown = (probe["rss_peak"] - probe["rss_before"]) / gb
    return Ratio("memory", probe["rss_peak"] / probe["table_bytes"], 3.0,
                 note=f"detect added {grown:.2f} GB to the {probe['rss_before'] / gb:.2f} GB the process held "
                      f"before it started (the tables, the interpreter and its libraries); detect took "
                      f"{probe['detect_s']:.1f} s in the probe.",
                 detail=f"peak RSS during detect {probe['rss_peak'] / gb:.2f} GB / canonical tables "
                        f"{probe['table_bytes'] / gb:.2f} GB (RSS before detect {probe['rss_before'] / gb:.2f} GB; "
                        f"process max RSS incl. loading {probe['ru_maxrss'] / gb:.2f} GB)")


# --------------------------------------------------------------------------- suite


FLOOR_SCRIPT = """
import sys, pathlib, nbformat, papermill
from nbconvert import HTMLExporter
out, count, kernel = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
notebook = nbformat.v4.new_notebook()
notebook.cells = [nbformat.v4.new_code_cell("")]
notebook.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
for i in range(count):
    source = out / f"empty_{i}.ipynb"
    nbformat.write(notebook, source)
    executed = out / f"empty_{i}.out.ipynb"
    papermill.execute_notebook(str(source), str(executed), kernel_name=kernel, progress_bar=False)
    body, _ = HTMLExporter(exclude_input=True).from_filename(str(executed))
    (out / f"empty_{i}.html").write_text(body, encoding="utf-8")
"""


def _slowest_cells(out: Path, per_notebook: int = 3) -> dict[str, float]:
    """Each executed notebook's total and its slowest cells (papermill's cell timings)."""
    times: dict[str, float] = {}
    for executed in sorted(out.glob("*/0*.ipynb")):
        try:
            notebook = json.loads(executed.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        total = notebook.get("metadata", {}).get("papermill", {}).get("duration")
        if total is not None:
            times[f"{executed.stem}: all cells"] = float(total)
        cells = []
        for index, cell in enumerate(notebook.get("cells", [])):
            duration = cell.get("metadata", {}).get("papermill", {}).get("duration")
            if duration is not None:
                first = next((line.strip() for line in "".join(cell.get("source", "")).splitlines()
                              if line.strip() and not line.startswith("#")), "")
                cells.append((float(duration), index, first[:60]))
        for duration, index, first in sorted(cells, reverse=True)[:per_notebook]:
            times[f"  {executed.stem} cell {index}: `{first.replace('|', '/')}`"] = duration
    return times


def bench_suite(repeat: int = 1) -> Ratio:
    """``quarterpanic run`` on the bundled sample against papermill + nbconvert on as many empty notebooks."""
    from quarterpanic.ingest.loading import load_crm

    notebooks = sorted(NOTEBOOKS_DIR.glob("0*.ipynb"))
    kernel = json.loads(notebooks[0].read_text(encoding="utf-8"))["metadata"]["kernelspec"]["name"]
    load_crm(SALESDATA_DIR, cache=True)  # a report run reads through a warm cache, as a second run would
    per_notebook: dict[str, float] = {}
    cli = Path(sys.executable).with_name("quarterpanic")
    command = [str(cli)] if cli.exists() else [sys.executable, "-m", "quarterpanic.cli"]
    with tempfile.TemporaryDirectory(prefix="qp-bench-") as tmp:
        def run_suite(cold_results: bool = True) -> int:
            out = Path(tmp) / "reports"
            shutil.rmtree(out, ignore_errors=True)
            if cold_results:  # the run computes its findings (04 still reuses what 02 and 03 computed)
                shutil.rmtree(CACHE_DIR / results_cache.ENTRIES, ignore_errors=True)
            code = subprocess.run(command + ["run", "--out", str(out)], capture_output=True, text=True).returncode
            if cold_results:
                per_notebook.clear()
                per_notebook.update(_slowest_cells(out))
            return code

        def run_floor() -> int:
            out = Path(tmp) / "floor"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            return subprocess.run([sys.executable, "-c", FLOOR_SCRIPT, str(out), str(len(notebooks)), kernel],
                                  capture_output=True, text=True).returncode

        floor_s, floor_code = timed(run_floor, repeat=repeat)
        suite_s, suite_code = timed(run_suite, repeat=repeat)
        warm_s, _ = timed(lambda: run_suite(cold_results=False))
    _say(f"suite: quarterpanic run {suite_s:.1f} s (with cached findings {warm_s:.1f} s), "
         f"empty-notebook floor {floor_s:.1f} s")
    note = "" if suite_code == 0 and floor_code == 0 else f"exit codes: run {suite_code}, floor {floor_code}. "
    ratio = Ratio("suite", suite_s / floor_s, 3.0,
                  detail=f"quarterpanic run {suite_s:.1f} s / {len(notebooks)} empty notebooks through "
                         f"papermill + nbconvert {floor_s:.1f} s (the run computing its findings; "
                         f"{warm_s:.1f} s when an earlier run left them in the results cache)", note=note)
    if ratio.passed is False:
        ratio.breakdown = per_notebook
        ratio.note += ("The floor starts a kernel, runs one empty cell and exports the page, per notebook. "
                       "The run's notebooks also import pandas, matplotlib and seaborn (which imports "
                       "scipy.stats, ~0.5 s, in every kernel) and statsmodels (02-04), about 0.7-1.2 s per kernel; read the sample back from a dataset "
                       "snapshot (a cold load parses the mappings and builds the pandera schemas, which imports "
                       "dask.dataframe); compute the findings (the results cache is emptied before each timed "
                       "run, so 02 and 03 run their detectors and 04 reuses what they computed); and compute and draw some 30 charts, "
                       "0.25-0.6 s per chart cell, mostly matplotlib's text layout. Each notebook's cell time "
                       "(kernel start included) and its slowest cells, from papermill's timings:")
    return ratio


# --------------------------------------------------------------------------- report


def machine() -> dict[str, str]:
    """CPU model, cores, memory, OS, and the versions that matter here."""
    import pandera
    import pyarrow

    from quarterpanic import __version__

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kb = int(next(line for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")).split()[1])
        memory = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration):
        pass
    versions = {"python": platform.python_version(), "quarterpanic": __version__, "pandas": pd.__version__,
                "numpy": np.__version__, "pyarrow": pyarrow.__version__, "pandera": pandera.__version__}
    try:
        import duckdb

        versions["duckdb"] = duckdb.__version__
    except ImportError:
        pass
    return {"cpu": cpu, "cores": str(os.cpu_count()), "memory": memory,
            "os": f"{platform.system()} {platform.release()}",
            "versions": ", ".join(f"{k} {v}" for k, v in versions.items())}


def render(ratios: list[Ratio], info: dict[str, Any]) -> str:
    """RESULTS.md: the machine, the workload, the table of ratios, then the notes and breakdowns."""
    lines = [
        "# Benchmark results",
        "",
        f"Written by `python benchmarks/bench.py --scale {info['scale']}` (`make bench`) on {info['date']}; "
        "every ratio compares quarterpanic with a baseline run in the same session on the same machine. "
        "A benchmark, not a test: a missed target is reported here, not failed.",
        "",
        f"* **Machine:** {info['machine']['cpu']}, {info['machine']['cores']} cores, {info['machine']['memory']} "
        f"memory, {info['machine']['os']}",
        f"* **Versions:** {info['machine']['versions']}",
        f"* **Load average** (other work on the machine): {info['load_before']} at the start, "
        f"{info['load_after']} at the end",
        f"* **Workload:** {info['workload']}",
        f"* **Duration:** {info['duration_s'] / 60:.1f} minutes",
        "",
        "| ratio | measured | target | result | what was timed |",
        "|---|---|---|---|---|",
    ]
    for r in ratios:
        lines.append(f"| {r.name} | {r.value_text} | {r.target_text} | **{r.verdict}** | {r.detail} |")
    lines.append("")
    for r in ratios:
        if r.note or r.breakdown or r.shortfall:
            lines.append(f"### {r.name}")
            lines.append("")
            if r.shortfall:
                lines.append(f"MISS: {r.value_text}, {r.shortfall}.")
                lines.append("")
            if r.note:
                lines.append(r.note)
                lines.append("")
            if r.breakdown:
                lines.append("| step | seconds |")
                lines.append("|---|---|")
                lines.extend(f"| {name} | {seconds:.2f} |" for name, seconds in r.breakdown.items())
                lines.append("")
    for title, body in info.get("sections", {}).items():
        lines.extend([f"### {title}", "", body, ""])
    return "\n".join(lines).rstrip() + "\n"


def _workload_text(crm, data: Path) -> str:
    sizes = ", ".join(f"{len(crm.table(t)):,} {t}" for t in ("opportunities", "history", "leads", "requests"))
    on_disk = sum(p.stat().st_size for p in csv_files(data)) / 1e9
    return f"`{data.relative_to(PROJ_ROOT) if data.is_relative_to(PROJ_ROOT) else data}`: {sizes} " \
           f"({on_disk:.2f} GB of CSV, {len(crm.accounting)} files, {len(crm.orgs)} organisations)"


def run_bench(scale: str = "large", out: Path | None = None, *, data_dir: Path = DATA_DIR, seed: int = SEED,
              only: list[str] | None = None, repeat: int | None = None) -> list[Ratio]:
    """Measure the ratios (``only`` some of them), print them and write ``out`` when given."""
    from quarterpanic.dataset import load_dataset
    from quarterpanic.params import defaults

    started = time.perf_counter()
    load_before = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    chosen = only or ["ingest", "reload", "features", "detect", "suite", "memory"]
    repeat = repeat if repeat is not None else (1 if scale == "large" else 3)
    data = prepare_workload(scale, data_dir, seed)
    cache_dir = Path(data_dir) / f"cache-{scale}"
    params = defaults()
    ratios: list[Ratio] = []
    sections: dict[str, str] = {}
    ingest_ratio, ingest_s, crm = bench_ingest(data, repeat)
    workload = _workload_text(crm, data)
    del crm
    if "ingest" in chosen:
        ratios.append(ingest_ratio)
    if "reload" in chosen or {"features", "detect", "memory"} & set(chosen):
        reload_ratio = bench_reload(data, cache_dir)
        if "reload" in chosen:
            ratios.append(reload_ratio)
            timings = notebook_reload(cache_dir)
            sections["reload of the bundled sample (salesdata/) in a fresh interpreter"] = (
                f"`from quarterpanic.dataset import load_dataset` {timings['import_s']:.2f} s, then "
                f"`load_dataset('salesdata')` through the warm cache {timings['first_call_s']:.2f} s "
                f"(first call: pandera builds its schemas) and {timings['next_call_s']:.2f} s on the next call."
            )
    if {"features", "detect"} & set(chosen):
        dataset = load_dataset(data, params, cache=cache_dir)
        if "features" in chosen:
            # Seconds each: best of three even at large scale, so other work on the machine weighs less.
            ratios.append(bench_features(dataset, params, max(repeat, 3)))
        if "detect" in chosen:
            ratios.append(bench_detect(dataset, params, ingest_s))
        del dataset
    if "memory" in chosen:
        ratios.append(bench_memory(data, cache_dir))
    if "suite" in chosen:
        ratios.append(bench_suite(repeat=max(repeat, 2)))
    info = {
        "scale": scale, "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine(), "workload": workload, "load_before": load_before,
        "load_after": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
        "duration_s": time.perf_counter() - started, "sections": sections,
    }
    _say("")
    for r in ratios:
        _say(f"{r.name:9} {r.value_text:>14}  target {r.target_text:<14} {r.verdict}  {r.detail}")
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render(ratios, info), encoding="utf-8")
        _say(f"written to {out}")
    return ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the results as Markdown here (e.g. benchmarks/RESULTS.md)")
    parser.add_argument("--scale", choices=sorted(SCALES), default="large",
                        help="workload: large (default), medium (a tenth) or small (smoke runs)")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="where workloads are generated and kept")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--only", nargs="+", choices=["ingest", "reload", "features", "detect", "suite", "memory"],
                        help="measure only these ratios")
    parser.add_argument("--repeat", type=int,
                        help="best of N timings (default 1 at large scale, else 3; features best of 3 and "
                             "the suite best of 2 at least)")
    parser.add_argument("--memory-probe", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe, args.cache_dir)))
        return 0
    run_bench(args.scale, args.out, data_dir=args.data_dir, seed=args.seed, only=args.only, repeat=args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
