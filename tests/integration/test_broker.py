"""The local broker: lifecycle, and Kafka transactions through aiokafka against it."""

from __future__ import annotations

import base64
import time
import uuid
from pathlib import Path
from unittest import mock

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from stream_app.tools.localbroker import LocalBroker, free_port, serving

pytestmark = pytest.mark.integration


async def _read_all(kafka: str, topic: str, isolation: str, expect: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka,
        auto_offset_reset="earliest",
        isolation_level=isolation,
        group_id=f"g-{uuid.uuid4().hex[:6]}",
    )
    await consumer.start()
    got: list[bytes] = []
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and len(got) < expect:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                got += [m.value for m in messages]
        for messages in (await consumer.getmany(timeout_ms=1500)).values():  # nothing more?
            got += [m.value for m in messages]
    finally:
        await consumer.stop()
    return got


async def test_transactions_commit_is_visible_and_abort_is_not(kafka: str) -> None:
    source, sink = f"tx-in-{uuid.uuid4().hex[:6]}", f"tx-out-{uuid.uuid4().hex[:6]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    await admin.create_topics([NewTopic(source, 3, 1), NewTopic(sink, 3, 1)])
    await admin.close()

    plain = AIOKafkaProducer(bootstrap_servers=kafka, enable_idempotence=True)
    await plain.start()
    for i in range(10):
        await plain.send_and_wait(source, f"m{i}".encode(), key=str(i).encode())
    await plain.stop()

    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=kafka,
        group_id="tx-group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    consumed: list[ConsumerRecord[bytes, bytes]] = []
    deadline = time.monotonic() + 15
    while len(consumed) < 10 and time.monotonic() < deadline:
        for messages in (await consumer.getmany(timeout_ms=1000)).values():
            consumed += messages
    assert len(consumed) == 10

    transactional = AIOKafkaProducer(bootstrap_servers=kafka, transactional_id=f"tx-{uuid.uuid4().hex[:6]}")
    await transactional.start()
    try:
        async with transactional.transaction():
            for m in consumed:
                await transactional.send(sink, m.value, key=m.key)
            await transactional.send_offsets_to_transaction(
                {TopicPartition(m.topic, m.partition): m.offset + 1 for m in consumed}, "tx-group"
            )
        await transactional.begin_transaction()
        await transactional.send(sink, b"ABORTED")
        await transactional.abort_transaction()
    finally:
        await transactional.stop()
        await consumer.stop()

    committed = await _read_all(kafka, sink, "read_committed", expect=10)
    assert sorted(committed) == sorted(f"m{i}".encode() for i in range(10))
    uncommitted = await _read_all(kafka, sink, "read_uncommitted", expect=11)
    assert b"ABORTED" in uncommitted  # it was written, and only hidden by the abort

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    offsets = await admin.list_consumer_group_offsets("tx-group")
    await admin.close()
    assert sum(meta.offset for meta in offsets.values()) == 10


def test_local_broker_starts_once_is_reused_and_stops(tmp_path: Path, kafka_jars: Path) -> None:
    broker = LocalBroker(
        home=tmp_path / "kafka", port=free_port(), controller_port=free_port(), libs=kafka_jars
    )
    try:
        assert broker.status() == "stopped"
        bootstrap = broker.start()
        pid = broker.pid()
        assert pid is not None
        assert serving(bootstrap, timeout=5)
        assert broker.start() == bootstrap
        assert broker.pid() == pid  # reused, not restarted
        assert broker.status().startswith(f"running pid={pid}")
    finally:
        broker.stop()
    assert broker.pid() is None
    assert broker.status() == "stopped"
    assert not serving(bootstrap, timeout=1)


def test_a_cluster_id_starting_with_a_dash_still_formats(tmp_path: Path, kafka_jars: Path) -> None:
    # URL-safe base64 ids start with "-" one time in 64; the storage tool must not read
    # such an id as an option.
    dashed = uuid.UUID(bytes=base64.urlsafe_b64decode("-" + "A" * 21 + "=="))
    broker = LocalBroker(
        home=tmp_path / "kafka", port=free_port(), controller_port=free_port(), libs=kafka_jars
    )
    try:
        with mock.patch("stream_app.tools.localbroker.uuid.uuid4", return_value=dashed):
            assert serving(broker.start(), timeout=5)
    finally:
        broker.stop()
