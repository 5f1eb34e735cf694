"""The fleet and its ground truth: SIMs, pools, subscriptions and the usage of the two
phases around the month start, with every total and every required command known by
construction (see the package docstring)."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson

SHANGHAI = ZoneInfo("Asia/Shanghai")
BOUNDARY = datetime(2026, 4, 1, tzinfo=SHANGHAI).astimezone(UTC)
OLD, NEW = "2026-03", "2026-04"
PHASE_A_NOW = BOUNDARY - timedelta(hours=2)
"""Phase A's clock: March records are all counted long before the month ends."""
REPEAT_SHARE = 0.04
"""Share of usage messages that repeat an earlier record exactly (same record_id)."""
POOL_SHARE = 0.2
"""Share of the fleet in a pool (members of the three pools, spread over every partition)."""
MARCH_AND_APRIL, APRIL_ONLY, NEVER = "pool-march", "pool-april", "pool-never"
"""The pools, named by when they run out: in March (phase A, so their members are also
restored at the month start) and again in April; in April only; never."""
CommandKey = tuple[str, str, str, str, str]
"""(iccid, action, reason, trigger, month in Shanghai)"""


@dataclass(frozen=True, slots=True)
class Usage:
    iccid: str
    record_id: str
    month: str
    """Known by construction (the start was drawn inside this month), not computed by stream_app."""
    total: int
    value: bytes


@dataclass(frozen=True, slots=True)
class PoolPlan:
    pool_id: str
    quota: int
    members: frozenset[str]
    value: bytes
    """Its definition on the pools topic (``auto_suspend``: every member stopped when it runs out)."""


@dataclass(slots=True)
class Fleet:
    subscriptions: list[tuple[str, bytes]]
    quota: dict[str, int | None]
    """Each SIM's own cap (None: a pool member without one)."""
    auto_suspend: dict[str, bool]
    before: list[Usage]
    """Phase A: March records, produced while the workers' clock is in March."""
    after: list[Usage]
    """Phase B: late March records, April records and repeats, produced after B."""
    pools: list[PoolPlan] = field(default_factory=list)
    placed: dict[tuple[str, str], list[tuple[int, int]]] = field(default_factory=dict)
    """(iccid, record_id) -> where each copy landed on the usage topic (partition, offset)."""

    def place(self, records: Sequence[Usage], placed: Sequence[tuple[int, int]]) -> None:
        for usage, where in zip(records, placed, strict=True):
            self.placed.setdefault((usage.iccid, usage.record_id), []).append(where)

    @property
    def records(self) -> int:
        return len(self.before) + len(self.after)

    def totals(self, records: Iterable[Usage]) -> dict[tuple[str, str], int]:
        """Bytes per (iccid, month), each record id counted once per SIM (R2)."""
        seen: set[tuple[str, str]] = set()
        totals: dict[tuple[str, str], int] = defaultdict(int)
        for usage in records:
            if (usage.iccid, usage.record_id) not in seen:
                seen.add((usage.iccid, usage.record_id))
                totals[usage.iccid, usage.month] += usage.total
        return totals

    def truth(self) -> dict[tuple[str, str], int]:
        return self.totals([*self.before, *self.after])

    @property
    def pool_definitions(self) -> list[tuple[str, bytes]]:
        return [(plan.pool_id, plan.value) for plan in self.pools]

    def pool_totals(self, records: Iterable[Usage]) -> dict[tuple[str, str], int]:
        """Bytes per (pool_id, month): its members' records, each counted once (R17).
        Members join before any usage and never leave, so all their records count."""
        totals = self.totals(records)
        return {
            (plan.pool_id, month): sum(totals.get((iccid, month), 0) for iccid in plan.members)
            for plan in self.pools
            for month in (OLD, NEW)
        }

    def pool_truth(self) -> dict[tuple[str, str], int]:
        return self.pool_totals([*self.before, *self.after])

    def required_commands(self) -> set[CommandKey]:
        """The commands the rules require, as (iccid, action, reason, trigger, month).

        Sound because every March record of phase A is counted while March is current
        (R4: suspend when the March total reaches the quota), no April record exists
        before B (R6: the month start finds April empty and restores), late March
        records never suspend (R3), and April's records are all counted in April. The
        same holds for a pool (R18, R19: every member stopped when its pool's total
        reaches the pool's quota, and restored at the month start), since what members
        report to their pool and what the pool tells them is all done within each phase
        too; and a member is stopped for its pool alone (its own cap, when it has one,
        is out of reach or without auto-suspend), so each change is a command (R5).
        """
        before = self.totals(self.before)
        everything = self.truth()
        required: set[CommandKey] = set()
        for iccid, quota in self.quota.items():
            if not self.auto_suspend[iccid] or quota is None:
                continue
            if before.get((iccid, OLD), 0) >= quota:
                required.add((iccid, "suspend", "quota", "usage", OLD))
                required.add((iccid, "restore", "quota", "month_start", NEW))
            if everything.get((iccid, NEW), 0) >= quota:
                required.add((iccid, "suspend", "quota", "usage", NEW))
        pools_before, pools = self.pool_totals(self.before), self.pool_truth()
        for plan in self.pools:
            for iccid in plan.members:
                if pools_before[plan.pool_id, OLD] >= plan.quota:
                    required.add((iccid, "suspend", "pool", "pool_exhausted", OLD))
                    required.add((iccid, "restore", "pool", "month_start", NEW))
                if pools[plan.pool_id, NEW] >= plan.quota:
                    required.add((iccid, "suspend", "pool", "pool_exhausted", NEW))
        return required


def _iso(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_fleet(records: int, sims: int, seed: int) -> Fleet:
    """``records`` usage messages over ``sims`` SIMs, with known totals per month.

    Quotas are drawn around each SIM's March volume so that about half the SIMs reach
    it in March, and April records are larger so that a good share reach it again.
    """
    rng = random.Random(seed)
    iccids = [f"898600{n:014d}" for n in range(sims)]
    distinct = round(records / (1 + REPEAT_SHARE))
    in_march = round(distinct * 0.7)
    late = round(distinct * 0.1)
    counter = iter(range(10**9))

    def usage(iccid: str, start: datetime, duration: int, total: int, month: str) -> Usage:
        record_id = f"cdr-{next(counter)}"
        up = total // 5
        value = orjson.dumps(
            {
                "record_id": record_id,
                "iccid": iccid,
                "carrier": rng.choice(("cmcc", "cucc", "ctcc")),
                "start": _iso(start),
                "end": _iso(start + timedelta(seconds=duration)),
                "bytes_up": up,
                "bytes_down": total - up,
            }
        )
        return Usage(iccid, record_id, month, total, value)

    march_start = BOUNDARY - timedelta(days=3)
    march_span = (PHASE_A_NOW - march_start).total_seconds() - 1800
    before = [
        usage(
            rng.choice(iccids),
            march_start + timedelta(seconds=rng.uniform(0, march_span)),
            rng.randint(60, 600),
            rng.randint(200_000, 5_000_000),
            OLD,
        )
        for _ in range(in_march)
    ]
    late_records = [
        usage(
            rng.choice(iccids),
            BOUNDARY - timedelta(seconds=rng.uniform(300, 86_400)),
            rng.randint(60, 240),
            rng.randint(200_000, 5_000_000),
            OLD,
        )
        for _ in range(late)
    ]
    # April records start within 10 minutes of B and end at most 14 minutes after it:
    # produced once the clock is past B, they are never beyond the 15-minute skew (R15).
    april = [
        usage(
            rng.choice(iccids),
            BOUNDARY + timedelta(seconds=rng.uniform(0, 600)),
            rng.randint(60, 240),
            rng.randint(600_000, 15_000_000),
            NEW,
        )
        for _ in range(distinct - in_march - late)
    ]
    march_totals: dict[str, int] = defaultdict(int)
    for item in before:
        march_totals[item.iccid] += item.total
    quota: dict[str, int | None] = {
        iccid: max(1_000_000, round(march_totals[iccid] * rng.uniform(0.6, 1.5)))
        if march_totals[iccid]
        else rng.randint(1_000_000, 50_000_000)
        for iccid in iccids
    }
    auto_suspend = {iccid: rng.random() < 0.8 for iccid in iccids}
    april_totals: dict[str, int] = defaultdict(int)
    for item in april:
        april_totals[item.iccid] += item.total
    pools, pool_of = plan_pools(random.Random(seed + 1), iccids, march_totals, april_totals)
    for iccid in pool_of:
        # A member is stopped for its pool alone (see Fleet.required_commands): no cap
        # of its own, one out of reach, or one reached without auto-suspend (alerts only).
        kind = int(iccid[-6:]) % 3
        if kind == 0:
            quota[iccid] = None
        elif kind == 1:
            quota[iccid] = 10 * (march_totals[iccid] + april_totals[iccid]) + 10**9
        else:
            auto_suspend[iccid] = False
    subscriptions = [
        (
            iccid,
            orjson.dumps(
                {
                    "iccid": iccid,
                    "plan_id": "chaos",
                    "quota_bytes": quota[iccid],
                    "valid_from": "2026-01-01T00:00:00+08:00",
                    "expires_at": None,
                    "auto_suspend": auto_suspend[iccid],
                    "pool_id": pool_of.get(iccid),
                    "updated_at": _iso(BOUNDARY - timedelta(days=10)),
                }
            ),
        )
        for iccid in iccids
    ]
    # Exact repeats: half within phase A, a quarter within phase B, a quarter are March
    # records of phase A sent again after the month start.
    repeats = records - distinct
    after = late_records + april
    before_repeats = [rng.choice(before) for _ in range(repeats // 2)]
    after_repeats = [rng.choice(after) for _ in range(repeats // 4)]
    cross_repeats = [rng.choice(before) for _ in range(repeats - len(before_repeats) - len(after_repeats))]
    before = before + before_repeats
    after = after + after_repeats + cross_repeats
    rng.shuffle(before)  # out of time order, as carriers' feeds are
    rng.shuffle(after)
    return Fleet(subscriptions, quota, auto_suspend, before, after, pools)


def plan_pools(
    rng: random.Random, iccids: Sequence[str], march: dict[str, int], april: dict[str, int]
) -> tuple[list[PoolPlan], dict[str, str]]:
    """Three pools over a share of the fleet, their quotas drawn from their members'
    totals (phase A's March records, April's) so that each runs out when its name says.

    The April-only pool takes the members whose April outgrows their March most (April
    records are bigger, but fewer); the others are drawn at random. Members are drawn
    from the whole fleet, so they sit in every partition.
    """
    chosen = rng.sample(list(iccids), max(3, round(len(iccids) * POOL_SHARE)))
    third = len(chosen) // 3
    by_growth = sorted(chosen, key=lambda iccid: april[iccid] - march[iccid], reverse=True)
    growing = by_growth[:third]
    rest = by_growth[third:]
    rng.shuffle(rest)
    groups = {MARCH_AND_APRIL: rest[: len(rest) // 2], APRIL_ONLY: growing, NEVER: rest[len(rest) // 2 :]}
    plans = []
    for pool_id, members in groups.items():
        in_march, in_april = sum(march[m] for m in members), sum(april[m] for m in members)
        if pool_id == MARCH_AND_APRIL:
            quota = max(1, round(min(in_march, in_april) * 0.7))
        elif pool_id == APRIL_ONLY:
            quota = (in_march + in_april) // 2 + 1
        else:
            quota = 2 * (in_march + in_april) + 10**9
        value = orjson.dumps(
            {
                "pool_id": pool_id,
                "quota_bytes": quota,
                "auto_suspend": True,
                "updated_at": _iso(BOUNDARY - timedelta(days=10)),
            }
        )
        plans.append(PoolPlan(pool_id, quota, frozenset(members), value))
    return plans, {iccid: plan.pool_id for plan in plans for iccid in plan.members}
