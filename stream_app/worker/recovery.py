"""Table recovery and standbys in bulk: a changelog chunk's records stored together.

The changelog reaches Faust's recovery as one event per fetched chunk (chunks.py), so
its per-event costs (a queue wait with a timeout, log lines built, the progress
counters) are paid once per chunk, and its progress (the chunk's last offset) is exact.
The table (the ``Table`` class setting) stores each chunk when the recovery applies its
buffer, in offset order: on RocksDB as one write batch and then the offset it reached,
as Faust's store would (``_write_chunk``); on the memory store, every record as the
changelog event Faust would have made of it.
Everything else is Faust's: where reading starts (a RocksDB store's persisted offset),
when actives are ready, standbys, a rebalance abandoning a recovery midway.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import faust
from faust.stores.rocksdb import Store as RocksDBStore
from rocksdict import WriteBatch

from .chunks import chunk_of
from .storage import ChangelogFirstStore

BUFFER_CHUNKS = 4
"""Chunks an active partition's recovery buffers before it applies them (Faust's buffer
counts events: 1000). Not 1: Faust then keeps reading an active partition's changelog
after its recovery, and would apply the worker's own writes again."""
STANDBY_BUFFER_CHUNKS = 1
"""A standby applies each chunk at once, so what it holds is the changelog as far as it
was read (Faust applies a buffer only when it is full: the last chunks read would wait
for more)."""


class ChangelogRecord:
    """One changelog record in the shape a store reads a changelog event (and its message)."""

    __slots__ = ("key", "offset", "partition", "topic", "tp", "value")

    def __init__(self, record: Any, tp: Any) -> None:
        self.key = record.key
        self.value = record.value
        self.topic = record.topic
        self.partition = record.partition
        self.offset = record.offset
        self.tp = tp

    @property
    def message(self) -> ChangelogRecord:
        return self


def opened(batch: Iterable[Any]) -> Iterator[Any]:
    """The events of ``batch``, each chunk opened into its records in offset order."""
    for event in batch:
        records = chunk_of(event)
        if records is None:
            yield event
            continue
        tp = event.message.tp
        for record in records:
            yield ChangelogRecord(record, tp)


class ChunkTable(faust.Table[bytes, bytes]):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("recovery_buffer_size", BUFFER_CHUNKS)
        kwargs.setdefault("standby_buffer_size", STANDBY_BUFFER_CHUNKS)
        super().__init__(*args, **kwargs)

    def _new_store_by_url(self, url: Any) -> Any:
        if not str(url).startswith("rocksdb:"):
            return super()._new_store_by_url(url)
        # Faust's RocksDB store, written only with what the changelog acknowledged.
        return ChangelogFirstStore(
            url,
            self.app,
            self,
            table_name=self.name,
            key_type=self.key_type,
            key_serializer=self.key_serializer,
            value_serializer=self.value_serializer,
            value_type=self.value_type,
            loop=self.loop,
            options=self.options,
        )

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        store: Any = self.data
        if not (isinstance(store, RocksDBStore) and store.use_rocksdict):
            super().apply_changelog_batch(opened(batch))
            return
        single: list[Any] = []
        for event in batch:
            records = chunk_of(event)
            if records is None:
                single.append(event)
                continue
            if single:  # in offset order: what came before the chunk first
                super().apply_changelog_batch(single)
                single = []
            _write_chunk(store, event.message.tp, records)
        if single:
            super().apply_changelog_batch(single)


def _write_chunk(store: Any, tp: Any, records: list[Any]) -> None:
    """A chunk's records as one RocksDB write batch, then the offset it persisted: what
    Faust's store does per event, less its Python per record (events made, a dict of
    batches and offsets), which was about a tenth of a fresh worker's recovery."""
    if not records:
        return
    batch = WriteBatch(raw_mode=True)
    put, delete = batch.put, batch.delete
    for record in records:
        if record.value is None:
            delete(record.key)
        else:
            put(record.key, record.value)
    store._db_for_partition(tp.partition).write(batch)
    store.set_persisted_offset(tp, records[-1].offset)


def reassigned(app: Any) -> None:
    """Forget the buffer size the recovery cached per changelog partition.

    Faust's recovery caches each partition's buffer size the first time it sees it, as
    an active or a standby, and never forgets it: a partition that was active and is now
    a standby would keep the active size, and its last chunks would wait in the buffer.
    Called on every rebalance.
    """
    app.tables.recovery.buffer_sizes.clear()
