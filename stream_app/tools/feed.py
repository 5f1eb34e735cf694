"""A synthetic fleet feed for demos and load: subscriptions, then a stream of usage records.

The generator is pure and deterministic: the same seed, start time and sequence of
``now`` values give the same messages, byte for byte. The runner sends them with
aiokafka at a target rate, so ``stream-app feed`` works against any broker.

What the fleet looks like (all drawn per SIM from the seed):

- ICCIDs ``8986`` + issuer + seed + index + Luhn digit, 20 digits, one per index.
- Plans of 100 MB to 5 GB a month; ``auto_suspend`` on a share of the SIMs (an option).
- About 20 % heavy users, whose records are sized so that they cross 80/90/100 % of
  their quota after about 90 s of feeding (at most 20 and at least 5 of their own
  records, whatever the rate); the others use a fortieth of that.
- About 2 % of the plans expire 1-3 minutes (clock time) after the feed starts, so
  expiry suspensions show up too. The billing time zone is the worker's default.
- A share of the SIMs (an option, 10 % by default) are members of two pools (流量池)
  with no cap of their own; each pool's allowance is what its members use in about a
  minute of feeding, so a pool runs out and stops all its members while you watch.

Usage records end at most at the clock's ``now`` (up to 30 s before) and start 1-5
minutes before their end. A share of the records are exact repeats of an earlier record
(same bytes, same ``record_id``), another share are bad: not JSON, a bad ICCID, or
negative bytes; all of them go to the usage topic. Record ids embed the seed and the
start time, so a second run of the feed is not taken for duplicates of the first.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple

import orjson

from ..domain.timeutil import format_time
from ..settings import Settings
from ..topics import POOLS, SUBSCRIPTIONS, USAGE

Kind = Literal["subscription", "pool", "record", "duplicate", "bad"]

PLANS = (
    ("iot-100m", 100_000_000),
    ("iot-500m", 500_000_000),
    ("iot-1g", 1_000_000_000),
    ("iot-5g", 5 * 10**9),
)
CARRIERS = (("cmcc", "00"), ("cucc", "01"), ("ctcc", "03"))  # carrier, ICCID issuer code
HEAVY_SHARE = 0.2
EXPIRING_SHARE = 0.02
QUOTA_SECONDS = 90.0
"""A heavy user reaches its quota after about this many seconds of feeding ..."""
QUOTA_RECORDS = (5, 20)
"""... but after no fewer and no more of its own records than these."""
LIGHT_FACTOR = 40
BATCH_SECONDS = 0.1
POOLS_IN_A_FEED = 2
POOL_SECONDS = 60.0
"""A pool's allowance is what its members use in about this many seconds of feeding."""
RECENT = 1000
"""Duplicates repeat one of the last this many good records."""


@dataclass(frozen=True, slots=True)
class FeedOptions:
    sims: int = 1000
    rate: float = 200.0
    """Usage messages per second (duplicates and bad ones included)."""
    auto_suspend_share: float = 0.5
    duplicate_share: float = 0.02
    bad_share: float = 0.005
    pool_share: float = 0.1
    """Share of the SIMs in the feed's pools (流量池)."""
    seed: int = 1
    duration: float | None = None
    """Seconds of usage records after the subscriptions; None: no limit."""
    records: int | None = None
    """Usage messages to send in all; None: no limit."""

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.sims <= 10**9:
            problems.append("sims must be between 1 and 1000000000")
        if not (self.rate > 0 and math.isfinite(self.rate)):
            problems.append("rate must be positive")
        for name in ("auto_suspend_share", "duplicate_share", "bad_share", "pool_share"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name} must lie in [0, 1]")
        if self.duplicate_share + self.bad_share > 1:
            problems.append("duplicate_share + bad_share must not exceed 1")
        if self.duration is not None and not self.duration > 0:
            problems.append("duration must be positive")
        if self.records is not None and self.records < 0:
            problems.append("records must not be negative")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True, slots=True)
class Sim:
    iccid: str
    carrier: str
    plan_id: str
    quota_bytes: int
    auto_suspend: bool
    heavy: bool
    expires_after: timedelta | None
    """The plan expires this long after the feed's start; None: it does not."""
    pool_id: str | None = None
    """The pool the SIM draws from (it then has no cap of its own)."""


class Message(NamedTuple):
    topic: str
    """Logical topic: usage, subscriptions or pools."""
    key: bytes
    value: bytes
    kind: Kind


@dataclass(frozen=True, slots=True)
class FeedCounts:
    subscriptions: int = 0
    sent: int = 0
    """Usage messages delivered, duplicates and bad ones included."""
    duplicates: int = 0
    bad: int = 0
    pools: int = 0

    def plus(self, messages: list[Message]) -> FeedCounts:
        kinds = [m.kind for m in messages]
        definitions = kinds.count("subscription") + kinds.count("pool")
        return FeedCounts(
            self.subscriptions + kinds.count("subscription"),
            self.sent + len(kinds) - definitions,
            self.duplicates + kinds.count("duplicate"),
            self.bad + kinds.count("bad"),
            self.pools + kinds.count("pool"),
        )

    def __str__(self) -> str:
        pools = f" and {self.pools} pools" if self.pools else ""
        return (
            f"{self.subscriptions} subscriptions, {self.sent} records sent "
            f"({self.duplicates} duplicates, {self.bad} bad){pools}"
        )


def iccid_for(seed: int, index: int, issuer: str = "00") -> str:
    """``8986`` + issuer (2) + seed (4) + index (9) + Luhn check digit: 20 digits."""
    body = f"8986{issuer}{seed % 10_000:04d}{index:09d}"
    total = 0
    for position, char in enumerate(reversed(body)):
        digit = int(char) * (2 if position % 2 == 0 else 1)
        total += digit - 9 if digit > 9 else digit
    return body + str(-total % 10)


def fleet(options: FeedOptions) -> list[Sim]:
    """The SIMs of the feed: the same for the same seed and size, whatever the clock."""
    sims = []
    for index in range(options.sims):
        rng = random.Random(f"{options.seed}:sim:{index}")
        carrier, issuer = rng.choice(CARRIERS)
        plan_id, quota = rng.choice(PLANS)
        expiring = rng.random() < EXPIRING_SHARE
        pooled = rng.random() < options.pool_share
        sims.append(
            Sim(
                iccid=iccid_for(options.seed, index, issuer),
                carrier=carrier,
                plan_id=plan_id,
                quota_bytes=quota,
                auto_suspend=rng.random() < options.auto_suspend_share,
                heavy=rng.random() < HEAVY_SHARE,
                expires_after=timedelta(seconds=rng.randint(60, 180)) if expiring else None,
                pool_id=pool_name(options.seed, index % POOLS_IN_A_FEED) if pooled else None,
            )
        )
    return sims


def pool_name(seed: int, number: int) -> str:
    return f"demo-pool-{seed}-{number + 1}"


def pool_messages(options: FeedOptions, sims: list[Sim], start: datetime) -> list[Message]:
    """Each pool's definition: an allowance its members use in about a minute."""
    per_second = options.rate / options.sims
    allowance: dict[str, float] = {}
    for sim in sims:
        if sim.pool_id is not None:
            mean = sim.quota_bytes / records_to_quota(options) / (1 if sim.heavy else LIGHT_FACTOR)
            allowance[sim.pool_id] = allowance.get(sim.pool_id, 0.0) + mean * per_second * POOL_SECONDS
    return [
        Message(
            POOLS,
            pool_id.encode(),
            orjson.dumps(
                {
                    "pool_id": pool_id,
                    "quota_bytes": max(1, round(quota)),
                    "auto_suspend": True,
                    "updated_at": format_time(start.replace(microsecond=0)),
                }
            ),
            "pool",
        )
        for pool_id, quota in sorted(allowance.items())
    ]


def subscription_message(sim: Sim, start: datetime) -> Message:
    """The SIM's subscription as of ``start`` (a newer ``updated_at`` on every run)."""
    start = start.replace(microsecond=0)
    value = {
        "iccid": sim.iccid,
        "plan_id": sim.plan_id,
        "quota_bytes": sim.quota_bytes if sim.pool_id is None else None,
        "pool_id": sim.pool_id,
        "valid_from": format_time(start - timedelta(days=30)),
        "expires_at": format_time(start + sim.expires_after) if sim.expires_after is not None else None,
        "auto_suspend": sim.auto_suspend,
        "updated_at": format_time(start),
    }
    return Message(SUBSCRIPTIONS, sim.iccid.encode(), orjson.dumps(value), "subscription")


def records_to_quota(options: FeedOptions) -> int:
    """How many of its own records take a heavy user to its quota (see the module doc)."""
    per_sim = options.rate * QUOTA_SECONDS / options.sims
    low, high = QUOTA_RECORDS
    return max(low, min(high, round(per_sim)))


class UsageGenerator:
    """Usage messages, one after another; deterministic for the seed, start and nows."""

    def __init__(self, options: FeedOptions, sims: list[Sim], start: datetime) -> None:
        self.options = options
        self.sims = sims
        self._rng = random.Random(f"{options.seed}:usage")
        self._prefix = f"feed-{options.seed}-{start.strftime('%Y%m%dT%H%M%S')}"
        self._seq = 0
        self._recent: deque[Message] = deque(maxlen=RECENT)
        self._heavy_bytes = [s.quota_bytes / records_to_quota(options) for s in sims]

    def batch(self, count: int, now: datetime) -> list[Message]:
        return [self.next(now) for _ in range(count)]

    def next(self, now: datetime) -> Message:
        rng, options = self._rng, self.options
        draw = rng.random()
        if draw < options.duplicate_share and self._recent:
            return self._recent[rng.randrange(len(self._recent))]._replace(kind="duplicate")
        if draw < options.duplicate_share + options.bad_share:
            return self._bad(now)
        sim, record = self._record(now)
        message = Message(USAGE, sim.iccid.encode(), orjson.dumps(record), "record")
        self._recent.append(message)
        return message

    def _record(self, now: datetime) -> tuple[Sim, dict[str, Any]]:
        rng = self._rng
        index = rng.randrange(len(self.sims))
        sim = self.sims[index]
        end = (now - timedelta(seconds=rng.uniform(0, 30))).replace(microsecond=0)
        start = end - timedelta(seconds=rng.randint(60, 300))
        mean = self._heavy_bytes[index] / (1 if sim.heavy else LIGHT_FACTOR)
        total = max(1, round(mean * rng.uniform(0.5, 1.5)))
        up = round(total * rng.uniform(0.1, 0.4))
        self._seq += 1
        return sim, {
            "record_id": f"{self._prefix}-{self._seq:09d}",
            "iccid": sim.iccid,
            "carrier": sim.carrier,
            "start": format_time(start),
            "end": format_time(end),
            "bytes_up": up,
            "bytes_down": total - up,
        }

    def _bad(self, now: datetime) -> Message:
        sim, record = self._record(now)
        key = sim.iccid.encode()
        flaw = self._rng.randrange(3)
        if flaw == 0:  # not JSON: a message cut in half
            raw = orjson.dumps(record)
            return Message(USAGE, key, raw[: len(raw) // 2], "bad")
        if flaw == 1:
            bad_iccid = sim.iccid[:-3] + "XYZ"
            return Message(USAGE, bad_iccid.encode(), orjson.dumps({**record, "iccid": bad_iccid}), "bad")
        return Message(USAGE, key, orjson.dumps({**record, "bytes_down": -1 - record["bytes_down"]}), "bad")


Progress = Callable[[FeedCounts], None]


async def run_feed(settings: Settings, options: FeedOptions, progress: Progress | None = None) -> FeedCounts:
    """Send every subscription, then usage records at ``options.rate`` until the duration
    or record count is reached or the task is cancelled.

    ``progress`` is called after every batch with the counts of messages the broker
    acknowledged, and once more on the way out (also when cancelled: the messages in
    flight are flushed first, so the last counts match what the topics hold).
    """
    from aiokafka import AIOKafkaProducer

    clock = settings.clock()
    start = clock.now()
    sims = fleet(options)
    generator = UsageGenerator(options, sims, start)
    producer = AIOKafkaProducer(**settings.kafka_options(), enable_idempotence=True, linger_ms=5)
    counts = FeedCounts()
    in_flight: list[tuple[Message, asyncio.Future[Any]]] = []

    async def deliver(messages: list[Message]) -> None:
        nonlocal counts, in_flight
        for m in messages:
            in_flight.append((m, await producer.send(settings.topic(m.topic), m.value, key=m.key)))
        # shielded: a cancellation must not cancel the delivery futures we count below
        await asyncio.shield(asyncio.gather(*(future for _, future in in_flight)))
        counts, in_flight = counts.plus([m for m, _ in in_flight]), []
        if progress is not None:
            progress(counts)

    try:
        await producer.start()
        await deliver(pool_messages(options, sims, start))
        for first in range(0, len(sims), 10_000):
            await deliver([subscription_message(sim, start) for sim in sims[first : first + 10_000]])
        loop = asyncio.get_running_loop()
        began = loop.time()
        batch_size = max(1, math.ceil(options.rate * BATCH_SECONDS))
        while options.duration is None or loop.time() - began < options.duration:
            size = batch_size if options.records is None else min(batch_size, options.records - counts.sent)
            if size <= 0:
                break
            await deliver(generator.batch(size, clock.now()))
            delay = began + counts.sent / options.rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
    finally:
        await producer.stop()  # flushes whatever is still in flight
        done = [m for m, f in in_flight if f.done() and not f.cancelled() and f.exception() is None]
        counts = counts.plus(done)
        if progress is not None:
            progress(counts)
    return counts


def run_console(settings: Settings, options: FeedOptions) -> int:
    """``stream-app feed``: run until done or Ctrl-C (or SIGTERM), a progress line on stderr
    every second and a summary at the end. Exit 0 when done or stopped, 1 when the broker
    cannot be reached or a delivery fails."""
    if settings.clock_kind == "simulated" and not os.environ.get("STREAM_APP_CLOCK_ANCHOR"):
        print(
            "feed: STREAM_APP_CLOCK_ANCHOR is not set: this clock may disagree with the worker's",
            file=sys.stderr,
        )
    began = shown = time.monotonic()
    last = FeedCounts()

    def progress(counts: FeedCounts) -> None:
        nonlocal last, shown
        last = counts
        if time.monotonic() - shown >= 1.0:
            shown = time.monotonic()
            now = settings.clock().now()
            print(
                f"feed: {shown - began:.0f} s, {counts}, clock {now:%Y-%m-%d %H:%M:%S}Z",
                file=sys.stderr,
                flush=True,
            )

    async def until_signalled() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)  # like Ctrl-C
        await run_feed(settings, options, progress)

    status, how = 0, "done"
    try:
        asyncio.run(until_signalled())
    except (KeyboardInterrupt, asyncio.CancelledError):
        how = "interrupted"
    except Exception as exc:  # a broker that cannot be reached, a delivery that failed
        print(f"feed: {exc or type(exc).__name__}", file=sys.stderr)
        status, how = 1, "failed"
    print(f"feed: {how} after {time.monotonic() - began:.1f} s: {last}", file=sys.stderr)
    return status
