"""A SIM's side of its pool (R17-R21): what it reports, and what it does when told.

A member counts its own usage as any SIM does (R2) and keeps, per pool and pool month,
what it has counted for its pool; after counting a record it reports that cumulative
figure (``pools.Report``). It reports joining (with what it counted for the pool this
month, so a SIM that comes back continues where it was) and leaving (R19, ``pool_left``,
clearing ``pool`` at once).

When its pool runs out it holds reason ``pool`` (R18) until the instant its pool's
month ends (a due time of its own, like its own month start: no traffic needed, caught
up after a restart), or until the pool says its quota was lifted, or it leaves. R5
applies: a member stopped for another reason too stays stopped. A pool's command ids
name the SIM, the pool, the month, the episode and the trigger, never the record that
reached the pool: live, which member's record did may differ from run to run.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from . import outputs as out
from .inputs import Subscription, UsageRecord
from .outputs import Output
from .pools import JOIN, LEAVE, USAGE
from .reasons import POOL, Ctx, add_reason, clear_reason
from .state import SimState
from .timeutil import format_time, month_of, parse_time


def pool_zone(state: SimState, fallback: str) -> str:
    """The pool's time zone as its last notice said (the worker's billing zone before)."""
    return state.pool_zone or fallback


def _report(state: SimState, pool_id: str, kind: str, month: str, cause: str | None, now: datetime) -> Output:
    used = state.pool_used.get(pool_id, {}).get(month, 0)
    return out.pool_report(
        pool_id,
        {
            "pool_id": pool_id,
            "iccid": state.iccid,
            "kind": kind,
            "month": month,
            "used": used,
            "cause": cause,
            "at": format_time(now),
        },
    )


def count_for_pool(state: SimState, ctx: Ctx, record: UsageRecord) -> None:
    """R17: a counted record counts for the pool the SIM is in now, in the pool's month."""
    sub = state.subscription
    if sub is None or sub.pool_id is None:
        return
    month = month_of(record.start, pool_zone(state, ctx.policy.timezone))
    months = state.pool_used.setdefault(sub.pool_id, {})
    months[month] = months.get(month, 0) + record.total_bytes
    ctx.emitted.append(_report(state, sub.pool_id, USAGE, month, record.record_id, ctx.now))


def change_pool(state: SimState, ctx: Ctx, old: Subscription | None, new: Subscription, cause: str) -> None:
    """A subscription moved the SIM out of a pool, into one, or both (R18, R19)."""
    before = old.pool_id if old is not None else None
    after = new.pool_id
    if before == after:
        return
    zone = pool_zone(state, ctx.policy.timezone)
    month = month_of(ctx.now, zone)
    if before is not None:
        hold = state.pool_hold
        if hold is not None and hold["pool_id"] == before:
            state.pool_hold = None
            occasion = _occasion(hold)
            clear_reason(state, ctx, POOL, "pool_left", ctx.now, cause, occasion, pool_id=before)
        ctx.emitted.append(_report(state, before, LEAVE, month, cause, ctx.now))
    if after is not None:
        state.pool_zone = None  # the new pool's zone is learnt from its first notice
        ctx.emitted.append(
            _report(state, after, JOIN, month_of(ctx.now, ctx.policy.timezone), cause, ctx.now)
        )


def _occasion(hold: dict[str, Any]) -> str:
    return f"{hold['pool_id']}|{hold['month']}|{hold['episode']}"


def on_notice(state: SimState, ctx: Ctx, notice: dict[str, Any]) -> str:
    """What the pool says: it ran out (hold ``pool``) or its quota was lifted (release).
    Returns the outcome: accepted, duplicate or stale."""
    sub = state.subscription
    pool_id = notice["pool_id"]
    if sub is None or sub.pool_id != pool_id:
        return "stale"  # no longer (or not yet) a member
    state.pool_zone = notice["timezone"]
    month, episode = notice["month"], notice["episode"]
    hold = state.pool_hold
    same = hold is not None and hold["pool_id"] == pool_id and hold["month"] == month
    if notice["action"] == "exhausted":
        if parse_time(notice["until"]) <= ctx.now:
            return "stale"  # the pool's month is over already
        if same and hold is not None and hold["episode"] >= episode:
            return "duplicate"
        state.pool_hold = {"pool_id": pool_id, "month": month, "episode": episode, "until": notice["until"]}
        add_reason(
            state,
            ctx,
            POOL,
            "pool_exhausted",
            ctx.now,
            notice["cause"],
            _occasion(state.pool_hold),
            pool_id=pool_id,
        )
        return "accepted"
    if not same or hold is None or hold["episode"] > episode:
        return "stale"
    state.pool_hold = None
    clear_reason(state, ctx, POOL, "quota_raised", ctx.now, notice["cause"], _occasion(hold), pool_id=pool_id)
    return "accepted"


def hold_ends(state: SimState) -> datetime | None:
    hold = state.pool_hold
    return parse_time(hold["until"]) if hold is not None else None


def end_hold(state: SimState, ctx: Ctx, at: datetime) -> None:
    """R19: the pool's month started: ``pool`` is cleared."""
    hold = state.pool_hold
    if hold is None:
        return
    state.pool_hold = None
    clear_reason(state, ctx, POOL, "month_start", at, None, _occasion(hold), pool_id=hold["pool_id"])
