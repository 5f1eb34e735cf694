"""Month starts with no traffic, and a worker killed and restarted, on the real broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from stream_app.domain.timeutil import parse_time

from .conftest import WorkerProcess, outputs_for, send, simulated_clock, wait_known, worker_env
from .test_worker import GB, iccid, subscription, usage

pytestmark = pytest.mark.integration


async def test_month_boundary_crossed_by_the_simulated_clock_restores_with_no_traffic(
    kafka: str, start_worker: Callable[[dict[str, str]], WorkerProcess], producer: AIOKafkaProducer
) -> None:
    # Simulated time runs 10x from 23:58:00 on 31 March (Shanghai), anchored at a wall time
    # just after start-up, so the boundary comes ~12 s (wall) after the worker is ready.
    start = parse_time("2026-03-31T23:58:00+08:00")
    anchor = time.time() + 8
    worker = start_worker(worker_env(kafka, **simulated_clock(start, 10, anchor)))
    settings = worker.settings
    sims = [iccid() for _ in range(5)]
    out = await outputs_for(kafka, settings)
    try:
        for sim in sims:
            await send(
                producer,
                settings,
                "subscriptions",
                {**subscription(sim, GB), "updated_at": "2026-03-01T00:00:00Z"},
            )
            await send(
                producer, settings, "usage", usage(sim, 2 * GB, f"{sim}-1", start=start - timedelta(hours=1))
            )
        await out.wait_for(lambda _: len(out.of("commands", action="suspend")) == len(sims))
        # no traffic from here on
        await out.wait_for(lambda _: len(out.of("commands", action="restore")) == len(sims), timeout=90)
        wall_boundary = anchor + (parse_time("2026-04-01T00:00:00+08:00") - start).total_seconds() / 10
        lag = time.time() - wall_boundary
    finally:
        await out.consumer.stop()
    for restore in out.of("commands", action="restore"):
        assert restore["trigger"] == "month_start"
        assert restore["at"] == "2026-03-31T16:00:00Z"
        assert restore["reasons"] == []
    assert {r["iccid"] for r in out.of("commands", action="restore")} == set(sims)
    # within 60 simulated seconds of 00:00 (6 s wall at 10x), plus reading slack
    assert lag * 10 < 60 + 30, f"restores came {lag * 10:.0f} simulated seconds after midnight"


async def test_killed_worker_recovers_its_table_and_counts_exactly(
    kafka: str, start_worker: Callable[[dict[str, str]], WorkerProcess], producer: AIOKafkaProducer
) -> None:
    env = worker_env(kafka)
    first = start_worker(env)
    settings = first.settings
    sim = iccid()
    out = await outputs_for(kafka, settings)
    try:
        await send(producer, settings, "subscriptions", subscription(sim, GB, warn_at=[0.5, 0.8, 0.9, 1.0]))
        await wait_known(first, sim)
        for n in range(6):  # 600 MB
            await send(producer, settings, "usage", usage(sim, 100_000_000, f"r{n}"))
        await out.wait_for(lambda _: len(out.of("alerts", iccid=sim, threshold=0.5)) == 1)
        # Wait for the offset commit, so the next worker cannot have recounted these
        # records from the topic: its 600 MB can only come from the table's changelog.
        deadline = time.monotonic() + 30
        while await committed(kafka, settings.app_id, settings.topic("usage")) < 6:
            assert time.monotonic() < deadline, "offsets never committed"
            await asyncio.sleep(0.5)
        first.kill()  # kill -9: no clean shutdown

        second = start_worker(env)
        assert second.settings.app_id == settings.app_id
        # replays of already counted records must not count again...
        for n in range(6):
            await send(producer, settings, "usage", usage(sim, 100_000_000, f"r{n}"))
        # ...and new ones continue from 600 MB: 800 MB is the 80 % threshold
        for n in range(6, 8):
            await send(producer, settings, "usage", usage(sim, 100_000_000, f"r{n}"))
        await out.wait_for(lambda _: len(out.of("alerts", iccid=sim, threshold=0.8)) >= 1)
        await out.settle(3)
        assert out.of("commands", iccid=sim) == []
        for n in range(8, 10):
            await send(producer, settings, "usage", usage(sim, 100_000_000, f"r{n}"))
        await out.wait_for(lambda _: len(out.of("commands", iccid=sim)) >= 1)
        await out.settle(3)
    finally:
        await out.consumer.stop()
    thresholds = {a["alert_id"]: a for a in out.of("alerts", iccid=sim, kind="quota_threshold")}
    assert [(a["threshold"], a["used_bytes"]) for a in thresholds.values()] == [
        (0.5, 500_000_000),
        (0.8, 800_000_000),
        (0.9, 900_000_000),
        (1.0, GB),
    ]
    [suspend] = {c["command_id"]: c for c in out.of("commands", iccid=sim)}.values()
    assert suspend["cause"] == "r9"


async def committed(kafka: str, group: str, topic: str) -> int:
    """The consumer group's committed offsets on ``topic``, summed over partitions."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0)
