"""The Faust app: thin agents that decode, call the engine, store state, send outputs.

Design notes (see also ../shared/faust-notes.md):

* Topics are consumed as raw bytes and parsed with orjson in pipeline.py; no
  faust.Record on the hot path.
* One changelog-backed table ``sims`` holds each SIM's whole state as one encoded value.
  Its changelog partition is the source event's partition, so every topic that writes
  it (inputs and ticks) has the same partition count and is keyed by ICCID.
* Time without traffic (R6): a timer on every worker sends a tick to each partition of
  the tick topic it actively owns; the tick agent, running inside that partition's
  event, rolls forward the SIMs found due in an in-memory due index. The index is built
  from the table once per partition after each rebalance, then kept up to date by the
  agents, so a tick never scans every SIM. A worker that was down across a boundary
  catches up on its first tick.
* An exception escaping an agent would ack and drop the message; pipeline.decide turns
  every failure into a dead letter instead.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from . import codec
from .domain import SimState, due_at
from .pipeline import Decision, Source, decide, decide_tick
from .schedule import DueIndex
from .settings import Settings
from .topics import BILLING, OUTPUTS, REQUESTS, SUBSCRIPTIONS, TICKS, USAGE

log = logging.getLogger("stream_app")

TABLE = "sims"


class Worker:
    """The app and its agents, built from settings (no import-time side effects)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.policy = settings.policy()
        self.clock = settings.clock()
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
        self.due_by_partition: dict[int, DueIndex] = {}
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
        return codec.decode_state(raw) if raw is not None else None

    async def apply(self, decision: Decision, partition: int) -> None:
        """Store the new state, then send the outputs (at-least-once: outputs may repeat
        after a crash, with the same ids; the state is never behind an output sent)."""
        if decision.state is not None and decision.iccid is not None:
            decision.state.partition = partition
            self.table[decision.iccid.encode()] = codec.encode_state(decision.state)
            index = self.due_by_partition.get(partition)
            if index is not None:
                index.schedule(decision.iccid, due_at(decision.state, self.policy))
        for output in decision.outputs:
            await self.outputs[output.topic].send(key=output.key.encode(), value=codec.encode(output.value))
            if output.topic == "commands":
                log.info("command %s", output.value)

    def due_index(self, partition: int) -> DueIndex:
        """This partition's due index, built from the table on first use after a rebalance.

        The memory store's items() also yields standby and stale keys, so only states
        stored with this partition are taken.
        """
        index = self.due_by_partition.get(partition)
        if index is None:
            index = DueIndex()
            for _key, raw in self.table.items():
                state = codec.decode_state(raw)
                if state.partition == partition:
                    index.schedule(state.iccid, due_at(state, self.policy))
            self.due_by_partition[partition] = index
            log.info("due index for partition %d: %d SIMs", partition, len(index))
        return index

    # --- agents --------------------------------------------------------------------

    def _input_agent(self, logical: str) -> Callable[[Any], Awaitable[None]]:
        async def agent(stream: Any) -> None:
            async for event in stream.events():
                message = event.message
                decision = decide(
                    logical,
                    event.value,
                    Source(message.topic, message.partition, message.offset),
                    self.load,
                    self.clock.now(),
                    self.policy,
                    self.settings.max_message_bytes,
                    key=event.key,
                )
                await self.apply(decision, message.partition)

        agent.__name__ = f"on_{logical}"
        return agent

    async def _on_tick(self, stream: Any) -> None:
        async for event in stream.events():
            partition = event.message.partition
            now = self.clock.now()
            for _due, iccid in list(self.due_index(partition).pop_due(now)):
                state = self.load(iccid)
                if state is not None:
                    await self.apply(decide_tick(state, now, self.policy), partition)

    async def _send_ticks(self) -> None:
        # An exception escaping a timer crashes the whole worker: log and go on.
        try:
            if self.app.rebalancing:
                return
            name = self.ticks.get_topic_name()
            for tp in self.app.assignor.assigned_actives():
                if tp.topic == name:
                    await self.ticks.send(key=b"tick", value=b"{}", partition=tp.partition)
        except Exception:
            log.exception("sending ticks failed")

    def _install(self) -> None:
        app = self.app
        app.agent(self._topic(USAGE), name="usage")(self._input_agent(USAGE))
        for logical in (SUBSCRIPTIONS, BILLING, REQUESTS):
            app.agent(self._topic(logical), name=logical)(self._input_agent(logical))
        app.agent(self.ticks, name="ticks")(self._on_tick)
        app.timer(self.settings.tick_interval.total_seconds(), name="send_ticks")(self._send_ticks)

        def forget_due_indexes(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
            self.due_by_partition.clear()

        app.on_partitions_revoked.connect(forget_due_indexes)
        app.on_partitions_assigned.connect(forget_due_indexes)


def run_worker(settings: Settings) -> None:
    """Run a worker in the foreground until interrupted."""
    worker = Worker(settings)
    faust.Worker(worker.app, loglevel=settings.log_level).execute_from_commandline()
