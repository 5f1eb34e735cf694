"""The bench's Kafka side: producing the preload, the raw-consumer ceiling, the group's
committed offsets, and the bytes a run wrote to the table's changelog."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


async def produce(
    bootstrap: str, topic: str, items: Iterable[tuple[str, bytes]] | Iterable[tuple[bytes, bytes | None, int]]
) -> int:
    """Send (key, value) pairs, or (key, value, partition) triples."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024, acks=1, compression_type=None
    )
    await producer.start()
    count, pending = 0, []
    try:
        for item in items:
            key = item[0].encode() if isinstance(item[0], str) else item[0]
            partition = item[2] if len(item) > 2 else None
            pending.append(await producer.send(topic, item[1], key=key, partition=partition))
            count += 1
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return count


async def _read_all(bootstrap: str, topic: str, expected: int, each: Callable[[Any], None]) -> float:
    """Seconds a plain aiokafka consumer takes to read ``expected`` records of ``topic``
    from the start, calling ``each`` on every record."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    )
    await consumer.start()
    seen, began = 0, time.perf_counter()
    try:
        while seen < expected:
            for records in (await consumer.getmany(timeout_ms=1000, max_records=20_000)).values():
                for record in records:
                    each(record)
                seen += len(records)
    finally:
        await consumer.stop()
    return time.perf_counter() - began


async def ceiling(bootstrap: str, topic: str, expected: int) -> float:
    """A plain aiokafka consumer + orjson + a dict sum: what Kafka and Python allow."""
    totals: dict[str, int] = defaultdict(int)

    def add(record: Any) -> None:
        value = orjson.loads(record.value)
        totals[value["iccid"]] += value["bytes_up"] + value["bytes_down"]

    return expected / await _read_all(bootstrap, topic, expected, add)


async def read_through(bootstrap: str, topic: str, expected: int) -> float:
    """Seconds a plain consumer takes to read ``expected`` records of ``topic``, doing
    nothing with them: the floor of a recovery from it."""
    return await _read_all(bootstrap, topic, expected, lambda _record: None)


async def committed(bootstrap: str, group: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    except Exception:
        return 0
    finally:
        await admin.close()
    return sum(max(m.offset, 0) for tp, m in offsets.items() if tp.topic == topic)


async def wait_committed(bootstrap: str, group: str, topic: str, total: int, timeout: float) -> float:
    deadline = time.perf_counter() + timeout
    while await committed(bootstrap, group, topic) < total:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{group} did not commit {total} offsets on {topic} in {timeout} s")
        await asyncio.sleep(0.25)
    return time.perf_counter()


async def changelog_ends(bootstrap: str, app_id: str) -> dict[TopicPartition, int]:
    """The end offset of every partition of every changelog topic of ``app_id``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = [
            t for t in await admin.list_topics() if t.startswith(f"{app_id}-") and t.endswith("-changelog")
        ]
        described = await admin.describe_topics(topics) if topics else []
    finally:
        await admin.close()
    tps = [TopicPartition(d["topic"], p["partition"]) for d in described for p in d["partitions"]]
    if not tps:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        return ends
    finally:
        await consumer.stop()


async def wait_for_topic(bootstrap: str, topic: str, timeout: float = 60) -> None:
    """Until the broker's metadata has ``topic`` (just created: producers would warn)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.perf_counter() + timeout
        while True:
            described = await admin.describe_topics([topic])
            if described and described[0].get("partitions") and not described[0].get("error_code"):
                return
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{topic} not in the broker's metadata after {timeout} s")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def bytes_written(
    bootstrap: str, since: dict[TopicPartition, int], until: dict[TopicPartition, int]
) -> dict[str, list[int]]:
    """What a run wrote to the changelog between ``since`` and ``until``, read back: per
    kind of table entry (``card``, ``p`` profile, ``m`` memory, ``s`` memory segment,
    ``other``), [records, key and value bytes] (a tombstone counts its key)."""
    wanted = {tp: (since.get(tp, 0), end) for tp, end in until.items() if end > since.get(tp, 0)}
    kinds: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    if not wanted:
        return dict(kinds)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(wanted))
        for tp, (first, _end) in wanted.items():
            consumer.seek(tp, first)
        left = dict(wanted)
        deadline = time.perf_counter() + 300
        while left and time.perf_counter() < deadline:
            fetched: dict[Any, list[Any]] = await consumer.getmany(*left, timeout_ms=2000, max_records=50_000)
            for tp, records in fetched.items():
                end = left[tp][1]
                for r in records:
                    if r.offset < end:
                        kind = kinds[_kind(r.key or b"")]
                        kind[0] += 1
                        kind[1] += len(r.key or b"") + len(r.value or b"")
                if records and records[-1].offset >= end - 1:
                    del left[tp]
                    consumer.pause(tp)
        if left:
            raise TimeoutError(f"changelog not read back to its end: {left}")
    finally:
        await consumer.stop()
    return dict(kinds)


def _kind(key: bytes) -> str:
    """A table entry's kind by its key: ICCID (the card), ICCID/p, ICCID/m, ICCID/s<n>."""
    if key.isdigit():
        return "card"
    _iccid, slash, rest = key.partition(b"/")
    return rest[:1].decode() if slash and rest[:1] in (b"p", b"m", b"s") else "other"
