"""Fault injection: every kind of cache file, damaged every way a disk or a copy damages it, gives exactly
what a cold run gives, warns in one line, is rebuilt, and never crashes the process.

Each sweep runs in a subprocess (a damaged memory-mapped file can kill a process with SIGBUS): the worker
prints one JSON line per damage, so a crash is reported with the damage that caused it.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import FIXTURES
from quarterpanic.sample import write_sample

# Each kind runs in its own subprocess, cold and damaged: minutes in all. make test-stats (and CI) runs it.
pytestmark = pytest.mark.sweep

#: Damages to one file: cut short, emptied, a byte flipped (start, middle, end), a byte of its checksum flipped,
#: replaced by a folder, exchanged with the file of the same name in another entry.
FILE_DAMAGES = ["truncate", "empty", "flip_start", "flip_middle", "flip_end", "flip_checksum", "directory", "swap"]
#: Damages to a whole entry: two entries exchanged, an entry replaced by a file or by an empty folder.
ENTRY_DAMAGES = ["swap", "file", "empty_folder"]
KINDS = {
    "reload frame": FILE_DAMAGES, "reload rejects": FILE_DAMAGES, "reload manifest": FILE_DAMAGES,
    "reload entry": ENTRY_DAMAGES, "digests": [d for d in FILE_DAMAGES if d != "swap"],
    "snapshot frame": FILE_DAMAGES, "snapshot manifest": FILE_DAMAGES, "snapshot entry": ENTRY_DAMAGES,
    "results frame": FILE_DAMAGES, "results manifest": FILE_DAMAGES, "results entry": ENTRY_DAMAGES,
}

WORKER = textwrap.dedent(r'''
    import json, logging, os, shutil, sys
    from dataclasses import fields
    from pathlib import Path

    import pandas as pd

    from quarterpanic.dataset import load_dataset, Dataset
    from quarterpanic.ingest import reload_cache
    from quarterpanic.ingest.reload_cache import LoadCache
    from quarterpanic.params import defaults
    from quarterpanic.store import entries, results, snapshots

    kind, damages, data, work = sys.argv[1], sys.argv[2].split(","), Path(sys.argv[3]), Path(sys.argv[4])
    snapshots.RACY_SECONDS = 0.0      # the copied exports are new: snapshot them all the same
    reload_cache.RACY_SECONDS = -1.0  # and remember their digests
    layer = kind.split()[0]
    if layer in ("reload", "digests"):
        os.environ[snapshots.ENV_SWITCH] = "off"

    class Count(logging.Handler):
        def __init__(self):
            super().__init__(logging.WARNING)
            self.lines = []
        def emit(self, record):
            self.lines.append(record.getMessage())
    warned = Count()
    logging.getLogger("quarterpanic").addHandler(warned)

    PARAMS = [defaults(), {**defaults(), "orgs": ["Northwind Traders"]}]
    if layer == "results":
        from quarterpanic.analysis.features import opportunity_features
        from quarterpanic.analysis.reactive import analyse_reactive
        from quarterpanic.sample import generate
        sample = generate(seed=3, scale="small")
        dataset = Dataset.from_tables(sample.tables, sample.orgs, as_of=sample.as_of)

        def run(cache_dir):
            results.CACHE_DIR = cache_dir
            return [opportunity_features(dataset, defaults(), cache=cache_dir is not None),
                    analyse_reactive(dataset, defaults(), cache=cache_dir is not None)]
    else:
        def run(cache_dir):
            if cache_dir is None:
                return [load_dataset(data, params, cache=False) for params in PARAMS]
            if layer == "snapshot":
                return [load_dataset(data, params, cache=cache_dir) for params in PARAMS]
            return [load_dataset(data, params, cache=LoadCache(cache_dir)) for params in PARAMS]

    def assert_same(left, right):
        if isinstance(left, pd.DataFrame):
            pd.testing.assert_frame_equal(left, right, check_exact=True)
        elif hasattr(left, "__dataclass_fields__"):
            assert type(left) is type(right)
            for field in fields(left):
                assert_same(getattr(left, field.name), getattr(right, field.name))
        elif isinstance(left, dict):
            assert list(left) == list(right)
            for name in left:
                assert_same(left[name], right[name])
        else:
            assert left == right, (left, right)

    FOLDER = {"reload": "loads", "snapshot": "datasets", "results": "results"}

    def targets(cache_dir):
        """The files (or entry folders) of this kind in cache_dir."""
        if kind == "digests":
            return [cache_dir / "digests.json"]
        folders = sorted(p for p in (cache_dir / FOLDER[layer]).iterdir() if not p.name.startswith("."))
        part = kind.split()[1]
        if part == "entry":
            return folders
        if part == "manifest":
            return [f / entries.MANIFEST for f in folders]
        names = {"frame": "frame*.arrow", "rejects": "rejects.arrow"}[part]
        return sorted(p for f in folders for p in f.glob(names if layer != "reload" else names.replace("*", "")))

    def flip(path, offset):
        data = bytearray(path.read_bytes())
        data[offset % len(data)] ^= 0xFF
        path.write_bytes(bytes(data))

    def flip_checksum(path):
        manifest = path if path.name in (entries.MANIFEST, "digests.json") else path.parent / entries.MANIFEST
        text = manifest.read_text()
        if path.name == entries.MANIFEST or path.name == "digests.json":
            anchor = '"checksum": "'
        else:
            anchor = '"' + path.stem + '": {"bytes": ' + str(path.stat().st_size) + ', "checksum": "'
        start = text.index(anchor) + len(anchor)
        manifest.write_text(text[:start] + ("a" if text[start] != "a" else "b") + text[start + 1:])

    def swap(a, b):
        parked = a.with_name(a.name + ".parked")
        a.rename(parked)
        b.rename(a)
        parked.rename(b)

    def damage(how, paths):
        if how == "swap":  # entries pairwise; files with the file of the same name in another entry
            groups = {}
            for path in paths:
                groups.setdefault("entry" if path.is_dir() else path.name, []).append(path)
            pairs = [(a, b) for group in groups.values() for i, a in enumerate(group) for b in group[i + 1:]
                     if a.is_dir() or a.read_bytes() != b.read_bytes()][:1]
            assert pairs, f"{kind}: no two different entries to swap"
            for a, b in pairs:
                swap(a, b)
            return
        for path in paths:
            if how == "truncate":
                path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
            elif how == "empty":
                path.write_bytes(b"")
            elif how == "flip_start":
                flip(path, 0)
            elif how == "flip_middle":
                flip(path, path.stat().st_size // 2)
            elif how == "flip_end":
                flip(path, -1)
            elif how == "flip_checksum":
                flip_checksum(path)
            elif how in ("directory", "empty_folder"):
                entries.discard(path)
                path.mkdir()
            elif how == "file":
                entries.discard(path)
                path.write_bytes(b"ARROW1 not an entry")
            else:
                raise ValueError(how)

    cold = run(None)
    template = work / "template"
    run(template)
    for how in damages:
        print(json.dumps({"start": how}), flush=True)
        scratch = work / how
        shutil.copytree(template, scratch)
        damage(how, targets(scratch))
        warned.lines.clear()
        report = {"damage": how}
        try:
            for left, right in zip(cold, run(scratch)):
                assert_same(left, right)
            report["warnings"] = list(warned.lines)
            warned.lines.clear()
            for left, right in zip(cold, run(scratch)):  # rebuilt: served again, and right
                assert_same(left, right)
            report["warnings_after"] = list(warned.lines)
            report["identical"] = True
        except AssertionError as err:
            report["identical"] = False
            report["error"] = str(err)[:500]
        print(json.dumps(report), flush=True)
''')


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory) -> Path:
    """Two organisations' exports with rejected rows, a mapping beside one of them (snapshots are taken of it)."""
    folder = tmp_path_factory.mktemp("faults") / "data"
    shutil.copytree(FIXTURES / "datafolder", folder)
    shutil.copy(FIXTURES / "salesforce_bad_rows.csv", folder / "northwind" / "more_opportunities.csv")  # rejects
    return folder


def sweep(kind: str, data_folder: Path, work: Path) -> list[dict]:
    """Run the worker over every damage of ``kind``; fail naming the damage that crashed it."""
    work.mkdir()
    out = subprocess.run([sys.executable, "-c", WORKER, kind, ",".join(KINDS[kind]), str(data_folder), str(work)],
                         capture_output=True, text=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    reports = [line for line in lines if "damage" in line]
    if out.returncode != 0:
        started = [line["start"] for line in lines if "start" in line]
        pytest.fail(f"{kind}: the worker died with code {out.returncode} during "
                    f"{started[-1] if started else 'the cold run'}: {out.stderr.strip()[-1500:]}")
    return reports


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_damage_gives_the_cold_result_with_one_warning(kind, data_folder, tmp_path):
    reports = sweep(kind, data_folder, tmp_path / "work")
    assert [r["damage"] for r in reports] == KINDS[kind]
    for report in reports:
        assert report["identical"], f"{kind}, {report['damage']}: {report.get('error')}"
        assert report["warnings"], f"{kind}, {report['damage']}: the damage went unreported"
        assert all("\n" not in line and "cannot be used" in line for line in report["warnings"]), report
        assert report["warnings_after"] == [], f"{kind}, {report['damage']}: not rebuilt ({report['warnings_after']})"


def run_detect(cache_dir: Path, data: Path) -> subprocess.CompletedProcess:
    """``quarterpanic detect DATA --json`` in a subprocess, with ``cache_dir`` as the project's cache."""
    code = ("import sys; from pathlib import Path; import quarterpanic.paths as paths; "
            "paths.CACHE_DIR = Path(sys.argv[1]); "
            "import quarterpanic.store.snapshots as snapshots; snapshots.RACY_SECONDS = 0.0; "
            "from quarterpanic.cli import main; sys.exit(main(sys.argv[2:]))")
    return subprocess.run([sys.executable, "-c", code, str(cache_dir), "detect", str(data), "--json"],
                          capture_output=True, text=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})


@pytest.mark.slow
def test_detect_json_after_damage_is_the_cold_document(tmp_path):
    data = tmp_path / "sample"
    write_sample(data, seed=5, scale="small")
    cache_dir = tmp_path / "cache"
    cold = run_detect(cache_dir, data)
    assert cold.returncode == 0, cold.stderr
    warm = run_detect(cache_dir, data)
    assert (warm.returncode, warm.stdout) == (0, cold.stdout)

    def flip_middle(path: Path) -> None:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))

    loads = sorted((cache_dir / "loads").iterdir())
    snapshots = sorted((cache_dir / "datasets").iterdir())
    rounds = [
        lambda: [flip_middle(path) for path in (cache_dir / "datasets").glob("*/frame*.arrow")],
        lambda: [shutil.rmtree(path) for path in snapshots]
        + [flip_middle(path) for path in (cache_dir / "loads").glob("*/frame.arrow")]
        + [flip_middle(cache_dir / "digests.json")],
        lambda: [shutil.rmtree(path) for path in (cache_dir / "datasets").iterdir()]
        + [loads[0].rename(tmp_path / "parked"), loads[1].rename(loads[0]), (tmp_path / "parked").rename(loads[1])],
    ]
    for number, damage in enumerate(rounds):
        damage()
        after = run_detect(cache_dir, data)
        assert after.returncode == 0, f"round {number}: {after.stderr[-1500:]}"
        assert after.stdout == cold.stdout, f"round {number}: another document"
        assert "cannot be used" in after.stderr, f"round {number}: the damage went unreported"
