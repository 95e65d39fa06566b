"""Durations (``30s``, ``10m``, ``2h``, ``1d``) and byte sizes (``500MB``, ``2GiB``)."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


_LONGEST = 1000 * 86400  # far beyond any TTL or timeout; what a timedelta can hold


def parse_duration(text: str | int) -> timedelta:
    """Parse ``30s``/``10m``/``2h``/``1d`` (or a bare number of seconds). Raises ValueError."""
    if isinstance(text, bool):
        raise ValueError("a duration must look like 30s, 10m, 2h or 1d")
    if isinstance(text, int):
        seconds = text
    else:
        match = _DURATION.match(text)
        if not match:
            raise ValueError(f"{text!r} is not a duration: use 30s, 10m, 2h or 1d")
        seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    if seconds > _LONGEST:  # timedelta overflows past ~2.7 million years (OverflowError)
        raise ValueError("a duration must be at most 1000 days")
    return timedelta(seconds=seconds)


def parse_size(text: str | int) -> int:
    """Parse ``1048576``, ``500MB``, ``2GiB`` into bytes. Raises ValueError."""
    if isinstance(text, bool):
        raise ValueError("a size must look like 500MB or 2GiB")
    if isinstance(text, int):
        if text < 0:
            raise ValueError("a size cannot be negative")
        return text
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size: use bytes or 500MB, 2GiB")
    unit = (match.group(2) or "b").lower()
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def format_duration(delta: timedelta) -> str:
    """Shortest exact form: 90s -> ``90s``, 600s -> ``10m``."""
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
