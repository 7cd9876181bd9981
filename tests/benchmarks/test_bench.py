"""The benchmark harness, run once on a tiny workload: it measures, compares and writes RESULTS.md.

No timing is asserted: this checks the harness works, not how fast anything is.
"""
from __future__ import annotations

import json

import pytest

from benchmarks import bench


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("bench")
    out = data_dir / "RESULTS.md"
    ratios = bench.run_bench("small", out, data_dir=data_dir, repeat=1,
                             only=["ingest", "reload", "features", "detect", "memory"])
    return data_dir, out, ratios


@pytest.mark.slow
@pytest.mark.sweep  # a whole small benchmark run (workload, baselines, suite): make test-stats and CI run it
def test_small_run_measures_every_chosen_ratio(small_run):
    _, _, ratios = small_run
    assert [r.name for r in ratios] == ["ingest", "reload", "features", "detect", "memory"]
    for ratio in ratios:
        assert ratio.value is not None and ratio.value > 0, ratio
        assert ratio.verdict in ("PASS", "MISS")


@pytest.mark.slow
@pytest.mark.sweep  # a whole small benchmark run (workload, baselines, suite): make test-stats and CI run it
def test_sql_baseline_computes_the_same_curves(small_run):
    features = next(r for r in small_run[2] if r.name == "features")
    assert features.note.startswith("Same results"), features.note


@pytest.mark.slow
@pytest.mark.sweep  # a whole small benchmark run (workload, baselines, suite): make test-stats and CI run it
def test_results_file_names_machine_targets_and_verdicts(small_run):
    _, out, ratios = small_run
    text = out.read_text(encoding="utf-8")
    for word in ("Machine:", "cores", "Versions:", "pandas", "Workload:", "| ratio | measured | target | result |"):
        assert word in text
    for ratio in ratios:
        assert f"| {ratio.name} | {ratio.value_text} | {ratio.target_text} | **{ratio.verdict}** |" in text


@pytest.mark.slow
@pytest.mark.sweep  # a whole small benchmark run (workload, baselines, suite): make test-stats and CI run it
def test_workload_is_reused_while_the_generator_is_unchanged(small_run, monkeypatch):
    data_dir, _, _ = small_run
    folder = data_dir / "small"
    stamp = json.loads((folder / bench.STAMP).read_text())
    assert stamp["fingerprint"] == bench.generator_fingerprint("small", bench.SEED)
    monkeypatch.setattr("quarterpanic.sample.write_sample", lambda *a, **k: pytest.fail("regenerated"))
    assert bench.prepare_workload("small", data_dir) == folder


def test_ratio_verdicts_and_shortfalls():
    assert bench.Ratio("ingest", 1.5, 2.0).verdict == "PASS"
    slow = bench.Ratio("ingest", 5.0, 2.0)
    assert slow.verdict == "MISS" and slow.shortfall == "2.5× over the target"
    assert bench.Ratio("features", 2.2, 2.0).shortfall == "10 % over the target"
    reload = bench.Ratio("reload", 8.0, 10.0, higher_is_better=True)
    assert reload.verdict == "MISS" and reload.shortfall == "25 % short of the target"
    assert reload.target_text == "≥ 10× faster"
    assert bench.Ratio("memory", None, 3.0).verdict == "n/a"


def test_render_lists_misses_with_their_breakdown():
    ratios = [bench.Ratio("ingest", 4.0, 2.0, detail="a / b", note="why", breakdown={"step": 1.25}),
              bench.Ratio("reload", 12.0, 10.0, higher_is_better=True, detail="c / d")]
    info = {"scale": "small", "date": "today", "machine": bench.machine(), "workload": "w",
            "load_before": "0", "load_after": "0", "duration_s": 60.0}
    text = bench.render(ratios, info)
    assert "| ingest | 4.00× | ≤ 2× | **MISS** | a / b |" in text
    assert "| reload | 12.0× faster | ≥ 10× faster | **PASS** | c / d |" in text
    assert "MISS: 4.00×, 2.0× over the target." in text and "| step | 1.25 |" in text
