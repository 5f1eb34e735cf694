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

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from faust.stores.rocksdb import Store as RocksDBStore
from rocksdict import WriteBatch

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


class ChangelogFirstStore(RocksDBStore):
    """Faust's RocksDB store, written only with what the changelog has acknowledged.

    The store outlives a kill, and a restarted worker trusts it: it reads the changelog
    only from the offset the store persisted, then takes its input from the last
    committed offset. A state written to the store before its changelog record was
    acknowledged could survive a kill that its changelog record did not; the input
    processed again would then find itself already counted (a repeat), and the changelog,
    which every other worker recovers from, would never have it (chaos found 40 SIM-months
    lost in a run of 11 kills). So the worker *holds* each entry in memory when it
    produces the changelog record, and the store gets it, with the changelog offset it
    reached, in one write batch once the broker acknowledged it (``acknowledged``).
    Reads see held entries first. The store is then always a prefix of the changelog,
    up to its persisted offset, which is what Faust's recovery assumes of it.

    A rebalance drops every held write: what is acknowledged after it is left to the
    changelog, which the recovery that follows every rebalance reads from the persisted
    offset on (the same for a partition whose database is closed); if such a write was
    appended after that recovery had read its partition, the next write to store there
    stops storing instead, since its offset would vouch for the missing one. A write the broker
    refused, a database that cannot be written, or a write that failed between being
    held and being sent ends storing altogether: the broker may have appended a refused
    batch all the same, and the worker stops (writer.py), its restart recovering from
    the offset persisted.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held: dict[bytes, Held] = {}
        """Per key: its newest held write."""
        self._numbered = 0
        self._term = 0
        """Bumped by every rebalance: what was held before it is not stored."""
        self._shut = False
        self._unstored: dict[int, int] = {}
        """Per partition: the last offset acknowledged for writes held before a rebalance,
        not stored. The recovery after the rebalance must have read past it before a newer
        write is stored, or the persisted offset would vouch for a record the store lacks."""

    def hold(self, key: bytes, value: bytes | None) -> Held:
        """Keep a write for ``key`` in memory until its changelog record is acknowledged."""
        self._numbered += 1
        self.held[key] = write = Held(self._numbered, key, value, self._term)
        return write

    def acknowledged(self, partition: int, writes: list[Held], offset: int) -> None:
        """The changelog has ``writes`` (in order), its last at ``offset``: store them."""
        if self._shut:
            return  # the worker is stopping: reads stay as decided
        database = self._dbs.get(partition)  # not reopened: a closed one is left to recovery
        if database is None or any(write.term != self._term for write in writes):
            self._unstored[partition] = max(offset, self._unstored.get(partition, -1))
            self._release(writes)
            return
        unstored = self._unstored.pop(partition, None)
        if unstored is not None:
            persisted = database.get(self.offset_key)
            if persisted is None or int(persisted) < unstored:
                # Appended after the recovery had read the changelog: only a restart's
                # recovery will store it now.
                self.stop_storing()
                raise ChangelogGap(
                    f"changelog partition {partition}: offset {unstored}, acknowledged after a "
                    f"rebalance, is past what the recovery stored ({persisted!r})"
                )
        batch = WriteBatch(raw_mode=True)
        for write in writes:
            if write.value is None:
                batch.delete(write.key)
            else:
                batch.put(write.key, write.value)
        batch.put(self.offset_key, str(offset).encode())
        try:
            database.write(batch)
        except BaseException:
            self.stop_storing()
            raise
        self._release(writes)

    def stop_storing(self) -> None:
        """Some held writes may or may not be in the changelog (a batch refused, a store
        or a send that failed): nothing more is stored, so no persisted offset moves past
        what may be missing. Held writes stay held, so reads stay as decided until the
        worker stops (the caller stops it)."""
        self._shut = True

    def reader(self, partition: int) -> Callable[[bytes], bytes | None]:
        """A read of the partition's keys as they are once all held writes are stored."""
        database = self._db_for_partition(partition)
        held = self.held

        def get(key: bytes) -> bytes | None:
            newest = held.get(key)
            return database.get(key) if newest is None else newest.value

        return get

    def _release(self, writes: list[Held]) -> None:
        held = self.held
        for write in writes:
            if held.get(write.key) is write:
                del held[write.key]

    def _get(self, key: bytes) -> bytes | None:
        newest = self.held.get(key)
        return super()._get(key) if newest is None else newest.value

    def _contains(self, key: bytes) -> bool:
        newest = self.held.get(key)
        return super()._contains(key) if newest is None else newest.value is not None

    def _iteritems(self) -> Iterator[tuple[bytes, bytes]]:
        return self.scan(_every_entry)

    def scan(self, past: Callable[[bytes], bytes | None]) -> Iterator[tuple[bytes, bytes]]:
        """The active partitions' entries as ``items()`` gives them, without Faust's
        decoding layers, and after each key on from ``past(key)`` when it says where:
        the entries in between are not read (a scan for cards skips a SIM's ids)."""
        # The held entries as they were when the scan began; the databases' iterators
        # read a snapshot each, so an entry stored meanwhile is not seen twice.
        held = {key: write.value for key, write in self.held.items()}
        offset_key = self.offset_key
        for database in list(self._dbs_for_actives()):  # a rebalance may change them meanwhile
            entries = database.iter()  # reads a snapshot: writes meanwhile are not seen
            entries.seek_to_first()
            while entries.valid():
                key = entries.key()
                if key != offset_key and key not in held:
                    yield key, entries.value()
                onward = past(key)
                if onward is None:
                    entries.next()
                else:
                    entries.seek(onward)
        for key, newest in held.items():
            if newest is not None:
                yield key, newest

    def _iterkeys(self) -> Iterator[bytes]:
        for key, _value in self._iteritems():
            yield key

    def _itervalues(self) -> Iterator[bytes]:
        for _key, value in self._iteritems():
            yield value

    async def on_rebalance(
        self, assigned: Any, revoked: Any, newly_assigned: Any, generation_id: int = 0
    ) -> None:
        # The producer was flushed as the partitions were revoked, so little is still
        # held; what is, is left to the recovery that follows (from the persisted offset,
        # on every active partition, kept or new). Held entries would otherwise hide what
        # that recovery stores, and a partition kept as a standby would take late acks
        # over its standby's newer records.
        self._term += 1
        self.held.clear()
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)

    async def stop(self) -> None:
        self._shut = True
        await super().stop()


def _every_entry(key: bytes) -> None:
    return None


class ChangelogGap(RuntimeError):
    """A write acknowledged after a rebalance is in the changelog but not in the store."""


class Held(NamedTuple):
    number: int
    key: bytes
    value: bytes | None
    term: int
