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
POOL_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}", re.ASCII)
MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])", re.ASCII)
ON_QUOTA = ("suspend", "throttle", "notify")
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
class Addon:
    """An add-on pack (加油包): extra bytes for one billing month, counted once by id."""

    addon_id: str
    month: str
    bytes: int


@dataclass(frozen=True, slots=True)
class Subscription:
    iccid: str
    plan_id: str
    quota_bytes: int | None
    """The SIM's own monthly cap; None only for a pooled SIM with no cap of its own."""
    valid_from: datetime
    expires_at: datetime | None
    auto_suspend: bool
    warn_at: tuple[float, ...] | None
    """None: the worker's default thresholds."""
    timezone: str | None
    updated_at: datetime
    pool_id: str | None = None
    on_quota: str = "notify"
    """What happens when the month's quota is reached: suspend, throttle or notify
    (given, or suspend when auto_suspend is on, else notify; R23)."""
    throttle_kbps: int | None = None
    addons: tuple[Addon, ...] = ()

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
    """Validate a usage record. The time-dependent checks live in the engine.

    A record whose every field is plainly right (the common case) is taken at once;
    anything else goes through the checks one by one, which name the first problem.
    Both accept the same records and make the same value (tests/unit/test_inputs.py).
    """
    record_id, iccid, carrier = obj.get("record_id"), obj.get("iccid"), obj.get("carrier")
    start, end, up, down = obj.get("start"), obj.get("end"), obj.get("bytes_up"), obj.get("bytes_down")
    if (
        type(record_id) is str
        and record_id
        and type(carrier) is str
        and carrier
        and type(iccid) is str
        and iccid.isascii()
        and ICCID.fullmatch(iccid)  # upper case already: nothing to normalise
        and type(up) is int
        and type(down) is int
        and 0 <= up <= MAX_INTEGER
        and 0 <= down <= MAX_INTEGER
        and type(start) is str
        and type(end) is str
    ):
        try:
            begins, ends = parse_time(start), parse_time(end)
        except TimeFormatError:
            return _usage_record(obj)
        if ends >= begins:
            return UsageRecord(record_id, iccid, carrier, begins, ends, up, down)
    return _usage_record(obj)


def _usage_record(obj: dict[str, Any]) -> UsageRecord:
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


def pool_id_of(value: Any, name: str = "pool_id") -> str:
    if not isinstance(value, str) or not POOL_ID.fullmatch(value):
        raise InvalidInput("bad_pool_id", f"{name} must be 1-64 characters of A-Z a-z 0-9 . _ : -")
    return value


def addons_of(obj: dict[str, Any]) -> tuple[Addon, ...]:
    """The optional ``addons`` list: ``{addon_id, month, bytes}`` each (R22)."""
    value = obj.get("addons")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidInput("wrong_type", "addons must be a list of {addon_id, month, bytes}")
    addons = []
    for item in value:
        if not isinstance(item, dict):
            raise InvalidInput("wrong_type", "each add-on must be an object {addon_id, month, bytes}")
        month = _string(item, "month")
        if not MONTH.fullmatch(month):
            raise InvalidInput("bad_month", f"an add-on's month must be YYYY-MM, not {month!r}")
        addons.append(Addon(_string(item, "addon_id"), month, _byte_count(item, "bytes")))
    return tuple(addons)


def _on_quota(obj: dict[str, Any], auto_suspend: bool) -> tuple[str, int | None]:
    on_quota = obj.get("on_quota")
    if on_quota is None:
        on_quota = "suspend" if auto_suspend else "notify"
    elif on_quota not in ON_QUOTA:
        raise InvalidInput("bad_on_quota", f"on_quota must be suspend, throttle or notify, not {on_quota!r}")
    kbps = obj.get("throttle_kbps")
    if kbps is not None:
        kbps = _integer(obj, "throttle_kbps")
        if kbps <= 0:
            raise InvalidInput("wrong_type", "throttle_kbps must be a positive integer")
    if on_quota == "throttle" and kbps is None:
        raise InvalidInput("missing_field", "throttle_kbps is required with on_quota throttle")
    return on_quota, kbps


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
    iccid = iccid_of(obj)
    pool_id = obj.get("pool_id")
    if pool_id is not None:
        pool_id = pool_id_of(pool_id)
    if "quota_bytes" not in obj:
        raise InvalidInput("missing_field", "quota_bytes is required (null only for a pooled SIM)")
    if obj["quota_bytes"] is None and pool_id is None:
        raise InvalidInput("missing_field", "quota_bytes may be null only for a SIM in a pool")
    quota = None if obj["quota_bytes"] is None else _byte_count(obj, "quota_bytes")
    on_quota, kbps = _on_quota(obj, auto_suspend)
    return Subscription(
        iccid=iccid,
        plan_id=_string(obj, "plan_id"),
        quota_bytes=quota,
        valid_from=_time(obj, "valid_from"),
        expires_at=_time(obj, "expires_at") if obj.get("expires_at") is not None else None,
        auto_suspend=auto_suspend,
        warn_at=_warn_at(obj),
        timezone=tz,
        updated_at=_time(obj, "updated_at"),
        pool_id=pool_id,
        on_quota=on_quota,
        throttle_kbps=kbps,
        addons=addons_of(obj),
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


STATUSES = ("active", "suspended", "cancelled")
OUTCOMES = ("applied", "failed", "rejected")


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What provisioning did with a command (R24)."""

    result_id: str
    command_id: str
    iccid: str
    outcome: str
    """applied | failed | rejected"""
    at: datetime
    carrier_status: str | None
    throttled: bool | None
    detail: str | None


@dataclass(frozen=True, slots=True)
class CarrierStatus:
    """What the carrier says of a SIM: a status dump or its status API (R26)."""

    event_id: str
    iccid: str
    status: str
    throttled: bool | None
    at: datetime


def _optional_bool(obj: dict[str, Any], name: str) -> bool | None:
    value = obj.get(name)
    if value is not None and not isinstance(value, bool):
        raise InvalidInput("wrong_type", f"{name} must be true or false")
    return value


def _status(obj: dict[str, Any], name: str) -> str:
    value = _string(obj, name)
    if value not in STATUSES:
        raise InvalidInput("bad_status", f"{name} must be active, suspended or cancelled, not {value!r}")
    return value


def command_result(obj: dict[str, Any]) -> CommandResult:
    outcome = _string(obj, "outcome")
    if outcome not in OUTCOMES:
        raise InvalidInput("bad_outcome", f"outcome must be applied, failed or rejected, not {outcome!r}")
    detail = obj.get("detail")
    if detail is not None and not isinstance(detail, str):
        raise InvalidInput("wrong_type", "detail must be a string")
    return CommandResult(
        result_id=_string(obj, "result_id"),
        command_id=_string(obj, "command_id"),
        iccid=iccid_of(obj),
        outcome=outcome,
        at=_time(obj, "at"),
        carrier_status=_status(obj, "carrier_status") if obj.get("carrier_status") is not None else None,
        throttled=_optional_bool(obj, "throttled"),
        detail=detail,
    )


def carrier_status(obj: dict[str, Any]) -> CarrierStatus:
    return CarrierStatus(
        event_id=_string(obj, "event_id"),
        iccid=iccid_of(obj),
        status=_status(obj, "status"),
        throttled=_optional_bool(obj, "throttled"),
        at=_time(obj, "at"),
    )


@dataclass(frozen=True, slots=True)
class Pool:
    """A pool (流量池): members share one monthly allowance (R17-R21)."""

    pool_id: str
    quota_bytes: int
    auto_suspend: bool
    warn_at: tuple[float, ...] | None
    timezone: str | None
    addons: tuple[Addon, ...]
    updated_at: datetime

    @property
    def version_id(self) -> str:
        """Pools carry no id of their own; this one names the version (R16)."""
        return f"pool:{self.pool_id}@{format_time(self.updated_at)}"


def _timezone(obj: dict[str, Any]) -> str | None:
    tz = obj.get("timezone")
    if tz is None:
        return None
    if not isinstance(tz, str):
        raise InvalidInput("wrong_type", "timezone must be an IANA zone name")
    try:
        zone(tz)
    except ValueError:
        raise InvalidInput("bad_timezone", f"unknown time zone {tz!r}") from None
    return tz


def pool(obj: dict[str, Any]) -> Pool:
    auto_suspend = obj.get("auto_suspend", False)
    if auto_suspend is None:
        auto_suspend = False
    if not isinstance(auto_suspend, bool):
        raise InvalidInput("wrong_type", "auto_suspend must be true or false")
    return Pool(
        pool_id=pool_id_of(_require(obj, "pool_id")),
        quota_bytes=_byte_count(obj, "quota_bytes"),
        auto_suspend=auto_suspend,
        warn_at=_warn_at(obj),
        timezone=_timezone(obj),
        addons=addons_of(obj),
        updated_at=_time(obj, "updated_at"),
    )


@dataclass(frozen=True, slots=True)
class PoolNotice:
    """A pool to one of its members (internal, R18-R19): it ran out, or recovered."""

    iccid: str
    value: dict[str, Any]


def pool_notice(obj: dict[str, Any]) -> PoolNotice:
    """Validate a notice: written by stream-app itself, but read from a topic."""
    for name in ("pool_id", "action", "month", "until", "timezone", "trigger", "at"):
        _string(obj, name)
    if obj["action"] not in ("exhausted", "cleared"):
        raise InvalidInput("bad_action", "a pool notice says exhausted or cleared")
    episode = _integer(obj, "episode")
    _time(obj, "until")
    _time(obj, "at")
    return PoolNotice(iccid_of(obj), {**obj, "episode": episode, "iccid": iccid_of(obj)})
