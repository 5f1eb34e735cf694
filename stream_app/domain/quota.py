"""This month's usage against the quota: auto-suspend (R4), thresholds (R8), forecast (R9)."""

from __future__ import annotations

from datetime import timedelta

from . import outputs as out
from .inputs import Subscription
from .reasons import QUOTA, Ctx, add_reason, timezone_of
from .state import MonthUsage, SimState
from .timeutil import month_bounds


def quota_reached(used: int, sub: Subscription) -> bool:
    return used >= sub.quota_bytes


def evaluate_month(state: SimState, ctx: Ctx, month: str, trigger: str, cause: str | None) -> None:
    sub = state.subscription
    if sub is None or state.cancelled:
        return
    usage = state.usage(month)
    used, quota = usage.used_bytes, sub.quota_bytes
    if QUOTA not in state.reasons and sub.auto_suspend and quota_reached(used, sub):
        add_reason(state, ctx, QUOTA, trigger, ctx.now, cause, month)
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
    state: SimState, ctx: Ctx, month: str, usage: MonthUsage, quota: int, cause: str | None
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
