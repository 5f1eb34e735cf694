"""Writing what a batch decided: outputs first and acknowledged, then states and changelog.

Order is the guarantee (docs/reliability.md): a SIM's new state is stored, and its
changelog record produced, only after every output it decided has been acknowledged by
the broker. A crash at any point leaves either the state not yet advanced (the input is
processed again and its outputs repeat with the same ids) or both written; never an
advanced state whose outputs were lost, whatever brokers the partitions live on.
Input offsets are committed later, only once the changelog records are acknowledged
too: ``write`` returns their deliveries, and the offset ledger waits on them
(offsets.py).

Sends go straight to the aiokafka producer Faust started (same event loop, same
settings and credentials) rather than through Faust's topic and table wrappers: those
cost a future, a buffer hop and several sensor calls per message, most of the worker's
time in a profile. The changelog record is exactly what Faust's table would send (the
raw key and value, to the source event's partition), so recovery and standbys read it
unchanged; the persisted offset a RocksDB store keeps is set from the acknowledgement
as Faust does.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from faust.streams import _current_event
from faust.types import TP

from .. import codec
from ..codec import Entry, PoolStored, Stored
from ..domain.outputs import Output
from ..pipeline import Source, rejected
from ..topics import DEADLETTER
from .ownership import Summary

log = logging.getLogger(__name__)


class Write(NamedTuple):
    iccid: str | None
    state: Stored | PoolStored | None
    """The SIM's (or pool's) new state, or None: only outputs (dead letters, no change)."""
    outputs: list[Output]
    source: Source
    """The input it came from; its partition is the changelog partition."""
    before: Summary | None
    event: Any
    """The framework's event of ``source`` (a RocksDB store picks its partition by it)."""


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

    async def write(self, writes: list[Write]) -> Written:
        """Send every write's outputs, await them, then store the states they belong to.

        A write whose state cannot be encoded or whose outputs cannot be sent stores
        nothing and becomes a dead letter saying so, rather than an exception that
        would make Faust ack and drop the whole batch.
        """
        producer = self.app.producer._ensure_producer()
        sent: list[tuple[Write, list[Entry], list[asyncio.Future[Any]]]] = []
        failed: list[tuple[Write, str]] = []
        for write in writes:
            try:
                encoded: list[Entry] = []
                if write.state is not None and write.iccid is not None:
                    codec.place(write.state, write.source.partition)
                    encoded = self.encode(write.state)
                futures = [
                    await producer.send(
                        self.topic_names[output.topic], codec.encode(output.value), key=output.key.encode()
                    )
                    for output in write.outputs
                ]
            except Exception as exc:
                failed.append((write, repr(exc)))
            else:
                sent.append((write, encoded, futures))
        if sent:
            await asyncio.gather(*(f for _w, _e, futures in sent for f in futures), return_exceptions=True)
        changelog = self.table.changelog_topic.get_topic_name()
        deliveries: list[asyncio.Future[Any]] = []
        for write, encoded, futures in sent:
            errors = [f.exception() for f in futures if f.exception() is not None]
            if errors:
                failed.append((write, repr(errors[0])))
                continue
            for output in write.outputs:
                self.observe(output.topic, output.value)
            if encoded and write.state is not None and write.iccid is not None:
                deliveries += await self._store(producer, changelog, write, encoded)
        unrecorded = 0
        for write, error in failed:
            log.error("could not send the outputs of %s[%s]@%s: %s", *write.source, error)
            unrecorded += not await self._dead_letter(producer, write, error)
        return Written([write for write, _error in failed], deliveries, unrecorded)

    async def _store(
        self, producer: Any, changelog: str, write: Write, entries: list[Entry]
    ) -> list[asyncio.Future[Any]]:
        """Store the SIM's entries in order and produce their changelog records.

        The entries of one SIM go to one changelog partition in this order, so recovery
        sees them in the order they were written (codec.sim_entries says why it matters).
        """
        assert write.state is not None
        partition = write.source.partition
        deliveries: list[asyncio.Future[Any]] = []
        token = _current_event.set(weakref.ref(write.event)) if write.event is not None else None
        try:
            for key, value in entries:
                if value is None:
                    self.table.data.pop(key, None)
                else:
                    self.table.data[key] = value
                # Not awaited here: the next batch goes on meanwhile, and the input offset
                # is committed only once this is acknowledged (offsets.py).
                delivery: asyncio.Future[Any] = await producer.send(
                    changelog, value, key=key, partition=partition
                )
                delivery.add_done_callback(self._persisted)
                deliveries.append(delivery)
        finally:
            if token is not None:
                _current_event.reset(token)
        self.stored(partition, write.before, write.state)
        return deliveries

    def _persisted(self, delivery: asyncio.Future[Any]) -> None:
        # What lets a RocksDB store start from its own data rather than the whole
        # changelog after a restart (Faust's Table._on_changelog_sent does the same).
        if delivery.cancelled() or delivery.exception() is not None:
            log.error("changelog write failed: %r", None if delivery.cancelled() else delivery.exception())
            return
        try:
            metadata = delivery.result()
            self.table.data.set_persisted_offset(TP(metadata.topic, metadata.partition), metadata.offset)
        except Exception:
            log.exception("could not record the changelog offset")

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
