"""This month's usage against the quota: what happens at the quota (R4, R23), thresholds
(R8) and forecast (R9), all against the month's quota with its add-ons (R22)."""

from __future__ import annotations

from datetime import timedelta

from . import outputs as out
from .reasons import QUOTA, Ctx, add_reason, clear_reason, throttle, timezone_of, unthrottle
from .state import MonthUsage, SimState
from .timeutil import month_bounds


def month_quota(state: SimState, month: str) -> int | None:
    """The SIM's own quota for ``month``: its plan's plus that month's add-ons (R22);
    None when it has no cap of its own (a pooled SIM) or no subscription."""
    sub = state.subscription
    if sub is None or sub.quota_bytes is None:
        return None
    return sub.quota_bytes + sum(size for addon_month, size in state.addons.values() if addon_month == month)


def over_quota(state: SimState, month: str, used: int) -> bool:
    quota = month_quota(state, month)
    return quota is not None and used >= quota


def add_addons(state: SimState) -> int:
    """Count the subscription's add-ons not counted yet (an addon_id counts once);
    returns how many were new."""
    sub = state.subscription
    if sub is None:
        return 0
    new = 0
    for addon in sub.addons:
        if addon.addon_id not in state.addons:
            state.addons[addon.addon_id] = (addon.month, addon.bytes)
            new += 1
    return new


def lift(state: SimState, ctx: Ctx, cause: str | None) -> None:
    """R7, R22, R23: a quota now above this month's usage lifts what the quota did."""
    if over_quota(state, state.month, state.usage(state.month).used_bytes):
        return
    if QUOTA in state.reasons:
        clear_reason(state, ctx, QUOTA, "quota_raised", ctx.now, cause, state.month)
    if state.throttled:
        unthrottle(state, ctx, "quota_raised", ctx.now, cause, state.month)


def evaluate_month(state: SimState, ctx: Ctx, month: str, trigger: str, cause: str | None) -> None:
    sub = state.subscription
    quota = month_quota(state, month)
    if sub is None or state.cancelled or quota is None:
        return
    usage = state.usage(month)
    used = usage.used_bytes
    if used >= quota:
        if sub.on_quota == "suspend" and QUOTA not in state.reasons:
            add_reason(state, ctx, QUOTA, trigger, ctx.now, cause, month)
        elif sub.on_quota == "throttle" and not state.throttled and sub.throttle_kbps is not None:
            throttle(state, ctx, sub.throttle_kbps, trigger, ctx.now, cause, month)
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
