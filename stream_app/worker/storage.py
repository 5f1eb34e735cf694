"""How much memory the table's RocksDB store may take.

Faust opens one RocksDB database per table partition, each by default with three write
buffers of 64 MiB and a block cache of its own of 2 GiB. Those grow with the data: a
fresh worker that recovered 200,000 steady-state SIMs (1.1 GB of changelog) sat at 672
MiB resident, nearly all of it RocksDB's memtables, so a million SIMs would have gone
past any sensible container limit. The data itself lives on disk (that is what the
store is for), and what a record reads is a SIM's few keys: a small cache loses
little, and the operating system's page cache, which does not count against the
process, holds the hot files.

So the worker gives RocksDB a budget (``STREAM_APP_ROCKSDB_MEMORY_MIB``) and shares it
out over the table's partitions (a worker may hold every partition, as an active or a
standby): half for write buffers (two per partition), half for block caches. With the
default 256 MiB and 8 partitions that is two 8 MiB write buffers and a 16 MiB cache
each; the same 200,000 SIMs then took 187 MiB (docs/performance.md).
"""

from __future__ import annotations

from typing import Any

MIB = 2**20
WRITE_BUFFERS = 2
"""Per partition: one filling while the other is flushed, so writes never wait on a flush."""
SMALLEST_WRITE_BUFFER = 1 * MIB
SMALLEST_CACHE = 1 * MIB


def rocksdb_options(memory_mib: int, partitions: int) -> dict[str, Any]:
    """The table's store options (Faust's ``RocksDBOptions``) for a budget of
    ``memory_mib`` over ``partitions`` partitions."""
    per_partition = memory_mib * MIB // max(partitions, 1)
    return {
        "write_buffer_size": max(per_partition // 2 // WRITE_BUFFERS, SMALLEST_WRITE_BUFFER),
        "max_write_buffer_number": WRITE_BUFFERS,
        "block_cache_size": max(per_partition // 2, SMALLEST_CACHE),
    }
