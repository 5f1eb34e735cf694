"""What time alone does to a SIM: month starts (R6), expiry, grace and cancellation,
retention charges (R11) and the expiry warnings (R12).

``pending`` lists the SIM's next timed events; ``advance`` applies, in time order, every
one that is due by now, each stamped with its own instant; ``due_at`` is the earliest,
which the worker's due index and replay use to know when to look at the SIM again.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from . import outputs as out
from .commands import dues, on_due
from .membership import end_hold, hold_ends
from .policy import Policy
from .quota import evaluate_month, over_quota
from .reasons import EXPIRY, QUOTA, Ctx, add_reason, cancel, clear_reason, timezone_of, unthrottle
from .state import SimState
from .timeutil import add_months, format_time, month_bounds, month_of, next_month

# Order of events at the same instant: a cancellation at midnight happens before that
# month starts (so no fee for a month the number never lives in); a month start before an
# expiry at the same midnight (so the new month's quota state is settled first).
CANCEL, MONTH_START, POOL_MONTH_START, EXPIRE, GRACE_ENDING, EXPIRY_UPCOMING, COMMAND = range(7)


class Due(NamedTuple):
    at: datetime
    rank: int
    days: int = 0
    """Days before expiry, for an expiry_upcoming warning."""
    dimension: str = ""
    """The pending command's dimension, for a command's timeout or resend (R24)."""


def cancel_at(state: SimState, policy: Policy) -> datetime | None:
    if state.expired_at is None:
        return None
    return add_months(state.expired_at, policy.grace_months, timezone_of(state, policy))


def pending(state: SimState, policy: Policy) -> list[Due]:
    events = [Due(month_bounds(state.month, timezone_of(state, policy))[1], MONTH_START)]
    events += [Due(at, COMMAND, 0, dimension) for at, dimension in dues(state)]
    if (hold_end := hold_ends(state)) is not None and not state.cancelled:
        events.append(Due(hold_end, POOL_MONTH_START))
    if state.cancelled:
        return events
    end = cancel_at(state, policy)
    if EXPIRY in state.reasons and end is not None and state.expired_at is not None:
        events.append(Due(end, CANCEL))
        if f"grace_ending|{format_time(state.expired_at)}" not in state.fired:
            events.append(Due(end - timedelta(days=policy.grace_warn_days), GRACE_ENDING))
        return events
    sub = state.subscription
    if sub is not None and sub.expires_at is not None:
        expires = format_time(sub.expires_at)
        if f"expired|{expires}" not in state.fired:
            events.append(Due(sub.expires_at, EXPIRE))
            events += [
                Due(sub.expires_at - timedelta(days=days), EXPIRY_UPCOMING, days)
                for days in policy.expiry_warn_days
                if f"expiry_upcoming|{expires}|{days}" not in state.fired
            ]
    return events


def due_at(state: SimState, policy: Policy) -> datetime:
    """The next instant at which time alone changes this SIM."""
    return min(pending(state, policy)).at


def advance(state: SimState, ctx: Ctx) -> None:
    """Apply every timed event due by ``ctx.now``, earliest first."""
    while True:
        events = pending(state, ctx.policy)
        due = min(events)
        if due.at > ctx.now:
            break
        if due.rank == MONTH_START:
            _month_start(state, ctx, due.at)
        elif due.rank == CANCEL:
            cancel(state, ctx, EXPIRY, "grace_elapsed", due.at, format_time(due.at))
        elif due.rank == EXPIRE:
            _expire(state, ctx, due.at)
        elif due.rank == GRACE_ENDING:
            _grace_ending(state, ctx, due.at)
        elif due.rank == COMMAND:
            ctx.emitted += on_due(state, due.dimension, due.at, ctx.now, ctx.policy)
        elif due.rank == POOL_MONTH_START:
            end_hold(state, ctx, due.at)
        else:
            _expiry_upcoming(state, ctx, [e for e in events if e.rank == EXPIRY_UPCOMING])


def _month_start(state: SimState, ctx: Ctx, boundary: datetime) -> None:
    """R6: clear ``quota`` and re-arm thresholds (they live per month); R23: the end of
    throttling; R11: the fee of every month started while suspended for expiry. Several
    missed months give one restore, stamped with the first boundary."""
    month = month_of(boundary, timezone_of(state, ctx.policy))
    state.month = month
    _forget_old_months(state, ctx)
    reached = over_quota(state, month, state.usage(month).used_bytes)
    if QUOTA in state.reasons and not reached:
        clear_reason(state, ctx, QUOTA, "month_start", boundary, None, month)
    if state.throttled and not reached:
        unthrottle(state, ctx, "month_start", boundary, None, month)
    if month in state.months:
        # Usage of the new month that arrived early (start within the allowed skew) gets
        # its suspension, thresholds and forecast now that its month is current.
        evaluate_month(state, ctx, month, "usage", None)
    if EXPIRY in state.reasons and not state.cancelled:
        _charge_retention(state, ctx, month, boundary)


def _expire(state: SimState, ctx: Ctx, at: datetime) -> None:
    """R11. An expiry learned late (a subscription arriving already expired) also
    charges every month started since, up to the cancellation."""
    state.fired.add(f"expired|{format_time(at)}")
    state.expired_at = at
    add_reason(state, ctx, EXPIRY, "expiry_time", at, None, format_time(at))
    tz = timezone_of(state, ctx.policy)
    end = cancel_at(state, ctx.policy)
    month = month_of(at, tz)
    _charge_retention(state, ctx, month, at)
    while month < state.month:
        month = next_month(month)
        started = month_bounds(month, tz)[0]
        if end is not None and started >= end:
            break
        _charge_retention(state, ctx, month, started)


def _charge_retention(state: SimState, ctx: Ctx, month: str, at: datetime) -> None:
    key = f"charge|{format_time(state.expired_at) if state.expired_at else ''}|{month}"
    if key in state.fired or state.expired_at is None:
        return
    state.fired.add(key)
    policy = ctx.policy
    ctx.emitted.append(
        out.charge(
            state.iccid,
            month,
            at,
            policy.retention_fee,
            policy.retention_currency,
            "number_retention",
            occasion=format_time(state.expired_at),
        )
    )


def _expiry_upcoming(state: SimState, ctx: Ctx, warnings: list[Due]) -> None:
    """R12. Catching up (a subscription arriving 5 days before expiry, a worker down for
    weeks) sends only the nearest warning that is due, never a stale 30-day one, stamped
    when it is actually sent and saying how long is really left."""
    sub = state.subscription
    assert sub is not None and sub.expires_at is not None
    expires = format_time(sub.expires_at)
    due = [w for w in warnings if w.at <= ctx.now]
    for warning in due:
        state.fired.add(f"expiry_upcoming|{expires}|{warning.days}")
    nearest = max(due)
    if sub.expires_at > ctx.now:
        ctx.emitted.append(
            out.alert(
                state.iccid,
                "expiry_upcoming",
                ctx.now,
                None,
                f"{expires}|{nearest.days}",
                expires_at=sub.expires_at,
                detail=f"the plan {sub.plan_id} expires in {_left(sub.expires_at - ctx.now)}",
            )
        )


def _grace_ending(state: SimState, ctx: Ctx, at: datetime) -> None:
    end = cancel_at(state, ctx.policy)
    assert end is not None
    assert state.expired_at is not None
    state.fired.add(f"grace_ending|{format_time(state.expired_at)}")
    if end > ctx.now:
        ctx.emitted.append(
            out.alert(
                state.iccid,
                "grace_ending",
                ctx.now,
                None,
                format_time(end),
                expires_at=state.expired_at,
                cancel_at=end,
                detail=f"the number is cancelled in {_left(end - ctx.now)} unless the plan is renewed",
            )
        )


def _left(span: timedelta) -> str:
    hours = span.total_seconds() / 3600
    return f"{hours / 24:.0f} day(s)" if hours >= 36 else f"{hours:.0f} hour(s)"


def forget_old_occasions(state: SimState) -> None:
    """Keep only the occasions of the current plan's expiry and of an expiry in force,
    so a SIM renewed every month for years does not accumulate them."""
    sub = state.subscription
    current = {format_time(t) for t in (state.expired_at, sub.expires_at if sub else None) if t}
    state.fired = {key for key in state.fired if key.split("|")[1] in current}


def _forget_old_months(state: SimState, ctx: Ctx) -> None:
    """Months that ended before the dedupe horizon can no longer change (R2, R3); looked
    at when a month starts, so a SIM holds at most the current and the previous months
    (plus those still within the horizon)."""
    tz = timezone_of(state, ctx.policy)
    cutoff = ctx.now - ctx.policy.dedupe_horizon
    for month in [m for m in state.months if m < state.month]:
        if month_bounds(month, tz)[1] <= cutoff:
            del state.months[month]
    for addon_id, (month, _size) in list(state.addons.items()):
        if month < state.month and month_bounds(month, tz)[1] <= cutoff:
            del state.addons[addon_id]
    for months in state.pool_used.values():
        for month in [m for m in months if m < state.month and month_bounds(m, tz)[1] <= cutoff]:
            del months[month]
