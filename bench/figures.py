"""The bench's slower figures: decision latency under load, resident memory and recovery
with a steady-state fleet in the table, and replay."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from fleet import (
    PARTITIONS,
    WORKER_NOW,
    horizon_ids,
    iccid,
    partition_of,
    steady_fleet,
    subscription,
    usage,
    usage_records,
)
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


TICK = 0.010
"""The latency load goes out every this many seconds, one record batch per partition:
at 4,500 records/s, 3 ms ticks cost this process 35 % of a core, 10 ms ticks 21 %."""


async def latency(
    bootstrap: str, env: dict[str, str], rate: float, seconds: float, sims: int, warmup: float
) -> dict[str, Any]:
    """Decision latency under load: records at ``rate``/s on the steady SIMs, with one
    probe in twenty, a record for a never-seen SIM (it gives an unknown_sim alert at
    once); from the moment the probe was due (its record's timestamp) to its alert's
    append, so the wait for its tick and any lateness of this generator count too.

    The load is encoded before the clock starts and sent in ticks of ``TICK``, each
    tick's records in one batch per partition, as a carrier's mediation sends them: a
    record sent and slept for on its own cost this process 35-40 % of a core, taken
    from the worker and the broker on a 2-core machine. How late the generator got its
    ticks out is reported (``latency_generator_lag_*``): a run where it fell behind
    measured the machine, not the worker.

    The first ``warmup`` seconds of load are sent but not counted: the step from an idle
    worker to half its rate (the fetches and batches find their size). Their p99 is
    reported beside, and the p99 over every probe.
    """
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
    try:
        load = latency_load(rate, seconds, sims)
        sent = await send_in_ticks(producer, settings.topic("usage"), load, rate)
        latencies: dict[str, float] = {}
        deadline = time.perf_counter() + 30
        while len(latencies) < len(sent.due) and time.perf_counter() < deadline:
            for messages in (await alerts.getmany(timeout_ms=500)).values():
                for m in messages:
                    alert = orjson.loads(m.value)
                    if alert["kind"] == "unknown_sim" and alert.get("cause") in sent.due:
                        latencies[alert["cause"]] = m.timestamp / 1000 - sent.due[alert["cause"]]
    finally:
        await producer.stop()
        await alerts.stop()
    counted_from = sent.began + warmup
    counted = [value for probe, value in latencies.items() if sent.due[probe] >= counted_from]
    ramp = [value for probe, value in latencies.items() if sent.due[probe] < counted_from]
    figures: dict[str, Any] = {
        "latency_probes": len(sent.due),
        "latency_missing": len(sent.due) - len(latencies),
        "latency_samples": len(counted),
        "latency_warmup_samples": len(ramp),
        "latency_generator_lag_p99_ms": _p99(sent.lags) * 1000,
        "latency_generator_lag_max_ms": max(sent.lags, default=0.0) * 1000,
    }
    if len(counted) >= 2:
        quantiles = statistics.quantiles(counted, n=100)
        figures["p50_latency_ms"], figures["p99_latency_ms"] = quantiles[49] * 1000, quantiles[98] * 1000
        figures["max_latency_ms"] = max(counted) * 1000
    if len(ramp) >= 2:
        figures["p99_latency_ms_warmup"] = _p99(ramp) * 1000
    if len(latencies) >= 2:
        figures["p99_latency_ms_all"] = _p99(list(latencies.values())) * 1000
    return figures


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else max(values, default=0.0)


Load = list[tuple[str | None, bytes, bytes, int]]
"""Records to send: (probe id or None, key, value, partition)."""


def latency_load(rate: float, seconds: float, sims: int) -> Load:
    """``seconds`` of records at ``rate``/s over the steady SIMs, one in twenty a probe."""
    start = WORKER_NOW - timedelta(minutes=5)
    load: Load = []
    for i in range(int(rate * seconds)):
        is_probe = i % 20 == 0
        n = 10**9 + i if is_probe else (i * 7919) % sims
        key = iccid(n).encode()
        value = orjson.dumps(usage(n, f"lat-{i}", start, 1, 1))
        load.append((f"lat-{i}" if is_probe else None, key, value, partition_of(key)))
    return load


@dataclass(frozen=True)
class Sent:
    began: float
    """Wall time the first record was due."""
    due: dict[str, float]
    """Per probe, the wall time it was due: its record's timestamp."""
    lags: list[float]
    """Per tick, how long after its oldest record was due the tick was handed to the producer."""


async def send_in_ticks(producer: AIOKafkaProducer, topic: str, load: Load, rate: float) -> Sent:
    """Send ``load`` at ``rate`` records/s, what is due every ``TICK`` in one batch per
    partition, each record stamped with the time it was due."""
    due_at: dict[str, float] = {}
    lags: list[float] = []
    deliveries: list[asyncio.Future[Any]] = []
    began, clock, done = time.time(), time.perf_counter(), 0
    while done < len(load):
        due = min(len(load), int((time.perf_counter() - clock) * rate) + 1)
        batches: dict[int, Any] = {}
        for i in range(done, due):
            probe, key, value, partition = load[i]
            at = began + i / rate
            if probe is not None:
                due_at[probe] = at
            stamp = int(at * 1000)
            batch = batches.get(partition)
            # A full batch refuses the record (None): send it and start another, which
            # always takes its first record, whatever its size.
            if batch is None or batch.append(key=key, value=value, timestamp=stamp) is None:
                if batch is not None:
                    deliveries.append(await producer.send_batch(batch, topic, partition=partition))
                batch = batches[partition] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=stamp)
        for partition, batch in batches.items():
            deliveries.append(await producer.send_batch(batch, topic, partition=partition))
        lags.append(time.time() - (began + done / rate))
        done = due
        await asyncio.sleep(TICK)
    await asyncio.gather(*deliveries)
    return Sent(began, due_at, lags)


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
