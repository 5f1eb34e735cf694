"""The intake with a reader in memory: acknowledgements, failures, rebalances, short reads.

tests/integration/test_intake.py runs the same intake against a real broker; here the
reader is a list, so the paths that need an exact moment (a rebalance between two
chunks, a delivery that fails later) are exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any, NamedTuple

import pytest
from aiokafka.structs import ConsumerRecord
from faust.types import TP

from stream_app.worker.batch import Incoming
from stream_app.worker.chunks import ChunkMessage, chunk_message
from stream_app.worker.intake import Intake
from stream_app.worker.offsets import Ledger, Partition
from stream_app.worker.writer import Written

TOPIC = "sim.usage"
P = Partition(TOPIC, 0)


class Message(NamedTuple):
    """The fields of Faust's message the intake reads (also used by the broker tests)."""

    topic: str
    partition: int
    offset: int
    timestamp: float


class Event(NamedTuple):
    key: bytes
    value: bytes
    message: Message


class Record(NamedTuple):
    offset: int
    key: bytes
    value: bytes
    timestamp: int


def event(offset: int) -> Event:
    return Event(b"k", b"v%d" % offset, Message(TOPIC, 0, offset, 0.0))


class ListReader:
    """The broker's partition as a list of offsets holding a record (others are markers)."""

    def __init__(self, offsets: list[int], start: int = 0, chunk: int = 3) -> None:
        self.records = {o: Record(o, b"k", b"v%d" % o, 0) for o in offsets}
        self.end = max(offsets, default=-1) + 1
        self.start = start
        self.chunk = chunk
        self.reached = 0

    async def start_offset(self, partition: Partition) -> int:
        return self.start

    async def read(self, partition: Partition, first: int, last: int) -> AsyncGenerator[list[Any], None]:
        self.reached = first
        last = min(last, self.end - 1)
        wanted = [self.records[o] for o in range(first, last + 1) if o in self.records]
        for i in range(0, len(wanted), self.chunk):
            yield wanted[i : i + self.chunk]
        self.reached = max(first, last + 1)

    async def stop(self) -> None:
        pass


class Applier:
    def __init__(self) -> None:
        self.applied: list[int] = []
        self.deliveries: list[asyncio.Future[Any]] = []
        self.unrecorded = 0
        self.fail = False

    async def __call__(self, logical: str, batch: list[Incoming]) -> Written:
        if self.fail:
            raise RuntimeError("a bug")
        self.applied += [i.source.offset for i in batch]
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.deliveries.append(delivery)
        return Written([], [delivery], self.unrecorded)


def intake_with(reader: ListReader, interrupted: bool = False) -> tuple[Intake, Ledger, Applier]:
    ledger, applier = Ledger(), Applier()
    intake = Intake(ledger, reader, applier, lambda topic, n: None, lambda: interrupted)  # type: ignore[arg-type]
    return intake, ledger, applier


async def acknowledge(applier: Applier, ok: bool = True) -> None:
    for delivery in applier.deliveries:
        if not delivery.done():
            if ok:
                delivery.set_result(None)
            else:
                delivery.set_exception(OSError("broker gone"))
    for _ in range(5):  # the deliveries' callbacks, then the gathering future's
        await asyncio.sleep(0)


async def test_offsets_are_done_only_once_their_changelog_records_are_acknowledged() -> None:
    intake, ledger, applier = intake_with(ListReader(list(range(10))))
    await intake.take("usage", [event(o) for o in range(4)])
    assert applier.applied == [0, 1, 2, 3]
    assert ledger.frontier(P) == 0 and ledger.cursor(P) == 4
    await acknowledge(applier)
    assert ledger.frontier(P) == 4


async def test_a_changelog_record_not_acknowledged_stops_the_commits_of_its_partition() -> None:
    intake, ledger, applier = intake_with(ListReader(list(range(10))))
    await intake.take("usage", [event(o) for o in range(4)])
    await acknowledge(applier, ok=False)
    await intake.take("usage", [event(o) for o in range(4, 6)])
    await acknowledge(applier)
    assert ledger.frontier(P) == 0 and ledger.stuck() == [P]


async def test_a_dead_letter_not_sent_leaves_the_input_not_done() -> None:
    intake, ledger, applier = intake_with(ListReader(list(range(10))))
    applier.unrecorded = 1
    await intake.take("usage", [event(o) for o in range(4)])
    assert ledger.frontier(P) == 0 and ledger.stuck() == [P]


async def test_an_exception_while_applying_leaves_the_input_not_done() -> None:
    intake, ledger, applier = intake_with(ListReader(list(range(10))))
    applier.fail = True
    with pytest.raises(RuntimeError):
        await intake.take("usage", [event(o) for o in range(4)])
    assert ledger.frontier(P) == 0 and ledger.stuck() == [P]


async def test_a_hole_is_read_back_in_chunks_and_markers_are_passed_over() -> None:
    # 2 and 5 hold transaction markers; Faust delivered only 7 and 8.
    intake, ledger, applier = intake_with(ListReader([0, 1, 3, 4, 6, 7, 8, 9]))
    await intake.take("usage", [event(7), event(8)])
    assert applier.applied == [0, 1, 3, 4, 6, 7, 8]
    await acknowledge(applier)
    assert ledger.frontier(P) == 9


async def test_a_read_back_stops_between_chunks_when_a_rebalance_starts() -> None:
    intake, ledger, applier = intake_with(ListReader(list(range(10))), interrupted=True)
    await intake.take("usage", [event(8), event(9)])
    assert applier.applied == []  # not even the delivered ones: they would jump the hole
    assert ledger.cursor(P) == 0


async def test_a_read_back_paused_for_a_rebalance_goes_on_at_the_next_tick_if_the_partition_stays() -> None:
    paused = [True]
    ledger, applier = Ledger(), Applier()
    reader = ListReader(list(range(10)))
    intake = Intake(ledger, reader, applier, lambda topic, n: None, lambda: paused[0])  # type: ignore[arg-type]
    intake.idle_after = 3600.0  # not the idle check: nothing would be read back for an hour
    await intake.take("usage", [event(8), event(9)])  # 0..7 missing: read back, paused at once
    assert applier.applied == [] and ledger.cursor(P) == 0
    paused[0] = False  # the rebalance (the end of a recovery) is over, the partition stayed
    await intake.check_idle([("usage", P)], lambda p: 10, event(0))
    assert applier.applied == list(range(10))
    await acknowledge(applier)
    assert ledger.frontier(P) == 10


async def test_a_read_back_cut_short_by_the_partitions_end_claims_only_what_it_read() -> None:
    reader = ListReader(list(range(5)))
    intake, ledger, applier = intake_with(reader)
    await intake.take("usage", [event(0)])
    reader.end = 3  # the reader sees an end below what Faust reported
    await intake.check_idle([("usage", P)], lambda p: 5, event(0))  # starts the idle clock
    intake.idle_after = 0.0
    await intake.check_idle([("usage", P)], lambda p: 5, event(0))
    assert applier.applied == [0, 1, 2]
    await acknowledge(applier)
    assert ledger.frontier(P) == 3  # not 5


async def test_a_quiet_partition_is_not_read_back() -> None:
    intake, _ledger, applier = intake_with(ListReader(list(range(4))))
    intake.idle_after = 0.0
    await intake.take("usage", [event(o) for o in range(4)])
    for _ in range(3):
        await intake.check_idle([("usage", P)], lambda p: 4, event(0))
    assert applier.applied == [0, 1, 2, 3]


class ChunkEvent(NamedTuple):
    key: bytes
    value: bytes
    message: ChunkMessage


def chunk(*offsets: int) -> ChunkEvent:
    """A fetched chunk of records at ``offsets`` (what the chunk consumer hands on)."""
    records = [ConsumerRecord(TOPIC, 0, o, 5_000 + o, 0, b"k", b"v%d" % o, None, 1, 2, []) for o in offsets]
    message = chunk_message(TP(TOPIC, 0), records, 1)
    return ChunkEvent(b"k", message.value or b"", message)


class Keeper(Applier):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[Incoming]] = []

    async def __call__(self, logical: str, batch: list[Incoming]) -> Written:
        self.batches.append(batch)
        return await super().__call__(logical, batch)


async def test_a_chunk_s_records_are_applied_with_the_chunk_as_their_event() -> None:
    ledger, keeper = Ledger(), Keeper()
    intake = Intake(ledger, ListReader(list(range(10))), keeper, lambda topic, n: None)  # type: ignore[arg-type]
    first, second = chunk(0, 1, 2), chunk(3, 4)
    await intake.take("usage", [first, second])
    (batch,) = keeper.batches
    assert [i.source.offset for i in batch] == [0, 1, 2, 3, 4]
    assert [i.raw for i in batch] == [b"v0", b"v1", b"v2", b"v3", b"v4"]
    assert batch[0].key == b"k" and batch[0].received == 5.0
    assert [i.ref for i in batch] == [first, first, first, second, second]
    await acknowledge(keeper)
    assert ledger.frontier(P) == 5


async def test_offsets_missing_inside_a_chunk_are_not_read_back() -> None:
    # 2 and 5..6 hold no record (a compacted topic, transaction markers): one fetch read past them.
    read_back: list[int] = []
    ledger, applier = Ledger(), Applier()
    reader = ListReader([0, 1, 3, 4, 7, 8])
    intake = Intake(ledger, reader, applier, lambda topic, n: read_back.append(n))  # type: ignore[arg-type]
    await intake.take("usage", [chunk(0, 1, 3, 4, 7)])
    assert applier.applied == [0, 1, 3, 4, 7] and read_back == []
    await acknowledge(applier)
    assert ledger.frontier(P) == 8


async def test_a_chunk_that_starts_past_the_cursor_has_the_hole_read_back_once() -> None:
    read_back: list[int] = []
    ledger, applier = Ledger(), Applier()
    intake = Intake(ledger, ListReader(list(range(12))), applier, lambda topic, n: read_back.append(n))  # type: ignore[arg-type]
    await intake.take("usage", [chunk(0, 1, 2)])
    await intake.take("usage", [chunk(6, 7, 8), chunk(9, 10)])  # 3..5 dropped by Faust
    assert applier.applied == list(range(11))  # 3..10 read back in order, each once
    assert sum(read_back) == 8
    await intake.take("usage", [chunk(8, 9, 10, 11)])  # delivered again: only 11 is new
    assert applier.applied == list(range(12))
    await acknowledge(applier)
    assert ledger.frontier(P) == 12


async def test_a_chunk_partly_taken_before_applies_the_rest() -> None:
    intake, _ledger, applier = intake_with(ListReader(list(range(10))))
    await intake.take("usage", [chunk(0, 1, 2, 3)])
    await intake.take("usage", [chunk(2, 3, 4, 5)])  # a seek back delivered 2 and 3 again
    assert applier.applied == [0, 1, 2, 3, 4, 5]
