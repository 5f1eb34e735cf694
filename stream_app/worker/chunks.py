"""One Faust event per fetched partition chunk, instead of one per message.

Faust 0.15.3 hands each fetched message on its own: the consumer awaits mode's
``wait_first`` per message (four tasks and a waiter), the conductor makes an ``Event``,
the stream tracks, senses and acks it. That is about 110 us per message before the
worker does anything, ten times the budget of a record at 100,000 records/s. The worker
needs only the records of each partition, in offset order. So its consumer (installed
through the transport's Consumer class, as committer.py is):

* hands on each partition's share of a fetch as one message: Faust's message of the
  chunk's last record, which carries every record of the chunk (``ChunkMessage.records``).
  The conductor, the streams, acks, sensors and the table recovery see one message per
  chunk, and do per chunk what they did per message;
* otherwise keeps Faust's rules exactly: a fetch that returns while the flow is stopped
  is dropped and the positions go back to the committed offsets; nothing more is handed
  on once the flow stops or the generation changes; a partition paused meanwhile is
  skipped; offsets below the last one read are dropped (Faust reads some again after a
  seek); delivery races the flow's suspension (``wait_first``), so a rebalance never
  waits for a full queue, and what was fetched in an earlier generation is skipped by
  the stream.

Offsets missing *inside* a chunk were never in the log (compacted away, or transaction
markers): aiokafka returns a partition's records from consecutive fetch positions and
checks each result against the position. So the offset ledger passes over them
(offsets.py); a hole *between* chunks may be records Faust dropped, and is read back
(intake.py).

On the agent side, ``batches`` hands on a stream's events with those already queued
behind it: under load a batch grows to many chunks (one state decode and store per SIM
for all of them), idle it is one chunk, with no timer to wait for.

A fetch waits for some data (``gather_fetches``): Faust's consumer asks for one byte,
so at a steady rate below the worker's best each fetch came back with a record or two
per partition, each batch paid its fixed costs (a Faust event, the sends and their
acknowledgement, a commit) for those few, and the worker fell behind a rate half of
what it takes in bulk. Asking for 64 KiB, or whatever came within 10 ms, keeps chunks
of tens of records: `make bench`'s decision latency at half rate went from p50 1,076 ms
and p99 2,504 ms to 70 ms and 176 ms (20,000 SIMs), and the bulk rate did not move.

Two Faust habits lose records after a rebalance, and the worker undoes both:

* resuming the flow control empties every stream's queue, to drop what was fetched
  before the rebalance. Faust resumes it once more after its recovery, when the stream
  partitions have already been resumed and the seek to the committed offsets awaited:
  chunks of the new generation handed on meanwhile were emptied with the rest, and
  with no committed offset to seek back to, never fetched again (the worker then
  stopped committing that partition: docs/reliability.md). ``keep_current_on_resume``
  makes that resume empty only what an earlier generation fetched;
* the seek sets Faust's read offset of a partition with no committed offset to None,
  so the worker could not tell what its consumer had already read. The consumer keeps
  its own mark, per partition and generation, of what it handed on (``handed_on``):
  what is below it and never reached the agents is read back (intake.py).

Private methods of Faust's consumer are replaced or called (``_drain_messages``,
``_wait_next_records``, ``_read_offset``), so faust-streaming is pinned to 0.15.x and
tests/unit/test_chunks.py checks that they still exist with these signatures (and that
aiokafka's fetcher still reads the two attributes ``gather_fetches`` sets).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

from faust.transport.consumer import CONSUMER_FETCHING
from faust.types import TP, ConsumerMessage

FETCH_MIN_BYTES = 64 * 1024
"""What a fetch waits for (aiokafka's default, and Faust's, is one byte)..."""
FETCH_MAX_WAIT_MS = 10
"""...or for this long: the most a record waits for company."""


def gather_fetches(consumer: Any) -> None:
    """Make the started aiokafka ``consumer``'s fetches wait for chunks worth a batch
    (Faust builds it asking for one byte, so its 1.5 s of wait never comes into play;
    the fetcher reads both afresh for each request)."""
    fetcher = consumer._fetcher
    fetcher._fetch_min_bytes = FETCH_MIN_BYTES
    fetcher._fetch_max_wait_ms = FETCH_MAX_WAIT_MS


class ChunkMessage(ConsumerMessage):
    """Faust's message for the last record of a chunk, carrying the whole chunk."""

    __slots__ = ("records",)

    records: list[Any]
    """aiokafka's records of one partition, in offset order (``timestamp`` in ms)."""


def chunk_message(tp: TP, records: list[Any], generation: int) -> ChunkMessage:
    """The message Faust's aiokafka driver would make of the last record, plus the chunk."""
    last = records[-1]
    message = ChunkMessage(
        last.topic,
        last.partition,
        last.offset,
        last.timestamp / 1000.0 if last.timestamp is not None else cast(float, None),
        last.timestamp_type,
        last.headers,
        last.key,
        last.value,
        last.checksum,
        last.serialized_key_size,
        last.serialized_value_size,
        tp,
        generation_id=generation,
    )
    message.records = records
    return message


def chunk_of(event: Any) -> list[Any] | None:
    """The records of a chunk event, or None for an event of one message."""
    message = event.message
    return message.records if isinstance(message, ChunkMessage) else None


def size_of(event: Any) -> int:
    records = chunk_of(event)
    return 1 if records is None else len(records)


def chunk_consumer(base: type) -> type:
    """Faust's consumer class ``base``, handing on one message per partition chunk."""

    class ChunkConsumer(base):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.handed_on: dict[TP, tuple[int, int]] = {}
            """Per partition: the generation and the offset after the last record handed on."""

        async def _drain_messages(self, fetcher: Any) -> None:
            # Faust's loop, error handling included, with one delivery per chunk.
            consumer_should_stop = self._stopped.is_set
            fetcher_should_stop = fetcher._stopped.is_set
            try:
                while not (consumer_should_stop() or fetcher_should_stop()):
                    self.diag.set_flag(CONSUMER_FETCHING)
                    await self._drain_fetch()
                    self.diag.unset_flag(CONSUMER_FETCHING)
                    # Faust sleeps here too: getmany may return at once, again and again.
                    await asyncio.sleep(0)
            except self.consumer_stopped_errors:
                if self.transport.app.should_stop:
                    self.log.info("Broker stopped consumer, shutting down...")
                    return
                raise
            except asyncio.CancelledError:
                if self.transport.app.should_stop:
                    self.log.info("Consumer shutting down for user cancel.")
                    return
                raise
            except Exception as exc:
                self.log.exception("Drain messages raised: %r", exc)
                raise
            finally:
                self.diag.unset_flag(CONSUMER_FETCHING)

        async def _drain_fetch(self) -> None:
            records, active = await self._wait_next_records(1.0)
            if records is None or self.should_stop:
                return
            generation = self.app.consumer_generation_id
            if not self.flow_active:
                # As Faust's getmany: what comes back while the flow is stopped is
                # dropped, and the partitions go back to their committed offsets.
                try:
                    await self.perform_seek()
                except Exception as exc:
                    self.log.warning("exception performing seek when flow not active %r", exc)
                return
            for tp, fetched in records.items():
                if not self.flow_active or self.app.consumer_generation_id != generation:
                    break
                if active is not None and tp not in active and tp not in self._buffered_partitions:
                    continue
                if fetched:
                    await self._deliver_chunk(tp, fetched, generation)

        async def _deliver_chunk(self, tp: TP, fetched: list[Any], generation: int) -> None:
            read = self._read_offset.get(tp)
            if read is not None and fetched[0].offset < read:
                fetched = [record for record in fetched if record.offset >= read]
                if not fetched:
                    return
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            consumer: Any = self  # Faust's consumer; its attributes are untyped here
            commit_every = consumer._commit_every
            if commit_every is not None and consumer._n_acked >= commit_every:
                consumer._n_acked = 0
                await self.commit()
            # One wait_first per chunk rather than per message: its tasks cost tens of
            # microseconds, nothing spread over a chunk, and it keeps Faust's rule that
            # a rebalance never waits for a delivery stuck on a full queue.
            message = chunk_message(tp, fetched, generation)
            await self.wait_first(self.callback(message), self.suspend_flow.wait())
            self._read_offset[tp] = fetched[-1].offset
            # Also when a rebalance cut the hand-on short: a mark too high only makes the
            # worker read back what it may not have been handed, never skip anything.
            self.handed_on[tp] = (generation, fetched[-1].offset + 1)

    # Not renamed: mode registers a service's tasks under its qualified name.
    return ChunkConsumer


def handed_on(consumer: Any, tp: TP, generation: int) -> int | None:
    """The offset after the last record ``consumer`` handed on from ``tp`` in ``generation``."""
    mark: tuple[int, int] | None = consumer.handed_on.get(tp)
    return mark[1] if mark is not None and mark[0] == generation else None


def keep_current_on_resume(app: Any) -> None:
    """Resuming ``app``'s flow control empties the stream queues of what earlier
    generations fetched only (see above); suspending it still empties them whole."""
    flow_control = app.flow_control
    empty = flow_control.clear

    def clear() -> None:
        if not flow_control.is_active():  # a rebalance starts (suspend, then clear)
            empty()
            return
        generation = app.consumer_generation_id
        for queue in list(flow_control._queues):
            current = [item for item in queue._queue if _generation_of(item) == generation]
            queue.clear()  # as Faust's: blocked putters cancelled, pending errors dropped
            queue._queue.extend(current)

    flow_control.clear = clear


def _generation_of(item: Any) -> int | None:
    message = getattr(item, "message", None)
    generation: int | None = getattr(message, "generation_id", None)
    return generation


async def batches(stream: Any, limit: int) -> AsyncIterator[list[Any]]:
    """The stream's events, each with those already queued behind it (``limit`` records).

    The first event of a batch comes through Faust's stream, which tracks, senses, skips
    what is stale and acks it when the next batch is asked for. Those queued behind it
    are taken as the stream would take them: skipped (and acked) when the flow is stopped
    or they were fetched in an earlier generation, otherwise tracked as in progress (a
    rebalance waits for them) and acked once the batch is done.
    """
    app = stream.app
    consumer = app.consumer
    async for event in stream.events():
        queue = stream.channel.queue
        taken: list[Any] = []
        size = size_of(event)
        try:
            while size < limit and not queue.empty():
                more = queue.get_nowait()
                message = more.message
                if not app.flow_control.is_active() or message.generation_id != app.consumer_generation_id:
                    more.ack()
                    continue
                if not message.tracked:
                    message.tracked = True
                    consumer.track_message(message)
                taken.append(more)
                size += size_of(more)
            yield [event, *taken]
        finally:
            for more in taken:
                more.ack()


def total(events: Sequence[Any]) -> int:
    """The number of records in ``events``."""
    return sum(size_of(event) for event in events)
