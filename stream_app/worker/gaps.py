"""Reading input the worker was not handed: committed offsets and the records of a gap.

The worker's own consumer belongs to Faust, and seeking it would fight Faust's buffers
and read offsets. So a second aiokafka consumer, assigned partitions by hand (it never
joins the group, never commits), answers the two questions the offset ledger asks
(offsets.py): where does a partition's frontier start (the group's committed offset,
else the partition's first offset), and what records lie between the frontier and the
first offset Faust delivered. Offsets with no record (transaction markers) are simply
absent from what it returns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from ..settings import Settings
from .offsets import Partition

log = logging.getLogger(__name__)

READ_TIMEOUT = 20.0
"""Seconds a read may take; well below Faust's 60 s rebalance timeout, since the agent
holding the state lock meanwhile keeps the worker from taking part in a rebalance."""


class GapReader:
    def __init__(self, settings: Settings, chunk: int) -> None:
        self.settings = settings
        self.chunk = chunk
        self.reached = 0
        """After a read: the first offset it did not cover (its ``last`` + 1 when complete)."""
        self._consumer: AIOKafkaConsumer | None = None
        self._stopped = False

    async def _started(self) -> AIOKafkaConsumer:
        if self._stopped:
            raise RuntimeError("the worker is shutting down")
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                **self.settings.kafka_options(),
                # The group only to read its committed offsets: a consumer assigned by
                # hand never joins it, and with auto-commit off never commits.
                group_id=self.settings.app_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=self.chunk,
            )
            try:
                await consumer.start()
            except BaseException:
                await consumer.stop()
                raise
            self._consumer = consumer
        return self._consumer

    async def stop(self) -> None:
        self._stopped = True
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    async def start_offset(self, partition: Partition) -> int:
        """The group's committed offset, else the first offset the partition still has."""
        consumer = await self._started()
        tp = TopicPartition(*partition)
        committed = await consumer.committed(tp)
        if committed is not None:
            return int(committed)
        beginning = await consumer.beginning_offsets([tp])
        return int(beginning[tp])

    async def read(self, partition: Partition, first: int, last: int) -> AsyncGenerator[list[Any], None]:
        """Yield the records at offsets first..last in order, in lists of at most ``chunk``.

        Offsets past the partition's end are not waited for: ``reached`` then says where
        the read stopped. Use it under ``contextlib.aclosing`` so an abandoned read
        releases its partition at once.
        """
        consumer = await self._started()
        tp = TopicPartition(*partition)
        self.reached = first
        consumer.assign([tp])
        try:
            end = (await consumer.end_offsets([tp]))[tp]
            last = min(last, end - 1)
            if first > last:
                return
            consumer.seek(tp, first)
            deadline = time.monotonic() + READ_TIMEOUT
            while await consumer.position(tp) <= last:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reading {partition.topic}[{partition.partition}] {first}..{last}")
                fetched = await consumer.getmany(tp, timeout_ms=200, max_records=self.chunk)
                records = [r for r in fetched.get(tp, []) if first <= r.offset <= last]
                if records:
                    yield records
                await asyncio.sleep(0)
            self.reached = last + 1
        finally:
            # Stops the prefetch at the partition's end, which would hold the next read
            # behind a long-poll.
            consumer.unsubscribe()
