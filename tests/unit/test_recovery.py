"""The table applies changelog chunks record by record, in offset order, as Faust would
apply one event per record: values, tombstones and (RocksDB) the persisted offset."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import pytest
from aiokafka.structs import ConsumerRecord
from faust.types import TP

from stream_app.settings import Settings
from stream_app.worker.app import Worker
from stream_app.worker.chunks import ChunkMessage, chunk_message
from stream_app.worker.recovery import BUFFER_CHUNKS, STANDBY_BUFFER_CHUNKS, ChunkTable


class Event(NamedTuple):
    key: bytes | None
    value: bytes | None
    message: ChunkMessage


def changelog_chunk(topic: str, partition: int, entries: list[tuple[int, bytes, bytes | None]]) -> Event:
    records = [
        ConsumerRecord(topic, partition, offset, 0, 0, key, value, None, len(key), len(value or b""), [])
        for offset, key, value in entries
    ]
    message = chunk_message(TP(topic, partition), records, 1)
    return Event(message.key, message.value, message)


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_chunks_are_applied_record_by_record_in_offset_order(store: str, tmp_path: Path) -> None:
    worker = Worker(Settings.from_env({"STREAM_APP_STORE": store, "STREAM_APP_DATA_DIR": str(tmp_path)}))
    table: Any = worker.table
    assert isinstance(table, ChunkTable) and table.recovery_buffer_size == BUFFER_CHUNKS
    assert table.standby_buffer_size == STANDBY_BUFFER_CHUNKS
    topic = table.changelog_topic.get_topic_name()
    first = changelog_chunk(topic, 2, [(0, b"a", b"1"), (1, b"b", b"1"), (3, b"a", b"2")])
    second = changelog_chunk(topic, 2, [(4, b"b", None), (5, b"c", b"1"), (6, b"a", b"3")])
    table.apply_changelog_batch([first, second])
    if store == "rocksdb://":
        # Reads are routed by the partition of an event, as in the worker.
        data: Any = table.data
        db = data._db_for_partition(2)
        assert (db.get(b"a"), db.get(b"b"), db.get(b"c")) == (b"3", None, b"1")
        assert data.persisted_offset(TP(topic, 2)) == 6
    else:
        assert dict(table.data.data) == {b"a": b"3", b"c": b"1"}
