"""Fixtures shared by the ingest tests."""
from __future__ import annotations

import pytest

from quarterpanic.ingest import exports


def lower_slice_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slice CSV files above 1 kB (head 600 bytes, tail 4 kB, footer searched in the last 10 records)."""
    monkeypatch.setattr(exports, "_SLICE_MIN_BYTES", 1 << 10)
    monkeypatch.setattr(exports, "_SLICE_HEAD_BYTES", 600)
    monkeypatch.setattr(exports, "_SLICE_TAIL_BYTES", 4 << 10)
    monkeypatch.setattr(exports, "_FOOTER_SEARCH_ROWS", 10)


@pytest.fixture(params=["whole", "sliced"])
def reader(request, monkeypatch):
    """Run a test through the whole-file CSV reader and through the sliced one (thresholds lowered)."""
    if request.param == "sliced":
        lower_slice_thresholds(monkeypatch)
    return request.param


@pytest.fixture
def small_slices(monkeypatch):
    """The sliced reader's thresholds lowered, for one test."""
    lower_slice_thresholds(monkeypatch)
