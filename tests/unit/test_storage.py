"""The RocksDB store's memory budget: shared out over the partitions, and reaching the
store Faust opens for the table."""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from faust.streams import _current_event

from stream_app import codec
from stream_app.domain import apply_subscription, new_state, subscription
from stream_app.domain.memory import HASH_BYTES, remembered
from stream_app.settings import Settings, SettingsError
from stream_app.worker.app import Worker
from stream_app.worker.storage import MIB, WRITE_BUFFERS, rocksdb_options

from .scenario import GB, ICCID, subscription_msg, t


@pytest.mark.parametrize(("budget", "partitions"), [(256, 8), (1024, 12), (16, 1), (256, 3)])
def test_the_budget_is_shared_out_over_the_partitions(budget: int, partitions: int) -> None:
    options = rocksdb_options(budget, partitions)
    per_partition = (
        options["write_buffer_size"] * options["max_write_buffer_number"] + options["block_cache_size"]
    )
    assert options["max_write_buffer_number"] == WRITE_BUFFERS
    assert per_partition * partitions <= budget * MIB
    assert per_partition * partitions > budget * MIB * 0.99  # all of it, to rounding


def test_many_partitions_keep_a_usable_store() -> None:
    options = rocksdb_options(16, 1000)
    assert options["write_buffer_size"] == MIB and options["block_cache_size"] == MIB


def test_a_rocksdb_worker_opens_its_table_within_the_budget(tmp_path: Path) -> None:
    env = {
        "STREAM_APP_STORE": "rocksdb://",
        "STREAM_APP_DATA_DIR": str(tmp_path),
        "STREAM_APP_PARTITIONS": "4",
        "STREAM_APP_ROCKSDB_MEMORY_MIB": "64",
    }
    store: Any = Worker(Settings.from_env(env)).table.data
    assert store.rocksdb_options.write_buffer_size == 4 * MIB
    assert store.rocksdb_options.max_write_buffer_number == 2
    assert store.rocksdb_options.block_cache_size == 8 * MIB
    db = store._db_for_partition(1)  # opened with them: it takes writes and reads
    db.put(b"k", b"v")
    assert db.get(b"k") == b"v"


def test_a_budget_too_small_is_refused() -> None:
    with pytest.raises(SettingsError, match="STREAM_APP_ROCKSDB_MEMORY_MIB"):
        Settings.from_env({"STREAM_APP_ROCKSDB_MEMORY_MIB": "8"})


class _Message(NamedTuple):
    partition: int


class _Event:  # weakly referenced, as Faust's events are
    def __init__(self, partition: int) -> None:
        self.message = _Message(partition)


def test_a_sim_is_read_from_its_partitions_database_as_faust_would_read_it(tmp_path: Path) -> None:
    """The worker reads a SIM's keys straight from the partition's database (Faust's
    store internals: ``_db_for_partition``); what it reads is what Faust's store gives
    for the same keys under an event of that partition, and nothing of another one."""
    env = {
        "STREAM_APP_STORE": "rocksdb://",
        "STREAM_APP_DATA_DIR": str(tmp_path),
        "STREAM_APP_PARTITIONS": "8",
    }
    worker = Worker(Settings.from_env(env))
    policy = worker.policy
    now = t("2026-03-20T12:00:00+08:00")
    state = new_state(ICCID, now, policy)
    apply_subscription(state, subscription(subscription_msg(quota=GB)), now, policy)
    state.ids = remembered(os.urandom(672 * HASH_BYTES), int(now.timestamp() // 60) - 672 * 15, 15)
    entries = {key: value for key, value in codec.sim_entries(codec.stored_of(state, policy)) if value}
    assert len(entries) > 3  # card, profile, middle tier and segments: several keys
    store: Any = worker.table.data
    for key, value in entries.items():
        store._db_for_partition(2).put(key, value)

    own, other = _Event(2), _Event(5)
    direct = worker.load(ICCID, own)
    token = _current_event.set(weakref.ref(own))  # type: ignore[arg-type]
    try:
        through_faust = codec.load_sim(ICCID, store.get, policy)
    finally:
        _current_event.reset(token)
    assert direct is not None and through_faust is not None
    assert direct.state() == through_faust.state() == codec.load_sim(ICCID, entries.get, policy).state()  # type: ignore[union-attr]
    assert direct.hot.ids == state.ids
    assert worker.load(ICCID, other) is None
    assert worker.load(ICCID) is not None  # no event: found from the key
