"""Export values parsed, vectorised: trimmed text, dates in the vendors' formats, numbers with thousands separators and currency marks, yes/no flags.

Each parser returns the parsed values and a mask of the values that could not be parsed, so that loading can
reject those rows naming the raw value."""
from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

TRUE_WORDS = ("true", "yes", "y", "t", "1", "1.0", "x", "checked", "on")
FALSE_WORDS = ("false", "no", "n", "f", "0", "0.0", "unchecked", "off")
_DATE_FORMATS = {
    "month_first": ["%m/%d/%Y %I:%M %p", "%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S",
                    "%m/%d/%Y", "%m/%d/%y %I:%M %p", "%m/%d/%y %H:%M", "%m/%d/%y",
                    "%b/%d/%Y", "%b %d, %Y", "%B %d, %Y", "%b %d %Y"],
    "day_first": ["%d/%m/%Y %H:%M", "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %I:%M %p", "%d/%m/%Y",
                  "%d/%m/%y %H:%M", "%d/%m/%y", "%d/%b/%y %I:%M %p", "%d/%b/%Y %I:%M %p",
                  "%d/%b/%y %H:%M", "%d/%b/%Y %H:%M", "%d/%b/%y", "%d/%b/%Y", "%d/%B/%Y"],
    "iso": ["%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y/%m/%d"],
}
# Plain-string patterns in RE2's subset ([0-9] not \d, no \s, no look-arounds), so
# pandas runs them in pyarrow instead of Python's re, row by row.
_DATE_SEPARATORS = r"^([0-9]{1,2}|[A-Za-z]{3,9})[.\- ]([0-9]{1,2}|[A-Za-z]{3,9})[.\- ]([0-9]{2,4})($|[ T].*)"
_DATE_TIME_PATTERN = (r"^(?P<date>[0-9]{1,2}/[0-9]{1,2}/[0-9]{2,4}|[0-9]{1,2}/[A-Za-z]{3,9}/[0-9]{2,4}"
                      r"|[0-9]{4}[/-][0-9]{1,2}[/-][0-9]{1,2}) "
                      r"(?P<time>(?:[01]?[0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9])?(?: [AaPp][Mm])?)$")
_NUMBER_JUNK = "^[A-Za-z]{3}|[A-Za-z]{3}$|[$€£¥₹% \t  '’]"
NUMBER_PATTERN = {
    ".": r"^[+-]?([0-9]{1,3}(,[0-9]{3})+|[0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$",
    ",": r"^[+-]?([0-9]{1,3}(\.[0-9]{3})+|[0-9]*)(,[0-9]+)?$",
}
#: The dates a canonical (nanosecond) datetime column can hold: 1677-09-22 to 2262-04-11.
DATE_RANGE = (pd.Timestamp.min.ceil("D"), pd.Timestamp.max.floor("D"))
_DATE_SAMPLE = 500
_DISTINCT_MIN_ROWS = 1000
_DISTINCT_SAMPLE = 10000


def put_masked(values: pd.Series, mask: pd.Series, replacement: pd.Series) -> pd.Series:
    """``values`` with ``replacement`` (one value per True of ``mask``, in order) where ``mask``."""
    array, new = arrow_strings(values), arrow_strings(replacement)
    if array is not None and new is not None:
        # Arrow's kernel on Arrow strings: no round trip through a million Python objects.
        result = pc.replace_with_mask(array.combine_chunks(), pa.array(mask.to_numpy(dtype=bool)),
                                      new.combine_chunks().cast(array.type))
        return pd.Series(pd.array(result, dtype=values.dtype), index=values.index, name=values.name)
    if pd.api.types.is_string_dtype(values.dtype) and values.dtype != object:
        values = values.copy()
        values[mask.to_numpy()] = replacement.to_numpy()
        return values
    values = values.astype("object")
    values[mask] = replacement
    return values


def as_text(values: pd.Series) -> pd.Series:
    """``values`` as a string Series, missing values kept missing."""
    if pd.api.types.is_string_dtype(values.dtype) and values.dtype != object:
        return values
    text = values.map(_to_text, na_action="ignore") if values.dtype == object else values.astype("str")
    return text.astype("str").where(values.notna(), None)


def _to_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return str(value)


def each_distinct(values: pd.Series, function):
    """``function(values)`` for an element-wise ``function``, run once per distinct value.

    Export columns repeat their values (stages, owners, dates, round amounts):
    the work is done on the distinct values and spread back by code. Returns
    what ``function`` returns, a Series or a tuple of Series, on ``values``'s
    index. Object columns (cells of mixed types) and columns of mostly
    distinct values are passed to ``function`` as they are.
    """
    if values.dtype == object or len(values) < _DISTINCT_MIN_ROWS:
        return function(values)
    # Ids, names and timestamps hardly repeat: a sample says so before the whole column is hashed.
    sample = values.iloc[:_DISTINCT_SAMPLE]
    if sample.nunique() * 2 > len(sample):
        return function(values)
    if values.dtype.kind == "f":  # by bits: 0.0 and -0.0 print differently
        array = values.to_numpy()
        codes, uniques = pd.factorize(array.view(np.int64))
        uniques = uniques.view(array.dtype)
    else:
        codes, uniques = factorize(values)
    if len(uniques) * 2 > len(values):
        return function(values)
    # One missing value after the distinct ones stands for every missing row (code -1).
    distinct = pd.Series(uniques, dtype=values.dtype).reindex(range(len(uniques) + 1))
    codes = np.where(codes < 0, len(uniques), codes)
    result = function(distinct)

    def spread(part: pd.Series) -> pd.Series:
        return part.take(codes).set_axis(values.index)

    return tuple(spread(part) for part in result) if isinstance(result, tuple) else spread(result)


def arrow_strings(values: pd.Series) -> pa.ChunkedArray | None:
    """The Arrow array behind a pyarrow-backed string Series, else None."""
    array = getattr(values.array, "_pa_array", None)
    if array is None or not pa.types.is_string(array.type) and not pa.types.is_large_string(array.type):
        return None
    return array


def has_byte(array: pa.ChunkedArray | pa.Array, byte: bytes) -> bool:
    """Whether the character data of an Arrow string array may hold ``byte`` (a look at the raw bytes)."""
    code = ord(byte)
    chunks = array.chunks if isinstance(array, pa.ChunkedArray) else [array]
    for chunk in chunks:
        data = chunk.buffers()[2]
        if data is not None and data.size and (np.frombuffer(data, dtype=np.uint8) == code).any():
            return True
    return False


def factorize(values: pd.Series) -> tuple[np.ndarray, Any]:
    """``pd.factorize(values)``: codes (-1 for missing) and the distinct values in order of appearance.

    Arrow string columns are encoded by Arrow's hash kernel, which is faster
    than pandas's for them and gives the same codes.
    """
    array = arrow_strings(values)
    if array is None:
        return pd.factorize(values)
    # One chunk, so that every code refers to the same dictionary.
    encoded = pc.dictionary_encode(array.combine_chunks())
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.intp)
    return codes, pd.array(encoded.dictionary, dtype=values.dtype)


def clean_text(values: pd.Series) -> pd.Series:
    """Trimmed strings; empty strings become missing; CRLF inside values becomes LF."""
    array = arrow_strings(values)
    if array is None:
        text = as_text(values).str.strip().str.replace("\r\n", "\n", regex=False)
        return text.where(text != "", None)
    # Arrow's kernels on the whole column: cheaper than finding its distinct values first.
    text = pc.utf8_trim_whitespace(array)
    if has_byte(text, b"\r"):
        text = pc.replace_substring(text, "\r\n", "\n")
    text = pc.if_else(pc.equal(text, ""), pa.scalar(None, text.type), text)
    return pd.Series(pd.array(text, dtype=values.dtype), index=values.index, name=values.name)


def parse_dates(values: pd.Series, order: str, fmt: str | None = None) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Datetimes from export values, vectorised; a mask of values that are not dates; and of dates out of range.

    Strings are tried against the formats of ``order`` (``month_first``,
    ``day_first``, ``iso``; ISO 8601 is accepted in every order, and ``.``/``-``
    separators are read like ``/``), or only ``fmt`` when given. Datetime
    cells pass through; numbers (XLSX cells not formatted as dates) are Excel
    serial days. Time zones are converted to UTC and dropped. A date outside
    :data:`DATE_RANGE` (``12/31/9999``, ``1/1/1600``) is missing in the result
    and marked in both masks: the second says "not usable", the third "because
    of its range".
    """
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    far = pd.Series(False, index=values.index)
    if len(values) == 0:
        return out, far, far
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        out, far = _naive(values)
        return out, far, far
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        out, far = _from_serial(values)
        return out, far, far
    if values.dtype == object:
        is_time = values.map(lambda v: hasattr(v, "year"), na_action="ignore").fillna(False).astype(bool)
        is_number = values.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
                               na_action="ignore").fillna(False).astype(bool)
        if is_time.any():
            out[is_time], far[is_time] = _naive(pd.to_datetime(values[is_time].astype("object"), errors="coerce"))
        if is_number.any():
            out[is_number], far[is_number] = _from_serial(values[is_number].astype(float))
        values = values.where(~(is_time | is_number), None)
    # Exports repeat dates a lot: parse each distinct string once.
    codes, uniques = factorize(values)
    parsed, failed, outside = _parse_date_strings(clean_text(pd.Series(uniques, dtype="str")), order, fmt)
    known = codes >= 0
    out[known] = parsed.to_numpy()[codes[known]]
    far[known] = outside.to_numpy()[codes[known]]
    bad = far.copy()
    bad[known] |= failed.to_numpy()[codes[known]]
    return out, bad, far


def _parse_date_strings(text: pd.Series, order: str, fmt: str | None) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Dates of distinct strings, the strings no format reads, and those a format reads to a date out of range."""
    out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns]")
    far = pd.Series(False, index=text.index)
    todo = text.notna()
    if fmt:
        formats = [fmt]
    else:
        text = text.str.replace(_DATE_SEPARATORS, r"\1/\2/\3\4", regex=True)
        formats = (["ISO8601"] if order == "iso" else []) + _DATE_FORMATS[order] + \
                  ([] if order == "iso" else ["ISO8601"])
        split = _parse_date_and_time(text, order)
        out[split.notna()] = split[split.notna()]
        todo &= split.isna()
    tried: set[str] = set()
    while todo.any():
        form = _best_format(text[todo], [f for f in formats if f not in tried])
        if form is None:
            break
        tried.add(form)
        parsed = _strptime(text[todo], form)
        hit = parsed.notna()
        if hit.any():
            rows = hit[hit].index
            in_range, outside = _to_ns(parsed[hit])
            out[rows] = in_range
            far[rows] = outside
            todo[rows] = False
    return out, todo, far


@cache
def _date_time_formats(order: str) -> tuple[list[str], list[str], np.ndarray]:
    """The date and time halves of the ``order``'s date-time formats, and which pairs exist.

    ``pairs[d, t]`` is True when date format ``d`` followed by a space and time
    format ``t`` is one of the formats; the extra last row and column (code -1,
    nothing matched) are all False.
    """
    halves = []
    for form in _DATE_FORMATS[order]:
        cut = min((form.find(mark) for mark in (" %H", " %I") if mark in form), default=-1)
        if cut > 0:
            halves.append((form[:cut], form[cut + 1:]))
    halves += [("ISO8601", "%H:%M"), ("ISO8601", "%H:%M:%S")]
    dates = list(dict.fromkeys(d for d, _ in halves))
    times = list(dict.fromkeys(t for _, t in halves))
    pairs = np.zeros((len(dates) + 1, len(times) + 1), dtype=bool)
    for d, t in halves:
        pairs[dates.index(d), times.index(t)] = True
    return dates, times, pairs


def _parse_date_and_time(text: pd.Series, order: str) -> pd.Series:
    """Date-times of the common ``<date> <h:mm[:ss][ AM]>`` shape, parsing each date and time once.

    Timestamps repeat their date and their time of day far more than the
    whole: parsing the distinct halves and adding them is the same as parsing
    by the matching date-time format, because the formats of one order never
    both read the same text. Values of any other shape, or whose halves do not
    pair into one of the formats, stay NaT for the format-by-format parser.
    """
    out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns]")
    if len(text) == 0:
        return out
    parts = pc.extract_regex(pa.array(text, type=pa.large_string()), _DATE_TIME_PATTERN)
    date_formats, time_formats, pairs = _date_time_formats(order)
    date_codes, date_values, date_format = _parse_halves(parts.field("date"), date_formats)
    time_codes, time_values, time_format = _parse_halves(parts.field("time"), time_formats)
    time_values = time_values - np.datetime64("1900-01-01", "ns")
    # ISO 8601 wants a two-digit hour; the other formats take one or two digits.
    two_digit = pc.match_substring_regex(parts.field("time"), "^[0-9]{2}:").fill_null(False)
    iso = date_format[date_codes] == date_formats.index("ISO8601")
    ok = pairs[date_format[date_codes], time_format[time_codes]] & (~iso | two_digit.to_numpy(zero_copy_only=False))
    ok &= (date_codes >= 0) & (time_codes >= 0)
    # On the last day a nanosecond timestamp holds, adding the time of day can overflow
    # (and numpy wraps around silently): those few go to the format-by-format parser.
    ok[ok] &= date_values[date_codes[ok]] < np.datetime64(DATE_RANGE[1], "ns")
    out[ok] = date_values[date_codes[ok]] + time_values[time_codes[ok]]
    return out


def _parse_halves(halves: pa.Array, formats: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes of ``halves`` into their distinct values, each value parsed, and the format that read it.

    The format index is -1 (and the value NaT) for a value no format reads;
    a missing half has code -1.
    """
    encoded = pc.dictionary_encode(halves).combine_chunks() if isinstance(halves, pa.ChunkedArray) else \
        pc.dictionary_encode(halves)
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    distinct = pd.Series(encoded.dictionary.to_pylist(), dtype="str")
    values = np.full(len(distinct), np.datetime64("NaT"), dtype="datetime64[ns]")
    which = np.full(len(distinct) + 1, -1, dtype=np.int64)
    for i, form in enumerate(formats):
        todo = np.flatnonzero(which[:-1] < 0)
        if len(todo) == 0:
            break
        # A date out of range is no match here; the format-by-format parser names it.
        parsed = _to_ns(_strptime(distinct.iloc[todo].reset_index(drop=True), form))[0].to_numpy()
        hit = ~np.isnat(parsed)
        values[todo[hit]] = parsed[hit]
        which[todo[hit]] = i
    which[-1] = -1
    return codes, values, which


def _best_format(text: pd.Series, formats: list[str]) -> str | None:
    """The format that reads most of a sample of ``text``, else the first one left.

    Trying the likely format first keeps a million-row column to one or two
    passes; when nothing in the sample parses, every format is still tried.
    """
    if not formats:
        return None
    sample = text.iloc[:_DATE_SAMPLE]
    hits = []
    for i, form in enumerate(formats):
        count = int(_strptime(sample, form).notna().sum())
        if count == len(sample):
            return form
        hits.append((count, -i, form))
    best = max(hits)
    return best[2] if best[0] > 0 else formats[0]


def _strptime(text: pd.Series, form: str) -> pd.Series:
    if form == "ISO8601":
        iso = text[text.str.match(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}")]
        parsed = pd.to_datetime(iso, format=form, errors="coerce", utc=True).dt.tz_convert(None)
        return parsed.reindex(text.index)
    return pd.to_datetime(text, format=form, errors="coerce")


def _naive(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Datetimes (of any unit, with or without a time zone) as naive UTC nanoseconds, and which were out of range."""
    values = pd.to_datetime(values, errors="coerce")
    if getattr(values.dt, "tz", None) is not None:
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    return _to_ns(values)


def _to_ns(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Naive datetimes of any unit as ``datetime64[ns]``; those it cannot hold become NaT, flagged."""
    if values.dtype == "datetime64[ns]":
        return values, pd.Series(False, index=values.index)
    far = values.notna() & ((values < pd.Timestamp.min) | (values > pd.Timestamp.max))
    return values.mask(far).astype("datetime64[ns]"), far


#: Excel serial days (from 1899-12-30) that are dates in :data:`DATE_RANGE`.
_SERIAL_RANGE = tuple((bound.date() - pd.Timestamp("1899-12-30").date()).days for bound in DATE_RANGE)


def _from_serial(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Excel serial days as datetimes, and which were out of range (or infinite)."""
    serial = values.astype(float)
    far = serial.notna() & ~serial.between(_SERIAL_RANGE[0], _SERIAL_RANGE[1] + 1, inclusive="left")
    parsed = pd.to_datetime(serial.mask(far), unit="D", origin="1899-12-30", errors="coerce")
    return parsed.astype("datetime64[ns]"), far


def parse_numbers(values: pd.Series, decimal: str = ".") -> tuple[pd.Series, pd.Series]:
    """Floats from export values, vectorised, and a mask of values that are not numbers.

    Currency symbols and three-letter codes (``$12,500.00``, ``USD 12,500``,
    ``12.500,00 €``), spaces and apostrophes as thousands separators
    (``12 500``, ``12'500``) and ``%`` are removed; ``(1,200)`` is negative.
    ``decimal`` is the decimal mark: ``.`` (``1,234.56``) or ``,``
    (``1.234,56``). A value whose separators do not fit the decimal mark is
    reported, never guessed.
    """
    if len(values) == 0:
        return pd.Series(np.nan, index=values.index, dtype="float64"), pd.Series(False, index=values.index)
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("float64"), pd.Series(False, index=values.index)
    return each_distinct(values, lambda distinct: _parse_number_text(distinct, decimal))


def _parse_number_text(values: pd.Series, decimal: str) -> tuple[pd.Series, pd.Series]:
    cleaned = text = clean_text(values)
    negative = text.str.match(r"^\(.*\)$").fillna(False).astype(bool)
    text = text.str.strip("()").str.replace(_NUMBER_JUNK, "", regex=True)
    valid = text.str.match(NUMBER_PATTERN[decimal]).fillna(False).astype(bool) & text.str.contains("[0-9]")
    if decimal == ",":
        text = text.str.replace(".", "", regex=False).str.replace(",", ".", regex=False)
    else:
        text = text.str.replace(",", "", regex=False)
    numbers = pd.to_numeric(text.where(valid, None), errors="coerce").astype("float64")
    numbers = numbers.where(~negative, -numbers)
    bad = values.notna() & cleaned.notna() & numbers.isna()
    return numbers, bad


def parse_bools(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Nullable booleans from Yes/No, True/False, 1/0, Y/N, X/blank-style values."""
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("boolean"), pd.Series(False, index=values.index)
    return each_distinct(values, _parse_bool_text)


def _parse_bool_text(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    text = clean_text(values).str.lower()
    parsed = pd.Series(pd.NA, index=values.index, dtype="boolean")
    parsed[text.isin(TRUE_WORDS).to_numpy()] = True
    parsed[text.isin(FALSE_WORDS).to_numpy()] = False
    bad = text.notna() & parsed.isna()
    return parsed, bad
