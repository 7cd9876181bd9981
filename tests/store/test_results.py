"""The results cache: a hit returns exactly what the detector returns; changed data, parameters or code miss."""
from __future__ import annotations

import os
import shutil
from dataclasses import replace

import pandas as pd
import pytest

from quarterpanic.analysis.detect import COMPONENTS, detect
from quarterpanic.analysis.features import opportunity_features
from quarterpanic.analysis.qualification import detect_qualification_decay
from quarterpanic.analysis.reactive import analyse_reactive
from quarterpanic.calendar import FiscalCalendar
from quarterpanic.dataset import Dataset
from quarterpanic.params import defaults
from quarterpanic.sample import generate
from quarterpanic.store import entries as checked
from quarterpanic.store import results as results_cache


@pytest.fixture(scope="module")
def data() -> Dataset:
    sample = generate(seed=3, scale="small")
    return Dataset.from_tables(sample.tables, sample.orgs, as_of=sample.as_of)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(results_cache, "CACHE_DIR", tmp_path)
    monkeypatch.delenv(results_cache.ENV_SWITCH, raising=False)
    return tmp_path / results_cache.ENTRIES


# Sell or do (one small GLM per organisation) and back-loading (a few group-bys) keep no cache entry; every
# other component keeps one.
CACHING = set(COMPONENTS) - {"sell_or_do", "bookings_backloading"}


def entries(folder) -> list:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


def test_a_hit_returns_what_the_detectors_return(data, cache_dir):
    fresh = detect(data)
    assert entries(cache_dir) == []  # only callers that ask use the cache
    first = detect(data, cache=True)
    assert len(entries(cache_dir)) == len(CACHING)  # one per component that keeps entries
    again = detect(data, cache=True)
    pd.testing.assert_frame_equal(first, fresh)
    pd.testing.assert_frame_equal(again, fresh)
    assert len(entries(cache_dir)) == len(CACHING)


def test_the_notebooks_calls_share_entries_with_detect(data, cache_dir):
    params = defaults()
    features = opportunity_features(data, params, cache=True)  # as notebook 02
    decay = detect_qualification_decay(data, params, features=features, cache=True)
    analysis = analyse_reactive(data, params, cache=True)
    assert len(entries(cache_dir)) == 3
    detect(data, {**params, "index_thresholds": {"watch": 1.0, "panic": 2.0}, "data_dir": "elsewhere"}, cache=True)
    # Neither parameter changes what the detectors compute: detect reuses the decay and reactive entries and adds
    # one for each of its other components.
    assert len(entries(cache_dir)) == 3 + len(CACHING - {"qualification_decay", "reactive_order_taking"})
    pd.testing.assert_frame_equal(decay, detect_qualification_decay(data, params))
    cached = analyse_reactive(data, {**params, "index_thresholds": {"watch": 1.0, "panic": 2.0}}, cache=True)
    assert cached.params["index_thresholds"] == {"watch": 1.0, "panic": 2.0}  # the caller's own parameters
    fresh = analyse_reactive(data, params)
    for name in ("findings", "requests", "weekly", "surge", "deferral", "stretch", "grid"):
        pd.testing.assert_frame_equal(getattr(cached, name), getattr(fresh, name))
        pd.testing.assert_frame_equal(getattr(analysis, name), getattr(fresh, name))
    assert cached.shares.keys() == fresh.shares.keys()
    for name in fresh.shares:
        pd.testing.assert_frame_equal(cached.shares[name], fresh.shares[name])


@pytest.mark.parametrize("change", ["alpha", "min_n", "onset_weeks", "qualification_rule", "quarters", "segment"])
def test_a_changed_parameter_misses(data, change):
    params = defaults()
    changed = {
        "alpha": {"alpha": 0.1},
        "min_n": {"min_n": 25},
        "onset_weeks": {"onset_weeks": [6, 12]},
        "qualification_rule": {"qualification_rule": {**params["qualification_rule"], "min_bant": 2}},
        "quarters": {"quarters": ["FY2025-Q1"]},
        "segment": {"segment": "SMB"},
    }[change]
    name = "quarterpanic.analysis.qualification.detect_qualification_decay"
    assert results_cache.result_key(name, data, params) != results_cache.result_key(name, data, {**params, **changed})


def test_changed_data_misses(data, cache_dir):
    params = defaults()
    before = detect_qualification_decay(data, params, cache=True)
    opportunities = data.opportunities.copy()
    opportunities.loc[opportunities.index[:300], "bant_budget"] = False
    changed = replace(data, opportunities=opportunities)
    after = detect_qualification_decay(changed, params, cache=True)
    assert len(entries(cache_dir)) == 2
    pd.testing.assert_frame_equal(after, detect_qualification_decay(changed, params))
    assert not before.equals(after)
    name = "quarterpanic.analysis.qualification.detect_qualification_decay"
    key = results_cache.result_key(name, data, params)
    assert results_cache.result_key(name, replace(data, as_of=data.as_of - pd.Timedelta(days=1)), params) != key
    assert results_cache.result_key(name, replace(data, size_classes={}), params) != key
    recast = data.opportunities.astype({"amount": "float32"})
    assert results_cache.result_key(name, replace(data, opportunities=recast), params) != key


def test_edited_library_code_misses_within_the_same_session(data, tmp_path, cache_dir, monkeypatch):
    """As under ``%autoreload 2``: a module edited between two calls of one Python session is a new key."""
    package = tmp_path / "package"
    shutil.copytree(checked.PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(checked, "PACKAGE_DIR", package)
    name, params = "quarterpanic.analysis.reactive.analyse_reactive", defaults()
    before = results_cache.result_key(name, data, params)
    assert results_cache.result_key(name, data, params) == before
    module = package / "analysis" / "turnaround.py"
    module.write_text(module.read_text() + "\n# changed\n")
    assert results_cache.result_key(name, data, params) != before
    calls = []
    results_cache.cached("f", lambda: calls.append(1) or "old code", data, params)
    assert results_cache.cached("f", lambda: calls.append(1) or "old code", data, params) == "old code"
    os.utime(module, ns=(1, 1))  # touched only
    assert results_cache.cached("f", lambda: calls.append(1) or "new code", data, params) == "new code"
    assert calls == [1, 1]


@pytest.mark.parametrize("value", ["off", "0", "false", "no"])
def test_the_environment_turns_it_off(data, cache_dir, monkeypatch, value):
    monkeypatch.setenv(results_cache.ENV_SWITCH, value)
    calls = []
    for _ in range(2):
        results_cache.cached("f", lambda: calls.append(1) or 1, data, defaults())
    assert calls == [1, 1]
    assert entries(cache_dir) == []


def test_an_unreadable_entry_is_recomputed(data, cache_dir):
    calls = []

    def compute():
        calls.append(1)
        return pd.DataFrame({"x": [1, 2]})

    results_cache.cached("f", compute, data, defaults())
    [entry] = entries(cache_dir)
    (entry / "frame0.arrow").write_bytes(b"ARROW1 not a frame")
    result = results_cache.cached("f", compute, data, defaults())
    pd.testing.assert_frame_equal(result, pd.DataFrame({"x": [1, 2]}))
    assert calls == [1, 1]
    assert results_cache.cached("f", compute, data, defaults()) is not None and calls == [1, 1]


def test_old_entries_are_pruned(data, cache_dir, monkeypatch):
    monkeypatch.setattr(results_cache, "MAX_ENTRIES", 3)
    for i in range(5):
        results_cache.cached(f"f{i}", lambda: i, data, defaults())
    assert len(entries(cache_dir)) == 3


def test_entries_beyond_the_size_limit_are_pruned(data, cache_dir, monkeypatch):
    monkeypatch.setattr(results_cache, "MAX_BYTES", 1)
    for i in range(3):
        results_cache.cached(f"f{i}", lambda: i, data, defaults())
    assert len(entries(cache_dir)) == 1  # the newest is always kept


def test_opportunity_features_and_the_early_warning_reuse_them(data, cache_dir):
    from quarterpanic.analysis import early_warning as ew

    params = defaults()
    fresh = opportunity_features(data, params)
    pd.testing.assert_frame_equal(opportunity_features(data, params, cache=True), fresh)
    pd.testing.assert_frame_equal(opportunity_features(data, params, cache=True), fresh)
    assert len(entries(cache_dir)) == 1
    findings = detect(data)
    status, charts = ew.early_warning(data, params, findings=findings)
    cached_status, cached_charts = ew.early_warning(data, params, findings=findings, cache=True)
    pd.testing.assert_frame_equal(cached_status, status)
    pd.testing.assert_frame_equal(cached_charts, charts)
    assert len(entries(cache_dir)) == 1  # the same features


def test_features_handed_in_are_part_of_the_key(data, cache_dir):
    params = defaults()
    features = opportunity_features(data, params)
    one_org = features[features["org"] == data.orgs[0]]
    everything = detect_qualification_decay(data, params, features=features, cache=True)
    only_one = detect_qualification_decay(data, params, features=one_org, cache=True)
    assert set(everything["org"]) == set(data.orgs) and set(only_one["org"]) == {data.orgs[0]}
    pd.testing.assert_frame_equal(only_one, detect_qualification_decay(data, params, features=one_org))
    pd.testing.assert_frame_equal(everything, detect_qualification_decay(data, params, cache=True))
    assert len(entries(cache_dir)) == 3  # the features, and the findings of each set of features


def test_a_dataset_is_hashed_once_and_anew_when_a_table_is_replaced(data, monkeypatch):
    hashed = []
    real = results_cache.frame_fingerprint
    monkeypatch.setattr(results_cache, "frame_fingerprint", lambda frame: hashed.append(1) or real(frame))
    fresh = replace(data, calendars=dict(data.calendars))
    first = results_cache.dataset_fingerprint(fresh)
    tables = len(fresh.tables())
    assert len(hashed) == tables
    assert results_cache.dataset_fingerprint(fresh) == first and len(hashed) == tables
    fresh.leads = fresh.leads.iloc[:-1]
    assert results_cache.dataset_fingerprint(fresh) != first and len(hashed) == tables + 1
    before = results_cache.dataset_fingerprint(fresh)
    fresh.size_classes = {}
    assert results_cache.dataset_fingerprint(fresh) != before  # the small parts are hashed on every call
    before = results_cache.dataset_fingerprint(fresh)
    fresh.calendars[data.orgs[0]] = FiscalCalendar(start_month=5)
    assert results_cache.dataset_fingerprint(fresh) != before and len(hashed) == tables + 1


def test_the_cached_detectors_leave_the_dataset_as_it_was(data):
    """Datasets are not changed in place (what lets a table's hash be kept on the dataset)."""
    from quarterpanic.analysis import early_warning as ew
    from quarterpanic.analysis import panic_index as pi

    before = {name: table.copy(deep=True) for name, table in data.tables().items()}
    params = defaults()
    findings = detect(data, params)
    detect_qualification_decay(data, params, features=opportunity_features(data, params))
    analyse_reactive(data, {**params, "by_segment": True})
    scores, index = pi.index_from_findings(findings, params, data)
    ew.early_warning(data, params, findings=findings)
    for name, table in data.tables().items():
        pd.testing.assert_frame_equal(table, before[name])
