"""The quota engine: state + input + now -> state + outputs. No I/O, no clock.

The engine takes ownership of the state it is given and returns it updated (mutating
in place keeps the hot path free of copies; callers never reuse the old value).
Every step first rolls the SIM forward to ``now`` (R6), so whatever was due happens
before the input is applied, whether a tick or an input brought ``now`` past it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from . import outputs as out
from .inputs import Subscription, UsageRecord
from .outputs import Output, Rejection
from .state import MonthUsage, SimState
from .timeutil import month_bounds, month_of, next_month

QUOTA = "quota"


@dataclass(frozen=True, slots=True)
class Policy:
    """The worker-wide rules' parameters (from settings.py)."""

    timezone: str = "Asia/Shanghai"
    warn_at: tuple[float, ...] = (0.8, 0.9, 1.0)
    dedupe_horizon: timedelta = timedelta(days=7)
    forecast_horizon: timedelta = timedelta(hours=72)
    max_future_skew: timedelta = timedelta(minutes=15)
    dedupe_max_ids: int = 200_000
    """Safety cap per SIM; past it the oldest ids are forgotten (counted as evictions)."""


class Step(NamedTuple):
    state: SimState
    outputs: list[Output]
    outcome: str
    """accepted | duplicate | late | unknown_sim | stale | rejected | tick"""
    rejection: Rejection | None = None


@dataclass(slots=True)
class _Ctx:
    """What one step knows while deciding: when, because of what, and what it emits."""

    now: datetime
    policy: Policy
    emitted: list[Output] = field(default_factory=list)


def new_state(iccid: str, now: datetime, policy: Policy) -> SimState:
    return SimState(iccid=iccid, month=month_of(now, policy.timezone))


def timezone_of(state: SimState, policy: Policy) -> str:
    sub = state.subscription
    return sub.timezone if sub is not None and sub.timezone else policy.timezone


def due_at(state: SimState, policy: Policy) -> datetime:
    """The next instant at which time alone changes this SIM: its next month start."""
    return month_bounds(state.month, timezone_of(state, policy))[1]


# --- reason set (R5) ---------------------------------------------------------------


def _add_reason(
    state: SimState,
    ctx: _Ctx,
    reason: str,
    trigger: str,
    at: datetime,
    cause: str | None,
    occasion: str,
) -> None:
    if state.cancelled or reason in state.reasons:
        return
    before, status_before = set(state.reasons), state.status
    state.reasons.add(reason)
    if not before:
        ctx.emitted.append(
            out.command(state.iccid, "suspend", reason, trigger, at, state.reasons, cause, occasion)
        )
    ctx.emitted.append(
        out.audit(
            state.iccid,
            "reason_added",
            reason,
            trigger,
            at,
            before,
            state.reasons,
            status_before,
            state.status,
            cause,
            occasion,
        )
    )


def _clear_reason(
    state: SimState,
    ctx: _Ctx,
    reason: str,
    trigger: str,
    at: datetime,
    cause: str | None,
    occasion: str,
) -> None:
    if state.cancelled or reason not in state.reasons:
        return
    before, status_before = set(state.reasons), state.status
    state.reasons.discard(reason)
    if not state.reasons:
        ctx.emitted.append(
            out.command(state.iccid, "restore", reason, trigger, at, state.reasons, cause, occasion)
        )
    ctx.emitted.append(
        out.audit(
            state.iccid,
            "reason_cleared",
            reason,
            trigger,
            at,
            before,
            state.reasons,
            status_before,
            state.status,
            cause,
            occasion,
        )
    )


# --- time (R6) -----------------------------------------------------------------------


def _quota_reached(used: int, sub: Subscription) -> bool:
    return used >= sub.quota_bytes


def _advance(state: SimState, ctx: _Ctx) -> None:
    """Roll month starts up to ``now``: clear ``quota`` and re-arm thresholds (R6).

    Several missed boundaries (a worker down for months) give one restore, stamped
    with the first boundary. Thresholds re-arm because fired alerts live per month.
    """
    tz = timezone_of(state, ctx.policy)
    current = month_of(ctx.now, tz)
    if state.month >= current:
        return
    while state.month < current:
        month = next_month(state.month)
        boundary = month_bounds(month, tz)[0]
        state.month = month
        sub = state.subscription
        reached = sub is not None and _quota_reached(state.usage(month).used_bytes, sub)
        if QUOTA in state.reasons and not reached:
            _clear_reason(state, ctx, QUOTA, "month_start", boundary, None, month)
        elif reached and sub is not None and sub.auto_suspend:
            # Usage of the new month that arrived early (start within the allowed skew).
            _add_reason(state, ctx, QUOTA, "usage", boundary, None, month)
    _forget_old_months(state, ctx)


def _forget_old_months(state: SimState, ctx: _Ctx) -> None:
    """Months that ended before the dedupe horizon can no longer change (R2, R3)."""
    tz = timezone_of(state, ctx.policy)
    cutoff = ctx.now - ctx.policy.dedupe_horizon
    for month in [m for m in state.months if m < state.month]:
        if month_bounds(month, tz)[1] <= cutoff:
            del state.months[month]


def _forget_old_ids(state: SimState, cutoff: float, cap: int) -> None:
    """Drop ids whose start fell out of the horizon, oldest first.

    Ids are kept in arrival order; records mostly arrive in time order, so expired ids
    sit at the front and this costs O(expired). A late id stuck behind a newer one is
    kept a little longer, which is harmless: its record would be refused by the horizon
    check before the dedupe check.
    """
    seen = state.seen
    while seen:
        first = next(iter(seen))
        if seen[first] >= cutoff and len(seen) <= cap:
            return
        del seen[first]


# --- evaluation (R4, R8, R9) -------------------------------------------------------


def _evaluate_month(state: SimState, ctx: _Ctx, month: str, trigger: str, cause: str | None) -> None:
    sub = state.subscription
    if sub is None or state.cancelled:
        return
    usage = state.usage(month)
    used, quota = usage.used_bytes, sub.quota_bytes
    if QUOTA not in state.reasons and sub.auto_suspend and _quota_reached(used, sub):
        _add_reason(state, ctx, QUOTA, trigger, ctx.now, cause, month)
    for threshold in sub.warn_at if sub.warn_at is not None else ctx.policy.warn_at:
        if threshold not in usage.thresholds_fired and used >= threshold * quota:
            usage.thresholds_fired.append(threshold)
            ctx.emitted.append(
                out.alert(
                    state.iccid,
                    "quota_threshold",
                    ctx.now,
                    cause,
                    f"{month}|{threshold}",
                    month=month,
                    used_bytes=used,
                    quota_bytes=quota,
                    threshold=threshold,
                )
            )
    if not usage.forecast_fired and 0 < used < quota:
        _forecast(state, ctx, month, usage, quota, cause)


def _forecast(
    state: SimState, ctx: _Ctx, month: str, usage: MonthUsage, quota: int, cause: str | None
) -> None:
    """R9: project the month's average rate so far; warn once if it runs out in time."""
    month_start, month_end = month_bounds(month, timezone_of(state, ctx.policy))
    elapsed = (ctx.now - month_start).total_seconds()
    if elapsed <= 0:
        return
    seconds_left = (quota - usage.used_bytes) * elapsed / usage.used_bytes
    if seconds_left > ctx.policy.forecast_horizon.total_seconds():
        return
    exhaustion_at = ctx.now + timedelta(seconds=round(seconds_left))
    if exhaustion_at >= month_end:
        return
    usage.forecast_fired = True
    ctx.emitted.append(
        out.alert(
            state.iccid,
            "quota_forecast",
            ctx.now,
            cause,
            month,
            month=month,
            used_bytes=usage.used_bytes,
            quota_bytes=quota,
            exhaustion_at=exhaustion_at,
        )
    )


# --- inputs ------------------------------------------------------------------------


def apply_usage(state: SimState, record: UsageRecord, now: datetime, policy: Policy) -> Step:
    """Count one usage record (R1-R4, R8, R9, R14) after rolling the SIM to ``now``."""
    if record.start < now - policy.dedupe_horizon:
        return Step(
            state,
            [],
            "rejected",
            Rejection(
                "beyond_dedupe_horizon",
                f"start is more than {policy.dedupe_horizon} before now; kept for reconciliation",
            ),
        )
    if record.end > now + policy.max_future_skew:
        return Step(
            state,
            [],
            "rejected",
            Rejection("end_in_future", f"end is more than {policy.max_future_skew} after now"),
        )
    ctx = _Ctx(now, policy)
    _advance(state, ctx)
    if record.record_id in state.seen:
        return Step(state, ctx.emitted, "duplicate")
    state.seen[record.record_id] = record.start.timestamp()
    _forget_old_ids(state, (now - policy.dedupe_horizon).timestamp(), policy.dedupe_max_ids)

    month = month_of(record.start, timezone_of(state, policy))
    usage = state.usage(month)
    before = usage.used_bytes
    usage.used_bytes = before + record.total_bytes
    sub = state.subscription
    if sub is None:
        if not usage.unknown_alerted:
            usage.unknown_alerted = True
            ctx.emitted.append(
                out.alert(
                    state.iccid,
                    "unknown_sim",
                    now,
                    record.record_id,
                    month,
                    month=month,
                    used_bytes=usage.used_bytes,
                    detail="usage for an ICCID with no subscription; counted, not evaluated",
                )
            )
        return Step(state, ctx.emitted, "unknown_sim")
    if month < state.month:
        # R3: late usage counts for its own month and never suspends the current one.
        if (
            not usage.late_alerted
            and not _quota_reached(before, sub)
            and _quota_reached(usage.used_bytes, sub)
        ):
            usage.late_alerted = True
            ctx.emitted.append(
                out.alert(
                    state.iccid,
                    "late_usage",
                    now,
                    record.record_id,
                    month,
                    month=month,
                    used_bytes=usage.used_bytes,
                    quota_bytes=sub.quota_bytes,
                    detail="late usage pushed an earlier month past its quota",
                )
            )
        return Step(state, ctx.emitted, "late")
    if month == state.month:
        _evaluate_month(state, ctx, month, "usage", record.record_id)
    # A record of the next month (start within the skew) is evaluated at its month start.
    return Step(state, ctx.emitted, "accepted")


def apply_subscription(state: SimState, sub: Subscription, now: datetime, policy: Policy) -> Step:
    """A newer subscription replaces the older one; the SIM is evaluated at once (R7, R14)."""
    ctx = _Ctx(now, policy)
    _advance(state, ctx)
    old = state.subscription
    if old is not None and sub.updated_at <= old.updated_at:
        return Step(state, ctx.emitted, "stale")
    state.subscription = sub
    _advance(state, ctx)  # a new time zone may already be in a later month
    cause = sub.subscription_id
    used = state.usage(state.month).used_bytes
    if QUOTA in state.reasons and not _quota_reached(used, sub):
        _clear_reason(state, ctx, QUOTA, "quota_raised", now, cause, state.month)
    _evaluate_month(state, ctx, state.month, "usage", cause)
    return Step(state, ctx.emitted, "accepted")


def apply_tick(state: SimState, now: datetime, policy: Policy) -> Step:
    """Time passing with no input: month starts (R6)."""
    ctx = _Ctx(now, policy)
    _advance(state, ctx)
    return Step(state, ctx.emitted, "tick")
