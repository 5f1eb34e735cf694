"""The Faust app: thin agents that decode, call the engine, store state, send outputs.

Design notes (docs/architecture.md has the whole flow):

* Topics are consumed as raw bytes and parsed with orjson in pipeline.py; no
  faust.Record on the hot path.
* One changelog-backed table ``sims`` holds each SIM's whole state as one encoded value,
  keyed by the ICCID's bytes (the same bytes the topics are keyed by, so Faust's router
  finds a SIM's owner). Its changelog partition is the source event's partition, so
  every topic that writes it (inputs and ticks) has the same partition count.
* Time without traffic (R6, R11, R12): a timer on every worker sends a tick to each
  partition of the tick topic it actively owns; the tick agent, running inside that
  partition's event, rolls forward the SIMs found due in the partition's due index
  (ownership.py). A worker that was down across a boundary catches up on its first tick.
* Input agents take batches (batch.py): a SIM's messages of one batch are decided on
  one state, stored once. The four input agents and the tick agent run concurrently and
  may touch the same SIM, so load, decision, sends and store happen under one lock.
* An exception escaping an agent would ack and drop the message: parsing, the engine
  and the sends turn every failure into a dead letter instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import faust
import mode.loop
from faust.streams import _current_event
from faust.types import TP
from prometheus_client import CollectorRegistry

from .. import codec, collector
from ..codec import PoolStored, Stored, stored_of
from ..domain import CommandResult, Output, UsageRecord
from ..domain.pools import PoolState, pool_tick
from ..ops.web import install_views
from ..pipeline import Decision, Source, decide_tick
from ..settings import Settings
from ..simindex import SimIndex
from ..topics import (
    ALERTS,
    CHARGES,
    COMMANDS,
    CONSUMED,
    DEADLETTER,
    POOL_NOTICES,
    POOL_USAGE,
    POOLS,
    SENT,
    TICKS,
    USAGE,
)
from . import chunks, committer, fetching, notices, recovery
from .batch import Incoming, SimBatch, decide_batch
from .gaps import GapReader
from .intake import Intake
from .logs import limit_repeats, logging_config
from .metrics import Metrics, observe_many
from .offsets import Ledger, Partition
from .ownership import POOL_DUE, Books, PartitionBook, Summary, summary
from .pooling import PoolScan, decide_pools, joined, split_by_pool
from .recovery import ChunkTable
from .refusals import Refusals
from .routing import Partitioner
from .storage import rocksdb_options
from .writer import Write, Writer, Written

log = logging.getLogger("stream_app")

TABLE = "sims"
BATCH_RECORDS = 5000
"""Records an input batch takes at most (chunks already queued are added up to it)."""
READ_BACK_CHUNK = 2000
"""Records per chunk when input is read back from the broker (gaps.py)."""
STREAM_BUFFER = 16
"""Chunks a stream (or the table recovery) holds before its partitions stop fetching."""
SEND_BATCH_BYTES = 512 * 1024
"""Largest record batch the worker builds (sends.py); the broker takes up to 1 MiB."""
SWEEP_CHUNK = 1000
"""SIMs rolled forward per write (one acknowledgement wait each) in a tick's sweep."""
COUNTED = frozenset({"accepted", "late", "unknown_sim", "cancelled"})


class Worker:
    """The app and its agents, built from settings (no import-time side effects)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.policy = settings.policy()
        self.clock = settings.clock()
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.refusals = Refusals(log)  # dead letters summarised in the log
        self.app = faust.App(
            settings.app_id,
            broker=[f"kafka://{host.strip()}" for host in settings.bootstrap_servers.split(",")],
            broker_credentials=_credentials(settings),
            env_prefix="STREAM_APP_FAUST_",
            store=settings.store,
            datadir=settings.data_dir,
            topic_partitions=settings.partitions,
            topic_replication_factor=settings.replication_factor,
            table_standby_replicas=settings.standby_replicas,
            web_host=settings.web_host,
            web_port=settings.web_port,
            web_tables_enabled=False,
            # Not larger: polls of 10,000 recovered 200k SIMs in 23 s rather than 31 s,
            # but the chaos tests then often found a partition Faust never committed
            # again after a restart (docs/reliability.md).
            broker_max_poll_records=1000,
            # Queued items are chunks of up to a poll's records each (chunks.py).
            stream_buffer_maxsize=STREAM_BUFFER,
            producer_linger=0.005,
            # The worker builds its own record batches (sends.py): up to this many bytes.
            producer_max_batch_size=SEND_BATCH_BYTES,
            producer_partitioner=Partitioner(),  # the default's, with hashes remembered
            key_serializer="raw",
            value_serializer="raw",
            Table=ChunkTable,  # the changelog recovered by chunks (recovery.py)
        )
        self.table = self.app.Table(
            TABLE,
            key_type=bytes,
            value_type=bytes,
            partitions=settings.partitions,
            options=(
                rocksdb_options(settings.rocksdb_memory_mib, settings.partitions)
                if settings.store == "rocksdb://"
                else None
            ),
        )
        self.ticks = self._topic(TICKS)
        self.books = Books(self.policy)
        self._loaded: dict[str, Summary] = {}
        self._state_lock = asyncio.Lock()
        self.writer = Writer(
            self.app,
            self.table,
            {logical: settings.topic(logical) for logical in SENT},
            self._observe,
            self.books.record,
        )
        for logical in CONSUMED:  # exported at 0 from the start, so a dashboard shows a line
            self.metrics.read_back.labels(settings.topic(logical))
        self.ledger = Ledger()
        self.intake = Intake(
            self.ledger,
            GapReader(settings, READ_BACK_CHUNK),
            self._decide_and_apply,
            lambda topic, number: self.metrics.read_back.labels(topic).inc(number),
            interrupted=lambda: bool(self.app.rebalancing),
            idle_after=2 * settings.tick_interval.total_seconds(),
        )
        transport: Any = self.app.transport
        transport.Consumer = committer.ledger_consumer(
            chunks.chunk_consumer(transport.Consumer),
            self.ledger,
            frozenset(settings.topic(logical) for logical in (*CONSUMED, TICKS)),
        )
        # What the consumer fetched after a rebalance must reach the agents (chunks.py).
        chunks.keep_current_on_resume(self.app)
        # Front door (issue 12): input the fetcher cannot decode is held, not fatal; the
        # broker's last answer decides readiness.
        self.fetch_watch = fetching.FetchWatch()
        fetching.install(self.app, self.fetch_watch, started=chunks.gather_fetches)
        self.metrics.held_partitions.set_function(lambda: len(self._held()))
        self.metrics.kafka_answered.set_function(self.fetch_watch.reached)
        self._install()

    def _topic(self, logical: str) -> Any:
        return self.app.topic(
            self.settings.topic(logical),
            key_type=bytes,
            value_type=bytes,
            partitions=self.settings.partitions,
        )

    # --- state -------------------------------------------------------------------

    def load(self, iccid: str, event: Any = None) -> Stored | None:
        """The SIM's stored state. ``event``: an input event of the SIM's partition.

        A RocksDB store keeps a database per partition, and a batch mixes partitions, so
        the read is bound to an event of the SIM's own partition (or to none: the store
        then finds the partition from the key).
        """
        plain = self.writer.plain
        if plain is not None:
            stored = codec.load_sim(iccid, plain.get, self.policy)
        elif event is not None and self.writer.held is not None:
            # What Faust's store reads for a get under this event (the partition's
            # database, after the writes held for the changelog), without its layers:
            # 0.7 µs a key rather than 5-8, and a SIM in the steady state is read as
            # seven keys.
            stored = codec.load_sim(iccid, self.writer.held.reader(event.message.partition), self.policy)
        else:  # no event to say the partition: the store finds it from the key
            token = _current_event.set(None)
            try:
                stored = codec.load_sim(iccid, self.table.data.get, self.policy)
            finally:
                _current_event.reset(token)
        if stored is None:
            return None
        self._loaded[iccid] = summary(stored.hot)
        return stored

    def _observe(self, topic: str, value: dict[str, Any]) -> None:
        metrics = self.metrics
        if topic == COMMANDS:
            metrics.commands.labels(value["action"], value["reason"] or "", value["trigger"]).inc()
            if value["attempt"] > 1:
                metrics.command_resends.inc()
            log.info(
                "command %s %s %s/%s %s",
                value["action"],
                value["iccid"],
                value["reason"],
                value["trigger"],
                value["command_id"],
                extra={"fields": value},
            )
        elif topic == ALERTS:
            metrics.alerts.labels(value["kind"]).inc()
            if value["kind"] == "request_rejected":
                log.info(
                    "request %s refused for %s: %s",
                    value["cause"],
                    value["iccid"],
                    value["detail"],
                    extra={"fields": value},
                )
        elif topic == CHARGES:
            metrics.charges.labels(value["kind"]).inc()
        elif topic == DEADLETTER:
            metrics.dead_letters.labels(value["topic"], value["error"]).inc()
            self.refusals.add(value)

    async def book(self, partition: int) -> PartitionBook:
        """This partition's book, built from the table on first use after a rebalance.

        One pass over the table builds the books of every partition this worker owns
        (not one pass per partition), yielding to the event loop as it goes so that a
        large table does not starve heartbeats. The memory store's items() also yields
        standby and stale keys, so each state goes to the partition it was stored with.
        """
        book = self.books.partitions.get(partition)
        if book is not None:
            return book
        ticks = self.ticks.get_topic_name()
        owned = {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == ticks}
        building = {p: PartitionBook() for p in owned | {partition} if p not in self.books.partitions}
        generation = self.books.generation
        pools = PoolScan()
        # Not len() (Faust's RocksDB store counts by reading every key) and, on RocksDB,
        # not a list: that held every entry's value at once (5.5 GB for a million
        # steady-state SIMs; 1.5 GiB resident after 200,000, never given back). Its scan
        # reads a snapshot, safe under writes meanwhile, and seeks past each SIM's ids
        # and profile (7 of a steady-state SIM's 8 entries). The memory store's dict must
        # not change size under the loop; a list of it holds references only.
        held, plain = self.writer.held, self.writer.plain
        entries = held.scan(codec.past_sim) if held is not None else list((plain or {}).items())
        for n, (key, raw) in enumerate(entries):
            if n % 2000 == 1999:
                await asyncio.sleep(0)
            try:
                if codec.is_card_key(key):
                    card = codec.read_card(key.decode(), raw, self.policy)
                    target = building.get(card.partition) if card.partition is not None else None
                    if target is not None:
                        self.books.add(target, card)
                elif codec.is_pool_key(key) or codec.is_member_key(key):
                    pools.add(key, raw)
            except Exception:
                log.exception("stored state of %r cannot be decoded; skipped", key)
        if generation != self.books.generation:  # a rebalance came meanwhile: build again
            return await self.book(partition)
        for number, built in building.items():
            self.books.partitions.setdefault(number, built)
        for stored in pools.pools():
            if stored.partition in building:
                self.books.record_pool(stored.partition, stored)
        for number, built in building.items():
            sims = sum(built.statuses[s] for s in ("active", "suspended", "cancelled"))
            log.info(
                "partition %d: %d SIMs, %d pools, %d due", number, sims, len(built.rosters), len(built.due)
            )
        return self.books.partitions[partition]

    # --- agents --------------------------------------------------------------------

    def _input_agent(self, logical: str) -> Callable[[Any], Awaitable[None]]:
        async def agent(stream: Any) -> None:
            # Each event is a fetched chunk (chunks.py), taken with the chunks queued
            # behind it: one state decode and one store per SIM per batch.
            async for events in chunks.batches(stream, BATCH_RECORDS):
                await self._process_batch(logical, events)

        agent.__name__ = f"on_{logical}"
        return agent

    async def _process_batch(self, logical: str, events: list[Any]) -> None:
        # One agent at a time between a SIM's load and its store: the outputs are sent
        # in between (before the store, see writer.py), and another topic's agent
        # reading the same SIM meanwhile would lose one of the two updates.
        async with self._state_lock:
            await self.intake.take(logical, events)

    async def _decide_and_apply(self, logical: str, batch: list[Incoming]) -> Written:
        if logical in (POOLS, POOL_USAGE):
            return await self._decide_pools(logical, batch)
        if logical == POOL_NOTICES:  # a pool's notices come many to a message (notices.py)
            parts = notices.expanded(batch, self.settings.partitions)
            return joined([await self._decide_sims(logical, part) for part in parts])
        return await self._decide_sims(logical, batch)

    async def _decide_sims(self, logical: str, batch: list[Incoming]) -> Written:
        now = self.clock.now()
        if self.writer.plain is not None:  # the memory store reads any partition
            load: Callable[[str], Stored | None] = self.load
        else:  # RocksDB reads the partition of an event: one of the SIM's own
            by_key = {i.key: i.ref for i in batch}
            load = lambda iccid: self.load(iccid, by_key.get(iccid.encode()))  # noqa: E731
        invalid, sims = decide_batch(logical, batch, load, now, self.policy, self.settings.max_message_bytes)
        writes = [Write(None, None, d.outputs, i.source, None) for i, d in invalid]
        loaded = self._loaded
        for sim in sims:
            decisions = sim.decisions
            if len(decisions) == 1:
                outputs = decisions[0][1].outputs
            else:
                outputs = [o for _incoming, decision in decisions for o in decision.outputs]
            last = sim.last
            writes.append(Write(sim.iccid, sim.state, outputs, last.source, loaded.pop(sim.iccid, None)))
        written = await self.writer.write(writes)
        self._count(logical, now, invalid, sims)
        return written

    async def _decide_pools(self, logical: str, batch: list[Incoming]) -> Written:
        """Pool definitions and members' reports (R17-R21): one load and write per pool
        and part of the batch (pooling.split_by_pool bounds what one write holds)."""
        return joined([await self._decide_pool_part(logical, part) for part in split_by_pool(batch)])

    async def _decide_pool_part(self, logical: str, batch: list[Incoming]) -> Written:
        now = self.clock.now()
        refs: dict[bytes | None, Any] = {i.key: i.ref for i in batch}
        partitions = {i.key: i.source.partition for i in batch}
        for partition in set(partitions.values()):
            await self.book(partition)  # the pools' rosters

        def load(pool_id: str, iccids: list[str]) -> PoolState | None:
            key = pool_id.encode()
            token = _current_event.set(weakref.ref(refs[key]) if refs.get(key) is not None else None)
            try:
                roster = self.books.roster(partitions[key], pool_id)
                return codec.load_pool(pool_id, self.table.data.get, iccids, roster)
            finally:
                _current_event.reset(token)

        invalid, pools = decide_pools(logical, batch, load, now, self.policy, self.settings.max_message_bytes)
        writes = [Write(None, None, d.outputs, i.source, None) for i, d in invalid]
        writes += [
            Write(p.pool_id, PoolStored(p.state), self._grouped(p.outputs), p.last.source, None)
            for p in pools
        ]
        written = await self.writer.write(writes)
        outcomes: Counter[str] = Counter(d.outcome for _i, d in invalid)
        for p in pools:
            outcomes.update(p.outcomes)
        for outcome, number in outcomes.items():
            self.metrics.input_messages.labels(logical, outcome).inc(number)
        return written

    def _count(
        self, logical: str, now: datetime, invalid: list[tuple[Incoming, Decision]], sims: list[SimBatch]
    ) -> None:
        """The batch's metrics, each observed once per batch (not per record)."""
        metrics = self.metrics
        outcomes: Counter[str] = Counter(decision.outcome for _incoming, decision in invalid)
        counted = addons = 0
        sent_at = time.time()
        latencies = [sent_at - i.received for i, _decision in invalid if i.received is not None]
        ends: list[datetime] = []
        for sim in sims:
            for incoming, decision in sim.decisions:
                outcome = decision.outcome
                outcomes[outcome] += 1
                addons += decision.addons
                item = decision.item
                if isinstance(item, CommandResult):
                    metrics.command_results.labels(item.outcome).inc()
                elif isinstance(item, UsageRecord):
                    ends.append(item.end)
                    if outcome in COUNTED:
                        counted += item.total_bytes
                if decision.outputs and incoming.received is not None:
                    latencies.append(sent_at - incoming.received)
        observe_many(metrics.freshness, [max((now - end).total_seconds(), 0.0) for end in ends])
        observe_many(metrics.decision_latency, [max(latency, 0.0) for latency in latencies])
        for outcome, number in outcomes.items():
            metrics.input_messages.labels(logical, outcome).inc(number)
        if counted:
            metrics.usage_bytes.inc(counted)
        if addons:
            metrics.addons.inc(addons)

    async def _on_tick(self, stream: Any) -> None:
        async for event in stream.events():
            async with self._state_lock:  # see _process_batch
                ticket = await self.intake.begin_tick(event)
                written: list[Written] = []
                try:
                    await self._sweep(event.message.partition, event, written)
                finally:
                    self.intake.settle([ticket], written)
                await self.intake.check_idle(self._inputs(event.message.partition), self._read_upto, event)

    def _inputs(self, partition: int) -> list[tuple[str, Partition]]:
        return [(logical, Partition(self.settings.topic(logical), partition)) for logical in CONSUMED]

    def _read_upto(self, partition: Partition) -> int | None:
        """The offset after the last record the worker's consumer handed on from the
        partition in this generation (None when nothing was): what lies below it and
        never reached an agent is read back (chunks.py)."""
        tp = TP(partition.topic, partition.partition)
        return chunks.handed_on(self.app.consumer, tp, self.app.consumer_generation_id)

    async def _sweep(self, partition: int, event: Any, written: list[Written]) -> None:
        """Roll forward the partition's SIMs that are due (month starts, expiries...)."""
        now = self.clock.now()
        started = time.monotonic()
        book = await self.book(partition)
        source = Source(event.message.topic, partition, event.message.offset)
        due = 0
        retry: list[str] = []
        writes: list[Write] = []
        for _due, iccid in book.due.pop_due(now.timestamp()):
            due += 1
            if iccid.startswith(POOL_DUE):
                pool_write = self._pool_tick(iccid, partition, now, source, event)
                if pool_write is None:
                    retry.append(iccid)
                else:
                    writes.append(pool_write)
                continue
            try:
                stored = self.load(iccid, event)
                decision = decide_tick(stored.state(), now, self.policy) if stored is not None else None
            except Exception:
                log.exception("rolling %s forward failed", iccid)
                decision = None
                retry.append(iccid)
            if decision is not None and decision.outcome == "error":
                retry.append(iccid)
            elif decision is not None and decision.state is not None:
                before = self._loaded.pop(iccid, None)
                after = stored_of(decision.state, self.policy)
                writes.append(Write(iccid, after, decision.outputs, source, before))
            if len(writes) >= SWEEP_CHUNK:
                written.append(await self.writer.write(writes))
                writes = []
                if self.app.rebalancing:
                    # The partitions are being handed out again: whoever owns this one
                    # next sweeps the rest, from books built anew, and nothing is
                    # written meanwhile for a partition this worker may no longer own.
                    break
        written.append(await self.writer.write(writes))
        retry += [w.iccid for chunk in written for w in chunk.failed if w.iccid is not None]
        for iccid in retry:  # one SIM must not stop the sweep; it is looked at again next tick
            book.due.schedule(iccid, (now + self.settings.tick_interval).timestamp())
        if due:
            self.metrics.swept_sims.inc(due)
            self.metrics.sweep_timestamp.set(time.time())
            self.metrics.sweep_duration.set(time.monotonic() - started)

    def _pool_tick(self, key: str, partition: int, now: datetime, source: Source, event: Any) -> Write | None:
        """A pool's month start (R19): its new month may be over its quota already."""
        pool_id = key[len(POOL_DUE) :]
        token = _current_event.set(weakref.ref(event))
        try:
            state = codec.load_pool(pool_id, self.table.data.get, (), self.books.roster(partition, pool_id))
            if state is None:
                return None
            step = pool_tick(state, now, self.policy)
        except Exception:
            log.exception("rolling pool %s forward failed", pool_id)
            return None
        finally:
            _current_event.reset(token)
        return Write(key, PoolStored(step.state), self._grouped(step.outputs), source, None)

    def _grouped(self, outputs: list[Output]) -> list[Output]:
        return notices.grouped(outputs, self.settings.partitions)

    async def _every_tick_interval(self) -> None:
        # An exception escaping a timer crashes the whole worker: log and go on.
        try:
            if not self.app.rebalancing:
                name = self.ticks.get_topic_name()
                for tp in self.app.assignor.assigned_actives():
                    if tp.topic == name:
                        await self.ticks.send(key=b"tick", value=b"{}", partition=tp.partition)
            self._refresh_gauges()
        except Exception:
            log.exception("tick timer failed")

    def _refresh_gauges(self) -> None:
        metrics = self.metrics
        statuses, reasons, pending = self.books.totals()
        for status in ("active", "suspended", "cancelled"):
            metrics.sims.labels(status).set(statuses[status])
        for reason in ("quota", "arrears", "expiry", "manual", "pool"):
            metrics.suspended_sims.labels(reason).set(reasons[reason])
        conditions = Counter(c for book in self.books.partitions.values() for c in book.pools.values())
        for condition in ("ok", "exhausted", "unknown"):
            metrics.pools.labels(condition).set(conditions[condition])
        metrics.throttled_sims.set(statuses["throttled"])
        for dimension in ("suspension", "throttling"):
            metrics.pending_commands.labels(dimension).set(pending[dimension])
        inputs = {self.settings.topic(t) for t in CONSUMED}
        consumer = self.app.consumer
        committed = getattr(consumer, "_committed_offset", {})
        owned = 0
        metrics.consumer_lag.clear()
        for tp in self.app.assignor.assigned_actives():
            if tp.topic not in inputs:
                continue
            owned += tp.topic == self.settings.topic(USAGE)
            end, done = consumer.highwater(tp), committed.get(tp)
            if end is not None:
                metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(end - (done or 0), 0))
        metrics.owned_partitions.set(owned)
        metrics.stuck_partitions.set(len(self.ledger.stuck()))

    async def indexes(self) -> dict[int, SimIndex] | None:
        """Each owned partition's index of SIMs (GET /sims); None while not ready."""
        if not self.ready():
            return None
        ticks = self.ticks.get_topic_name()
        owned = sorted(tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == ticks)
        if any(p not in self.books.partitions for p in owned):
            async with self._state_lock:  # as a tick builds them: no write while the table is read
                for partition in owned:
                    await self.book(partition)
        # a rebalance meanwhile cleared them: those partitions go unanswered
        return {p: self.books.partitions[p].index for p in owned if p in self.books.partitions}

    def roster(self, pool_id: str) -> set[str] | None:
        for book in self.books.partitions.values():
            if pool_id in book.rosters:
                return book.rosters[pool_id]
        return None

    def ready(self) -> bool:
        """Owns partitions and has recovered its tables (and is not rebalancing)."""
        return not self.unready()

    def unready(self) -> list[str]:
        """Why the worker is not ready; nothing when it is."""
        app = self.app
        try:
            owns = bool(app.assignor.assigned_actives())
        except Exception:
            owns = False
        why = [] if owns else ["owns no partition"]
        if not app.tables.actives_ready:
            why.append("tables not recovered")
        if app.rebalancing:
            why.append("rebalancing")
        # Front door (issue 12): input it cannot decode, a broker that does not answer.
        why += [str(held) for held in self._held()]
        silent = self.fetch_watch.unreached_for()
        if silent >= self.settings.broker_lost_after.total_seconds():
            why.append(f"no answer from Kafka for {silent:.0f} s")
        return why

    def _held(self) -> list[fetching.Held]:
        try:
            assigned = self.app.consumer.assignment()
        except Exception:  # not started yet
            return []
        return self.fetch_watch.held_partitions(assigned)

    def _install(self) -> None:
        app = self.app
        app.agent(self._topic(USAGE), name="usage")(self._input_agent(USAGE))
        for logical in CONSUMED:
            if logical != USAGE:
                app.agent(self._topic(logical), name=logical)(self._input_agent(logical))
        app.agent(self.ticks, name="ticks")(self._on_tick)
        app.timer(self.settings.tick_interval.total_seconds(), name="every_tick_interval")(
            self._every_tick_interval
        )

        def forget_books(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
            self.books.clear()
            self.ledger.reassigned()
            recovery.reassigned(app)

        async def close_gap_reader(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
            await self.intake.gaps.stop()

        app.on_partitions_revoked.connect(forget_books)
        app.on_partitions_assigned.connect(forget_books)
        app.on_before_shutdown.connect(close_gap_reader)
        install_views(self)


def _credentials(settings: Settings) -> faust.auth.Credentials | None:
    """Faust's form of the Kafka security settings (the aiokafka clients use kafka_options)."""
    protocol = settings.kafka_security_protocol
    if protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=settings.ssl_context() if protocol == "SASL_SSL" else None,
        )
    if protocol == "SSL":
        return faust.SSLCredentials(settings.ssl_context())
    return None


def run_worker(settings: Settings) -> None:
    """Run a worker in the foreground until interrupted."""
    if settings.event_loop == "uvloop":
        # Before anything creates a loop: Faust's consumer thread makes its own, too.
        # uvloop's cheaper futures and tasks matter because Faust makes several per record.
        mode.loop.use("uvloop")
    worker = Worker(settings)
    runner = faust.Worker(
        worker.app,
        loglevel=settings.log_level,
        logging_config=logging_config(settings.log_format, settings.log_level),
    )
    # Faust's terminal spinner sets the root logger to DEBUG at levels >= WARN, so every
    # library debug call (aiokafka logs each send) builds a log record: a third of the
    # hot path in a profile. Without it "Ready" is logged instead of spun.
    runner.spinner = None
    limit_repeats(runner)  # front door (issue 12): a broker outage is not a flood of lines
    collector.tune()  # after Faust and aiokafka are built: they are frozen
    runner.execute_from_commandline()
