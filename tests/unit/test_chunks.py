"""The chunk consumer and the agents' batches, with fakes for Faust; and the Faust
internals they rely on, which must fail loudly here if an upgrade changes them."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, NamedTuple

from aiokafka.consumer.fetcher import Fetcher as KafkaFetcher
from aiokafka.structs import ConsumerRecord
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer as FaustConsumer
from faust.transport.consumer import Fetcher
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP, ConsumerMessage
from mode.utils.queues import FlowControlEvent, ThrowableQueue

from stream_app.worker.chunks import (
    FETCH_MAX_WAIT_MS,
    FETCH_MIN_BYTES,
    ChunkMessage,
    batches,
    chunk_consumer,
    chunk_message,
    chunk_of,
    gather_fetches,
    handed_on,
    keep_current_on_resume,
    size_of,
)

USAGE = "sim.usage"


def record(offset: int, partition: int = 0, topic: str = USAGE) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic, partition, offset, 1_700_000_000_000 + offset, 0, b"k", b"v%d" % offset, None, 1, 2, []
    )


def test_the_faust_internals_the_chunk_consumer_relies_on_are_unchanged() -> None:
    # A Faust upgrade that renames or reshapes them would bring per-message delivery
    # back, or break the worker's: this makes it loud instead.
    def parameters(function: Any) -> list[str]:
        return list(inspect.signature(function).parameters)

    assert parameters(FaustConsumer._drain_messages) == ["self", "fetcher"]
    assert parameters(FaustConsumer._wait_next_records) == ["self", "timeout"]
    assert parameters(FaustConsumer.perform_seek) == ["self"]
    assert parameters(FaustConsumer.wait_first) == ["self", "coros", "timeout"]
    for name in ("_drain_messages", "_wait_next_records", "perform_seek"):
        assert getattr(AIOKafkaConsumer, name) is getattr(FaustConsumer, name)  # the driver keeps them
    # The fetcher runs the drain; the drain is what getmany feeds (not replaced here).
    assert "consumer._drain_messages(self)" in inspect.getsource(Fetcher._fetcher.fun)
    drain = inspect.getsource(FaustConsumer._drain_messages)
    for used in ("self._read_offset", "self._commit_every", "self._n_acked", "suspend_flow.wait()"):
        assert used in drain
    getmany = inspect.getsource(FaustConsumer.getmany)
    for rule in ("self._buffered_partitions", "self.perform_seek()", "consumer_generation_id"):
        assert rule in getmany
    assert parameters(ConsumerMessage.__init__) == [
        "self",
        "topic",
        "partition",
        "offset",
        "timestamp",
        "timestamp_type",
        "headers",
        "key",
        "value",
        "checksum",
        "serialized_key_size",
        "serialized_value_size",
        "tp",
        "time_in",
        "time_out",
        "time_total",
        "generation_id",
    ]
    # The recovery takes one event per chunk: its progress is the event's offset, and
    # it hands its buffer to the table (recovery.py opens the chunks there).
    slurp = inspect.getsource(Recovery._slurp_changelogs.fun)
    assert "offsets[tp] = offset" in slurp and "table.apply_changelog_batch(buf)" in slurp
    # The buffer size it caches per partition, forgotten on each rebalance (recovery.py).
    assert "bufsize = buffer_sizes[tp] = table.standby_buffer_size" in slurp
    assert "buffer_sizes = self.buffer_sizes" in slurp


def test_a_chunk_message_is_faust_s_message_of_its_last_record_carrying_the_chunk() -> None:
    records = [record(o, partition=3) for o in (7, 8, 10)]
    message = chunk_message(TP(USAGE, 3), records, 5)
    assert isinstance(message, ConsumerMessage)
    assert (message.topic, message.partition, message.offset) == (USAGE, 3, 10)
    assert message.key == b"k" and message.value == b"v10"
    assert message.timestamp == (1_700_000_000_000 + 10) / 1000
    assert message.generation_id == 5 and message.tp == TP(USAGE, 3)
    assert message.records == records

    class Event:
        def __init__(self, message: Any) -> None:
            self.message = message

    assert chunk_of(Event(message)) == records and size_of(Event(message)) == 3
    assert chunk_of(Event(object())) is None and size_of(Event(object())) == 1


class Flag:
    def __init__(self) -> None:
        self.flag = False

    def is_set(self) -> bool:
        return self.flag

    async def wait(self) -> None:
        await asyncio.sleep(3600)


class FakeApp:
    def __init__(self) -> None:
        self.consumer_generation_id = 1
        self.should_stop = False
        self.monitor = self

    def track_tp_end_offset(self, tp: TP, offset: int | None) -> None:
        pass


class FakeConsumer:
    """The parts of Faust's consumer the chunk drain reads."""

    consumer_stopped_errors = (RuntimeError,)

    def __init__(self, fetches: list[dict[TP, list[Any]]], active: set[TP] | None = None) -> None:
        self.app = FakeApp()
        self.transport = self
        self.fetches = fetches
        self.active = active
        self.flow_active = True
        self.should_stop = False
        self._stopped = Flag()
        self.suspend_flow = Flag()
        self._read_offset: dict[TP, int | None] = {}
        self._buffered_partitions: set[TP] = set()
        self._commit_every = 10_000
        self._n_acked = 0
        self.delivered: list[ChunkMessage] = []
        self.seeks = 0
        self.diag = self
        self.log = logging.getLogger(__name__)
        self.on_fetch: Any = None

    def set_flag(self, flag: str) -> None:
        pass

    unset_flag = set_flag

    def highwater(self, tp: TP) -> int:
        return 1000

    async def _wait_next_records(self, timeout: float) -> tuple[dict[TP, list[Any]] | None, set[TP] | None]:
        if not self.fetches:
            self._stopped.flag = True
            return None, self.active
        fetched = self.fetches.pop(0)
        if self.on_fetch is not None:
            self.on_fetch(self)
        return fetched, self.active

    async def perform_seek(self) -> None:
        self.seeks += 1

    async def callback(self, message: ChunkMessage) -> None:
        self.delivered.append(message)
        if message.offset == 21:  # a rebalance starts while this chunk is handed on
            self.app.consumer_generation_id += 1

    async def wait_first(self, *coros: Any) -> None:
        await coros[0]
        coros[1].close()

    async def commit(self) -> None:
        pass


def drained(fetches: list[dict[TP, list[Any]]], **kwargs: Any) -> Any:
    consumer = chunk_consumer(FakeConsumer)(fetches, **kwargs)
    asyncio.run(consumer._drain_messages(consumer))
    return consumer


def test_each_partition_s_share_of_a_fetch_is_handed_on_as_one_message() -> None:
    p0, p1 = TP(USAGE, 0), TP(USAGE, 1)
    consumer = drained([{p0: [record(o) for o in range(5)], p1: [record(o, 1) for o in range(3)]}])
    assert [(m.partition, m.offset, len(m.records)) for m in consumer.delivered] == [(0, 4, 5), (1, 2, 3)]
    assert all(m.generation_id == 1 for m in consumer.delivered)
    assert consumer._read_offset == {p0: 4, p1: 2}


def test_offsets_below_the_last_one_read_are_dropped() -> None:
    p0 = TP(USAGE, 0)
    consumer = chunk_consumer(FakeConsumer)(
        [{p0: [record(o) for o in range(3, 9)]}, {p0: [record(o) for o in (4, 5)]}]
    )
    consumer._read_offset[p0] = 5
    asyncio.run(consumer._drain_messages(consumer))
    assert [[r.offset for r in m.records] for m in consumer.delivered] == [[5, 6, 7, 8]]


def test_a_fetch_returning_while_the_flow_is_stopped_is_dropped_and_seeks_back() -> None:
    def stop(consumer: Any) -> None:
        consumer.flow_active = False

    consumer = chunk_consumer(FakeConsumer)([{TP(USAGE, 0): [record(0)]}])
    consumer.on_fetch = stop
    asyncio.run(consumer._drain_messages(consumer))
    assert consumer.delivered == [] and consumer.seeks == 1


def test_nothing_more_is_handed_on_once_the_generation_changes() -> None:
    p0, p1 = TP(USAGE, 0), TP(USAGE, 1)
    consumer = drained([{p0: [record(o) for o in range(20, 22)], p1: [record(0, 1)]}])
    assert [m.offset for m in consumer.delivered] == [21]


def test_a_partition_paused_meanwhile_is_skipped_unless_only_its_buffer_is_full() -> None:
    p0, p1, p2 = TP(USAGE, 0), TP(USAGE, 1), TP(USAGE, 2)
    consumer = chunk_consumer(FakeConsumer)(
        [{p0: [record(0)], p1: [record(0, 1)], p2: [record(0, 2)]}], active={p0}
    )
    consumer._buffered_partitions = {p2}
    asyncio.run(consumer._drain_messages(consumer))
    assert [m.partition for m in consumer.delivered] == [0, 2]


class FlowControl:
    def __init__(self) -> None:
        self.active = True

    def is_active(self) -> bool:
        return self.active


class Tracked:
    def __init__(self) -> None:
        self.consumer_generation_id = 1
        self.flow_control = FlowControl()
        self.consumer = self
        self.tracked: list[Any] = []

    def track_message(self, message: Any) -> None:
        self.tracked.append(message)


class QueuedEvent:
    def __init__(self, records: int, generation: int = 1) -> None:
        self.message = chunk_message(TP(USAGE, 0), [record(o) for o in range(records)], generation)
        self.message.tracked = False
        self.acked = 0

    def ack(self) -> None:
        self.acked += 1


class FakeStream:
    def __init__(self, app: Tracked, events: list[QueuedEvent]) -> None:
        self.app = app
        self.channel = self
        self.queue: asyncio.Queue[QueuedEvent] = asyncio.Queue()
        for event in events:
            self.queue.put_nowait(event)

    async def events(self) -> AsyncIterator[QueuedEvent]:
        while not self.queue.empty():
            yield self.queue.get_nowait()


def test_a_batch_is_an_event_with_those_queued_behind_it_up_to_the_limit() -> None:
    app = Tracked()
    queued = [
        QueuedEvent(400),
        QueuedEvent(400),
        QueuedEvent(300, generation=0),
        QueuedEvent(400),
        QueuedEvent(1),
    ]

    async def run() -> list[list[QueuedEvent]]:
        taken: list[list[QueuedEvent]] = []
        async for batch in batches(FakeStream(app, queued), 1000):
            assert all(e.acked == 0 for e in batch)  # in progress: not acked yet
            taken.append(batch)
        return taken

    taken = asyncio.run(run())
    first, stale, fourth, last = queued[0], queued[2], queued[3], queued[4]
    assert taken == [[first, queued[1], fourth], [last]]  # 1200 >= 1000: the batch stops
    assert stale.acked == 1 and stale.message not in app.tracked  # an earlier generation: skipped
    assert [m for m in app.tracked] == [queued[1].message, fourth.message]  # the stream tracks the first
    assert queued[1].acked == 1 and fourth.acked == 1 and first.acked == 0  # the stream acks the first


def test_while_the_flow_is_stopped_queued_events_are_skipped() -> None:
    app = Tracked()
    queued = [QueuedEvent(1), QueuedEvent(1)]

    async def run() -> list[list[QueuedEvent]]:
        taken = []
        async for batch in batches(FakeStream(app, queued), 1000):
            taken.append(batch)
            app.flow_control.active = False
        return taken

    app.flow_control.active = False
    taken = asyncio.run(run())
    assert taken == [[queued[0]]] and queued[1].acked == 1


class Generational(NamedTuple):
    """A queued event: only its message's generation matters here."""

    message: Any


def queued_event(generation: int) -> Generational:
    return Generational(SimpleNamespace(generation_id=generation))


def test_the_resume_after_a_recovery_keeps_what_this_generation_fetched() -> None:
    # Faust resumes the flow control after awaiting its seek to the committed offsets,
    # with the stream partitions already resumed: chunks fetched during the seek sat in
    # the queue, and its resume emptied them (a worker then stopped committing).
    async def run() -> tuple[list[int], list[int]]:
        app = SimpleNamespace(
            consumer_generation_id=2, flow_control=FlowControlEvent(initially_suspended=False)
        )
        keep_current_on_resume(app)
        queue: ThrowableQueue[Generational] = ThrowableQueue(
            maxsize=16, flow_control=app.flow_control, clear_on_resume=True
        )
        for generation in (1, 2, 1, 2):
            queue.put_nowait(queued_event(generation))
        app.flow_control.resume()
        resumed = [queue.get_nowait().message.generation_id for _ in range(queue.qsize())]
        queue.put_nowait(queued_event(2))
        app.flow_control.suspend()  # a rebalance starts: Faust empties the queues whole
        app.flow_control.clear()
        return resumed, [e.message.generation_id for e in list(queue._queue)]  # type: ignore[attr-defined]

    assert "self.clear()" in inspect.getsource(FlowControlEvent.resume)  # what is replaced
    resumed, suspended = asyncio.run(run())
    assert resumed == [2, 2]  # an earlier generation's are dropped, this one's kept in order
    assert suspended == []


def test_what_was_handed_on_is_known_after_faust_forgets_its_read_offset() -> None:
    p0, p1 = TP(USAGE, 0), TP(USAGE, 1)
    consumer = drained([{p0: [record(o) for o in range(5)]}, {p0: [record(o) for o in range(5, 8)]}])
    consumer._read_offset[p0] = None  # Faust's seek with no committed offset does this
    assert handed_on(consumer, p0, 1) == 8
    assert handed_on(consumer, p0, 2) is None  # another generation: unknown
    assert handed_on(consumer, p1, 1) is None


def test_the_worker_reads_back_up_to_what_its_consumer_handed_on() -> None:
    from stream_app.settings import Settings
    from stream_app.worker.app import Worker
    from stream_app.worker.offsets import Partition

    worker = Worker(Settings.from_env({}))
    consumer: Any = worker.app.consumer  # created, not started: no broker needed
    usage = Partition(worker.settings.topic("usage"), 3)
    tp = TP(*usage)
    consumer.handed_on[tp] = (worker.app.consumer_generation_id, 2480)
    consumer._read_offset[tp] = None
    assert worker._read_upto(usage) == 2480
    consumer.handed_on[tp] = (worker.app.consumer_generation_id - 1, 2480)
    assert worker._read_upto(usage) is None

    async def resumed() -> int:  # the worker's own queues keep this generation's chunks on resume
        queue = worker.app.FlowControlQueue(maxsize=4, clear_on_resume=True)
        queue.put_nowait(queued_event(worker.app.consumer_generation_id))
        worker.app.flow_control.resume()
        return int(queue.qsize())

    assert asyncio.run(resumed()) == 1


def test_fetches_wait_for_a_chunk_worth_a_batch() -> None:
    consumer = SimpleNamespace(_fetcher=SimpleNamespace(_fetch_min_bytes=1, _fetch_max_wait_ms=1500))
    gather_fetches(consumer)
    assert consumer._fetcher._fetch_min_bytes == FETCH_MIN_BYTES > 1
    assert consumer._fetcher._fetch_max_wait_ms == FETCH_MAX_WAIT_MS <= 50
    # aiokafka reads both afresh for every fetch request it builds: setting them on a
    # started consumer takes effect (an upgrade that caches them elsewhere fails here).
    build = inspect.getsource(KafkaFetcher._get_actions_per_node)
    assert "self._fetch_max_wait_ms" in build and "self._fetch_min_bytes" in build
    assert "self._fetch_min_bytes = fetch_min_bytes" in inspect.getsource(KafkaFetcher.__init__)
