"""The worker on the real broker: usage in, commands, alerts and dead letters out."""

from __future__ import annotations

import asyncio
import base64
import signal
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from stream_app.domain.timeutil import format_time

from .conftest import WorkerProcess, outputs_for, send, wait_known, worker_env

pytestmark = pytest.mark.integration

GB = 1_000_000_000
_counter = iter(range(10**9))


def iccid() -> str:
    return f"8986{next(_counter) + int(time.time() * 1000) % 10**9:016d}"


def subscription(sim: str, quota: int, auto_suspend: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "iccid": sim,
        "plan_id": "iot-1g",
        "quota_bytes": quota,
        "valid_from": "2026-01-01T00:00:00Z",
        "expires_at": None,
        "auto_suspend": auto_suspend,
        "updated_at": format_time(datetime.now(UTC) - timedelta(days=1)),
        **extra,
    }


def usage(sim: str, total: int, record_id: str, start: datetime | None = None) -> dict[str, Any]:
    begin = start or datetime.now(UTC) - timedelta(minutes=10)
    return {
        "record_id": record_id,
        "iccid": sim,
        "carrier": "cmcc",
        "start": format_time(begin),
        "end": format_time(begin + timedelta(minutes=5)),
        "bytes_up": total // 2,
        "bytes_down": total - total // 2,
    }


@pytest.fixture
def worker(kafka: str, start_worker: Callable[[dict[str, str]], WorkerProcess]) -> WorkerProcess:
    return start_worker(worker_env(kafka))


async def test_usage_reaching_the_quota_sends_one_suspend_command(
    kafka: str, worker: WorkerProcess, producer: AIOKafkaProducer
) -> None:
    settings = worker.settings
    sim = iccid()
    out = await outputs_for(kafka, settings)
    try:
        await send(producer, settings, "subscriptions", subscription(sim, GB))
        await wait_known(worker, sim)
        await send(producer, settings, "usage", usage(sim, 700_000_000, "a"))
        await send(producer, settings, "usage", usage(sim, 300_000_000, "b"))
        await send(producer, settings, "usage", usage(sim, 300_000_000, "c"))
        await out.wait_for(lambda _: len(out.of("commands", iccid=sim)) >= 1)
        await out.settle(2)
    finally:
        await out.consumer.stop()
    [suspend] = out.of("commands", iccid=sim)
    assert suspend["action"] == "suspend"
    assert suspend["reason"] == "quota"
    assert suspend["trigger"] == "usage"
    assert suspend["cause"] == "b"
    assert suspend["reasons"] == ["quota"]
    assert len(suspend["command_id"]) == 32
    assert [a["threshold"] for a in out.of("alerts", iccid=sim, kind="quota_threshold")] == [0.8, 0.9, 1.0]
    assert [a["reason"] for a in out.of("audit", iccid=sim)] == ["quota"]


async def test_duplicated_records_are_counted_once(
    kafka: str, worker: WorkerProcess, producer: AIOKafkaProducer
) -> None:
    settings = worker.settings
    sim = iccid()
    out = await outputs_for(kafka, settings)
    try:
        await send(producer, settings, "subscriptions", subscription(sim, GB, auto_suspend=True))
        record = usage(sim, 450_000_000, "dup")
        for _ in range(3):
            await send(producer, settings, "usage", record)
        await send(producer, settings, "usage", usage(sim, 400_000_000, "other"))
        await out.wait_for(lambda _: len(out.of("alerts", iccid=sim)) >= 1)
        await out.settle(3)
    finally:
        await out.consumer.stop()
    # 450 MB + 400 MB = 850 MB: the 80 % threshold, not the quota
    [alert] = out.of("alerts", iccid=sim, kind="quota_threshold")
    assert (alert["threshold"], alert["used_bytes"]) == (0.8, 850_000_000)
    assert out.of("commands", iccid=sim) == []


async def test_bad_input_goes_to_the_dead_letter_topic_and_the_partition_goes_on(
    kafka: str, worker: WorkerProcess, producer: AIOKafkaProducer
) -> None:
    settings = worker.settings
    sim = iccid()
    out = await outputs_for(kafka, settings)
    try:
        await send(producer, settings, "subscriptions", subscription(sim, 100))
        await wait_known(worker, sim)
        await send(producer, settings, "usage", b"{not json", key=sim)
        await send(producer, settings, "usage", {**usage(sim, 1, "neg"), "bytes_down": -1})
        await send(producer, settings, "usage", {**usage(sim, 1, "big"), "pad": "x" * 70_000})
        await send(producer, settings, "usage", usage(sim, 1, "wrong-key"), key=iccid())
        await send(producer, settings, "usage", usage(sim, 100, "valid-after-bad"))
        await out.wait_for(
            lambda _: len(out.of("commands", iccid=sim)) >= 1 and len(out.of("deadletter")) >= 4
        )
    finally:
        await out.consumer.stop()
    letters = out.of("deadletter")
    assert sorted(d["error"] for d in letters) == sorted(
        ["invalid_json", "negative_bytes", "too_large", "key_mismatch"]
    )
    for letter in letters:
        assert letter["topic"] == settings.topic("usage")
        assert letter["offset"] >= 0 and 0 <= letter["partition"] < settings.partitions
    [garbage] = [d for d in letters if d["error"] == "invalid_json"]
    assert base64.b64decode(garbage["payload_b64"]) == b"{not json"
    assert out.of("commands", iccid=sim)[0]["cause"] == "valid-after-bad"


async def test_subscriptions_and_usage_racing_on_two_topics_lose_no_update(
    kafka: str, worker: WorkerProcess, producer: AIOKafkaProducer
) -> None:
    # The subscription and usage agents run concurrently; both read and write a SIM's
    # state. An update lost between them would show as missing usage or a missing plan.
    settings = worker.settings
    sims = [iccid() for _ in range(30)]
    out = await outputs_for(kafka, settings)
    try:
        for n, sim in enumerate(sims):
            sends = [
                send(producer, settings, "subscriptions", subscription(sim, 1000)),
                send(producer, settings, "usage", usage(sim, 600, f"{sim}-a")),
                send(producer, settings, "usage", usage(sim, 600, f"{sim}-b")),
            ]
            for coroutine in sends[n % 3 :] + sends[: n % 3]:  # every order
                await coroutine
        await out.wait_for(lambda _: len(out.of("commands")) >= len(sims))
        await out.settle(2)
    finally:
        await out.consumer.stop()
    assert sorted(c["iccid"] for c in out.of("commands")) == sorted(sims)  # each suspended once
    for sim in sims:
        with urllib.request.urlopen(f"http://127.0.0.1:{settings.web_port}/sims/{sim}", timeout=10) as r:
            body = orjson.loads(r.read())
        assert (body["used_bytes"], body["plan"]["quota_bytes"], body["reasons"]) == (1200, 1000, ["quota"])


async def served(
    port: int, sims: list[str], field: Callable[[Any], Any], wanted: dict[str, Any], timeout: float = 60
) -> dict[str, Any]:
    """``field`` of each SIM as GET /sims serves it, asked again until it is ``wanted``
    or ``timeout`` s have passed: the last answers."""
    deadline = time.monotonic() + timeout
    while True:
        seen = {}
        for sim in sims:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/sims/{sim}", timeout=5) as response:
                seen[sim] = field(orjson.loads(response.read()))
        if seen == wanted or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.5)


async def test_rocksdb_store_counts_exactly_when_a_batch_mixes_partitions(
    kafka: str, start_worker: Callable[[dict[str, str]], WorkerProcess], producer: AIOKafkaProducer
) -> None:
    # A RocksDB store reads and writes the database of the current event's partition;
    # a batch holds records of several partitions, so each SIM's read and write must
    # be bound to an event of its own partition.
    worker = start_worker(worker_env(kafka, STREAM_APP_STORE="rocksdb://"))
    settings = worker.settings
    sims = [iccid() for _ in range(16)]
    for sim in sims:
        await send(producer, settings, "subscriptions", subscription(sim, 100 * GB))
    await wait_known(worker, *sims)
    for round_ in range(3):
        topic = settings.topic("usage")
        sent = [
            await producer.send(topic, orjson.dumps(usage(sim, 1000 + n, f"r{round_}")), key=sim.encode())
            for n, sim in enumerate(sims)
        ]
        await asyncio.gather(*sent)
    expected = {sim: 3 * (1000 + n) for n, sim in enumerate(sims)}
    wanted = {sim: (total, True) for sim, total in expected.items()}
    seen = await served(
        settings.web_port, sims, lambda body: (body["used_bytes"], body["plan"] is not None), wanted
    )
    assert seen == wanted


async def test_a_changelog_batch_the_broker_refuses_stops_the_worker_and_its_restart_counts_it(
    kafka: str, start_worker: Callable[[dict[str, str]], WorkerProcess], producer: AIOKafkaProducer
) -> None:
    """The producer is not idempotent: a batch reported as failed may be in the log all
    the same, so the store cannot tell whether it has what the changelog has. The worker
    stops rather than going on; restarted on its own RocksDB folder, it processes the
    uncommitted record again and counts it once."""
    env = worker_env(kafka, STREAM_APP_STORE="rocksdb://")
    first = start_worker(env)
    settings = first.settings
    sim = iccid()
    await send(producer, settings, "subscriptions", subscription(sim, 100 * GB))
    await wait_known(first, sim)
    changelog = f"{settings.app_id}-sims-changelog"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, changelog, {"max.message.bytes": "64"})]
        )
        await send(producer, settings, "usage", usage(sim, 1234, "r1"))
        deadline = time.monotonic() + 60
        while first.alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        assert not first.alive(), "the worker went on after its changelog write was refused"
        assert "changelog write to partition" in first.log_path.read_text(errors="replace")
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, changelog, {"max.message.bytes": "1048588"})]
        )
    finally:
        await admin.close()
    second = WorkerProcess(env, Path(first.env["STREAM_APP_DATA_DIR"]))
    try:
        second.start()
        used = (await served(settings.web_port, [sim], lambda body: body["used_bytes"], {sim: 1234}))[sim]
        assert used == 1234
    finally:
        second.stop()


async def test_a_worker_stopped_in_the_middle_of_its_work_exits_cleanly_and_counts_on(
    kafka: str, start_worker: Callable[[dict[str, str]], WorkerProcess], producer: AIOKafkaProducer
) -> None:
    """SIGTERM with a backlog being processed: a clean stop is not a changelog failure
    (no CRITICAL, no exit 70), and restarted on its own RocksDB folder the worker counts
    every record once."""
    env = worker_env(kafka, STREAM_APP_STORE="rocksdb://")
    first = start_worker(env)
    settings = first.settings
    sims = [iccid() for _ in range(50)]
    for sim in sims:
        await send(producer, settings, "subscriptions", subscription(sim, 100 * GB))
    await wait_known(first, *sims)
    topic = settings.topic("usage")
    for n in range(40):
        for sim in sims:
            await producer.send(topic, orjson.dumps(usage(sim, 1000, f"r{n}")), key=sim.encode())
    await producer.flush()
    await asyncio.sleep(0.3)
    assert first.proc is not None
    first.proc.send_signal(signal.SIGTERM)
    status = first.proc.wait(60)
    text = first.log_path.read_text(errors="replace")
    assert "CRITICAL" not in text and status != 70, text[-3000:]
    second = WorkerProcess(env, Path(first.env["STREAM_APP_DATA_DIR"]))
    try:
        second.start()
        used = await served(
            settings.web_port, sims, lambda body: body["used_bytes"], dict.fromkeys(sims, 40 * 1000), 90
        )
        assert used == dict.fromkeys(sims, 40 * 1000)
    finally:
        second.stop()
