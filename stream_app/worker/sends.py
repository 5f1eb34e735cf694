"""Producing in record batches: one aiokafka batch per topic partition, sent at once.

aiokafka's ``send`` costs a future, a partitioner call, a metadata check and an
accumulator lookup per message, and each batch then lingers (``producer_linger``) for
more. The worker knows every message of a write before it sends any, so it builds the
record batches itself (``create_batch``, in aiokafka's C extension) and hands each one
over closed (``send_batch``): the sender takes it at once, with no linger, and one
future stands for all of its records.

Records keep their order within a topic partition: they are appended in the order
given, a batch that is full is submitted before the next one of its partition is
started, and aiokafka submits the batches of one partition in order.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any


class Batch:
    """The records appended to one topic partition, then the future of their delivery."""

    __slots__ = ("builder", "count", "delivery", "held", "partition", "topic")

    def __init__(self, builder: Any, topic: str, partition: int) -> None:
        self.builder = builder
        self.topic = topic
        self.partition = partition
        self.count = 0
        self.delivery: asyncio.Future[Any] | None = None
        self.held: list[Any] = []
        """What the caller keeps back until the delivery (writer.py: states to store)."""


class Outbox:
    """Record batches being filled, per topic partition, and those already submitted."""

    def __init__(
        self, producer: Any, done: Callable[[Batch, asyncio.Future[Any]], None] | None = None
    ) -> None:
        self.producer = producer
        self.done = done
        """Called with each batch and its delivery once the broker answers."""
        self.open: dict[tuple[str, int], Batch] = {}
        self.submitted: list[Batch] = []
        self._partitions: dict[str, list[int]] = {}

    async def partition_for(self, topic: str, key: bytes) -> int:
        """The partition the producer's partitioner picks for ``key`` (as ``send`` would)."""
        partitions = self._partitions.get(topic)
        if partitions is None:
            await self.producer.client._wait_on_metadata(topic)
            metadata = self.producer.client.cluster
            partitions = self._partitions[topic] = sorted(metadata.partitions_for_topic(topic))
        return int(self.producer._partitioner(key, partitions, partitions))

    async def append(self, topic: str, partition: int, key: bytes, value: bytes | None) -> Batch:
        """Append a record; returns the batch it went into."""
        batch = self.open.get((topic, partition))
        if batch is None:
            batch = self.open[topic, partition] = Batch(self.producer.create_batch(), topic, partition)
        if batch.builder.append(key=key, value=value, timestamp=None) is None:
            # Full: submitted now, before the next batch of the partition is started.
            await self._submit(batch)
            batch = self.open[topic, partition] = Batch(self.producer.create_batch(), topic, partition)
            if batch.builder.append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"a record of {len(value or b'')} bytes exceeds the batch size")
        batch.count += 1
        return batch

    async def submit(self) -> list[Batch]:
        """Submit every open batch; returns every batch submitted by this outbox."""
        for batch in list(self.open.values()):
            await self._submit(batch)
        self.open.clear()
        return self.submitted

    async def _submit(self, batch: Batch) -> None:
        batch.builder.close()  # closed: the sender takes it without lingering
        delivery = await self.producer.send_batch(batch.builder, batch.topic, partition=batch.partition)
        batch.delivery = delivery
        self.submitted.append(batch)
        if self.done is not None:  # at once: a batch submitted is answered whatever comes next
            delivery.add_done_callback(functools.partial(self.done, batch))
