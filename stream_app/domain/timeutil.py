"""Instants, billing months and durations: stdlib only.

Instants are aware UTC datetimes. A billing month is the string ``"YYYY-MM"`` of a
calendar month in the SIM's billing time zone (R1); strings sort in time order, which
keeps comparisons cheap on the hot path.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "UTC",
    "format_time",
    "month_bounds",
    "month_of",
    "next_month",
    "parse_duration",
    "parse_time",
    "zone",
]


class TimeFormatError(ValueError):
    """A time string that is not RFC 3339 with an explicit offset."""


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII)


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 time with an explicit offset and return it in UTC.

    A naive time is refused: its meaning would depend on where the worker runs. The
    looser ISO 8601 forms ``fromisoformat`` would take (no seconds, ``+0800``, week
    dates) are refused too, so the worker agrees with schemas/ and with other languages.
    """
    if not isinstance(text, str) or not _RFC3339.fullmatch(text):
        raise TimeFormatError(f"not an RFC 3339 time with offset: {text!r}")
    try:
        value = datetime.fromisoformat(text[:-1] + "Z" if text[-1] == "z" else text)
    except ValueError as exc:
        raise TimeFormatError(f"not an RFC 3339 time: {text!r}") from exc
    if value.tzinfo is None:
        raise TimeFormatError(f"time without offset: {text!r}")
    if not 1970 <= value.year <= 9000:
        # Arithmetic on such times (months of grace, days of warning) would overflow.
        raise TimeFormatError(f"time out of range (years 1970-9000): {text!r}")
    return value.astimezone(UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix; microseconds only when present."""
    text = value.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; raises ``ValueError`` for an unknown one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def month_of(instant: datetime, tz: str) -> str:
    """The billing month of ``instant`` in zone ``tz`` (R1)."""
    local = instant.astimezone(zone(tz))
    return f"{local.year:04d}-{local.month:02d}"


def next_month(month: str) -> str:
    year, mon = int(month[:4]), int(month[5:7])
    return f"{year + 1:04d}-01" if mon == 12 else f"{year:04d}-{mon + 1:02d}"


@lru_cache(maxsize=4096)
def month_bounds(month: str, tz: str) -> tuple[datetime, datetime]:
    """UTC instants of 00:00 on the 1st of ``month`` and of the month after, in ``tz``."""

    def start(m: str) -> datetime:
        local = datetime(int(m[:4]), int(m[5:7]), 1, tzinfo=zone(tz))
        return local.astimezone(UTC)

    return start(month), start(next_month(month))


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str) -> timedelta:
    """``"7d"``, ``"72h"``, ``"15m"``, ``"10s"``, ``"500ms"`` or plain seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 7d, 72h, 15m, 10s)")
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def add_months(instant: datetime, months: int, tz: str) -> datetime:
    """The same local wall time ``months`` calendar months later in ``tz`` (day clamped
    to the month's end: 31 Jan + 1 month = 28/29 Feb)."""
    local = instant.astimezone(zone(tz))
    index = local.year * 12 + local.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    first_of_next = datetime(year + (month == 12), month % 12 + 1, 1)
    last_day = (first_of_next - timedelta(days=1)).day
    moved = local.replace(year=year, month=month, day=min(local.day, last_day), tzinfo=None)
    return moved.replace(tzinfo=zone(tz)).astimezone(UTC)
