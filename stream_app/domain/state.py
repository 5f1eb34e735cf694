"""Per-SIM state: everything the rules need to decide, in one value per ICCID.

One value holds the subscription, the reason set, the months' usage and fired alerts,
and the dedupe memory. Keeping the dedupe memory in the same value as the totals is
what makes at-least-once processing exact: a record reprocessed after a crash finds its
own id next to the total it was added to (R2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .inputs import Subscription
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
    seen: dict[str, float] = field(default_factory=dict)
    """record_id -> start (epoch seconds), kept while the start is within the horizon."""
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
    )


def state_to_dict(state: SimState) -> dict[str, Any]:
    """A JSON-ready mapping; compact because millions of these sit in the changelog."""
    return {
        "v": 1,
        "iccid": state.iccid,
        "month": state.month,
        "sub": _subscription_to_dict(state.subscription) if state.subscription else None,
        "reasons": sorted(state.reasons),
        "cancelled": state.cancelled,
        "months": {
            m: [u.used_bytes, u.thresholds_fired, u.forecast_fired, u.unknown_alerted, u.late_alerted]
            for m, u in state.months.items()
        },
        "seen": state.seen,
        "p": state.partition,
        "balance": state.balance,
        "balance_at": format_time(state.balance_at) if state.balance_at else None,
        "expired_at": format_time(state.expired_at) if state.expired_at else None,
        "fired": sorted(state.fired),
        "history": state.history,
    }


def state_from_dict(obj: dict[str, Any]) -> SimState:
    return SimState(
        iccid=obj["iccid"],
        month=obj["month"],
        subscription=_subscription_from_dict(obj["sub"]) if obj["sub"] else None,
        reasons=set(obj["reasons"]),
        cancelled=obj["cancelled"],
        months={m: MonthUsage(u[0], list(u[1]), u[2], u[3], u[4]) for m, u in obj["months"].items()},
        seen=dict(obj["seen"]),
        partition=obj["p"],
        balance=obj["balance"],
        balance_at=parse_time(obj["balance_at"]) if obj["balance_at"] else None,
        expired_at=parse_time(obj["expired_at"]) if obj["expired_at"] else None,
        fired=set(obj["fired"]),
        history=list(obj["history"]),
    )
