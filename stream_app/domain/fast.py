"""The fast lane: the common usage record, decided from a few numbers.

Most records of a fleet in the middle of a month change nothing but the month's total
and the dedupe memory: a known SIM, this month, not a duplicate, no threshold, quota or
forecast reached, nothing due. ``Lane`` holds what it takes to recognise such a record
without the SIM's whole state (its plan, reasons, alerts fired): it is derived from the
whole state after every step of the general engine, and stored with the SIM's totals.

``fast_usage`` either applies such a record exactly as ``engine.apply_usage`` would, or
declines (returns None) and the caller takes the general path. It declines whenever it
is not sure, never the other way round: near a boundary (the horizon, the allowed skew,
a month's edges, a forecast) it leaves the decision to the engine. Tests compare the
two paths on random streams (tests/unit/test_fast.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .memory import IdMemory
from .policy import Policy
from .quota import month_quota
from .reasons import QUOTA, timezone_of
from .state import SimState
from .timeline import due_at
from .timeutil import month_bounds

NO_LIMIT = 2**63 - 1
DUPLICATE = -1
"""``fast_usage``'s answer for a record already counted."""
_MARGIN = 0.001
"""Seconds within which a comparison of floats is left to the engine's exact one."""


@dataclass(frozen=True, slots=True)
class Lane:
    month: str
    month_start: int
    month_end: int
    """The current billing month's bounds, whole seconds since the epoch."""
    due: float
    """When time alone next changes the SIM (a month start, an expiry...)."""
    limit: int
    """The month's usage at which something happens: a threshold, the quota."""
    forecast_quota: int
    """The quota a forecast is projected against; 0 when no forecast can fire."""


def lane_of(state: SimState, policy: Policy, due: float | None = None) -> Lane | None:
    """The SIM's lane, or None when its records always take the general path.
    ``due``: the SIM's ``due_at`` as a timestamp, when the caller has it already."""
    sub = state.subscription
    if sub is None or state.cancelled or sub.pool_id is not None:
        return None
    start, end = month_bounds(state.month, timezone_of(state, policy))
    month_start, month_end = start.timestamp(), end.timestamp()
    if month_start % 60 or month_end % 60:
        return None  # stored in whole minutes
    usage = state.months.get(state.month)
    fired = usage.thresholds_fired if usage is not None else []
    quota = month_quota(state, state.month)
    if quota is None:
        return None
    limits = [
        math.ceil(threshold * quota)
        for threshold in (sub.warn_at if sub.warn_at is not None else policy.warn_at)
        if threshold not in fired
    ]
    if (sub.on_quota == "suspend" and QUOTA not in state.reasons) or (
        sub.on_quota == "throttle" and not state.throttled
    ):
        limits.append(quota)
    forecast_fired = usage is not None and usage.forecast_fired
    return Lane(
        state.month,
        int(month_start),
        int(month_end),
        due_at(state, policy).timestamp() if due is None else due,
        min(limits, default=NO_LIMIT),
        0 if forecast_fired else quota,
    )


def fast_usage(
    lane: Lane,
    used: int,
    ids: IdMemory,
    digest: bytes,
    start: float,
    end: float,
    total: int,
    now: float,
    policy: Policy,
) -> int | None:
    """The month's new total after counting a record (and ``ids`` remembers it),
    ``DUPLICATE`` for a record already counted, or None: take the general path.

    ``start``, ``end`` and ``now`` are seconds since the epoch; ``used`` is the current
    month's total before the record.
    """
    if now >= lane.due - _MARGIN:
        return None
    horizon = policy.dedupe_horizon.total_seconds()
    if start < now - horizon + _MARGIN or end > now + policy.max_future_skew.total_seconds() - _MARGIN:
        return None
    if not lane.month_start + _MARGIN <= start < lane.month_end - _MARGIN:
        return None
    if digest in ids:
        return DUPLICATE
    new_used = used + total
    if new_used >= lane.limit:
        return None
    quota = lane.forecast_quota
    if quota and 0 < new_used < quota:
        elapsed = now - lane.month_start
        if elapsed > -_MARGIN:
            seconds_left = (quota - new_used) * elapsed / new_used
            if seconds_left <= policy.forecast_horizon.total_seconds() + 1 and now + seconds_left < (
                lane.month_end + 1
            ):
                return None
    ids.add(digest, int(start // 60), int((now - horizon) // 60), policy.dedupe_max_ids)
    return new_used


@dataclass(slots=True)
class Hot:
    """The part of a SIM's state a common record reads and writes, plus what the worker
    needs to know of a SIM without its whole state (status, reasons, when it is due)."""

    iccid: str
    month: str
    used: int
    """The current month's total."""
    ids: IdMemory
    lane: Lane | None
    due: float
    status: str
    reasons: frozenset[str]
    partition: int | None
    throttled: bool = False
    pending: frozenset[str] = frozenset()
    """The dimensions with a command waiting for its result (R24)."""
    pool_id: str | None = None
    """The pool its subscription draws from (for the worker's index of SIMs by pool)."""


def hot_of(state: SimState, policy: Policy) -> Hot:
    usage = state.months.get(state.month)
    due = due_at(state, policy).timestamp()
    return Hot(
        state.iccid,
        state.month,
        usage.used_bytes if usage is not None else 0,
        state.ids,
        lane_of(state, policy, due),
        due,
        state.status,
        frozenset(state.reasons),
        state.partition,
        state.throttled,
        frozenset(state.pending),
        state.subscription.pool_id if state.subscription is not None else None,
    )
