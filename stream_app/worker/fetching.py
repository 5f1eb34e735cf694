"""What the worker's Kafka fetcher cannot read, and when it last heard from the broker.

Faust reads input on its consumer thread with aiokafka, which decodes a fetched record
batch only while Faust drains it (``Fetcher.fetched_records``). A batch it cannot
decode (a CRC that does not match, a codec it has no library for or does not know)
raises out of that drain: Faust's consumer thread crashes, the worker exits, and after a
restart the same batch is fetched again, a crash loop.

Here the records of each partition are drained through a guard instead. The records
before the bad batch are delivered as usual; at the bad batch the partition is paused
in aiokafka (Faust never resumes what it did not pause) and *held*, with one ERROR line
naming the topic, partition, offset and error; the other partitions go on. Nothing is
skipped: the worker commits only what it processed (offsets.py), so the group's offset
stays below the batch. A held partition is fetched again, from that offset, after a
rebalance or a restart; if the cause is gone (the codec's library installed) it goes
on, else it is held again. /readyz and ``stream_app_held_partitions`` show it.

The same watch tells when the fetcher last had an answer from the broker: aiokafka
stamps every partition a fetch response covers, and an idle consumer is answered every
``fetch_max_wait_ms`` (0.5 s), so the newest stamp over the assignment is the last time
the worker reached Kafka.

Where: the fetcher keeps each partition's fetched, undrained records in a dict; the
dict of Faust's consumer's fetcher is replaced by one that wraps each entry's record
iterator as it is stored. aiokafka names relied on (aiokafka is pinned below 0.15 and
tests/unit/test_fetching.py checks them): ``AIOKafkaConsumer._fetcher``,
``Fetcher._records``, ``FetchResult._partition_records``, ``PartitionRecords._tp``,
``_records_iterator`` and ``next_fetch_offset``; of Faust, the consumer thread the
driver's ``Consumer._new_consumer_thread`` makes and its ``_consumer``.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Held:
    """A partition held at a record batch that cannot be decoded."""

    topic: str
    partition: int
    offset: int
    """The first offset not read: the bad batch's (or the first undecodable record's)."""
    error: str

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}] held at offset {self.offset}: {self.error}"


class FetchWatch:
    """Held partitions and the broker's last answer, for readiness and metrics.

    Written on Faust's consumer thread, read on the main one: ``held`` is replaced,
    never changed in place, so a reader always sees a whole mapping.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.held: dict[TopicPartition, Held] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._started = clock()
        self._reached = 0.0

    # --- the consumer thread's side ------------------------------------------------------

    def watch(self, consumer: AIOKafkaConsumer) -> None:
        """Guard the started consumer's fetcher (on the consumer's own thread)."""
        fetcher = consumer._fetcher
        if not isinstance(fetcher._records, _Guarded):
            fetcher._records = _Guarded(self, consumer, fetcher._records)
        self._consumer = consumer
        self._started = self.clock()

    def _guard(self, consumer: AIOKafkaConsumer, records: Any) -> None:
        tp: TopicPartition = records._tp
        if tp in self.held:  # fetched again: a rebalance or seek resumed it; try once more
            self.held = {k: v for k, v in self.held.items() if k != tp}
        records._records_iterator = self._drain(consumer, records, records._records_iterator)

    def _drain(self, consumer: AIOKafkaConsumer, records: Any, inner: Iterator[Any]) -> Iterator[Any]:
        try:
            yield from inner
        except Exception as exc:  # whatever decoding raises: the input, not the worker, is at fault
            # Ending here leaves the fetch position at the first offset not read.
            self._hold(consumer, records._tp, records.next_fetch_offset, exc)

    def _hold(self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int, exc: Exception) -> None:
        consumer.pause(tp)
        held = Held(tp.topic, tp.partition, offset, _describe(exc))
        self.held = {**self.held, tp: held}
        log.error(
            "%s[%d] from offset %d: a record batch cannot be decoded (%s). The partition is held "
            "there, the others go on; it is read again after a restart or rebalance. Install what is "
            "missing (a codec's library), or if the batch is corrupt on the broker, move the group's "
            "offset past it",
            tp.topic,
            tp.partition,
            offset,
            held.error,
            extra={"condition": f"held {tp.topic}[{tp.partition}]", "fields": {"held": str(held)}},
        )

    # --- the main thread's side ----------------------------------------------------------

    def held_partitions(self, assigned: Iterable[Any]) -> list[Held]:
        """The held partitions among ``assigned`` (a revoked one is someone else's now)."""
        owned = {(tp.topic, tp.partition) for tp in assigned}
        held = self.held
        return sorted((h for h in held.values() if (h.topic, h.partition) in owned), key=str)

    def reached(self) -> float:
        """Wall time of the broker's last answer to a fetch: the start while none came yet."""
        consumer = self._consumer
        if consumer is not None:
            try:
                stamps = [consumer.last_poll_timestamp(tp) for tp in consumer.assignment()]
            except (AssertionError, RuntimeError, KeyError, AttributeError):
                # read from another thread while a rebalance changes the assignment
                stamps = []
            newest = max((s for s in stamps if s is not None), default=None)
            if newest is not None:
                self._reached = max(self._reached, newest / 1000)
        return max(self._reached, self._started)

    def unreached_for(self) -> float:
        """Seconds since the broker last answered a fetch (0 while nothing is assigned)."""
        consumer = self._consumer
        try:
            assigned = bool(consumer.assignment()) if consumer is not None else False
        except RuntimeError:
            assigned = True
        if not assigned:
            # No partition to fetch, so no answer to wait for: the worker owns nothing and
            # says so (not ready) without blaming the broker.
            return 0.0
        return max(self.clock() - self.reached(), 0.0)


def _describe(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}"  # aiokafka's start with it


class _Guarded(OrderedDict[Any, Any]):
    """The fetcher's dict of undrained records, guarding each partition's as it is stored."""

    def __init__(self, watch: FetchWatch, consumer: AIOKafkaConsumer, existing: Any) -> None:
        super().__init__()
        self._watch = watch
        self._consumer = consumer
        for tp, result in existing.items():
            self[tp] = result

    def __setitem__(self, tp: Any, result: Any) -> None:
        records = getattr(result, "_partition_records", None)  # a FetchError has none
        if records is not None:
            self._watch._guard(self._consumer, records)
        super().__setitem__(tp, result)


def install(app: Any, watch: FetchWatch, started: Callable[[Any], None] = lambda _consumer: None) -> None:
    """Make the consumer ``app`` will create report to ``watch``; ``started`` is given
    the aiokafka consumer once it is started."""
    transport = app.transport
    transport.Consumer = watched_consumer(transport.Consumer, watch, started)


def watched_consumer(
    base: type, watch: FetchWatch, started: Callable[[Any], None] = lambda _consumer: None
) -> type:
    class WatchedThread(AIOKafkaConsumerThread):
        async def on_start(self) -> None:
            await super().on_start()  # creates and starts the aiokafka consumer
            started(self._consumer)
            watch.watch(self._consumer)

    class WatchedConsumer(base):  # type: ignore[misc]
        def _new_consumer_thread(self) -> WatchedThread:
            # as Faust's driver makes its thread, of the subclass
            return WatchedThread(self, loop=self.loop, beacon=self.beacon)

    # Not renamed: mode registers a service's tasks under its qualified name.
    return WatchedConsumer
