"""Units: exact SI and binary prefixes, round trips, and clear rejections."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memsim.units import (
    UnitError,
    format_rate,
    format_size,
    format_time,
    parse_frequency,
    parse_rate,
    parse_size,
    parse_time,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("39 GB", 39 * 10**9),
        ("1.5 TiB", 3 * 2**39),
        ("4096 B", 4096),
        ("4096", 4096),
        (4096, 4096),
        ("1e9", 10**9),  # PyYAML hands 1e9 over as a string
        ("1 KiB", 1024),
        ("1 kB", 1000),
        ("2 MiB", 2 * 2**20),
        ("0.5 GB", 500_000_000),
        ("1_000 MB", 10**9),
        ("38.654705664 GB", 38_654_705_664),
    ],
)
def test_parse_size_exact(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("80 us", 80e-6), ("80 µs", 80e-6), ("8 ms", 8e-3), ("1.5 s", 1.5), ("100 ns", 1e-7),
     ("2 min", 120.0), (0.25, 0.25), ("0", 0.0)],
)
def test_parse_time(text, expected):
    assert parse_time(text) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4 GB/s", 4e9), ("250 MB/s", 250e6), ("1 Gbit/s", 125e6), ("1 Gb/s", 125e6),
     ("100 Mbps", 12.5e6), ("1 GiB/s", 2.0**30), ("85 MiB/s", 85 * 2.0**20), (1e9, 1e9)],
)
def test_parse_rate(text, expected):
    assert parse_rate(text) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize(
    ("func", "text", "quoted"),
    [
        (parse_size, "4 GBs", "GBs"),
        (parse_size, "3 Gb", "Gb"),  # bits are not a size
        (parse_size, "1.5 B", "1.5 B"),  # not whole bytes
        (parse_size, "-1 GB", "-1 GB"),
        (parse_size, "nan", "nan"),
        (parse_size, "lots", "lots"),
        (parse_time, "80 parsecs", "parsecs"),
        (parse_time, "-3 ms", "-3 ms"),
        (parse_rate, "4 GB", "GB"),  # a size is not a rate
        (parse_rate, "4 GB/h", "GB/h"),
        (parse_rate, "inf", "inf"),
    ],
)
def test_bad_units_quote_the_text(func, text, quoted):
    with pytest.raises(UnitError) as info:
        func(text)
    assert quoted in str(info.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True, None, [1]])
def test_non_numbers_rejected(value):
    with pytest.raises(UnitError):
        parse_size(value)


def test_si_and_binary_never_mixed():
    assert parse_size("1 GB") == 10**9
    assert parse_size("1 GiB") == 2**30
    assert format_size(10**9) == "1 GB"
    assert format_size(2**30, binary=True) == "1 GiB"
    assert format_size(2**30) == "1.074 GB"


def test_formatting():
    assert format_time(0.037748736) == "37.75 ms"
    assert format_time(80e-6) == "80 us"
    assert format_rate(4e9) == "4 GB/s"
    assert format_size(math.inf) == "unlimited"
    assert format_size(0) == "0 B"


@given(st.integers(min_value=1, max_value=10**18))
def test_size_round_trip_within_display_precision(n):
    # The printed size, parsed back, is within the 4 significant digits shown.
    assert parse_size(format_size(n).replace(" kB", " kB")) == pytest.approx(n, rel=5e-4, abs=1)


@given(st.floats(min_value=1e-9, max_value=1e4, allow_nan=False))
def test_time_round_trip(t):
    assert parse_time(format_time(t)) == pytest.approx(t, rel=5e-4)


def test_numpy_numbers_are_plain_numbers():
    import numpy as np

    assert parse_rate(np.float64(2.5e9)) == 2.5e9
    assert parse_size(np.int64(4096)) == 4096
    with pytest.raises(UnitError):
        parse_rate(np.float64("nan"))


@pytest.mark.parametrize(("func", "text"), [
    (parse_size, "1e400 B"), (parse_size, "10 QB"), (parse_rate, "1e400 B/s"),
    (parse_time, "1e400 s"), (parse_size, 10**40),
])
def test_absurd_magnitudes_rejected(func, text):
    with pytest.raises(UnitError):
        func(text)


@pytest.mark.parametrize("func", [parse_size, parse_time, parse_rate, parse_frequency])
@pytest.mark.parametrize("text", ["1e1000000 MB/s", "1e1000000", "1e-1000000 s",
                                  "9" * 5000, 10**5000, "1e999999999999999999999 B"],
                         ids=["e1000000-rate", "e1000000", "e-1000000", "5000-digits",
                              "int-5000-digits", "huge-exponent"])
def test_overflowing_numbers_are_unit_errors_naming_the_value(func, text):
    # decimal.Overflow, Python's 4,300-digit int limit: each is one UnitError, value cut short
    with pytest.raises(UnitError) as info:
        func(text)
    message = str(info.value)
    assert "\n" not in message and len(message) < 200
    if isinstance(text, str):
        assert text[:20] in message
