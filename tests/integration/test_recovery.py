"""Bulk recovery on the real broker: a fresh worker's table is exactly the changelog, a
second worker joining midway abandons and restarts the recovery cleanly, and standby
replicas fill.

The changelog is written directly (states built by the engine and encoded by the
codec, as a worker would have written them), and the workers' RocksDB stores are then
read from outside and compared with it, key by key."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import orjson
import pytest
import rocksdict
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from stream_app import codec
from stream_app.domain import Policy, new_state
from stream_app.domain.engine import apply_input
from stream_app.domain.timeutil import format_time, parse_time
from stream_app.pipeline import validate
from stream_app.settings import Settings
from stream_app.tools.admin import ensure_topics
from stream_app.tools.localbroker import free_port
from stream_app.worker.app import TABLE

from .conftest import WorkerProcess, simulated_clock, worker_env

pytestmark = pytest.mark.integration

NOW = parse_time("2026-03-15T12:00:00+08:00")
PARTITIONS = 4
OFFSET_KEY = b"__faust\0offset__"
"""Where Faust's RocksDB store keeps the changelog offset it persisted."""
RECOVERING = b"Restoring state from changelog topics"
"""What Faust logs as a recovery of active partitions begins."""


def iccid(n: int) -> str:
    return f"898604{n:014d}"


def sim_entries(n: int, now: datetime, policy: Policy, quota: int) -> list[tuple[bytes, bytes | None]]:
    state = new_state(iccid(n), now, policy)
    subscription = {
        "iccid": iccid(n),
        "plan_id": "recovery",
        "quota_bytes": quota,
        "auto_suspend": True,
        "valid_from": "2026-01-01T00:00:00+08:00",
        "expires_at": None,
        "updated_at": "2026-03-01T00:00:00+08:00",
    }
    apply_input(state, validate("subscriptions", orjson.loads(orjson.dumps(subscription))), now, policy)
    stored = codec.stored_of(state, policy)
    codec.place(stored, partition_of(iccid(n)))
    return codec.sim_entries(stored)


def partition_of(key: str) -> int:
    everyone = list(range(PARTITIONS))
    return int(DefaultPartitioner()(key.encode(), everyone, everyone))


def changelog(sims: int, policy: Policy) -> Iterator[tuple[int, bytes, bytes | None]]:
    """(partition, key, value) of every SIM, then a second version of every tenth, then
    tombstones for every SIM's keys of every 97th: what the table must end up holding."""
    for n in range(sims):
        for key, value in sim_entries(n, NOW, policy, 10**9):
            yield partition_of(iccid(n)), key, value
    for n in range(0, sims, 10):
        for key, value in sim_entries(n, NOW, policy, 2 * 10**9):
            yield partition_of(iccid(n)), key, value
    for n in range(0, sims, 97):
        for key, _value in sim_entries(n, NOW, policy, 10**9):
            yield partition_of(iccid(n)), key, None


async def write_changelog(kafka: str, settings: Settings, sims: int) -> dict[int, dict[bytes, bytes]]:
    """Produce the changelog; returns what each partition must hold."""
    topic = f"{settings.app_id}-{TABLE}-changelog"
    expected: dict[int, dict[bytes, bytes]] = {p: {} for p in range(PARTITIONS)}
    producer = AIOKafkaProducer(bootstrap_servers=kafka, linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        pending = []
        for partition, key, value in changelog(sims, settings.policy()):
            pending.append(await producer.send(topic, value, key=key, partition=partition))
            if value is None:
                expected[partition].pop(key, None)
            else:
                expected[partition][key] = value
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return expected


def stored_at(data_dir: Path, partition: int, scratch: Path) -> tuple[dict[bytes, bytes], int | None]:
    """A worker's RocksDB partition, read as a secondary instance (the worker may run),
    and the changelog offset it says it persisted."""
    (path,) = data_dir.glob(f"**/tables/{TABLE}-{partition}.db")
    scratch.mkdir(parents=True, exist_ok=True)
    db = rocksdict.Rdict(
        str(path),
        options=rocksdict.Options(raw_mode=True),
        access_type=rocksdict.AccessType.secondary(str(scratch)),
    )
    try:
        db.try_catch_up_with_primary()
        offset = db.get(OFFSET_KEY)
        data = {
            key: value
            for key, value in db.items()
            if isinstance(key, bytes) and isinstance(value, bytes) and key != OFFSET_KEY
        }
    finally:
        db.close()
    return data, None if offset is None else int(offset)


def stored(data_dir: Path, partition: int, scratch: Path) -> dict[bytes, bytes]:
    """A worker's RocksDB partition, read as a secondary instance (the worker may run)."""
    return stored_at(data_dir, partition, scratch)[0]


def held(data_dir: Path, scratch: Path) -> dict[int, dict[bytes, bytes]]:
    found: dict[int, dict[bytes, bytes]] = {}
    for partition in range(PARTITIONS):
        try:
            found[partition] = stored(data_dir, partition, scratch / str(partition))
        except ValueError:  # no such partition database (yet)
            found[partition] = {}
    return found


def ready(worker: WorkerProcess) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.settings.web_port}/readyz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


async def until(condition: Callable[[], bool], what: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.5)


def env_for(kafka: str, **overrides: str) -> dict[str, str]:
    # The workers' clock stands where the states were made: nothing falls due, so the
    # ticks leave every state as the changelog has it.
    return worker_env(
        kafka,
        STREAM_APP_STORE="rocksdb://",
        STREAM_APP_PARTITIONS=str(PARTITIONS),
        STREAM_APP_LOG_LEVEL="info",
        **simulated_clock(NOW, 1, time.time()),
        **overrides,
    )


async def changelog_of(
    kafka: str, env: dict[str, str], tmp_path: Path, sims: int
) -> dict[int, dict[bytes, bytes]]:
    """The topics, then the table's changelog holding ``sims`` SIMs; what each partition holds."""
    settings = Settings.from_env(env)
    await ensure_topics(settings)
    # An empty worker first creates the changelog topic as Faust declares it.
    empty = WorkerProcess(env, tmp_path / "empty")
    empty.start()
    empty.stop()
    return await write_changelog(kafka, settings, sims)


async def test_a_fresh_worker_holds_exactly_what_the_changelog_says(kafka: str, tmp_path: Path) -> None:
    env = env_for(kafka)
    expected = await changelog_of(kafka, env, tmp_path, 6_000)
    worker = WorkerProcess(env, tmp_path / "fresh")
    try:
        worker.start()
        await until(lambda: ready(worker), "the fresh worker never became ready")
    finally:
        worker.stop()
    assert held(tmp_path / "fresh", tmp_path / "scratch") == expected
    assert sum(len(keys) for keys in expected.values()) > 5_000


async def test_a_worker_joining_mid_recovery_restarts_it_and_standbys_fill(
    kafka: str, tmp_path: Path
) -> None:
    env = env_for(kafka, STREAM_APP_STANDBY_REPLICAS="1")
    expected = await changelog_of(kafka, env, tmp_path, 60_000)
    first = WorkerProcess(env, tmp_path / "first")
    second = WorkerProcess({**env, "STREAM_APP_WEB_PORT": str(free_port())}, tmp_path / "second")
    try:
        first.spawn()
        await until(
            lambda: RECOVERING in first.log_path.read_bytes(), "the first worker never began recovering"
        )
        # The first worker stalls mid-recovery (a long pause, a VM stopped) while the
        # second one joins: the group moves on without it, and when it comes back its
        # recovery is cut by the rebalance that follows and begun again.
        assert first.proc is not None
        os.kill(first.proc.pid, signal.SIGSTOP)
        try:
            second.spawn()
            await until(
                lambda: b"Joined group" in second.log_path.read_bytes(), "the second worker never joined"
            )
        finally:
            os.kill(first.proc.pid, signal.SIGCONT)
        await until(lambda: ready(first) and ready(second), "the two workers never became ready")
        log = first.log_path.read_bytes()
        assert log.count(RECOVERING) >= 2, "the first worker's recovery was not begun again"

        # Each worker ends up with every partition: its actives recovered, the other's
        # partitions as standby replicas kept current from the changelog.
        def complete() -> bool:
            scratch = tmp_path / "scratch"
            shutil.rmtree(scratch, ignore_errors=True)
            return all(held(tmp_path / name, scratch / name) == expected for name in ("first", "second"))

        await until(complete, "the workers' stores never matched the changelog")
    finally:
        first.stop()
        second.stop()
    assert first.alive() is False and second.alive() is False


async def changelog_folded(kafka: str, topic: str, partition: int, upto: int) -> dict[bytes, bytes]:
    """The changelog partition's records up to offset ``upto``, folded as a store would."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        folded: dict[bytes, bytes] = {}
        while await consumer.position(tp) <= upto:
            for records in (await consumer.getmany(tp, timeout_ms=1000)).values():
                for record in records:
                    if record.offset > upto:
                        break
                    assert record.key is not None
                    if record.value is None:
                        folded.pop(record.key, None)
                    else:
                        folded[record.key] = record.value
        return folded
    finally:
        await consumer.stop()


async def test_a_worker_killed_under_load_leaves_a_store_its_changelog_vouches_for(
    kafka: str, tmp_path: Path
) -> None:
    """After a kill -9 in the middle of live usage, each RocksDB partition holds exactly
    the changelog up to the offset it persisted: nothing the changelog lacks (a restart
    would take that input for a repeat, and the changelog would never count it), and
    its own writes once acknowledged (what makes a restart start from its own data)."""
    env = env_for(kafka)
    sims = 2_000
    preloaded = await changelog_of(kafka, env, tmp_path, sims)
    settings = Settings.from_env(env)
    worker = WorkerProcess(env, tmp_path / "killed")
    producer = AIOKafkaProducer(bootstrap_servers=kafka, linger_ms=5)
    await producer.start()
    try:
        worker.start()
        await until(lambda: ready(worker), "the worker never became ready")
        topic = settings.topic("usage")
        begin = NOW.replace(hour=1)

        async def usage_round(round_: int) -> None:
            for n in range(0, sims, 7):
                record = {
                    "record_id": f"r{round_}-{n}",
                    "iccid": iccid(n),
                    "carrier": "cmcc",
                    "start": format_time(begin),
                    "end": format_time(begin),
                    "bytes_up": 100,
                    "bytes_down": 100,
                }
                await producer.send(topic, orjson.dumps(record), key=iccid(n).encode())
            await producer.flush()

        round_ = 0
        while not progressed(tmp_path / "killed", preloaded):  # the store follows its changelog
            await usage_round(round_)
            round_ += 1
            await asyncio.sleep(0.2)
            assert round_ < 300, "the worker never stored a write of its own"

        async def feed() -> None:
            for burst in range(round_, round_ + 1_000):
                await usage_round(burst)

        feeding = asyncio.ensure_future(feed())  # then a kill in the middle of live usage
        await asyncio.sleep(1.5)
        worker.kill()
        feeding.cancel()
    finally:
        worker.kill()
        await producer.stop()

    changelog_topic = f"{settings.app_id}-{TABLE}-changelog"
    ahead = 0
    for partition in range(PARTITIONS):
        data, offset = stored_at(tmp_path / "killed", partition, tmp_path / "after" / str(partition))
        assert offset is not None
        assert data == await changelog_folded(kafka, changelog_topic, partition, offset), partition
        ahead += data != preloaded[partition]
    assert ahead, "no partition stored the worker's own acknowledged writes"


def progressed(data_dir: Path, preloaded: dict[int, dict[bytes, bytes]]) -> bool:
    """Some partition's store has taken the worker's own writes."""
    for partition in range(PARTITIONS):
        try:
            data, _offset = stored_at(data_dir, partition, data_dir.parent / "peek" / str(partition))
        except ValueError:
            continue
        if data != preloaded[partition]:
            return True
    return False
