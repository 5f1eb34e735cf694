"""Pools (流量池): members share one monthly allowance (R17-R21). State + input + now ->
state + outputs, as for a SIM.

A pool's state lives apart from its members' (a member may be in any partition): each
member *reports* to its pool what it has counted for it, a cumulative figure per pool
month (``Report``), and the pool answers its members with *notices* (the pool ran out,
or recovered). Reports are cumulative, so the pool keeps, per member and month, the
largest figure seen: a report repeated or reordered after a crash changes nothing, and
the pool's total is exactly the sum of what its members counted for it (R17).

When a pool with ``auto_suspend`` reaches its quota (plus its add-ons) in its current
month, every member is told (``exhausted``: reason ``pool``, R18) and so is a SIM that
joins while it is exhausted; a quota lifted above the month's usage tells them again
(``cleared``, trigger ``quota_raised``). The month start needs no notice: a member
holds ``pool`` until the instant the pool's month ends, which it was told (R19).
Warnings (R20) are the pool's own alerts, keyed by the pool id.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from . import outputs as out
from .inputs import Pool
from .outputs import Output
from .policy import Policy
from .timeutil import format_time, month_bounds, month_of, parse_time

USAGE, JOIN, LEAVE = "usage", "join", "leave"
EXHAUSTED, CLEARED = "exhausted", "cleared"


class Report(NamedTuple):
    """A member to its pool: what it has counted for the pool in ``month`` so far."""

    pool_id: str
    iccid: str
    kind: str
    """usage | join | leave"""
    month: str
    used: int
    cause: str | None
    """The record (usage) or the subscription version (join, leave)."""


@dataclass(slots=True)
class PoolMonth:
    used: int = 0
    thresholds_fired: list[float] = field(default_factory=list)
    forecast_fired: bool = False
    unknown_alerted: bool = False
    exhausted: int = 0
    """The exhaustion episode in force (1, 2, ... this month); 0 when not exhausted."""
    episodes: int = 0


@dataclass(slots=True)
class Member:
    active: bool
    """A member now (its row stays after it leaves: what it counted still counts)."""
    months: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class PoolState:
    pool_id: str
    month: str
    """The pool's current billing month, in its time zone."""
    definition: Pool | None = None
    months: dict[str, PoolMonth] = field(default_factory=dict)
    addons: dict[str, tuple[str, int]] = field(default_factory=dict)
    members: dict[str, Member] = field(default_factory=dict)
    """Member rows loaded (replay keeps them all; the worker loads those it needs)."""
    roster: set[str] = field(default_factory=set)
    """Every current member's ICCID (whom a notice goes to)."""
    touched: set[str] = field(default_factory=set)
    """Member rows changed by the last steps, for storage."""

    def usage(self, month: str) -> PoolMonth:
        found = self.months.get(month)
        if found is None:
            found = self.months[month] = PoolMonth()
        return found


class PoolStep(NamedTuple):
    state: PoolState
    outputs: list[Output]
    """Pool alerts (keyed by the pool id) and notices to members (keyed by ICCID)."""
    outcome: str


def pool_timezone(state: PoolState, policy: Policy) -> str:
    definition = state.definition
    return definition.timezone if definition is not None and definition.timezone else policy.timezone


def new_pool(pool_id: str, now: datetime, policy: Policy) -> PoolState:
    return PoolState(pool_id, month_of(now, policy.timezone))


def pool_quota(state: PoolState, month: str) -> int | None:
    definition = state.definition
    if definition is None:
        return None
    extra = sum(size for addon_month, size in state.addons.values() if addon_month == month)
    return definition.quota_bytes + extra


def pool_due(state: PoolState, policy: Policy) -> datetime:
    """When time alone next changes the pool: its month start."""
    return month_bounds(state.month, pool_timezone(state, policy))[1]


def _member(state: PoolState, iccid: str) -> Member:
    found = state.members.get(iccid)
    if found is None:
        found = state.members[iccid] = Member(active=False)
    return found


# --- inputs ---------------------------------------------------------------------------


def apply_report(state: PoolState, report: Report, now: datetime, policy: Policy) -> PoolStep:
    """R17: a member's cumulative figure; R18: a SIM joining an exhausted pool."""
    emitted = _advance(state, now, policy)
    member = _member(state, report.iccid)
    was_active = member.active
    if report.kind == LEAVE:
        member.active = False
        state.roster.discard(report.iccid)
    else:
        member.active = True
        state.roster.add(report.iccid)
    before = member.months.get(report.month, 0)
    if report.used > before:
        member.months[report.month] = report.used
        state.usage(report.month).used += report.used - before
    if member.active != was_active or report.used > before:
        state.touched.add(report.iccid)
    if report.kind == JOIN and not was_active:
        current = state.months.get(state.month)
        if current is not None and current.exhausted:
            emitted.append(
                _notice(state, report.iccid, EXHAUSTED, "pool_exhausted", report.cause, now, policy)
            )
    if report.month == state.month:
        emitted += _evaluate(state, now, policy, report.cause)
    elif report.month > state.month:
        pass  # early usage of the next month is evaluated at its month start
    elif state.definition is None:
        emitted += _unknown(state, report.month, now, report.cause)
    return PoolStep(state, emitted, "accepted")


def apply_pool(state: PoolState, definition: Pool, now: datetime, policy: Policy) -> PoolStep:
    """A pool's definition (or a newer version of it): evaluated at once (R20), and a
    quota lifted above the month's usage recovers the members (R19, R22)."""
    emitted = _advance(state, now, policy)
    old = state.definition
    if old is not None and definition.updated_at <= old.updated_at:
        return PoolStep(state, emitted, "stale")
    state.definition = definition
    for addon in definition.addons:
        state.addons.setdefault(addon.addon_id, (addon.month, addon.bytes))
    state.month = month_of(now, pool_timezone(state, policy))  # the zone may have changed
    cause = definition.version_id
    current = state.usage(state.month)
    quota = pool_quota(state, state.month)
    if current.exhausted and quota is not None and (current.used < quota or not definition.auto_suspend):
        episode, current.exhausted = current.exhausted, 0
        emitted += _tell_all(state, CLEARED, "quota_raised", cause, now, policy, episode)
    emitted += _evaluate(state, now, policy, cause)
    return PoolStep(state, emitted, "accepted")


def pool_tick(state: PoolState, now: datetime, policy: Policy) -> PoolStep:
    return PoolStep(state, _advance(state, now, policy), "tick")


def _advance(state: PoolState, now: datetime, policy: Policy) -> list[Output]:
    """R19: the pool's month start. Members clear ``pool`` themselves at the instant they
    were told; the pool starts its new month, which may already be over its quota."""
    emitted: list[Output] = []
    while (boundary := pool_due(state, policy)) <= now:
        state.month = month_of(boundary, pool_timezone(state, policy))
        cutoff = now - policy.dedupe_horizon
        tz = pool_timezone(state, policy)
        for month in [m for m in state.months if m < state.month and month_bounds(m, tz)[1] <= cutoff]:
            del state.months[month]
        for addon_id, (month, _size) in list(state.addons.items()):
            if month < state.month and month_bounds(month, tz)[1] <= cutoff:
                del state.addons[addon_id]
        if state.month in state.months:
            emitted += _evaluate(state, boundary, policy, None)
    return emitted


# --- the pool against its quota ---------------------------------------------------------


def _evaluate(state: PoolState, now: datetime, policy: Policy, cause: str | None) -> list[Output]:
    definition = state.definition
    month = state.month
    if definition is None:
        return _unknown(state, month, now, cause)
    usage = state.usage(month)
    quota = pool_quota(state, month)
    assert quota is not None
    emitted: list[Output] = []
    for threshold in definition.warn_at if definition.warn_at is not None else policy.warn_at:
        if threshold not in usage.thresholds_fired and usage.used >= threshold * quota:
            usage.thresholds_fired.append(threshold)
            emitted.append(
                _alert(state, "pool_threshold", now, cause, f"{month}|{threshold}", threshold=threshold)
            )
    if definition.auto_suspend and not usage.exhausted and usage.used >= quota:
        usage.episodes += 1
        usage.exhausted = usage.episodes
        emitted += _tell_all(state, EXHAUSTED, "pool_exhausted", cause, now, policy, usage.exhausted)
    if not usage.forecast_fired and 0 < usage.used < quota:
        emitted += _forecast(state, usage, quota, now, policy, cause)
    return emitted


def _unknown(state: PoolState, month: str, now: datetime, cause: str | None) -> list[Output]:
    usage = state.usage(month)
    if usage.unknown_alerted or not usage.used:
        return []
    usage.unknown_alerted = True
    detail = "members draw from a pool with no definition yet; their usage is summed, not evaluated"
    return [_alert(state, "unknown_pool", now, cause, month, month=month, detail=detail)]


def _forecast(
    state: PoolState, usage: PoolMonth, quota: int, now: datetime, policy: Policy, cause: str | None
) -> list[Output]:
    """R20 as R9: the month's average rate so far projects exhaustion in time."""
    month_start, month_end = month_bounds(state.month, pool_timezone(state, policy))
    elapsed = (now - month_start).total_seconds()
    if elapsed <= 0:
        return []
    seconds_left = (quota - usage.used) * elapsed / usage.used
    if seconds_left > policy.forecast_horizon.total_seconds():
        return []
    exhaustion_at = now + timedelta(seconds=round(seconds_left))
    if exhaustion_at >= month_end:
        return []
    usage.forecast_fired = True
    return [_alert(state, "pool_forecast", now, cause, state.month, exhaustion_at=exhaustion_at)]


def _alert(
    state: PoolState, kind: str, now: datetime, cause: str | None, occasion: str, **extra: Any
) -> Output:
    month = extra.pop("month", state.month)
    figures: dict[str, Any] = {
        "pool_id": state.pool_id,
        "month": month,
        "used_bytes": state.usage(month).used,
    }
    quota = pool_quota(state, month)
    if quota is not None:
        figures["quota_bytes"] = quota
    figures["members"] = len(state.roster)
    figures.update(extra)
    return out.pool_alert(state.pool_id, kind, now, cause, occasion, **figures)


def _notice(
    state: PoolState,
    iccid: str,
    action: str,
    trigger: str,
    cause: str | None,
    now: datetime,
    policy: Policy,
    episode: int | None = None,
) -> Output:
    month = state.month
    return out.pool_notice(
        iccid,
        {
            "pool_id": state.pool_id,
            "iccid": iccid,
            "action": action,
            "month": month,
            "episode": episode if episode is not None else state.usage(month).exhausted,
            "until": format_time(month_bounds(month, pool_timezone(state, policy))[1]),
            "timezone": pool_timezone(state, policy),
            "trigger": trigger,
            "cause": cause,
            "at": format_time(now),
        },
    )


def _tell_all(
    state: PoolState,
    action: str,
    trigger: str,
    cause: str | None,
    now: datetime,
    policy: Policy,
    episode: int,
) -> list[Output]:
    """A notice to every member, in ICCID order (replay's order; live, each goes to the
    member's own partition)."""
    return [
        _notice(state, iccid, action, trigger, cause, now, policy, episode) for iccid in sorted(state.roster)
    ]


# --- what an operator sees ---------------------------------------------------------------


def describe_pool(
    state: PoolState, now: datetime, policy: Policy, members: Iterable[str] = ()
) -> dict[str, Any]:
    """The pool as of ``now`` (a month start due but not yet swept already shows)."""
    _advance(state, now, policy)
    usage = state.usage(state.month)
    quota = pool_quota(state, state.month)
    definition = state.definition
    return {
        "pool_id": state.pool_id,
        "state": "unknown" if definition is None else "exhausted" if usage.exhausted else "ok",
        "definition": None
        if definition is None
        else {
            "quota_bytes": definition.quota_bytes,
            "auto_suspend": definition.auto_suspend,
            "warn_at": list(definition.warn_at if definition.warn_at is not None else policy.warn_at),
            "timezone": pool_timezone(state, policy),
            "updated_at": format_time(definition.updated_at),
        },
        "month": state.month,
        "used_bytes": usage.used,
        "month_quota_bytes": quota,
        "remaining_bytes": None if quota is None else max(quota - usage.used, 0),
        "thresholds_fired": sorted(usage.thresholds_fired),
        "addons": [
            {"addon_id": addon_id, "month": month, "bytes": size}
            for addon_id, (month, size) in sorted(state.addons.items(), key=lambda a: (a[1][0], a[0]))
        ],
        "members": len(state.roster),
        "member_iccids": list(members),
        "next_due": {"event": "month_start", "at": format_time(pool_due(state, policy))},
        "as_of": format_time(now),
    }


def pool_to_dict(state: PoolState) -> dict[str, Any]:
    """The pool's own value, JSON-ready (member rows are stored apart)."""
    definition = state.definition
    return {
        "pool_id": state.pool_id,
        "month": state.month,
        "def": None
        if definition is None
        else {
            "quota_bytes": definition.quota_bytes,
            "auto_suspend": definition.auto_suspend,
            "warn_at": list(definition.warn_at) if definition.warn_at is not None else None,
            "timezone": definition.timezone,
            "addons": [[a.addon_id, a.month, a.bytes] for a in definition.addons],
            "updated_at": format_time(definition.updated_at),
        },
        "months": {
            m: [u.used, u.thresholds_fired, u.forecast_fired, u.unknown_alerted, u.exhausted, u.episodes]
            for m, u in state.months.items()
        },
        "addons": state.addons,
    }


def pool_from_dict(obj: dict[str, Any]) -> PoolState:
    from .inputs import Addon

    raw = obj["def"]
    definition = (
        None
        if raw is None
        else Pool(
            obj["pool_id"],
            raw["quota_bytes"],
            raw["auto_suspend"],
            tuple(raw["warn_at"]) if raw["warn_at"] is not None else None,
            raw["timezone"],
            tuple(Addon(*a) for a in raw["addons"]),
            parse_time(raw["updated_at"]),
        )
    )
    return PoolState(
        obj["pool_id"],
        obj["month"],
        definition,
        {m: PoolMonth(u[0], list(u[1]), u[2], u[3], u[4], u[5]) for m, u in obj["months"].items()},
        {k: (v[0], v[1]) for k, v in obj["addons"].items()},
    )


def member_to_dict(member: Member) -> dict[str, Any]:
    return {"in": member.active, "m": member.months}


def member_from_dict(obj: dict[str, Any]) -> Member:
    return Member(obj["in"], dict(obj["m"]))


def forget_old(member: Member, current: str) -> None:
    """A member row keeps the months a report may still change (this and last)."""
    for month in [m for m in member.months if m < current and not _within_a_month(m, current)]:
        del member.months[month]


def _within_a_month(month: str, current: str) -> bool:
    year, mon = int(current[:4]), int(current[5:7])
    previous = f"{year - 1:04d}-12" if mon == 1 else f"{year:04d}-{mon - 1:02d}"
    return month >= previous


def report_of(obj: dict[str, Any]) -> Report:
    """Validate a member's report: written by stream-app itself, but read from a topic."""
    from .inputs import InvalidInput, iccid_of, pool_id_of

    kind = obj.get("kind")
    if kind not in (USAGE, JOIN, LEAVE):
        raise InvalidInput("wrong_type", "a report's kind is usage, join or leave")
    month, used, cause = obj.get("month"), obj.get("used"), obj.get("cause")
    if not isinstance(month, str) or len(month) != 7:
        raise InvalidInput("bad_month", "a report's month is YYYY-MM")
    if not isinstance(used, int) or isinstance(used, bool) or used < 0:
        raise InvalidInput("negative_bytes", "a report's used is a byte count")
    if cause is not None and not isinstance(cause, str):
        raise InvalidInput("wrong_type", "a report's cause is a string or null")
    return Report(pool_id_of(obj.get("pool_id")), iccid_of(obj), kind, month, used, cause)
