"""The bench's slower figures: decision latency under load, resident memory and recovery
with a steady-state fleet in the table, and replay."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from fleet import PARTITIONS, WORKER_NOW, horizon_ids, iccid, steady_fleet, subscription, usage, usage_records
from kafka import produce, read_through, wait_for_topic
from workers import Worker, bench_env, settled_rss, wait_books

from stream_app import collector
from stream_app.domain.timeutil import parse_time
from stream_app.settings import Settings
from stream_app.tools.admin import ensure_topics
from stream_app.tools.replay import replay_lines
from stream_app.worker.app import TABLE


def changelog_topic(settings: Settings) -> str:
    return f"{settings.app_id}-{TABLE}-changelog"


async def create_changelog(settings: Settings) -> None:
    """The table's changelog as the worker would declare it (compacted, co-partitioned),
    so that it can be preloaded before any worker starts."""
    admin = AIOKafkaAdminClient(**settings.kafka_options())
    await admin.start()
    try:
        topic = NewTopic(
            changelog_topic(settings), PARTITIONS, 1, topic_configs={"cleanup.policy": "compact"}
        )
        await admin.create_topics([topic])
    finally:
        await admin.close()
    await wait_for_topic(settings.bootstrap_servers, changelog_topic(settings))


async def preload_fleet(bootstrap: str, settings: Settings, sims: int, until: Any) -> int:
    """Write ``sims`` steady-state SIMs (ids up to ``until``) to the table's changelog."""
    await create_changelog(settings)
    ids = horizon_ids(settings.dedupe_horizon)
    return await produce(
        bootstrap, changelog_topic(settings), steady_fleet(sims, ids, until, settings.policy())
    )


async def latency(
    bootstrap: str, env: dict[str, str], rate: float, seconds: float, sims: int
) -> dict[str, Any]:
    """Decision latency under load: records at ``rate``/s on the steady SIMs, with one
    probe in twenty, a record for a never-seen SIM (it gives an unknown_sim alert at
    once); from the probe's produce time to its alert's append."""
    settings = Settings.from_env(env)
    alerts = AIOKafkaConsumer(
        settings.topic("alerts"),
        bootstrap_servers=bootstrap,
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    await alerts.start()
    await alerts.seek_to_end()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    sent: dict[str, float] = {}
    began, i = time.perf_counter(), 0
    try:
        while time.perf_counter() - began < seconds:
            probe = i % 20 == 0
            record_id = f"lat-{i}"
            n = 10**9 + i if probe else (i * 7919) % sims
            start = WORKER_NOW - timedelta(minutes=5)
            value = orjson.dumps(usage(n, record_id, start, 1, 1))
            if probe:
                sent[record_id] = time.time()
            await producer.send(settings.topic("usage"), value, key=iccid(n).encode())
            i += 1
            await asyncio.sleep(max(0.0, began + i / rate - time.perf_counter()))
        await producer.flush()
        latencies: list[float] = []
        deadline = time.perf_counter() + 30
        while len(latencies) < len(sent) and time.perf_counter() < deadline:
            for messages in (await alerts.getmany(timeout_ms=500)).values():
                for m in messages:
                    alert = orjson.loads(m.value)
                    if alert["kind"] == "unknown_sim" and alert.get("cause") in sent:
                        latencies.append(m.timestamp / 1000 - sent[alert["cause"]])
    finally:
        await producer.stop()
        await alerts.stop()
    figures: dict[str, Any] = {"latency_samples": len(latencies)}
    if len(latencies) >= 2:
        quantiles = statistics.quantiles(latencies, n=100)
        figures["p50_latency_ms"], figures["p99_latency_ms"] = quantiles[49] * 1000, quantiles[98] * 1000
    return figures


async def memory_and_recovery(
    bootstrap: str, sims: int, store: str, workdir: Path
) -> tuple[int, float, int, float]:
    """RSS per SIM with ``sims`` steady-state SIMs in the table, the time a fresh worker
    takes to recover them (from its start to /readyz), its RSS, and the time a plain
    consumer takes to read the same changelog (the floor of a recovery, same run).

    The states are written straight to the table's changelog (what a worker would have
    written), so the figure does not wait for a million SIMs to be processed.
    """
    suffix = f"{store.split(':', maxsplit=1)[0]}-{uuid.uuid4().hex[:6]}"
    # Ticks every second and books logged: RSS is read once the books are built (at a
    # worker's first tick: every SIM's card read, the due index), as a running worker has.
    env = bench_env(
        bootstrap, suffix, STREAM_APP_STORE=store, STREAM_APP_LOG_LEVEL="info", STREAM_APP_TICK_INTERVAL="1s"
    )
    settings = Settings.from_env(env)
    await ensure_topics(settings)
    await create_changelog(settings)
    empty = Worker(env, workdir / f"{suffix}-empty")
    empty.wait_ready()
    baseline = settled_rss(empty)
    empty.stop()
    ids = horizon_ids(settings.dedupe_horizon)
    entries = await produce(
        bootstrap, changelog_topic(settings), steady_fleet(sims, ids, WORKER_NOW, settings.policy())
    )
    fresh = Worker(env, workdir / f"{suffix}-fresh")
    recovery = fresh.wait_ready() - fresh.started
    wait_books(fresh, PARTITIONS)
    rss = settled_rss(fresh)
    fresh.stop()
    floor = await read_through(bootstrap, changelog_topic(settings), entries)
    return max(rss - baseline, 0) // max(sims, 1), recovery, rss, floor


def replay_rate(records: int, sims: int) -> float:
    """Replay from scratch: the SIMs' subscriptions, then their usage."""
    lines = [
        orjson.dumps({"topic": "sim.subscriptions", "value": subscription(n, 10**12)}) for n in range(sims)
    ]
    first = parse_time("2026-03-31T22:00:00+08:00")  # across a month start, as the bench always had
    lines += [
        b'{"topic":"sim.usage","value":' + value + b"}" for _, value in usage_records(records, sims, first)
    ]
    settings = Settings.from_env({"STREAM_APP_DEDUPE_HORIZON": "30d"})
    collector.tune()  # as `stream-app replay` runs
    began = time.perf_counter()
    count = sum(1 for _ in replay_lines(settings, lines))
    elapsed = time.perf_counter() - began
    assert count >= 0
    return len(lines) / elapsed
