"""The bench's fleet in the steady state: SIMs in the middle of a month, each remembering
a full dedupe horizon of record ids (one record per 15 minutes, DESIGN "Scale"), and the
usage records that continue it.

A SIM's stored entries are built through the project's own code: one state through the
engine (a subscription and half a month of usage), copied per SIM with a dedupe memory
of ``ids`` ids as if they had been counted one by one (``memory.remembered``), and
encoded by ``codec.sim_entries``, exactly what a worker that had counted them would
have written to the table's changelog.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta

import orjson
from aiokafka.partitioner import DefaultPartitioner

from stream_app import codec
from stream_app.domain import Policy, SimState, copy_state, new_state
from stream_app.domain.engine import apply_input
from stream_app.domain.memory import HASH_BYTES, remembered
from stream_app.domain.timeutil import format_time, parse_time
from stream_app.pipeline import validate

PARTITIONS = 8
WORKER_NOW = parse_time("2026-04-15T12:00:00+08:00")
"""The workers' clock at start: the middle of a month."""
EVERY = timedelta(minutes=15)
"""A SIM's cadence: one usage record per 15 minutes."""
QUOTA = 10 * 2**30
"""A month's quota: far above what half a month uses, so a record changes only totals."""
NEAR = 100
"""One SIM in NEAR is near its quota: its records cross a threshold (an alert or two)."""
HALF_MONTH = 2 * 14 * 96 * 23_000
"""What the template has used by the middle of the month: 14 days of 96 records of ~46 kB."""

Entry = tuple[bytes, bytes | None]


def iccid(n: int) -> str:
    return f"898600{n:014d}"


def partition_of(key: bytes) -> int:
    """The partition the producer's default partitioner sends ``key`` to (as a worker's)."""
    everyone = list(range(PARTITIONS))
    return int(DefaultPartitioner()(key, everyone, everyone))


def subscription(n: int, quota: int) -> dict[str, object]:
    return {
        "iccid": iccid(n),
        "plan_id": "bench",
        "quota_bytes": quota,
        "auto_suspend": n % 2 == 0,
        "valid_from": "2026-01-01T00:00:00+08:00",
        "expires_at": None,
        "updated_at": "2026-03-01T00:00:00+08:00",
    }


def usage(n: int, record_id: str, start: datetime, up: int, down: int) -> dict[str, object]:
    return {
        "record_id": record_id,
        "iccid": iccid(n),
        "carrier": "cmcc",
        "start": format_time(start),
        "end": format_time(start + timedelta(minutes=1)),
        "bytes_up": up,
        "bytes_down": down,
    }


def template(policy: Policy, now: datetime) -> SimState:
    """One SIM through the engine: its subscription, then half a month of usage."""
    state = new_state(iccid(0), now, policy)
    apply_input(state, validate("subscriptions", subscription(0, QUOTA)), now, policy)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    for i in range(10):
        start = month_start + timedelta(days=i + 1)
        record = usage(0, f"template-{i}", start, HALF_MONTH // 20, HALF_MONTH // 20)
        apply_input(state, validate("usage", orjson.loads(orjson.dumps(record))), now, policy)
    return state


def horizon_ids(horizon: timedelta) -> int:
    """Ids a SIM remembers in the steady state: one per 15 minutes over the horizon (672 at 7 days)."""
    return int(horizon / EVERY)


def steady_state_entries(n: int, ids: int, now: datetime, like: SimState, policy: Policy) -> list[Entry]:
    """SIM ``n``'s table entries: ``like``'s month and plan, and ``ids`` random record ids
    remembered one per 15 minutes up to ``now`` (random: no luck in how they compress)."""
    assert like.subscription is not None
    state = copy_state(like)
    state.iccid = iccid(n)
    quota = QUOTA if n % NEAR else int(HALF_MONTH / 0.798)  # just under 80 % of its quota
    state.subscription = replace(like.subscription, iccid=state.iccid, quota_bytes=quota)
    first_minute = int((now - ids * EVERY).timestamp() // 60) + 1
    state.ids = remembered(os.urandom(ids * HASH_BYTES), first_minute, int(EVERY.total_seconds() // 60))
    stored = codec.stored_of(state, policy)
    codec.place(stored, partition_of(state.iccid.encode()))
    stored.profile_changed = False  # steady: the profile sits in its own key, the card without it
    return codec.sim_entries(stored)


def steady_fleet(
    sims: int, ids: int, now: datetime, policy: Policy
) -> Iterator[tuple[bytes, bytes | None, int]]:
    """(key, value, partition) of every entry of ``sims`` steady-state SIMs."""
    like = template(policy, now)
    for n in range(sims):
        partition = partition_of(iccid(n).encode())
        for key, value in steady_state_entries(n, ids, now, like, policy):
            yield key, value, partition


def usage_records(
    records: int, sims: int, first: datetime, duplicate_share: float = 0.01
) -> Iterator[tuple[str, bytes]]:
    """(iccid, message) in time order from ``first``: each SIM one record per 15 minutes,
    continuing where its remembered ids stop; about 1 % are exact repeats."""
    span = EVERY * (records / sims)
    every = int(1 / duplicate_share) if duplicate_share else 0
    previous: tuple[str, bytes] | None = None
    for i in range(records):
        if every and i % every == every - 1 and previous is not None:
            yield previous
            continue
        n = (i * 7919) % sims
        start = first + span * (i / records)
        message = orjson.dumps(usage(n, f"r{i}", start, 1000 + i % 5000, 20_000 + i % 50_000))
        previous = (iccid(n), message)
        yield previous
