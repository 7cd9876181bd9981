"""quarterpanic.util: the UTC clock, JSON-safe values, finite numbers and file hashes."""
import datetime as dt
import hashlib
import json

import numpy as np
import pandas as pd

from quarterpanic.util import file_sha256, finite_or_none, jsonable, utc_now


def test_utc_now_is_iso_utc_to_the_second():
    stamp = dt.datetime.fromisoformat(utc_now())
    assert stamp.utcoffset() == dt.timedelta(0)
    assert stamp.microsecond == 0
    assert abs(dt.datetime.now(dt.timezone.utc) - stamp) < dt.timedelta(minutes=5)


def test_jsonable_turns_numpy_pandas_and_missing_values_into_plain_json():
    value = {
        1: np.int64(3),
        "ratio": np.float32(0.5),
        "flags": (np.bool_(True), False),
        "missing": [float("nan"), np.inf, -np.inf, pd.NA, pd.NaT, None],
        "when": pd.Timestamp("2026-03-31 12:00", tz="UTC"),
        "frame": pd.DataFrame({"org": ["Globex"], "share": [np.nan]}),
        "text": "kept",
    }
    out = jsonable(value)
    assert out == {
        "1": 3, "ratio": 0.5, "flags": [True, False], "missing": [None] * 6,
        "when": "2026-03-31T12:00:00+00:00", "frame": [{"org": "Globex", "share": None}], "text": "kept",
    }
    assert type(out["1"]) is int and type(out["ratio"]) is float and type(out["flags"][0]) is bool
    json.dumps(out, allow_nan=False)  # strict JSON: no NaN or Infinity left


def test_finite_or_none_keeps_finite_numbers_only():
    assert finite_or_none(np.float64(1.25)) == 1.25 and finite_or_none("2") == 2.0 and finite_or_none(0) == 0.0
    for value in (float("nan"), np.inf, None, "n/a", pd.NA, [1]):
        assert finite_or_none(value) is None


def test_file_sha256_hashes_the_bytes_of_any_size(tmp_path):
    small, large = tmp_path / "small.csv", tmp_path / "large.bin"
    small.write_bytes(b"org,amount\nGlobex,10\n")
    large.write_bytes(bytes(range(256)) * 40_000)  # larger than one read block
    for path in (small, large):
        assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert file_sha256(str(small)) == file_sha256(small)
