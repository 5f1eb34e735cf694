"""The engine: state + input + now -> state + outputs. No I/O, no clock.

The engine takes ownership of the state it is given and returns it updated (mutating
in place keeps the hot path free of copies; callers never reuse the old value).
Every step first rolls the SIM forward to ``now`` (timeline.advance), so whatever was
due happens before the input is applied, whether a tick or an input brought now past it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from . import outputs as out
from .commands import observe, on_result
from .inputs import (
    BalanceEvent,
    CarrierStatus,
    CommandResult,
    ManualRequest,
    PoolNotice,
    Subscription,
    UsageRecord,
)
from .membership import change_pool, count_for_pool, on_notice
from .memory import id_hash
from .outputs import Output, Rejection
from .policy import Policy
from .quota import add_addons, evaluate_month, lift, month_quota, over_quota
from .reasons import (
    ARREARS,
    EXPIRY,
    MANUAL,
    Ctx,
    add_reason,
    clear_reason,
    start_new_life,
    timezone_of,
)
from .state import SimState
from .timeline import advance, forget_old_occasions
from .timeutil import month_of

__all__ = [
    "Input",
    "Policy",
    "Step",
    "apply_balance",
    "apply_input",
    "apply_many",
    "apply_request",
    "apply_subscription",
    "apply_tick",
    "apply_usage",
    "new_state",
]


class Step(NamedTuple):
    state: SimState
    outputs: list[Output]
    outcome: str
    """accepted | duplicate | late | unknown_sim | stale | cancelled | refused | rejected | tick"""
    rejection: Rejection | None = None
    addons: int = 0
    """Add-on packs counted by this step (R22)."""


def new_state(iccid: str, now: datetime, policy: Policy) -> SimState:
    return SimState(iccid=iccid, month=month_of(now, policy.timezone))


def _remember(state: SimState, digest: bytes, at: datetime, policy: Policy, now: datetime) -> None:
    state.ids.add(
        digest,
        int(at.timestamp() // 60),
        int((now - policy.dedupe_horizon).timestamp() // 60),
        policy.dedupe_max_ids,
    )


def _from_the_future(state: SimState, at: datetime, now: datetime, policy: Policy, name: str) -> Step | None:
    """R15: an input dated more than the allowed clock skew after now is refused: one bad
    date would otherwise outrank every later event (balances, subscriptions)."""
    if at <= now + policy.max_future_skew:
        return None
    detail = f"{name} is more than {policy.max_future_skew} after now"
    return Step(state, [], "rejected", Rejection(f"{name}_in_future", detail))


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
    if (refused := _from_the_future(state, record.end, now, policy, "end")) is not None:
        return refused
    ctx = Ctx(now, policy)
    advance(state, ctx)
    digest = id_hash(record.record_id)
    if digest in state.ids:
        return Step(state, ctx.emitted, "duplicate")
    _remember(state, digest, record.start, policy, now)

    month = month_of(record.start, timezone_of(state, policy))
    usage = state.usage(month)
    before = usage.used_bytes
    usage.used_bytes = before + record.total_bytes
    count_for_pool(state, ctx, record)
    sub = state.subscription
    if state.cancelled:
        return Step(state, ctx.emitted, "cancelled")  # counted, but a cancelled SIM gets nothing
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
            and not over_quota(state, month, before)
            and over_quota(state, month, usage.used_bytes)
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
                    quota_bytes=month_quota(state, month),
                    detail="late usage pushed an earlier month past its quota",
                )
            )
        return Step(state, ctx.emitted, "late")
    if month == state.month:
        evaluate_month(state, ctx, month, "usage", record.record_id)
    # A record of the next month (start within the skew) is evaluated at its month start.
    return Step(state, ctx.emitted, "accepted")


def apply_subscription(state: SimState, sub: Subscription, now: datetime, policy: Policy) -> Step:
    """A newer subscription replaces the older one and the SIM is evaluated at once
    (R7, R14, R22); it renews an expired plan (R11), or starts a cancelled number's new
    life."""
    ctx = Ctx(now, policy)
    advance(state, ctx)
    old = state.subscription
    cause = sub.subscription_id
    if old is not None and sub.updated_at <= old.updated_at:
        return Step(state, ctx.emitted, "stale")
    if state.cancelled:
        if old is not None and sub.valid_from <= old.valid_from:
            return Step(state, ctx.emitted, "cancelled")
        start_new_life(state, ctx, "renewal", now, cause)
    state.subscription = sub
    counted = add_addons(state)
    change_pool(state, ctx, old, sub, cause)
    if EXPIRY in state.reasons and (sub.expires_at is None or sub.expires_at > now):
        state.expired_at = None
        clear_reason(state, ctx, EXPIRY, "renewal", now, cause, cause)
    forget_old_occasions(state)
    advance(state, ctx)  # a new zone may be in a later month; a new expiry may be past
    lift(state, ctx, cause)
    evaluate_month(state, ctx, state.month, "usage", cause)
    return Step(state, ctx.emitted, "accepted", addons=counted)


def apply_balance(state: SimState, event: BalanceEvent, now: datetime, policy: Policy) -> Step:
    """R10: the latest balance decides; below zero adds ``arrears``, zero or more clears it."""
    if (refused := _from_the_future(state, event.at, now, policy, "at")) is not None:
        return refused
    ctx = Ctx(now, policy)
    advance(state, ctx)
    if state.balance_at is not None and event.at <= state.balance_at:
        return Step(state, ctx.emitted, "stale")
    state.balance, state.balance_at = event.balance, event.at
    if event.balance < 0:
        add_reason(state, ctx, ARREARS, "balance", now, event.event_id, "")
    else:
        clear_reason(state, ctx, ARREARS, "payment", now, event.event_id, "")
    return Step(state, ctx.emitted, "cancelled" if state.cancelled else "accepted")


def _refusal(state: SimState, request: ManualRequest, now: datetime) -> str | None:
    """Why R13 refuses this request, or None when it is allowed."""
    if state.cancelled:
        return "the number is cancelled"
    if request.action == "resume":
        return None if MANUAL in state.reasons else "the SIM is not manually suspended"
    if state.reasons:
        return f"the SIM is already suspended ({', '.join(sorted(state.reasons))})"
    sub = state.subscription
    if sub is None:
        return "the SIM has no subscription"
    if now < sub.valid_from or (sub.expires_at is not None and now >= sub.expires_at):
        return "the plan is not valid now"
    if state.balance is not None and state.balance < 0:
        return "the account is in arrears"
    if over_quota(state, state.month, state.usage(state.month).used_bytes):
        return "this month's usage has reached the quota"
    return None


def apply_request(state: SimState, request: ManualRequest, now: datetime, policy: Policy) -> Step:
    """R13: manual suspend and resume, accepted or refused with a reason."""
    if (refused := _from_the_future(state, request.at, now, policy, "at")) is not None:
        return refused
    ctx = Ctx(now, policy)
    advance(state, ctx)
    digest = id_hash(f"request:{request.request_id}")
    if digest in state.ids:
        return Step(state, ctx.emitted, "duplicate")
    # Remembered from when it was applied (not its own ``at``), for the dedupe horizon:
    # a redelivery after a crash comes within minutes, whatever the request's age.
    _remember(state, digest, now, policy, now)
    why = _refusal(state, request, now)
    if why is not None:
        ctx.emitted.append(
            out.alert(
                state.iccid,
                "request_rejected",
                now,
                request.request_id,
                request.request_id,
                detail=f"{request.action} requested by {request.requested_by} refused: {why}",
            )
        )
        return Step(state, ctx.emitted, "refused")
    if request.action == "suspend":
        add_reason(state, ctx, MANUAL, "request", now, request.request_id, "")
    else:
        clear_reason(state, ctx, MANUAL, "request", now, request.request_id, "")
    return Step(state, ctx.emitted, "accepted")


def apply_result(state: SimState, result: CommandResult, now: datetime, policy: Policy) -> Step:
    """R24-R26: a command's result; its carrier status is an observation too."""
    if (refused := _from_the_future(state, result.at, now, policy, "at")) is not None:
        return refused
    ctx = Ctx(now, policy)
    advance(state, ctx)
    digest = id_hash(f"result:{result.result_id}")
    if digest in state.ids:
        return Step(state, ctx.emitted, "duplicate")
    _remember(state, digest, now, policy, now)
    ctx.emitted += on_result(
        state, result.result_id, result.command_id, result.outcome, result.at, result.detail, policy
    )
    if result.carrier_status is not None or result.throttled is not None:
        ctx.emitted += observe(
            state, result.carrier_status, result.throttled, result.at, result.result_id, now, policy
        )
    return Step(state, ctx.emitted, "accepted")


def apply_carrier_status(state: SimState, status: CarrierStatus, now: datetime, policy: Policy) -> Step:
    """R26: the carrier's status of the SIM, from a status dump or its status API."""
    if (refused := _from_the_future(state, status.at, now, policy, "at")) is not None:
        return refused
    ctx = Ctx(now, policy)
    advance(state, ctx)
    digest = id_hash(f"inventory:{status.event_id}")
    if digest in state.ids:
        return Step(state, ctx.emitted, "duplicate")
    _remember(state, digest, now, policy, now)
    ctx.emitted += observe(state, status.status, status.throttled, status.at, status.event_id, now, policy)
    return Step(state, ctx.emitted, "accepted")


def apply_pool_notice(state: SimState, notice: PoolNotice, now: datetime, policy: Policy) -> Step:
    """What the SIM's pool says (R18, R19): it ran out, or its quota was lifted."""
    ctx = Ctx(now, policy)
    advance(state, ctx)
    outcome = on_notice(state, ctx, notice.value)
    return Step(state, ctx.emitted, outcome)


Input = UsageRecord | Subscription | BalanceEvent | ManualRequest | CommandResult | CarrierStatus | PoolNotice


def apply_input(state: SimState, item: Input, now: datetime, policy: Policy) -> Step:
    if isinstance(item, UsageRecord):
        return apply_usage(state, item, now, policy)
    if isinstance(item, Subscription):
        return apply_subscription(state, item, now, policy)
    if isinstance(item, BalanceEvent):
        return apply_balance(state, item, now, policy)
    if isinstance(item, CommandResult):
        return apply_result(state, item, now, policy)
    if isinstance(item, CarrierStatus):
        return apply_carrier_status(state, item, now, policy)
    if isinstance(item, PoolNotice):
        return apply_pool_notice(state, item, now, policy)
    return apply_request(state, item, now, policy)


def apply_many(
    state: SimState, items: Sequence[Input], now: datetime, policy: Policy
) -> tuple[SimState, list[Step]]:
    """Several inputs for one SIM in order, on one state: a batch decodes and stores the
    SIM once instead of once per input. Steps keep each input's outcome and rejection."""
    steps = [apply_input(state, item, now, policy) for item in items]
    return state, steps


def apply_tick(state: SimState, now: datetime, policy: Policy) -> Step:
    """Time passing with no input."""
    ctx = Ctx(now, policy)
    advance(state, ctx)
    return Step(state, ctx.emitted, "tick")
