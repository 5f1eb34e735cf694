"""The bench's latency load (bench/figures.py) reaches the broker whole: every record
once, in order per partition, each stamped with the moment it was due, also when a
tick's records overflow a record batch (a loaded generator falls behind and sends a
tick's worth at once). A load that lost records would show fewer samples, not a faster
worker; a probe timed when it was sent rather than due would hide the generator's delays."""

from __future__ import annotations

import sys
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
from figures import Load, send_in_ticks

pytestmark = pytest.mark.integration

PARTITIONS = 3
RATE = 4000


async def test_the_latency_load_arrives_whole_and_in_order_when_batches_overflow(kafka: str) -> None:
    topic = f"bench-load-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()
    # 6 KiB values: a 16 KiB record batch holds two, and at 4,000 records/s (RATE) every 10 ms
    # tick has about 13 per partition, so every tick overflows batches.
    load: Load = [
        (f"probe-{i}" if i % 20 == 0 else None, f"key-{i}".encode(), bytes([i % 251]) * 6144, i % PARTITIONS)
        for i in range(1200)
    ]
    producer = AIOKafkaProducer(bootstrap_servers=kafka, linger_ms=0, max_batch_size=16384)
    await producer.start()
    try:
        sent = await send_in_ticks(producer, topic, load, rate=RATE)
    finally:
        await producer.stop()
    probes = [(i, probe) for i, (probe, *_rest) in enumerate(load) if probe is not None]
    assert set(sent.due) == {probe for _i, probe in probes}
    for i, probe in probes:  # due at the rate from the start, however late it went out
        assert sent.due[probe] == pytest.approx(sent.began + i / RATE, abs=1e-6)
    assert len(sent.lags) >= 1

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka, auto_offset_reset="earliest")
    await consumer.start()
    received: dict[int, list[tuple[bytes, int]]] = {p: [] for p in range(PARTITIONS)}
    try:
        while sum(map(len, received.values())) < len(load):
            batches = await consumer.getmany(timeout_ms=10_000)
            assert batches, f"only {sum(map(len, received.values()))} of {len(load)} records arrived"
            for tp, records in batches.items():
                received[tp.partition].extend((record.key, record.timestamp) for record in records)
    finally:
        await consumer.stop()
    for partition in range(PARTITIONS):
        assert received[partition] == [
            (key, int((sent.began + i / RATE) * 1000))
            for i, (_probe, key, _value, part) in enumerate(load)
            if part == partition
        ]
