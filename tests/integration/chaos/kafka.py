"""Kafka as the harness sees it: producing, a consumer group's lag, reading a topic
to its end, end offsets, and the isolation level to read outputs with."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


async def produce(bootstrap: str, topic: str, items: Iterable[tuple[str, bytes]]) -> list[tuple[int, int]]:
    """Send in order; returns each message's (partition, offset)."""
    # Idempotent: a retried send must not add a message the ground truth does not know.
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    placed: list[tuple[int, int]] = []
    pending = []
    try:
        for key, value in items:
            pending.append(await producer.send(topic, value, key=key.encode()))
            if len(pending) >= 10_000:
                placed += [(m.partition, m.offset) for m in await asyncio.gather(*pending)]
                pending = []
        placed += [(m.partition, m.offset) for m in await asyncio.gather(*pending)]
    finally:
        await producer.stop()
    return placed


async def _admin_call(bootstrap: str, call: Callable[[AIOKafkaAdminClient], Awaitable[Any]]) -> Any:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        return await call(admin)
    finally:
        await admin.close()


async def lag_by_partition(
    bootstrap: str, group: str, topic: str, ends: dict[int, int]
) -> dict[int, int] | None:
    """Messages of ``topic`` not yet committed by ``group``, per partition (None: no answer)."""
    try:
        offsets = await _admin_call(bootstrap, lambda admin: admin.list_consumer_group_offsets(group))
    except Exception:
        return None
    done = {tp.partition: int(meta.offset) for tp, meta in offsets.items() if tp.topic == topic}
    return {p: max(end - max(done.get(p, 0), 0), 0) for p, end in ends.items()}


async def lagging(bootstrap: str, group: str, topic: str, ends: dict[int, int]) -> int | None:
    lag = await lag_by_partition(bootstrap, group, topic, ends)
    return None if lag is None else sum(lag.values())


class TopicReader:
    """Reads a whole topic from the beginning, then whatever came since, on each call."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, isolation: str) -> None:
        self.topic = topic
        self.partitions = [TopicPartition(topic, p) for p in range(partitions)]
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            isolation_level=isolation,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self.messages: list[tuple[bytes | None, bytes | None]] = []

    async def __aenter__(self) -> TopicReader:
        await self.consumer.start()
        self.consumer.assign(self.partitions)
        await self.consumer.seek_to_beginning(*self.partitions)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def catch_up(self, timeout: float = 120.0) -> list[tuple[bytes | None, bytes | None]]:
        ends = await self.consumer.end_offsets(self.partitions)
        deadline = time.monotonic() + timeout
        while not await self._reached(ends):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {self.topic} to its end")
            for batch in (await self.consumer.getmany(timeout_ms=500, max_records=50_000)).values():
                self.messages += [(m.key, m.value) for m in batch]
        return self.messages

    async def _reached(self, ends: dict[TopicPartition, int]) -> bool:
        for tp, end in ends.items():
            if await self.consumer.position(tp) < end:
                return False
        return True


async def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
    finally:
        await consumer.stop()
    return {tp.partition: end for tp, end in ends.items()}


def isolation_for(guarantee: str | None) -> str:
    # Under exactly_once, aborted transactions' messages are in the log; consumers of
    # the outputs would read committed only, and so does the harness.
    return "read_committed" if guarantee == "exactly_once" else "read_uncommitted"
