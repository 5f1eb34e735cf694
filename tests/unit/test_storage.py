"""The RocksDB store's memory budget: shared out over the partitions, and reaching the
store Faust opens for the table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stream_app.settings import SettingsError, Settings
from stream_app.worker.app import Worker
from stream_app.worker.storage import MIB, WRITE_BUFFERS, rocksdb_options


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
