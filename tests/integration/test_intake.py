"""The intake against a real broker: input Faust never delivered is read back, in order, once.

Faust itself is left out: the events it would deliver are built by hand, so each case
(a head never delivered, a hole, a partition held back, transaction markers, a
committed offset) is exact rather than left to a race.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata
from faust.types import TP

from stream_app.settings import Settings
from stream_app.worker.batch import Incoming
from stream_app.worker.chunks import chunk_message
from stream_app.worker.gaps import GapReader
from stream_app.worker.intake import Intake
from stream_app.worker.offsets import Ledger, Partition
from stream_app.worker.writer import Written

from ..unit.test_intake import ChunkEvent, Event, Message

pytestmark = pytest.mark.integration


class Recorder:
    def __init__(self) -> None:
        self.applied: list[tuple[int, bytes | None, Any]] = []
        self.read_back_total = 0

    def read_back(self, topic: str, number: int) -> None:
        self.read_back_total += number

    async def __call__(self, logical: str, batch: list[Incoming]) -> Written:
        assert logical == "usage"
        self.applied += [(i.source.offset, i.raw, i.ref) for i in batch]
        return Written([], [], 0)

    def offsets(self) -> list[int]:
        return [offset for offset, _raw, _ref in self.applied]


async def topic_with(kafka: str, values: int, partition: int = 1) -> str:
    topic = f"intake-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=kafka)
    await producer.start()
    try:
        for n in range(values):
            await producer.send(topic, b"v%d" % n, key=b"k", partition=partition)
        await producer.flush()
    finally:
        await producer.stop()
    return topic


def event(topic: str, offset: int, partition: int = 1) -> Event:
    return Event(b"k", b"v%d" % offset, Message(topic, partition, offset, 0.0))


def intake_for(kafka: str, group: str) -> tuple[Intake, Ledger, Recorder]:
    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": kafka, "STREAM_APP_ID": group})
    ledger, recorder = Ledger(), Recorder()
    return Intake(ledger, GapReader(settings, 7), recorder, recorder.read_back), ledger, recorder


async def test_a_head_never_delivered_is_read_back_before_what_was(kafka: str) -> None:
    topic = await topic_with(kafka, 40)
    intake, ledger, recorder = intake_for(kafka, f"g-{uuid.uuid4().hex[:6]}")
    partition = Partition(topic, 1)
    try:
        await intake.take("usage", [event(topic, o) for o in (30, 31, 32)])
        assert recorder.offsets() == list(range(33))  # from the partition's start, in order
        assert [raw for _o, raw, _ref in recorder.applied] == [b"v%d" % o for o in range(33)]
        assert {ref.message.offset for _o, _raw, ref in recorder.applied[:30]} == {30}
        await intake.take("usage", [event(topic, o) for o in (31, 32, 33, 35, 36)])  # 34 missing
        assert recorder.offsets()[33:] == [33, 34, 35, 36]  # each once, the hole filled
        await intake.take("usage", [event(topic, o) for o in (37, 38)])
        assert recorder.offsets()[37:] == [37, 38]
        assert ledger.frontier(partition) == 39
        assert recorder.read_back_total == 33 + 4  # read back: each whole range up to what was delivered
    finally:
        await intake.gaps.stop()


async def test_the_start_is_the_groups_committed_offset(kafka: str) -> None:
    topic = await topic_with(kafka, 20)
    group = f"g-{uuid.uuid4().hex[:6]}"
    committer = AIOKafkaConsumer(bootstrap_servers=kafka, group_id=group, enable_auto_commit=False)
    await committer.start()
    try:
        committer.assign([TopicPartition(topic, 1)])
        await committer.commit({TopicPartition(topic, 1): OffsetAndMetadata(12, "")})
    finally:
        await committer.stop()
    intake, ledger, recorder = intake_for(kafka, group)
    try:
        await intake.take("usage", [event(topic, o) for o in (10, 11, 12, 13)])
        assert recorder.offsets() == [12, 13]  # below the commit: done before, not again
        await intake.take("usage", [event(topic, 15)])
        assert recorder.offsets() == [12, 13, 14, 15]
        assert ledger.committable({Partition(topic, 1): 12}, [Partition(topic, 1)]) == {
            Partition(topic, 1): 16
        }
    finally:
        await intake.gaps.stop()


async def test_a_partition_held_back_is_read_once_idle_long_enough(kafka: str) -> None:
    topic = await topic_with(kafka, 25)
    intake, ledger, recorder = intake_for(kafka, f"g-{uuid.uuid4().hex[:6]}")
    clock = [100.0]
    intake.monotonic = lambda: clock[0]
    partition = Partition(topic, 1)
    tick = event("ticks", 0)
    try:
        await intake.take("usage", [event(topic, o) for o in range(10)])
        await intake.check_idle([("usage", partition)], lambda p: 25, tick)
        clock[0] += intake.idle_after - 1  # Faust has read to 25 but may still deliver
        await intake.check_idle([("usage", partition)], lambda p: 25, tick)
        assert recorder.offsets() == list(range(10))
        clock[0] += 1
        await intake.check_idle([("usage", partition)], lambda p: 25, tick)
        assert recorder.offsets() == list(range(25))
        assert all(ref is tick for _o, _raw, ref in recorder.applied[10:])
        await intake.take("usage", [event(topic, o) for o in range(10, 25)])  # delivered late
        assert recorder.offsets() == list(range(25))
        assert ledger.frontier(partition) == 25
    finally:
        await intake.gaps.stop()


async def three_transactions(kafka: str, topic: str) -> None:
    """Three transactions of one record each on partition 1: records at 0, 2 and 4, a
    commit marker after each."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka, transactional_id=f"tx-{uuid.uuid4().hex[:6]}")
    await producer.start()
    try:
        for n in range(3):
            async with producer.transaction():
                await producer.send(topic, b"v%d" % n, key=b"k", partition=1)
    finally:
        await producer.stop()


async def test_offsets_without_records_are_passed_over(kafka: str) -> None:
    """Transaction markers take offsets: a gap of markers only is read, found empty, done."""
    topic = await topic_with(kafka, 0)
    await three_transactions(kafka, topic)
    # Records at 0, 2, 4 and a commit marker after each.
    intake, ledger, recorder = intake_for(kafka, f"g-{uuid.uuid4().hex[:6]}")
    try:
        await intake.take("usage", [event(topic, 0)])
        await intake.take("usage", [event(topic, 2)])
        await intake.take("usage", [event(topic, 4)])
        assert recorder.offsets() == [0, 2, 4]
        assert ledger.frontier(Partition(topic, 1)) == 5
    finally:
        await intake.gaps.stop()


async def fetched(kafka: str, topic: str, partition: int = 1, expected: int = 1) -> list[Any]:
    """The partition's records as one aiokafka fetch returns them (a chunk)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        records: list[Any] = (await consumer.getmany(tp, timeout_ms=10_000, max_records=10_000)).get(tp, [])
        assert len(records) == expected, records
        return records
    finally:
        await consumer.stop()


def chunk_event(topic: str, records: list[Any], partition: int = 1) -> ChunkEvent:
    message = chunk_message(TP(topic, partition), records, 1)
    return ChunkEvent(message.key or b"", message.value or b"", message)


async def test_markers_inside_a_fetched_chunk_are_not_read_back(kafka: str) -> None:
    topic = await topic_with(kafka, 0)
    await three_transactions(kafka, topic)
    records = await fetched(kafka, topic, expected=3)  # at 0, 2 and 4: a marker after each
    intake, ledger, recorder = intake_for(kafka, f"g-{uuid.uuid4().hex[:6]}")
    try:
        await intake.take("usage", [chunk_event(topic, records)])
        assert recorder.offsets() == [0, 2, 4] and recorder.read_back_total == 0
        assert ledger.frontier(Partition(topic, 1)) == 5
    finally:
        await intake.gaps.stop()


async def test_chunks_past_a_dropped_range_have_it_read_back_once(kafka: str) -> None:
    topic = await topic_with(kafka, 40)
    records = await fetched(kafka, topic, expected=40)
    intake, ledger, recorder = intake_for(kafka, f"g-{uuid.uuid4().hex[:6]}")
    try:
        await intake.take("usage", [chunk_event(topic, records[:10])])
        await intake.take("usage", [chunk_event(topic, records[20:30]), chunk_event(topic, records[30:35])])
        assert recorder.offsets() == list(range(35))  # 10..19 never delivered: read back, in order
        assert recorder.read_back_total == 25
        await intake.take("usage", [chunk_event(topic, records[30:40])])
        assert recorder.offsets() == list(range(40))
        assert ledger.frontier(Partition(topic, 1)) == 40
    finally:
        await intake.gaps.stop()
