"""Input the fetcher cannot decode holds its partition instead of crashing the worker.

aiokafka's own record classes decode real record batches here (built with its batch
builder, then broken); only the consumer and the fetcher around them are stand-ins.
"""

from __future__ import annotations

import inspect
import struct
from collections import OrderedDict
from typing import Any, cast

import aiokafka.codec
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.consumer.fetcher import READ_UNCOMMITTED, FetchResult, PartitionRecords
from aiokafka.errors import CorruptRecordException, UnsupportedCodecError
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as FaustConsumer

from stream_app.worker.fetching import FetchWatch, Held

TP = TopicPartition("sim.usage", 3)
LZ4 = 3
ATTRIBUTES = 8 + 4 + 4 + 1 + 4
"""Where a v2 batch's attributes start: base offset, length, leader epoch, magic, CRC."""


def batch(base: int, count: int, codec: int = 0) -> bytearray:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=codec,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for delta in range(count):
        builder.append(
            delta, timestamp=1_700_000_000_000, key=b"k", value=b"v%d" % (base + delta), headers=[]
        )
    raw = bytearray(builder.build())
    raw[0:8] = struct.pack(">q", base)  # the broker's offsets; outside the CRC
    return raw


def bad_crc(raw: bytearray) -> bytearray:
    raw[-1] ^= 0xFF  # a flipped bit in the last record, as on a damaged disk
    return raw


def unknown_codec(raw: bytearray) -> bytearray:
    """A codec id aiokafka does not know, with a CRC that matches: only the codec is wrong."""
    (attributes,) = struct.unpack(">h", raw[ATTRIBUTES : ATTRIBUTES + 2])
    raw[ATTRIBUTES : ATTRIBUTES + 2] = struct.pack(">h", (attributes & ~7) | 5)
    raw[17:21] = struct.pack(">I", calc_crc32c(bytes(raw[ATTRIBUTES:])))
    return raw


class State:
    def __init__(self) -> None:
        self.paused = False
        self.position = 0

    def consumed_to(self, position: int) -> None:
        self.position = position


class Assignment:
    active = True

    def __init__(self) -> None:
        self.state = State()

    def state_value(self, tp: TopicPartition) -> State:
        return self.state


class FakeConsumer:
    """The aiokafka consumer's surface the watch uses (pause, assignment, poll stamps)."""

    def __init__(self) -> None:
        self._fetcher = type("Fetcher", (), {})()
        self._fetcher._records = OrderedDict()
        self.paused: list[TopicPartition] = []
        self.stamps: dict[TopicPartition, int | None] = {}

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused += partitions

    def assignment(self) -> set[TopicPartition]:
        return set(self.stamps)

    def last_poll_timestamp(self, tp: TopicPartition) -> int | None:
        return self.stamps[tp]


def fetched(consumer: FakeConsumer, data: bytes, offset: int = 0) -> tuple[list[Any], Assignment]:
    """Store a fetch as aiokafka's fetcher does, then drain it as Faust's consumer does."""
    assignment = Assignment()
    assignment.state.position = offset
    records = PartitionRecords(TP, MemoryRecords(data), [], offset, None, None, True, READ_UNCOMMITTED)
    result = FetchResult(TP, assignment=assignment, partition_records=records, backoff=0)
    consumer._fetcher._records[TP] = result
    return result.getall(), assignment


def watched() -> tuple[FetchWatch, FakeConsumer]:
    watch, consumer = FetchWatch(clock=lambda: 1000.0), FakeConsumer()
    watch.watch(consumer)
    return watch, consumer


@pytest.mark.parametrize(
    ("bad", "error"),
    [(bad_crc, CorruptRecordException), (unknown_codec, UnsupportedCodecError)],
)
def test_unguarded_the_bad_batch_raises_out_of_the_drain(bad: Any, error: type[Exception]) -> None:
    # What crashed Faust's consumer thread, and with it the worker.
    consumer = FakeConsumer()
    with pytest.raises(error):
        fetched(consumer, bytes(batch(0, 3) + bad(batch(3, 2)) + batch(5, 2)))


@pytest.mark.parametrize(
    ("bad", "error"),
    [(bad_crc, "CorruptRecordException"), (unknown_codec, "UnsupportedCodecError")],
)
def test_the_records_before_a_bad_batch_are_delivered_and_the_partition_is_held_there(
    bad: Any, error: str, caplog: pytest.LogCaptureFixture
) -> None:
    watch, consumer = watched()
    records, assignment = fetched(consumer, bytes(batch(0, 3) + bad(batch(3, 2)) + batch(5, 2)))
    assert [r.offset for r in records] == [0, 1, 2]
    assert [r.value for r in records] == [b"v0", b"v1", b"v2"]
    assert assignment.state.position == 3  # fetched again from the bad batch, nothing skipped
    assert consumer.paused == [TP]  # ...but only after a restart or rebalance
    [held] = watch.held.values()
    assert (held.topic, held.partition, held.offset) == ("sim.usage", 3, 3)
    assert held.error.startswith(error)
    [line] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "sim.usage[3] from offset 3: a record batch cannot be decoded" in line.getMessage()
    assert error in line.getMessage()


def test_a_codec_without_its_library_holds_at_the_batch_with_aiokafka_s_own_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The reported crash: lz4 from a Java feed, aiokafka without cramjam.
    data = bytes(batch(40, 2) + batch(42, 3, codec=LZ4))
    monkeypatch.setattr(aiokafka.codec, "has_lz4", lambda: False)
    watch, consumer = watched()
    records, assignment = fetched(consumer, data, offset=40)
    assert [r.offset for r in records] == [40, 41]
    assert assignment.state.position == 42
    assert watch.held[TP] == Held(
        "sim.usage", 3, 42, "UnsupportedCodecError: Libraries for lz4 compression codec not found"
    )
    assert str(watch.held[TP]) == (
        "sim.usage[3] held at offset 42: UnsupportedCodecError: Libraries for lz4 compression codec not found"
    )


def test_good_batches_pass_untouched_and_a_held_partition_fetched_again_is_released() -> None:
    watch, consumer = watched()
    fetched(consumer, bytes(bad_crc(batch(7, 2))), offset=7)
    assert TP in watch.held
    # A rebalance or restart resumed it and the fetcher brought it again: it is tried again.
    records, _ = fetched(consumer, bytes(batch(7, 2) + batch(9, 1)), offset=7)
    assert [r.offset for r in records] == [7, 8, 9]
    assert watch.held == {}
    assert consumer.paused == [TP]  # only the first time


def test_only_the_partitions_still_owned_count_as_held() -> None:
    watch, consumer = watched()
    fetched(consumer, bytes(bad_crc(batch(0, 1))))
    assert [h.partition for h in watch.held_partitions({TP, TopicPartition("sim.usage", 4)})] == [3]
    assert watch.held_partitions({TopicPartition("sim.usage", 4)}) == []  # revoked: another's now


def test_the_broker_s_last_answer_is_the_newest_fetch_stamp() -> None:
    now = [1000.0]
    watch, consumer = FetchWatch(clock=lambda: now[0]), FakeConsumer()
    watch.watch(consumer)
    assert watch.unreached_for() == 0.0  # nothing assigned: nothing to blame the broker for
    consumer.stamps = {TP: None, TopicPartition("sim.usage", 4): None}
    now[0] = 1012.0
    assert watch.unreached_for() == 12.0  # no answer since the consumer started
    consumer.stamps = {TP: 1_005_000, TopicPartition("sim.usage", 4): 1_010_500}
    assert watch.reached() == 1010.5
    assert watch.unreached_for() == 1.5
    consumer.stamps = {TP: 1_001_000}  # an older stamp never moves it back
    now[0] = 1050.0
    assert watch.unreached_for() == 39.5


async def test_the_worker_s_consumer_thread_guards_its_fetcher_once_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stream_app.settings import Settings
    from stream_app.worker.app import Worker

    worker = Worker(Settings.from_env({}))
    thread = cast(Any, worker.app.consumer)._thread  # created, not started: no broker needed
    assert isinstance(thread, AIOKafkaConsumerThread)
    consumer = FakeConsumer()

    async def start_without_a_broker(self: Any) -> None:
        self._consumer = consumer

    monkeypatch.setattr(AIOKafkaConsumerThread, "on_start", start_without_a_broker)
    await thread.on_start()
    fetched(consumer, bytes(bad_crc(batch(0, 1))))
    assert TP in worker.fetch_watch.held


def test_the_aiokafka_and_faust_names_relied_on_still_exist() -> None:
    # An upgrade that renames them would silently bring the crash loop back.
    records = PartitionRecords(
        TP, MemoryRecords(bytes(batch(0, 1))), [], 0, None, None, True, READ_UNCOMMITTED
    )
    assert {"_tp", "_records_iterator", "next_fetch_offset"} <= set(vars(records))
    assert "_partition_records" in inspect.signature(FetchResult.__init__).parameters or hasattr(
        FetchResult(TP, assignment=Assignment(), partition_records=records, backoff=0), "_partition_records"
    )
    assert "self._records[tp] = FetchResult(" in inspect.getsource(
        __import__("aiokafka.consumer.fetcher", fromlist=["Fetcher"]).Fetcher
    )
    assert "self._fetcher = Fetcher(" in inspect.getsource(AIOKafkaConsumer.start)
    assert list(inspect.signature(AIOKafkaConsumer.last_poll_timestamp).parameters) == ["self", "partition"]
    assert "AIOKafkaConsumerThread(self, loop=self.loop, beacon=self.beacon)" in inspect.getsource(
        FaustConsumer._new_consumer_thread
    )
    assert "self._consumer = self._create_consumer(" in inspect.getsource(AIOKafkaConsumerThread.on_start)
