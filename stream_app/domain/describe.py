"""One SIM as an operator asks about it: status, why, plan, usage, forecast, what's next."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from .commands import intended
from .engine import apply_tick
from .policy import Policy
from .quota import month_quota
from .reasons import timezone_of
from .state import SimState, copy_state
from .timeline import CANCEL, COMMAND, EXPIRE, EXPIRY_UPCOMING, GRACE_ENDING, MONTH_START, cancel_at, pending
from .timeutil import format_time, month_bounds

_EVENT_NAMES = {
    CANCEL: "cancel",
    MONTH_START: "month_start",
    EXPIRE: "expiry",
    GRACE_ENDING: "grace_ending",
    EXPIRY_UPCOMING: "expiry_upcoming",
    COMMAND: "command_retry",
}


def _time(value: datetime | None) -> str | None:
    return format_time(value) if value is not None else None


def describe(stored: SimState, now: datetime, policy: Policy) -> dict[str, Any]:
    """The SIM as of ``now``: a copy is rolled forward first, so a month start that is
    due but not yet swept already shows (the stored state is left untouched)."""
    state = apply_tick(copy_state(stored), now, policy).state
    sub = state.subscription
    used = state.usage(state.month).used_bytes if state.month in state.months else 0
    quota = month_quota(state, state.month)
    forecast = None
    if quota is not None and 0 < used < quota:
        month_start, month_end = month_bounds(state.month, timezone_of(state, policy))
        elapsed = (now - month_start).total_seconds()
        if elapsed > 0:
            seconds_left = (quota - used) * elapsed / used
            # compared before building a time: a huge quota would overflow the calendar
            if seconds_left < (month_end - now).total_seconds():
                at = now + timedelta(seconds=round(seconds_left))
                forecast = {"exhaustion_at": format_time(at), "before_month_end": True}
            else:
                forecast = {"exhaustion_at": None, "before_month_end": False}
    due = min(pending(state, policy))
    return {
        "iccid": state.iccid,
        "status": state.status,
        "reasons": sorted(state.reasons),
        "plan": None
        if sub is None
        else {
            "plan_id": sub.plan_id,
            "quota_bytes": sub.quota_bytes,
            "auto_suspend": sub.auto_suspend,
            "valid_from": format_time(sub.valid_from),
            "expires_at": _time(sub.expires_at),
            "timezone": timezone_of(state, policy),
            "warn_at": list(sub.warn_at if sub.warn_at is not None else policy.warn_at),
            "on_quota": sub.on_quota,
            "throttle_kbps": sub.throttle_kbps,
            "pool_id": sub.pool_id,
            "updated_at": format_time(sub.updated_at),
        },
        "month": state.month,
        "used_bytes": used,
        "month_quota_bytes": quota,
        "remaining_bytes": None if quota is None else max(quota - used, 0),
        "addons": [
            {"addon_id": addon_id, "month": month, "bytes": size}
            for addon_id, (month, size) in sorted(state.addons.items(), key=lambda a: (a[1][0], a[0]))
        ],
        "throttled": state.throttled,
        "pool": None
        if sub is None or sub.pool_id is None
        else {
            "pool_id": sub.pool_id,
            "exhausted": state.pool_hold is not None and state.pool_hold["pool_id"] == sub.pool_id,
            "until": state.pool_hold["until"] if state.pool_hold is not None else None,
            "counted_this_month": state.pool_used.get(sub.pool_id, {}).get(state.month, 0),
        },
        "intended_status": intended(state),
        "carrier": state.carrier,
        "pending_commands": [
            {
                "dimension": dimension,
                "command_id": p["command"]["command_id"],
                "action": p["command"]["action"],
                "reason": p["command"]["reason"],
                "attempt": p["attempt"],
                "waiting": "result" if p["waiting"] == "ack" else "resend",
                "until": p["due"],
            }
            for dimension, p in sorted(state.pending.items())
        ],
        "last_results": list(state.results),
        "forecast": forecast,
        "balance": state.balance,
        "expired_at": _time(state.expired_at),
        "cancel_at": _time(cancel_at(state, policy)) if state.expired_at else None,
        "next_due": {"event": _EVENT_NAMES[due.rank], "at": format_time(due.at)},
        "last_commands": list(state.history),
        "as_of": format_time(now),
    }
