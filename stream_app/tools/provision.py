"""`stream-app provision`: a reference provisioning consumer on a simulated carrier.

It plays the provisioning side of the loop for demos and tests: it reads `sim.commands`
in a consumer group of its own, has the simulated carrier (carrier.py) apply each
command, publishes one `sim.command-results` message per command it handles and, every
inventory interval, a `sim.inventory` message per card it knows. Both are keyed by the
ICCID in upper case, as the worker requires of every input.

As a real provisioning system should, it commits a command's offset only once its result
has been acknowledged by the broker: a command in flight when the process stops is read
again and answered then (with the same ``result_id`` for the same attempt, which the
worker counts once). Times come from the same clock as the worker's
(``STREAM_APP_CLOCK``...), so latencies, the repeat window and the ``at`` of every
message agree with a simulated clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import orjson

from ..settings import Settings
from ..topics import COMMAND_RESULTS, COMMANDS, INVENTORY
from .carrier import BadCommand, CarrierOptions, Command, Message, SimulatedCarrier

log = logging.getLogger("stream_app.provision")

POLL_MS = 50
"""How long one poll waits for commands: the granularity of the carrier's answers."""
MAX_IN_FLIGHT = 10_000
"""Calls waiting at the carrier beyond which no more commands are read for a while."""


@dataclass(frozen=True, slots=True)
class ProvisionOptions:
    carrier: CarrierOptions
    group: str | None = None
    """Consumer group; None: the app id plus ``-provision``."""
    seconds: float | None = None
    """Stop after this many (wall) seconds; None: run until stopped."""
    commands: int | None = None
    """Stop after answering this many commands (resends included); None: no limit."""


class Ledger:
    """Which offsets may be committed: below the oldest command not answered yet."""

    def __init__(self) -> None:
        self._open: dict[Any, set[int]] = {}
        self._next: dict[Any, int] = {}
        self._committed: dict[Any, int] = {}

    def received(self, tp: Any, offset: int) -> None:
        self._open.setdefault(tp, set()).add(offset)
        self._next[tp] = offset + 1

    def done(self, tp: Any, offset: int) -> None:
        if tp in self._open:
            self._open[tp].discard(offset)

    def forget(self, tps: Iterable[Any]) -> None:
        """Partitions moved to another member: their offsets are no longer ours to commit."""
        for tp in tps:
            for table in (self._open, self._next, self._committed):
                table.pop(tp, None)

    def committable(self) -> dict[Any, int]:
        offsets = {}
        for tp, following in self._next.items():
            open_offsets = self._open.get(tp)
            offset = min(open_offsets) if open_offsets else following
            if self._committed.get(tp) != offset:
                offsets[tp] = offset
        return offsets

    def committed(self, offsets: dict[Any, int]) -> None:
        self._committed.update(offsets)


@dataclass(slots=True)
class Counts:
    commands: int = 0
    ignored: int = 0
    inventory: int = 0

    def describe(self, carrier: SimulatedCarrier) -> str:
        c = carrier.counts
        return (
            f"{self.commands} commands answered ({c['applied']} applied, {c['failed']} failed, "
            f"{c['rejected']} rejected), {self.ignored} unreadable skipped, "
            f"{self.inventory} inventory messages, drift {c['drift']}, {carrier.in_flight} in flight"
        )


async def run_provision(
    settings: Settings, options: ProvisionOptions, stop: asyncio.Event | None = None
) -> tuple[Counts, SimulatedCarrier]:
    """Answer commands until ``stop`` is set or a limit is reached; what was done."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener

    stop = stop or asyncio.Event()
    clock = settings.clock()
    carrier = SimulatedCarrier(options.carrier, clock.now())
    ledger, counts = Ledger(), Counts()

    class Forget(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: Any) -> None:
            ledger.forget(revoked)

        async def on_partitions_assigned(self, assigned: Any) -> None:
            return None

    producer = AIOKafkaProducer(**settings.kafka_options(), enable_idempotence=True, linger_ms=5)
    names = {logical: settings.topic(logical) for logical in (COMMAND_RESULTS, INVENTORY)}
    began = time.monotonic()
    try:
        await producer.start()
        consumer = AIOKafkaConsumer(
            **settings.kafka_options(),
            group_id=options.group or f"{settings.app_id}-provision",
            auto_offset_reset="earliest",  # a new group answers the commands already waiting
            enable_auto_commit=False,
        )
        try:
            consumer.subscribe([settings.topic(COMMANDS)], listener=Forget())
            await consumer.start()
            while not stop.is_set():
                if options.seconds is not None and time.monotonic() - began >= options.seconds:
                    break
                if options.commands is not None and counts.commands >= options.commands:
                    break
                if carrier.in_flight < MAX_IN_FLIGHT:
                    batches = await consumer.getmany(timeout_ms=POLL_MS, max_records=1000)
                else:  # the carrier is far behind: let it catch up before reading more
                    batches = {}
                    await asyncio.sleep(POLL_MS / 1000)
                now = clock.now()
                for tp, records in batches.items():
                    for record in records:
                        ledger.received(tp, record.offset)
                        _take(carrier, ledger, counts, now, tp, record)
                await _publish(producer, names, carrier.step(clock.now()), ledger, counts)
                await _commit(consumer, ledger)
        finally:
            await _commit(consumer, ledger)
            await consumer.stop()
    finally:
        await producer.stop()
    return counts, carrier


def _take(
    carrier: SimulatedCarrier, ledger: Ledger, counts: Counts, now: datetime, tp: Any, record: Any
) -> None:
    """Hand one command to the carrier; what is not a command is logged and passed over."""
    try:
        command = Command.parse(orjson.loads(record.value or b""))
    except (BadCommand, orjson.JSONDecodeError) as exc:
        log.warning("skipped %s:%d@%d: %s", tp.topic, tp.partition, record.offset, exc)
        ledger.done(tp, record.offset)
        counts.ignored += 1
        return
    carrier.receive(command, now, (tp, record.offset))


async def _publish(
    producer: Any, names: dict[str, str], messages: list[Message], ledger: Ledger, counts: Counts
) -> None:
    """Send, wait until the broker has every message, then mark their commands answered."""
    if not messages:
        return
    sent = [
        await producer.send(names[m.topic], orjson.dumps(m.value), key=m.iccid.encode()) for m in messages
    ]
    await asyncio.gather(*sent)
    for message in messages:
        if message.note:
            log.info("%s", message.note)
        if message.topic == COMMAND_RESULTS:
            counts.commands += 1
            tp, offset = cast(tuple[Any, int], message.tag)
            ledger.done(tp, offset)
        else:
            counts.inventory += 1


async def _commit(consumer: Any, ledger: Ledger) -> None:
    from aiokafka.errors import CommitFailedError, IllegalStateError

    offsets = ledger.committable()
    if not offsets:
        return
    try:
        await consumer.commit(offsets)
    except (CommitFailedError, IllegalStateError) as exc:  # a rebalance took the partitions
        log.warning("offsets not committed (%s): those commands will be answered again", exc)
        return
    ledger.committed(offsets)


def run_console(settings: Settings, options: ProvisionOptions) -> int:
    """`stream-app provision`: run until a limit, SIGINT or SIGTERM; a summary at the end.
    Exit 0 when done or stopped, 1 when the broker cannot be reached."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)  # group joins are not news here
    if settings.clock_kind == "simulated":
        log.info("simulated clock: now is %s", settings.clock().now().isoformat())
        if not os.environ.get("STREAM_APP_CLOCK_ANCHOR"):
            log.warning("STREAM_APP_CLOCK_ANCHOR is not set: this clock may disagree with the worker's")
    summary = "nothing done"
    status, how = 0, "done"

    async def until_signalled() -> None:
        nonlocal summary, how
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for number in (signal.SIGINT, signal.SIGTERM):

            def stopped(number: int = number) -> None:
                nonlocal how
                how = f"stopped by {signal.Signals(number).name}"
                stop.set()

            loop.add_signal_handler(number, stopped)
        counts, carrier = await run_provision(settings, options, stop)
        summary = counts.describe(carrier)

    try:
        asyncio.run(until_signalled())
    except Exception as exc:  # a broker that cannot be reached, a send that failed
        log.error("provision failed: %s", exc or type(exc).__name__)
        status, how = 1, "failed"
    with contextlib.suppress(BrokenPipeError):
        print(f"provision: {how}: {summary}", flush=True)
    return status
