"""Parse and print sizes, times and rates.

Inside memsim everything is in SI base units: bytes, seconds, bytes per second. Units appear
only at the edges. Decimal prefixes are powers of 1000 (GB = 10^9 B), binary ones powers of
1024 (GiB = 2^30 B); the two are never mixed. Parsing is exact (decimal arithmetic), so
"1.5 TiB" is exactly 1,649,267,441,664 bytes.
"""

from __future__ import annotations

import math
import numbers
import re
from decimal import Decimal, InvalidOperation

from memsim.errors import scrub_userinfo

__all__ = [
    "UnitError",
    "parse_size",
    "parse_time",
    "parse_rate",
    "format_size",
    "format_time",
    "format_rate",
]


class UnitError(ValueError):
    """A quantity that could not be read; the message quotes the offending text."""


_DECIMAL = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
            "E": 10**18}
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}

SIZE_UNITS: dict[str, int] = {}
for _p, _m in {**_DECIMAL, **_BINARY}.items():
    SIZE_UNITS[f"{_p}B"] = _m
SIZE_UNITS.update({"bytes": 1, "byte": 1})

BIT_UNITS: dict[str, Decimal] = {}
for _p, _m in {**_DECIMAL, **_BINARY}.items():
    BIT_UNITS[f"{_p}bit"] = Decimal(_m) / 8
    BIT_UNITS[f"{_p}b"] = Decimal(_m) / 8

TIME_UNITS: dict[str, Decimal] = {
    "ns": Decimal("1e-9"), "us": Decimal("1e-6"), "µs": Decimal("1e-6"), "μs": Decimal("1e-6"),
    "ms": Decimal("1e-3"), "s": Decimal(1), "sec": Decimal(1), "min": Decimal(60),
    "h": Decimal(3600),
}

_NUMBER = r"[+-]?(?:\d+(?:_\d+)*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_QUANTITY = re.compile(rf"^\s*(?P<num>{_NUMBER})\s*(?P<unit>[^\d\s].*?)?\s*$")

_SIZE_HINT = 'a size like "39 GB", "1.5 TiB" or "4096 B"'
_TIME_HINT = 'a time like "80 us", "8 ms" or "1.5 s"'
_RATE_HINT = 'a rate like "4 GB/s", "250 MB/s" or "1 Gbit/s"'


MAX_EXPONENT = 60  # powers of ten a quantity may have: beyond is a typo or an attack
MIN_EXPONENT = -400  # below the smallest float (5e-324): nothing left to compute with


def _show(value: object, limit: int = 40) -> str:
    """`value` quoted for a message, cut to `limit` characters (a huge value is not echoed)."""
    try:
        text = value if isinstance(value, str) else str(value)
    except ValueError:  # an int over Python's 4,300 digits for int -> str
        return "(a number of thousands of digits)"
    text = scrub_userinfo(text)
    text = text if len(text) <= limit else text[:limit] + "..."
    return '"' + text.replace("\n", " ") + '"'


def _split(value: object, kind: str, hint: str) -> tuple[Decimal, str]:
    """Split `value` into an exact number and a unit string ('' when there is none), refusing
    numbers beyond 10^+-MAX_EXPONENT (so no decimal overflow, and no absurd work, later)."""
    number, unit = _split_raw(value, kind, hint)
    if number != 0 and not MIN_EXPONENT <= number.adjusted() <= MAX_EXPONENT:
        raise UnitError(f"the number in {_show(value)} is out of range for {kind} "
                        f"(memsim reads numbers up to 10^{MAX_EXPONENT})")
    return number, unit


def _split_raw(value: object, kind: str, hint: str) -> tuple[Decimal, str]:
    """Split `value` into an exact number and a unit string ('' when there is none)."""
    if isinstance(value, bool):
        raise UnitError(f"expected {hint}, got {_show(value)}")
    if isinstance(value, numbers.Integral):  # int, numpy integers
        return Decimal(int(value)), ""
    if isinstance(value, numbers.Real):  # float, numpy floats
        number = float(value)
        if not math.isfinite(number):
            raise UnitError(f"{kind} must be a finite number, got {number!r}")
        return Decimal(repr(number)), ""
    if not isinstance(value, str):
        raise UnitError(f"expected {hint}, got {_show(value)}")
    text = value.strip()
    if text.lower() in {"nan", "inf", "+inf", "-inf", "infinity", ".nan", ".inf"}:
        raise UnitError(f"{kind} must be a finite number, got {_show(value)}")
    match = _QUANTITY.match(text)
    if not match:
        raise UnitError(f"cannot read {_show(value)} as {hint}")
    try:
        number = Decimal(match["num"].replace("_", ""))
    except (InvalidOperation, ValueError):
        raise UnitError(f"cannot read the number in {_show(value)}") from None
    return number, (match["unit"] or "")


def _nonnegative(number: Decimal, value: object, kind: str) -> None:
    if number < 0:
        raise UnitError(f"{kind} must not be negative, got {_show(value)}")


MAX_BYTES = 10**30  # a million yottabytes: anything above is a typo or an attack


def _finite(seconds_or_rate: Decimal, value: object, kind: str) -> float:
    result = float(seconds_or_rate)
    if not math.isfinite(result):
        raise UnitError(f"{kind} {_show(value)} is too large to represent")
    return result


def size_field(value: object, field: str) -> int | None:
    """Bytes in an optional size option (None stays None); a bad value is an InputError
    naming `field`, so a command line and a spec file report it alike."""
    from memsim.errors import InputError

    if value is None:
        return None
    try:
        return parse_size(value)
    except UnitError as exc:
        raise InputError(str(exc), field=field) from None


def parse_size(value: object) -> int:
    """Bytes in `value` ("39 GB", "1.5 TiB", 4096). A plain number is bytes."""
    number, unit = _split(value, "a size", _SIZE_HINT)
    _nonnegative(number, value, "a size")
    if unit in SIZE_UNITS:
        exact = number * SIZE_UNITS[unit]
    elif unit == "":
        exact = number
    elif unit in BIT_UNITS:
        raise UnitError(f"unit '{unit}' in {_show(value)} is bits; sizes are in bytes "
                        '(e.g. "GB")')
    else:
        raise UnitError(f"unknown size unit '{unit}' in {_show(value)}; expected {_SIZE_HINT}")
    if exact != exact.to_integral_value():
        raise UnitError(f"{_show(value)} is not a whole number of bytes")
    if exact > MAX_BYTES:
        raise UnitError(f"{_show(value)} is beyond any real device (over 10^30 bytes); "
                        "for no limit write \"unlimited\"")
    return int(exact)


def _parse_scaled(value: object, kind: str, article: str, hint: str,
                  units: dict[str, Decimal], other: dict[str, Decimal] | None = None,
                  other_hint: str = "") -> float:
    """A non-negative finite `kind` in `value`, scaled by its unit in `units` (a plain
    number is in base units); a unit of the `other` quantity gets `other_hint` in the
    message (a power given as an energy)."""
    number, unit = _split(value, f"{article} {kind}", hint)
    _nonnegative(number, value, f"{article} {kind}")
    if unit == "":
        return _finite(number, value, kind)
    if unit not in units:
        extra = other_hint if other is not None and unit in other else ""
        raise UnitError(f"unknown {kind} unit '{unit}' in {_show(value)}; expected "
                        f"{hint}{extra}")
    return _finite(number * units[unit], value, kind)


def parse_time(value: object) -> float:
    """Seconds in `value` ("80 us", "8 ms", 0.5). A plain number is seconds."""
    return _parse_scaled(value, "time", "a", _TIME_HINT, TIME_UNITS)


def parse_rate(value: object) -> float:
    """Bytes per second in `value` ("4 GB/s", "1 Gbit/s", "100 Mbps"). A plain number is B/s."""
    number, unit = _split(value, "a rate", _RATE_HINT)
    _nonnegative(number, value, "a rate")
    if unit == "":
        return _finite(number, value, "rate")
    per_second: Decimal | None = None
    if unit.endswith("ps") and unit[:-2] + "it" in BIT_UNITS:  # "Mbps", "Gbps"
        per_second = BIT_UNITS[unit[:-2] + "it"]
    elif "/" in unit:
        head, _, tail = unit.partition("/")
        if tail.strip() in {"s", "sec"}:
            head = head.strip()
            if head in SIZE_UNITS:
                per_second = Decimal(SIZE_UNITS[head])
            elif head in BIT_UNITS:
                per_second = BIT_UNITS[head]
    if per_second is None:
        raise UnitError(f"unknown rate unit '{unit}' in {_show(value)}; expected {_RATE_HINT}")
    return _finite(number * per_second, value, "rate")


def _significant(x: float, digits: int) -> str:
    text = f"{x:.{digits}g}"
    if "e" in text:  # keep plain notation for people
        text = f"{x:.{max(digits - 1 - int(math.floor(math.log10(abs(x)))), 0)}f}"
    return text


def _scaled(x: float, steps: list[tuple[float, str]], digits: int) -> str:
    if x != x:
        return "nan"
    if math.isinf(x):
        return "unlimited" if x > 0 else "-inf"
    for scale, name in steps:
        if abs(x) >= scale:
            return f"{_significant(x / scale, digits)} {name}"
    scale, name = steps[-1]
    return f"{_significant(x / scale, digits)} {name}"


_SI_SIZE = [(1e18, "EB"), (1e15, "PB"), (1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB"),
            (1.0, "B")]
_BIN_SIZE = [(2.0**60, "EiB"), (2.0**50, "PiB"), (2.0**40, "TiB"), (2.0**30, "GiB"),
             (2.0**20, "MiB"), (2.0**10, "KiB"), (1.0, "B")]
_TIMES = [(3600.0, "h"), (60.0, "min"), (1.0, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns")]


def format_size(n: float, *, binary: bool = False, digits: int = 4) -> str:
    """Human size: `format_size(38654705664)` -> "38.65 GB"."""
    if n == 0:
        return "0 B"
    return _scaled(float(n), _BIN_SIZE if binary else _SI_SIZE, digits)


def format_time(t: float, *, digits: int = 4) -> str:
    """Human time: `format_time(0.03775)` -> "37.75 ms"."""
    if t == 0:
        return "0 s"
    return _scaled(float(t), _TIMES, digits)


def format_rate(r: float, *, binary: bool = False, digits: int = 4) -> str:
    """Human rate: `format_rate(4e9)` -> "4 GB/s"."""
    return format_size(r, binary=binary, digits=digits) + "/s"


_FREQUENCY_HINT = 'a rate of queries like "20/s", "20 qps", "1200/min" or "20 Hz"'
_PER_SECOND: dict[str, Decimal] = {"qps": Decimal(1), "hz": Decimal(1), "khz": Decimal(1000)}


def parse_frequency(value: object) -> float:
    """Events per second in `value` ("20/s", "20 per s", "20 qps", "1200/min", "20 Hz").

    A plain number is per second. Zero is allowed here (an idle period); callers that need a
    positive rate check that themselves.
    """
    number, unit = _split(value, "a frequency", _FREQUENCY_HINT)
    _nonnegative(number, value, "a frequency")
    if unit == "":
        return _finite(number, value, "frequency")
    text = unit.strip()
    per_second: Decimal | None = _PER_SECOND.get(text.lower())
    if per_second is None:
        per: str | None = None
        if text.startswith("/"):
            per = text[1:].strip()
        elif text.lower().startswith("per "):
            per = text[4:].strip()
        if per in TIME_UNITS:
            per_second = 1 / TIME_UNITS[per]
    if per_second is None:
        raise UnitError(
            f"unknown frequency unit '{unit}' in {_show(value)}; expected {_FREQUENCY_HINT}"
        )
    return _finite(number * per_second, value, "frequency")


__all__.append("parse_frequency")


# ----------------------------------------------------------------------------- energy and power
ENERGY_UNITS: dict[str, Decimal] = {
    "J": Decimal(1), "kJ": Decimal(10**3), "MJ": Decimal(10**6), "mJ": Decimal("1e-3"),
    "uJ": Decimal("1e-6"), "µJ": Decimal("1e-6"), "μJ": Decimal("1e-6"), "nJ": Decimal("1e-9"),
    "pJ": Decimal("1e-12"), "fJ": Decimal("1e-15"), "Wh": Decimal(3600),
    "kWh": Decimal(3_600_000), "mWh": Decimal("3.6"),
}
POWER_UNITS: dict[str, Decimal] = {
    "W": Decimal(1), "kW": Decimal(10**3), "mW": Decimal("1e-3"), "uW": Decimal("1e-6"),
    "µW": Decimal("1e-6"), "μW": Decimal("1e-6"), "nW": Decimal("1e-9"),
}

_ENERGY_HINT = 'an energy like "20 uJ", "0.1 mJ" or "1.5 J"'
_PER_BYTE_HINT = 'an energy per byte like "0.5 nJ/B", "4 pJ/bit" or "0.1 J/MB"'
_POWER_HINT = 'a power like "1.5 W", "250 mW" or "40 mW"'


def parse_energy(value: object) -> float:
    """Joules in `value` ("20 uJ", "0.1 mJ", "2 Wh"). A plain number is joules."""
    return _parse_scaled(value, "energy", "an", _ENERGY_HINT, ENERGY_UNITS, POWER_UNITS,
                         " (that is a power: energy is power x time)")


def parse_energy_per_byte(value: object) -> float:
    """Joules per byte in `value` ("0.5 nJ/B", "4 pJ/bit", "0.1 J/MB"). A plain number is
    J/B. Per-bit figures are multiplied by 8: a byte is 8 bits."""
    number, unit = _split(value, "an energy per byte", _PER_BYTE_HINT)
    _nonnegative(number, value, "an energy per byte")
    if unit == "":
        return _finite(number, value, "energy per byte")
    head, slash, tail = unit.partition("/")
    head, tail = head.strip(), tail.strip()
    if not slash or head not in ENERGY_UNITS:
        raise UnitError(f"unknown energy-per-byte unit '{unit}' in {_show(value)}; expected "
                        f"{_PER_BYTE_HINT}")
    if tail in SIZE_UNITS:
        per = Decimal(SIZE_UNITS[tail])
    elif tail in BIT_UNITS:
        per = BIT_UNITS[tail]
    else:
        raise UnitError(f"unknown unit '{tail}' after '/' in {_show(value)}: energy is per "
                        'byte or bit (e.g. "nJ/B", "pJ/bit", "J/MB")')
    return _finite(number * ENERGY_UNITS[head] / per, value, "energy per byte")


def parse_power(value: object) -> float:
    """Watts in `value` ("1.5 W", "250 mW"). A plain number is watts."""
    return _parse_scaled(value, "power", "a", _POWER_HINT, POWER_UNITS, ENERGY_UNITS,
                         " (that is an energy, not a power)")


_ENERGIES = [(1e6, "MJ"), (1e3, "kJ"), (1.0, "J"), (1e-3, "mJ"), (1e-6, "uJ"), (1e-9, "nJ"),
             (1e-12, "pJ"), (1e-15, "fJ")]
_POWERS = [(1e3, "kW"), (1.0, "W"), (1e-3, "mW"), (1e-6, "uW"), (1e-9, "nW")]


def format_energy(j: float, *, digits: int = 4) -> str:
    """Human energy: `format_energy(0.00123)` -> "1.23 mJ"."""
    if j == 0:
        return "0 J"
    return _scaled(float(j), _ENERGIES, digits)


def format_power(w: float, *, digits: int = 4) -> str:
    """Human power: `format_power(0.25)` -> "250 mW"."""
    if w == 0:
        return "0 W"
    return _scaled(float(w), _POWERS, digits)


def format_energy_per_byte(j_per_byte: float, *, digits: int = 4) -> str:
    """Human energy per byte: `format_energy_per_byte(5e-10)` -> "500 pJ/B"."""
    return format_energy(j_per_byte, digits=digits) + "/B"


__all__ += ["parse_energy", "parse_energy_per_byte", "parse_power", "format_energy",
            "format_power", "format_energy_per_byte"]
