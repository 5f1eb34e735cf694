"""The reason set (R5): what a step knows while deciding, and the only code that changes
a SIM's reasons or status, so every change is commanded and audited the same way."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from . import outputs as out
from .commands import remember, track
from .outputs import Output
from .policy import Policy
from .state import SimState

QUOTA, ARREARS, EXPIRY, MANUAL, POOL = "quota", "arrears", "expiry", "manual", "pool"


@dataclass(slots=True)
class Ctx:
    """One step: when it happens and what it emits."""

    now: datetime
    policy: Policy
    emitted: list[Output] = field(default_factory=list)


def timezone_of(state: SimState, policy: Policy) -> str:
    sub = state.subscription
    return sub.timezone if sub is not None and sub.timezone else policy.timezone


def _command(ctx: Ctx, state: SimState, command: Output) -> None:
    ctx.emitted.append(command)
    remember(state, command)
    track(state, command, ctx.now, ctx.policy)


def add_reason(
    state: SimState,
    ctx: Ctx,
    reason: str,
    trigger: str,
    at: datetime,
    cause: str | None,
    occasion: str,
    pool_id: str | None = None,
) -> None:
    """Suspend when the set was empty; otherwise only audit. Nothing once cancelled."""
    if not state.cancelled and reason not in state.reasons:
        _change(state, ctx, reason, True, trigger, at, cause, occasion, pool_id)


def clear_reason(
    state: SimState,
    ctx: Ctx,
    reason: str,
    trigger: str,
    at: datetime,
    cause: str | None,
    occasion: str,
    pool_id: str | None = None,
) -> None:
    """Restore when the set becomes empty; otherwise only audit. Nothing once cancelled."""
    if not state.cancelled and reason in state.reasons:
        _change(state, ctx, reason, False, trigger, at, cause, occasion, pool_id)


def _change(
    state: SimState,
    ctx: Ctx,
    reason: str,
    adding: bool,
    trigger: str,
    at: datetime,
    cause: str | None,
    occasion: str,
    pool_id: str | None = None,
) -> None:
    before, status_before = set(state.reasons), state.status
    if adding:
        state.reasons.add(reason)
    else:
        state.reasons.discard(reason)
    if not before or not state.reasons:  # the set became non-empty, or empty (R5)
        action = "suspend" if adding else "restore"
        command = out.command(
            state.iccid, action, reason, trigger, at, state.reasons, cause, occasion, pool_id=pool_id
        )
        _command(ctx, state, command)
    ctx.emitted.append(
        out.audit(
            state.iccid,
            "reason_added" if adding else "reason_cleared",
            reason,
            trigger,
            at,
            before,
            state.reasons,
            status_before,
            state.status,
            cause,
            occasion,
            pool_id,
        )
    )


def throttle(
    state: SimState, ctx: Ctx, kbps: int, trigger: str, at: datetime, cause: str | None, occasion: str
) -> None:
    """R23: slow the SIM down at its quota. Not a reason: the set and status stay."""
    if state.cancelled or state.throttled:
        return
    state.throttled = True
    command = out.command(
        state.iccid, "throttle", QUOTA, trigger, at, state.reasons, cause, occasion, speed_kbps=kbps
    )
    _command(ctx, state, command)
    ctx.emitted.append(_speed_audit(state, "throttled", trigger, at, cause, occasion))


def unthrottle(
    state: SimState, ctx: Ctx, trigger: str, at: datetime, cause: str | None, occasion: str
) -> None:
    if state.cancelled or not state.throttled:
        return
    state.throttled = False
    _command(
        ctx, state, out.command(state.iccid, "unthrottle", QUOTA, trigger, at, state.reasons, cause, occasion)
    )
    ctx.emitted.append(_speed_audit(state, "unthrottled", trigger, at, cause, occasion))


def _speed_audit(
    state: SimState, change: str, trigger: str, at: datetime, cause: str | None, occasion: str
) -> Output:
    return out.audit(
        state.iccid,
        change,
        QUOTA,
        trigger,
        at,
        state.reasons,
        state.reasons,
        state.status,
        state.status,
        cause,
        occasion,
    )


def cancel(state: SimState, ctx: Ctx, reason: str, trigger: str, at: datetime, occasion: str) -> None:
    """Cancel the number (销户): terminal, the reasons are kept as they stood."""
    if state.cancelled:
        return
    status_before = state.status
    state.cancelled = True
    _command(
        ctx, state, out.command(state.iccid, "cancel", reason, trigger, at, state.reasons, None, occasion)
    )
    ctx.emitted.append(
        out.audit(
            state.iccid,
            "cancelled",
            reason,
            trigger,
            at,
            state.reasons,
            state.reasons,
            status_before,
            state.status,
            None,
            occasion,
        )
    )


def start_new_life(state: SimState, ctx: Ctx, trigger: str, at: datetime, cause: str) -> None:
    """A cancelled number given a new subscription starts clean (usage history is kept:
    the carrier still bills the ICCID per month, and the dedupe memory must survive)."""
    before = set(state.reasons)
    state.cancelled = False
    state.throttled = False
    state.pool_hold = None
    state.reasons.clear()
    state.balance = None
    state.balance_at = None
    state.expired_at = None
    state.fired.clear()
    ctx.emitted.append(
        out.audit(
            state.iccid,
            "new_life",
            EXPIRY,
            trigger,
            at,
            before,
            state.reasons,
            "cancelled",
            state.status,
            cause,
            cause,
        )
    )
