"""A broker outage: a few log lines, not a flood; not ready while Kafka is gone; back after.

The test stops and starts a broker of its own (free ports, its own folder), so the
session's broker, which every other test shares, is never disturbed.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from stream_app.tools.localbroker import LocalBroker, free_port
from stream_app.worker.logs import REPEAT_WINDOW

from .conftest import WorkerProcess, outputs_for, send, worker_env
from .test_api import get
from .test_worker import GB, iccid, subscription, usage

pytestmark = pytest.mark.integration

DOWN = 3 * REPEAT_WINDOW + 5
"""Seconds the broker stays down: three whole windows of the log limit, and some."""


@pytest.fixture
def own_broker(kafka_jars: Path, tmp_path: Path) -> Iterator[LocalBroker]:
    broker = LocalBroker(
        home=tmp_path / "kafka", port=free_port(), controller_port=free_port(), libs=kafka_jars
    )
    broker.start(timeout=90)
    try:
        yield broker
    finally:
        broker.stop()


async def suspended(bootstrap: str, worker: WorkerProcess) -> None:
    """A SIM's subscription and usage over quota, then its suspend command: the worker works."""
    settings, sim = worker.settings, iccid()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    out = await outputs_for(bootstrap, settings)
    try:
        await send(producer, settings, "subscriptions", subscription(sim, GB))
        await send(producer, settings, "usage", usage(sim, 1_200_000_000, f"{sim}-1"))
        await out.wait_for(lambda _: bool(out.of("commands", iccid=sim, action="suspend")), timeout=120)
    finally:
        await out.consumer.stop()
        await producer.stop()


async def readyz(port: int, status: int, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got, body = await asyncio.to_thread(get, port, "/readyz")
        if got == status:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"/readyz stayed {got} {body}, expected {status}")
        await asyncio.sleep(0.5)


def condition(entry: dict[str, Any]) -> tuple[str, str, str]:
    """A log line's condition as a reader tells it: logger, level and the message with its
    numbers (node ids, ports, counts) and the left-out count taken out."""
    message = re.sub(r" \[\d+ more like this not logged\]$", "", entry["message"])
    return entry["logger"], entry["level"], re.sub(r"\d+", "#", message)


async def test_a_broker_outage_logs_each_condition_once_per_window_and_unreadies_the_worker(
    own_broker: LocalBroker, start_worker: Callable[[dict[str, str]], WorkerProcess]
) -> None:
    bootstrap = own_broker.bootstrap
    env = worker_env(bootstrap, STREAM_APP_BROKER_LOST_AFTER="5s", STREAM_APP_LOG_FORMAT="json")
    worker = start_worker(env)
    port = worker.settings.web_port
    await suspended(bootstrap, worker)
    await readyz(port, 200, timeout=60)

    logged_before = worker.log_path.stat().st_size
    await asyncio.to_thread(own_broker.stop)
    down_at = time.time()
    body = await readyz(port, 503, timeout=60)
    assert any(w.startswith("no answer from Kafka for ") for w in body["unready"]), body
    await asyncio.sleep(max(0.0, down_at + DOWN - time.time()))
    with worker.log_path.open("rb") as log:
        log.seek(logged_before)
        during = [orjson.loads(line) for line in log.read().splitlines() if line.startswith(b"{")]

    warnings = [e for e in during if e["level"] in ("warning", "error", "critical")]
    assert any(e["logger"].startswith("aiokafka") for e in warnings), "the outage is not in the log at all"
    times: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    per_window: dict[int, int] = defaultdict(int)
    for entry in warnings:
        at = datetime.fromisoformat(entry["time"]).timestamp()
        times[condition(entry)].append(at)
        per_window[int((at - down_at) // REPEAT_WINDOW)] += 1
    print(f"log lines per {REPEAT_WINDOW:.0f} s window while down: {dict(sorted(per_window.items()))}")
    for key, stamps in times.items():
        gaps = [later - earlier for earlier, later in itertools.pairwise(stamps)]
        # record times are wall clock, the limit's monotonic: a little slack
        assert all(gap > REPEAT_WINDOW - 0.2 for gap in gaps), f"{key} logged {len(stamps)}x: gaps {gaps}"

    await asyncio.to_thread(own_broker.start, 90)
    await readyz(port, 200, timeout=120)
    assert worker.alive()
    await suspended(bootstrap, worker)  # and it processes records again
