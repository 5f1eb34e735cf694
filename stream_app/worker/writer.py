"""Writing what a batch decided: outputs first and acknowledged, then states and changelog.

Order is the guarantee (docs/reliability.md): a SIM's new state is stored, and its
changelog record produced, only after every output it decided has been acknowledged by
the broker. A crash at any point leaves either the state not yet advanced (the input is
processed again and its outputs repeat with the same ids) or both written; never an
advanced state whose outputs were lost, whatever brokers the partitions live on.
Input offsets are committed later, only once the changelog records are acknowledged
too: ``write`` returns their deliveries, and the offset ledger waits on them
(offsets.py).

States reach the table's store in that order too. The memory store takes them as
they are produced (a kill loses it whole, and a restarted worker recovers it from the
changelog). A RocksDB store outlives a kill, so it takes a state only once its
changelog record is acknowledged, and serves it from memory until then
(storage.ChangelogFirstStore): it never holds what the changelog lacks.

Sends go straight to the aiokafka producer Faust started (same event loop, same
settings and credentials) rather than through Faust's topic and table wrappers: those
cost a future, a buffer hop and several sensor calls per message, most of the worker's
time in a profile. They go in record batches built by the worker (sends.py): one per
topic partition and write, submitted at once. The changelog record is exactly what
Faust's table would send (the raw key and value, to the source event's partition), so
recovery and standbys read it unchanged; the persisted offset a RocksDB store keeps is
set from the acknowledgement, with the states it covers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, NamedTuple

from faust.stores.memory import Store as MemoryStore

from .. import codec
from ..codec import Entry, PoolStored, Stored
from ..domain.outputs import Output
from ..pipeline import Source, rejected
from ..topics import DEADLETTER
from .ownership import Summary
from .sends import Batch, Outbox
from .storage import ChangelogFirstStore, Held

log = logging.getLogger(__name__)


class Write(NamedTuple):
    iccid: str | None
    state: Stored | PoolStored | None
    """The SIM's (or pool's) new state, or None: only outputs (dead letters, no change)."""
    outputs: list[Output]
    source: Source
    """The input it came from; its partition is the changelog partition."""
    before: Summary | None


class Written(NamedTuple):
    failed: list[Write]
    """Writes whose outputs could not be sent: dead-lettered, their states not stored."""
    deliveries: list[asyncio.Future[Any]]
    """The changelog records produced for the stored states, not yet acknowledged."""
    unrecorded: int
    """Failed writes whose dead letter could not be sent either: their input is not done."""


class Writer:
    def __init__(
        self,
        app: Any,
        table: Any,
        topic_names: Mapping[str, str],
        observe: Callable[[str, dict[str, Any]], None],
        stored: Callable[[int, Summary | None, Stored | PoolStored], None],
        encode: Callable[[Stored | PoolStored], list[Entry]] = codec.entries_of,
    ) -> None:
        self.app = app
        self.table = table
        self.topic_names = topic_names
        self.observe = observe
        self.stored = stored
        self.encode = encode
        store = table.data
        self.plain: MutableMapping[bytes, bytes] | None = (
            store.data if isinstance(store, MemoryStore) else None
        )
        """The memory store's own dict: read and written directly, whatever the partition."""
        self.held: ChangelogFirstStore | None = store if isinstance(store, ChangelogFirstStore) else None
        """The RocksDB store: it takes a state once its changelog record is acknowledged."""
        self.crashing: asyncio.Future[Any] | None = None
        if self.plain is None and self.held is None:
            raise TypeError(f"a table store the worker cannot write: {type(store).__name__}")

    async def write(self, writes: list[Write]) -> Written:
        """Send every write's outputs, await them, then store the states they belong to.

        A write whose state cannot be encoded or whose outputs cannot be sent stores
        nothing and becomes a dead letter saying so, rather than an exception that
        would make Faust ack and drop the whole batch.
        """
        producer = self.app.producer._ensure_producer()
        outbox = Outbox(producer)
        staged: list[tuple[Write, list[Entry], list[Batch]]] = []
        failed: list[tuple[Write, str]] = []
        encode = self.encode
        for write in writes:
            try:
                entries: list[Entry] = []
                state = write.state
                if state is not None and write.iccid is not None:
                    codec.place(state, write.source.partition)
                    entries = encode(state)
                batches: list[Batch] = []
                if write.outputs:
                    messages = [
                        (self.topic_names[output.topic], output.key.encode(), codec.encode(output.value))
                        for output in write.outputs
                    ]
                    batches = [
                        await outbox.append(topic, await outbox.partition_for(topic, key), key, value)
                        for topic, key, value in messages
                    ]
            except Exception as exc:
                failed.append((write, repr(exc)))
            else:
                staged.append((write, entries, batches))
        sent = await outbox.submit()
        if sent:
            await asyncio.wait([batch.delivery for batch in sent if batch.delivery is not None])
        deliveries = await self._store_all(producer, staged, failed)
        unrecorded = 0
        for write, error in failed:
            log.error("could not send the outputs of %s[%s]@%s: %s", *write.source, error)
            unrecorded += not await self._dead_letter(producer, write, error)
        return Written([write for write, _error in failed], deliveries, unrecorded)

    async def _store_all(
        self,
        producer: Any,
        staged: list[tuple[Write, list[Entry], list[Batch]]],
        failed: list[tuple[Write, str]],
    ) -> list[asyncio.Future[Any]]:
        """Store the states whose outputs were all acknowledged, and produce their changelog."""
        changelog = self.table.changelog_topic.get_topic_name()
        outbox = Outbox(producer, self._persisted)
        try:
            await self._store_each(outbox, changelog, staged, failed)
            # Not awaited here: the next batch goes on meanwhile, and the input offsets
            # are committed only once these are acknowledged (offsets.py).
            submitted = await outbox.submit()
        except asyncio.CancelledError:
            # Faust cancels its agents as the worker stops: nothing more is stored, and
            # the restart recovers from the changelog (not a failure to report).
            if self.held is not None:
                self.held.stop_storing()
            raise
        except Exception as exc:
            # Some states are held (RocksDB) or stored (memory) whose changelog records
            # were never sent: the worker stops, and its restart recovers from the changelog.
            log.critical("storing a batch's states failed: %r", exc)
            self._stop(exc)
            raise
        return [batch.delivery for batch in submitted if batch.delivery is not None]

    async def _store_each(
        self,
        outbox: Outbox,
        changelog: str,
        staged: list[tuple[Write, list[Entry], list[Batch]]],
        failed: list[tuple[Write, str]],
    ) -> None:
        plain = self.plain
        held = self.held
        append = outbox.append
        for write, entries, batches in staged:
            if batches:
                error = _first_error(batches)
                if error is not None:
                    failed.append((write, repr(error)))
                    continue
                for output in write.outputs:
                    self.observe(output.topic, output.value)
            if not entries or write.state is None:
                continue
            # The entries of one SIM go to one changelog partition in this order, so
            # recovery sees them in the order they were written (codec.sim_entries).
            partition = write.source.partition
            if plain is not None:
                for key, value in entries:
                    if value is None:
                        plain.pop(key, None)
                    else:
                        plain[key] = value
                    await append(changelog, partition, key, value)
            elif held is not None:
                for key, value in entries:
                    batch = await append(changelog, partition, key, value)
                    batch.held.append(held.hold(key, value))
            self.stored(partition, write.before, write.state)

    def _persisted(self, batch: Batch, delivery: asyncio.Future[Any]) -> None:
        # What lets a RocksDB store start from its own data rather than the whole
        # changelog after a restart: the states and the offset they reach, together.
        held = self.held
        writes: list[Held] = batch.held
        if delivery.cancelled():  # the producer is stopping with the worker
            if held is not None:
                held.stop_storing()
            return
        error = delivery.exception()
        if error is not None:
            # After the producer's own retries. The broker may have appended the batch
            # all the same (the producer is not idempotent), and the store already has
            # its states (memory) or would have to guess (RocksDB): the worker stops,
            # and its restart recovers from what the changelog has.
            log.critical("changelog write to partition %d failed: %r", batch.partition, error)
            self._stop(error)
            return
        if held is None:
            return
        try:
            metadata = delivery.result()
            last = metadata.offset + batch.count - 1  # the batch's result is its first offset
            held.acknowledged(metadata.partition, writes, last)
        except Exception as exc:
            # The store cannot follow its changelog any more (a disk error): the worker
            # stops, and its restart recovers the store from the offset it persisted.
            log.critical("could not store acknowledged states of changelog partition %d", batch.partition)
            self._stop(exc)

    def _stop(self, error: BaseException) -> None:
        """The store may no longer match its changelog: store nothing more, stop the worker."""
        if self.held is not None:
            self.held.stop_storing()
        if self.crashing is not None:
            return
        self.crashing = asyncio.ensure_future(self.app.crash(error))
        # Faust's shutdown after a crash was seen waiting on its streams for ever. What is
        # stored is safe under kill -9 (docs/reliability.md), so a worker that has not
        # exited after a grace period exits as if killed, and its supervisor restarts it.
        watchdog = threading.Timer(STOP_GRACE_SECONDS, _exit_now)
        watchdog.daemon = True
        watchdog.start()

    async def _dead_letter(self, producer: Any, write: Write, error: str) -> bool:
        letter = rejected(
            write.source, b"", write.iccid, "internal_error", f"outputs not sent: {error}", "error"
        )
        value = letter.outputs[0].value
        try:
            await (
                await producer.send(
                    self.topic_names[DEADLETTER], codec.encode(value), key=letter.outputs[0].key.encode()
                )
            )
        except Exception:
            log.exception("dead letter for %s[%s]@%s not sent either", *write.source)
            return False
        self.observe(DEADLETTER, value)
        return True


STOP_GRACE_SECONDS = 15.0
"""How long a worker stopping on a changelog failure may take to shut down cleanly."""


def _exit_now() -> None:
    log.critical("still not stopped %.0f s after a changelog failure: exiting", STOP_GRACE_SECONDS)
    logging.shutdown()
    os._exit(70)  # EX_SOFTWARE


def _first_error(batches: list[Batch]) -> BaseException | None:
    for batch in batches:
        delivery = batch.delivery
        if delivery is None:
            return RuntimeError("the batch was never submitted")
        if delivery.cancelled():
            return asyncio.CancelledError()
        if delivery.exception() is not None:
            return delivery.exception()
    return None
