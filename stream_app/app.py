"""The Faust app: thin agents that decode, call the engine, store state, send outputs.

Design notes (see also ../shared/faust-notes.md):

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
* An exception escaping an agent would ack and drop the message; pipeline.decide turns
  every failure into a dead letter instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import faust
from prometheus_client import CollectorRegistry

from . import codec
from .domain import SimState, UsageRecord
from .logs import logging_config
from .metrics import Metrics
from .ownership import Books, PartitionBook, Summary, summary
from .pipeline import Decision, Source, decide, decide_tick, rejected
from .settings import Settings
from .topics import (
    ALERTS,
    BILLING,
    CHARGES,
    COMMANDS,
    DEADLETTER,
    INPUTS,
    OUTPUTS,
    REQUESTS,
    SUBSCRIPTIONS,
    TICKS,
    USAGE,
)

log = logging.getLogger("stream_app")

TABLE = "sims"
COUNTED = frozenset({"accepted", "late", "unknown_sim", "cancelled"})


class Worker:
    """The app and its agents, built from settings (no import-time side effects)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.policy = settings.policy()
        self.clock = settings.clock()
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.app = faust.App(
            settings.app_id,
            broker=[f"kafka://{host.strip()}" for host in settings.bootstrap_servers.split(",")],
            env_prefix="STREAM_APP_FAUST_",
            store=settings.store,
            datadir=settings.data_dir,
            topic_partitions=settings.partitions,
            topic_replication_factor=settings.replication_factor,
            table_standby_replicas=settings.standby_replicas,
            web_host=settings.web_host,
            web_port=settings.web_port,
            web_tables_enabled=False,
            broker_max_poll_records=1000,
            producer_linger=0.005,
            key_serializer="raw",
            value_serializer="raw",
        )
        self.table = self.app.Table(TABLE, key_type=bytes, value_type=bytes, partitions=settings.partitions)
        self.outputs = {logical: self._topic(logical) for logical in OUTPUTS}
        self.ticks = self._topic(TICKS)
        self.books = Books(self.policy)
        self._loaded: dict[str, Summary] = {}
        self._install()

    def _topic(self, logical: str) -> Any:
        return self.app.topic(
            self.settings.topic(logical),
            key_type=bytes,
            value_type=bytes,
            partitions=self.settings.partitions,
        )

    # --- state -------------------------------------------------------------------

    def load(self, iccid: str) -> SimState | None:
        raw = self.table.get(iccid.encode())
        if raw is None:
            return None
        state = codec.decode_state(raw)
        self._loaded[iccid] = summary(state)
        return state

    async def apply(self, decision: Decision, source: Source, received: float | None) -> None:
        """Send the outputs, then store the new state.

        Outputs are handed to the producer before the changelog write (which Faust
        buffers and sends later), so a crash cannot leave the state advanced while its
        outputs are lost: at worst the input is processed again and the outputs repeat,
        with the same ids. A value that cannot be encoded or sent (a bug, or a message
        Kafka refuses) becomes a dead letter instead of crashing the agent, which would
        ack and drop the input.
        """
        iccid = decision.iccid
        before = self._loaded.pop(iccid, None) if iccid is not None else None
        try:
            stored = None
            if decision.state is not None and iccid is not None:
                decision.state.partition = source.partition
                stored = codec.encode_state(decision.state)
            for output in decision.outputs:
                await self.outputs[output.topic].send(
                    key=output.key.encode(), value=codec.encode(output.value)
                )
                self._observe(output.topic, output.value)
        except Exception as exc:
            log.exception("could not send the outputs of %s[%s]@%s", *source)
            letter = rejected(source, b"", iccid, "internal_error", f"outputs not sent: {exc!r}", "error")
            await self.outputs[DEADLETTER].send(
                key=(iccid or "").encode(), value=codec.encode(letter.outputs[0].value)
            )
            self._observe(DEADLETTER, letter.outputs[0].value)
            return
        if stored is not None and iccid is not None and decision.state is not None:
            self.table[iccid.encode()] = stored
            self.books.record(source.partition, before, decision.state)
        if decision.outputs and received is not None:
            self.metrics.decision_latency.observe(max(time.time() - received, 0.0))

    def _observe(self, topic: str, value: dict[str, Any]) -> None:
        metrics = self.metrics
        if topic == COMMANDS:
            metrics.commands.labels(value["action"], value["reason"], value["trigger"]).inc()
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

    def book(self, partition: int) -> PartitionBook:
        """This partition's book, built from the table on first use after a rebalance.

        The memory store's items() also yields standby and stale keys, so only states
        stored with this partition are taken.
        """
        book = self.books.partitions.get(partition)
        if book is None:
            book = self.books.build(partition, self._states_of(partition))
            log.info("partition %d: %d SIMs, %d due", partition, sum(book.statuses.values()), len(book.due))
        return book

    def _states_of(self, partition: int) -> Iterator[SimState]:
        for key, raw in self.table.items():
            try:
                state = codec.decode_state(raw)
            except Exception:
                log.exception("stored state of %r cannot be decoded; skipped", key)
                continue
            if state.partition == partition:
                yield state

    # --- agents --------------------------------------------------------------------

    def _input_agent(self, logical: str) -> Callable[[Any], Awaitable[None]]:
        metrics = self.metrics

        async def agent(stream: Any) -> None:
            async for event in stream.events():
                message = event.message
                now = self.clock.now()
                source = Source(message.topic, message.partition, message.offset)
                decision = decide(
                    logical,
                    event.value,
                    source,
                    self.load,
                    now,
                    self.policy,
                    self.settings.max_message_bytes,
                    key=event.key if event.key is not None else b"",  # no key: key_mismatch
                )
                await self.apply(decision, source, message.timestamp)
                metrics.input_messages.labels(logical, decision.outcome).inc()
                if isinstance(decision.item, UsageRecord):
                    metrics.freshness.observe(max((now - decision.item.end).total_seconds(), 0.0))
                    if decision.outcome in COUNTED:
                        metrics.usage_bytes.inc(decision.item.total_bytes)

        agent.__name__ = f"on_{logical}"
        return agent

    async def _on_tick(self, stream: Any) -> None:
        async for event in stream.events():
            partition = event.message.partition
            now = self.clock.now()
            started = time.monotonic()
            book = self.book(partition)
            source = Source(event.message.topic, partition, event.message.offset)
            due = 0
            for _due, iccid in book.due.pop_due(now):
                due += 1
                try:
                    state = self.load(iccid)
                    decision = decide_tick(state, now, self.policy) if state is not None else None
                    if decision is not None:
                        await self.apply(decision, source, None)
                    failed = decision is not None and decision.outcome == "error"
                except Exception:
                    log.exception("rolling %s forward failed", iccid)
                    failed = True
                if failed:  # one SIM must not stop the sweep; it is looked at again next tick
                    book.due.schedule(iccid, now + self.settings.tick_interval)
            if due:
                self.metrics.swept_sims.inc(due)
                self.metrics.sweep_timestamp.set(time.time())
                self.metrics.sweep_duration.set(time.monotonic() - started)

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
        statuses, reasons = self.books.totals()
        for status in ("active", "suspended", "cancelled"):
            metrics.sims.labels(status).set(statuses[status])
        for reason in ("quota", "arrears", "expiry", "manual"):
            metrics.suspended_sims.labels(reason).set(reasons[reason])
        inputs = {self.settings.topic(t) for t in INPUTS}
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

    def ready(self) -> bool:
        """Owns partitions and has recovered its tables (and is not rebalancing)."""
        app = self.app
        try:
            owns = bool(app.assignor.assigned_actives())
        except Exception:
            return False
        return owns and bool(app.tables.actives_ready) and not app.rebalancing

    def _install(self) -> None:
        from .web import install_views

        app = self.app
        app.agent(self._topic(USAGE), name="usage")(self._input_agent(USAGE))
        for logical in (SUBSCRIPTIONS, BILLING, REQUESTS):
            app.agent(self._topic(logical), name=logical)(self._input_agent(logical))
        app.agent(self.ticks, name="ticks")(self._on_tick)
        app.timer(self.settings.tick_interval.total_seconds(), name="every_tick_interval")(
            self._every_tick_interval
        )

        def forget_books(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
            self.books.clear()

        app.on_partitions_revoked.connect(forget_books)
        app.on_partitions_assigned.connect(forget_books)
        install_views(self)


def run_worker(settings: Settings) -> None:
    """Run a worker in the foreground until interrupted."""
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
    runner.execute_from_commandline()
