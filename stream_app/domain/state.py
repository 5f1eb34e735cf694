"""Per-SIM state: everything the rules need to decide about one ICCID.

The subscription, the reason set, the months' usage and fired alerts, and the dedupe
memory (memory.py). How it is stored (codec.py) keeps the month's total and the newest
remembered ids in one value: that is what makes at-least-once processing exact, since a
record processed again after a crash finds its own id next to the total it was added
to (R2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .inputs import Addon, Subscription
from .memory import IdMemory
from .timeutil import format_time, parse_time

ACTIVE, SUSPENDED, CANCELLED = "active", "suspended", "cancelled"
HISTORY_LENGTH = 5


@dataclass(slots=True)
class MonthUsage:
    """One billing month of one SIM."""

    used_bytes: int = 0
    thresholds_fired: list[float] = field(default_factory=list)
    forecast_fired: bool = False
    unknown_alerted: bool = False
    late_alerted: bool = False


@dataclass(slots=True)
class SimState:
    iccid: str
    month: str
    """The billing month the state has been rolled forward to (R6)."""
    subscription: Subscription | None = None
    reasons: set[str] = field(default_factory=set)
    cancelled: bool = False
    months: dict[str, MonthUsage] = field(default_factory=dict)
    ids: IdMemory = field(default_factory=IdMemory)
    """The record ids (and request ids) counted, while their start is within the horizon."""
    partition: int | None = None
    """The input partition the SIM lives in; lets a worker find its own SIMs after recovery."""
    balance: int | None = None
    balance_at: datetime | None = None
    """Time of the balance event that set ``balance``; older events are ignored."""
    expired_at: datetime | None = None
    """The expiry time that put ``expiry`` in the set; the grace period counts from it."""
    fired: set[str] = field(default_factory=set)
    """Lifecycle occasions already acted on (expiry, warnings, charges), so each happens once."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """The last commands sent, newest last (for "why is this card stopped?")."""
    addons: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Add-on packs counted (R22): addon_id -> (month, bytes), each id once, kept while
    its month is kept."""
    throttled: bool = False
    """Slowed down for reaching the quota (R23): a dimension of its own, not a reason."""
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The command pending in each dimension (suspension, throttling) with its attempt,
    failures and next due time (R24)."""
    carrier: dict[str, Any] | None = None
    """The carrier's last known status: status, throttled, at, source (R26)."""
    results: list[dict[str, Any]] = field(default_factory=list)
    """The last command results received, newest last."""
    gave_up: dict[str, str] = field(default_factory=dict)
    """Per dimension, the intent whose command failed for good (no drift repair towards
    it until the intent changes)."""
    pool_used: dict[str, dict[str, int]] = field(default_factory=dict)
    """What the SIM counted for each pool it was in, per pool month (R17)."""
    pool_hold: dict[str, Any] | None = None
    """Its pool ran out: pool_id, month, episode, until (when ``pool`` clears, R19)."""
    pool_zone: str | None = None
    """Its pool's time zone, as the pool's last notice said."""

    @property
    def status(self) -> str:
        if self.cancelled:
            return CANCELLED
        return SUSPENDED if self.reasons else ACTIVE

    def usage(self, month: str) -> MonthUsage:
        found = self.months.get(month)
        if found is None:
            found = self.months[month] = MonthUsage()
        return found


_UNUSED = MonthUsage()


def _subscription_to_dict(sub: Subscription) -> dict[str, Any]:
    return {
        "iccid": sub.iccid,
        "plan_id": sub.plan_id,
        "quota_bytes": sub.quota_bytes,
        "valid_from": format_time(sub.valid_from),
        "expires_at": format_time(sub.expires_at) if sub.expires_at else None,
        "auto_suspend": sub.auto_suspend,
        "warn_at": list(sub.warn_at) if sub.warn_at is not None else None,
        "timezone": sub.timezone,
        "updated_at": format_time(sub.updated_at),
        "pool_id": sub.pool_id,
        "on_quota": sub.on_quota,
        "throttle_kbps": sub.throttle_kbps,
        "addons": [[a.addon_id, a.month, a.bytes] for a in sub.addons],
    }


def _subscription_from_dict(obj: dict[str, Any]) -> Subscription:
    return Subscription(
        iccid=obj["iccid"],
        plan_id=obj["plan_id"],
        quota_bytes=obj["quota_bytes"],
        valid_from=parse_time(obj["valid_from"]),
        expires_at=parse_time(obj["expires_at"]) if obj["expires_at"] else None,
        auto_suspend=obj["auto_suspend"],
        warn_at=tuple(obj["warn_at"]) if obj["warn_at"] is not None else None,
        timezone=obj["timezone"],
        updated_at=parse_time(obj["updated_at"]),
        pool_id=obj.get("pool_id"),
        on_quota=obj.get("on_quota") or ("suspend" if obj["auto_suspend"] else "notify"),
        throttle_kbps=obj.get("throttle_kbps"),
        addons=tuple(Addon(*a) for a in obj.get("addons", ())),
    )


def profile_to_dict(state: SimState) -> dict[str, Any]:
    """Everything but the identity, the month and the dedupe memory, JSON-ready."""
    return {
        "sub": _subscription_to_dict(state.subscription) if state.subscription else None,
        "reasons": sorted(state.reasons),
        "cancelled": state.cancelled,
        "months": {
            m: [u.used_bytes, u.thresholds_fired, u.forecast_fired, u.unknown_alerted, u.late_alerted]
            for m, u in state.months.items()
            if u != _UNUSED  # an untouched month is the same as no month
        },
        "p": state.partition,
        "balance": state.balance,
        "balance_at": format_time(state.balance_at) if state.balance_at else None,
        "expired_at": format_time(state.expired_at) if state.expired_at else None,
        "fired": sorted(state.fired),
        "history": state.history,
        "addons": state.addons,
        "throttled": state.throttled,
        "pending": state.pending,
        "carrier": state.carrier,
        "results": state.results,
        "gave_up": state.gave_up,
        "pool_used": state.pool_used,
        "pool_hold": state.pool_hold,
        "pool_zone": state.pool_zone,
    }


def profile_from_dict(iccid: str, month: str, ids: IdMemory, obj: dict[str, Any]) -> SimState:
    return SimState(
        iccid=iccid,
        month=month,
        subscription=_subscription_from_dict(obj["sub"]) if obj["sub"] else None,
        reasons=set(obj["reasons"]),
        cancelled=obj["cancelled"],
        months={m: MonthUsage(u[0], list(u[1]), u[2], u[3], u[4]) for m, u in obj["months"].items()},
        ids=ids,
        partition=obj["p"],
        balance=obj["balance"],
        balance_at=parse_time(obj["balance_at"]) if obj["balance_at"] else None,
        expired_at=parse_time(obj["expired_at"]) if obj["expired_at"] else None,
        fired=set(obj["fired"]),
        history=list(obj["history"]),
        addons={k: (v[0], v[1]) for k, v in obj.get("addons", {}).items()},
        throttled=obj.get("throttled", False),
        pending={k: dict(v) for k, v in obj.get("pending", {}).items()},
        carrier=obj.get("carrier"),
        results=list(obj.get("results", ())),
        gave_up=dict(obj.get("gave_up", {})),
        pool_used={k: dict(v) for k, v in obj.get("pool_used", {}).items()},
        pool_hold=obj.get("pool_hold"),
        pool_zone=obj.get("pool_zone"),
    )


def copy_state(state: SimState) -> SimState:
    """An independent copy (the memory's parts are immutable bytes, shared safely)."""
    return profile_from_dict(state.iccid, state.month, IdMemory(*state.ids.parts()), profile_to_dict(state))


def canonical(state: SimState) -> dict[str, Any]:
    """The state as a plain value: two states that decide alike compare equal (an
    untouched month and no month are the same)."""
    return {
        "iccid": state.iccid,
        "month": state.month,
        "ids": state.ids.parts(),
        **profile_to_dict(state),
    }
