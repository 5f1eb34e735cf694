"""The engine's inputs, and their validation from decoded JSON objects (R15).

Validation here is the single source of what a valid input is; schemas/ mirrors it and
a test checks the two agree. Errors carry a short stable ``code`` (a metric label and
the dead letter's ``error``) and a human ``detail``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .timeutil import TimeFormatError, format_time, parse_time, zone

ICCID = re.compile(r"89[0-9A-F]{17,18}", re.ASCII)
MAX_INTEGER = 2**53
"""Largest byte count or balance accepted: exact in every JSON reader, far beyond any SIM."""


class InvalidInput(ValueError):
    """An input message that breaks the contract; it goes to the dead-letter topic."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class UsageRecord:
    record_id: str
    iccid: str
    carrier: str
    start: datetime
    end: datetime
    bytes_up: int
    bytes_down: int

    @property
    def total_bytes(self) -> int:
        return self.bytes_up + self.bytes_down


@dataclass(frozen=True, slots=True)
class Subscription:
    iccid: str
    plan_id: str
    quota_bytes: int
    valid_from: datetime
    expires_at: datetime | None
    auto_suspend: bool
    warn_at: tuple[float, ...] | None
    """None: the worker's default thresholds."""
    timezone: str | None
    updated_at: datetime

    @property
    def subscription_id(self) -> str:
        """Subscriptions carry no id of their own; this one names the version (R16)."""
        return f"subscription:{self.iccid}@{format_time(self.updated_at)}"


def _require(obj: dict[str, Any], name: str) -> Any:
    if name not in obj or obj[name] is None:
        raise InvalidInput("missing_field", f"{name} is required")
    return obj[name]


def _string(obj: dict[str, Any], name: str) -> str:
    value = _require(obj, name)
    if not isinstance(value, str) or not value:
        raise InvalidInput("wrong_type", f"{name} must be a non-empty string")
    return value


def _integer(obj: dict[str, Any], name: str) -> int:
    value = _require(obj, name)
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON has one number type: 1.0 is the integer 1
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput("wrong_type", f"{name} must be an integer")
    if not -MAX_INTEGER <= value <= MAX_INTEGER:
        raise InvalidInput("wrong_type", f"{name} is out of range (|{name}| <= 2^53)")
    return value


def _byte_count(obj: dict[str, Any], name: str) -> int:
    value = _integer(obj, name)
    if value < 0:
        raise InvalidInput("negative_bytes", f"{name} is negative ({value})")
    return value


def _time(obj: dict[str, Any], name: str) -> datetime:
    value = _require(obj, name)
    try:
        return parse_time(value)
    except TimeFormatError as exc:
        raise InvalidInput("bad_time", f"{name}: {exc}") from None


def iccid_of(obj: dict[str, Any]) -> str:
    """The normalised ICCID of a message, or ``InvalidInput('bad_iccid')``."""
    value = _require(obj, "iccid")
    if not isinstance(value, str) or not value.isascii():
        raise InvalidInput("bad_iccid", "iccid must be an ASCII string")
    iccid = value.upper()
    if not ICCID.fullmatch(iccid):
        raise InvalidInput("bad_iccid", f"{value!r} is not 89 + 17-18 hex digits")
    return iccid


def usage_record(obj: dict[str, Any]) -> UsageRecord:
    """Validate a usage record. The time-dependent checks live in the engine."""
    start, end = _time(obj, "start"), _time(obj, "end")
    if end < start:
        raise InvalidInput("end_before_start", "end is before start")
    return UsageRecord(
        record_id=_string(obj, "record_id"),
        iccid=iccid_of(obj),
        carrier=_string(obj, "carrier"),
        start=start,
        end=end,
        bytes_up=_byte_count(obj, "bytes_up"),
        bytes_down=_byte_count(obj, "bytes_down"),
    )


def _warn_at(obj: dict[str, Any]) -> tuple[float, ...] | None:
    value = obj.get("warn_at")
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise InvalidInput("wrong_type", "warn_at must be a non-empty list of fractions")
    fractions = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int | float) or not 0 < item <= 1:
            raise InvalidInput("wrong_type", "warn_at fractions must lie in (0, 1]")
        fractions.append(float(item))
    return tuple(sorted(set(fractions)))


def subscription(obj: dict[str, Any]) -> Subscription:
    auto_suspend = obj.get("auto_suspend", False)
    if auto_suspend is None:
        auto_suspend = False
    if not isinstance(auto_suspend, bool):
        raise InvalidInput("wrong_type", "auto_suspend must be true or false")
    tz = obj.get("timezone")
    if tz is not None:
        if not isinstance(tz, str):
            raise InvalidInput("wrong_type", "timezone must be an IANA zone name")
        try:
            zone(tz)
        except ValueError:
            raise InvalidInput("bad_timezone", f"unknown time zone {tz!r}") from None
    return Subscription(
        iccid=iccid_of(obj),
        plan_id=_string(obj, "plan_id"),
        quota_bytes=_byte_count(obj, "quota_bytes"),
        valid_from=_time(obj, "valid_from"),
        expires_at=_time(obj, "expires_at") if obj.get("expires_at") is not None else None,
        auto_suspend=auto_suspend,
        warn_at=_warn_at(obj),
        timezone=tz,
        updated_at=_time(obj, "updated_at"),
    )


@dataclass(frozen=True, slots=True)
class BalanceEvent:
    event_id: str
    iccid: str
    at: datetime
    balance: int
    """Minor units (fen); negative means arrears."""
    currency: str


@dataclass(frozen=True, slots=True)
class ManualRequest:
    request_id: str
    iccid: str
    action: str
    """suspend | resume"""
    at: datetime
    requested_by: str


def balance_event(obj: dict[str, Any]) -> BalanceEvent:
    return BalanceEvent(
        event_id=_string(obj, "event_id"),
        iccid=iccid_of(obj),
        at=_time(obj, "at"),
        balance=_integer(obj, "balance"),
        currency=_string(obj, "currency"),
    )


def manual_request(obj: dict[str, Any]) -> ManualRequest:
    action = _string(obj, "action")
    if action not in ("suspend", "resume"):
        raise InvalidInput("bad_action", f"action must be suspend or resume, not {action!r}")
    return ManualRequest(
        request_id=_string(obj, "request_id"),
        iccid=iccid_of(obj),
        action=action,
        at=_time(obj, "at"),
        requested_by=_string(obj, "requested_by"),
    )
