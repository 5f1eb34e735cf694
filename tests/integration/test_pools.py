"""Pools (流量池) on the real broker: members in several partitions, the pool in its own,
reports and notices through the internal topics, and the month start without traffic."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from stream_app.domain.timeutil import format_time, month_bounds, month_of

from .conftest import WorkerProcess, outputs_for, send, simulated_clock, wait_known, worker_env
from .test_worker import GB, iccid, subscription, usage

pytestmark = pytest.mark.integration

PARTITIONS = 4


def _members_in_every_partition(count: int) -> list[str]:
    """ICCIDs whose keys hash to different partitions, as a real fleet's would."""
    pick = DefaultPartitioner()
    everyone = list(range(PARTITIONS))
    chosen: dict[int, str] = {}
    while len(chosen) < min(count, PARTITIONS):
        sim = iccid()
        chosen.setdefault(pick(sim.encode(), everyone, everyone), sim)
    return list(chosen.values())


def _pool(pool_id: str, quota: int, at: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "pool_id": pool_id,
        "quota_bytes": quota,
        "auto_suspend": True,
        "updated_at": format_time(at),
        **extra,
    }


def _get(worker: WorkerProcess, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.settings.web_port}{path}", timeout=10) as response:
        body: dict[str, Any] = orjson.loads(response.read())
        return body


async def test_a_pool_running_out_stops_members_in_every_partition_and_the_month_start_restores_them(
    kafka: str, start_worker: Callable[[dict[str, str]], WorkerProcess], producer: AIOKafkaProducer
) -> None:
    # Simulated clock: 40 s before midnight in Shanghai, at real speed.
    zone = "Asia/Shanghai"
    month_end = month_bounds(month_of(datetime.now(UTC), zone), zone)[1]
    start = month_end - timedelta(seconds=40)
    env = worker_env(kafka, STREAM_APP_PARTITIONS=str(PARTITIONS), **simulated_clock(start, 1.0, time.time()))
    worker = start_worker(env)
    settings = worker.settings
    pool_id = f"fleet-{iccid()[-6:]}"
    members = _members_in_every_partition(4)
    latecomer = iccid()
    out = await outputs_for(kafka, settings)
    try:
        await send(
            producer, settings, "pools", _pool(pool_id, 3 * GB, start - timedelta(hours=1)), key=pool_id
        )
        for sim in members:
            sub = subscription(sim, 0, pool_id=pool_id, quota_bytes=None)
            sub["updated_at"] = format_time(start - timedelta(minutes=30))
            await send(producer, settings, "subscriptions", sub)
        await wait_known(worker, *members)
        for n, sim in enumerate(members):
            await send(producer, settings, "usage", usage(sim, GB, f"r{n}", start - timedelta(minutes=20)))
        await out.wait_for(lambda _: len(out.of("commands", reason="pool", action="suspend")) >= len(members))
        pool_view = _get(worker, f"/pools/{pool_id}")
        assert (pool_view["state"], pool_view["members"], pool_view["used_bytes"]) == (
            "exhausted",
            len(members),
            len(members) * GB,
        )
        late = subscription(latecomer, 0, pool_id=pool_id, quota_bytes=None)
        late["updated_at"] = format_time(start - timedelta(minutes=10))
        await send(producer, settings, "subscriptions", late)
        await out.wait_for(lambda _: len(out.of("commands", iccid=latecomer, reason="pool")) >= 1)
        # no traffic: the pool's month start restores every member
        await out.wait_for(
            lambda _: len(out.of("commands", reason="pool", action="restore")) >= len(members) + 1,
            timeout=120,
        )
        await out.settle(2)
    finally:
        await out.consumer.stop()
    suspends = out.of("commands", reason="pool", action="suspend")
    assert sorted(s["iccid"] for s in suspends) == sorted([*members, latecomer])
    assert {s["trigger"] for s in suspends} == {"pool_exhausted"} and {s["pool_id"] for s in suspends} == {
        pool_id
    }
    restores = out.of("commands", reason="pool", action="restore")
    assert {(r["trigger"], r["at"]) for r in restores} == {("month_start", format_time(month_end))}
    thresholds = [a for a in out.of("alerts", kind="pool_threshold") if a["pool_id"] == pool_id]
    assert sorted(a["threshold"] for a in thresholds) == [0.8, 0.9, 1.0]
    assert {a["iccid"] for a in thresholds} == {None}
