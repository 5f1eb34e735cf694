"""`stream-app demo` (what `make run` runs): a worker, a synthetic fleet and a live summary.

The simulated clock starts 90 s before midnight on the last day of the current month
in the billing zone, at real speed, so within about two minutes a newcomer sees SIMs
reach their quota and get suspended, alerts, dead letters for the feed's bad records,
and at 00:00 the restores of the new month. Each run uses its own topics and consumer
group (suffix ``demo-<time>``), so runs never see each other's data.

Next to the worker, `stream-app provision` plays the carrier, with acknowledgement
tracking on: commands are applied, a few are refused and sent again, and now and then
the carrier changes a card on its own, which the worker sees in the inventory and
repairs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from ..domain.timeutil import format_time, month_bounds, month_of, zone
from ..settings import Settings
from ..topics import COMMAND_RESULTS, REGISTRY, env_name
from .admin import ensure_topics
from .feed import FeedCounts, FeedOptions, fleet, run_feed

LEAD = timedelta(seconds=90)
PROVISION_ARGS = (
    *("--latency", "1s", "--jitter", "2s", "--fail-rate", "0.05", "--reject-rate", "0.01"),
    # No repeat window: the fleet's heavy users and pools run out seconds before midnight,
    # so every restore at 00:00 would fail at first, more than a newcomer needs to see.
    *("--repeat-window", "0", "--inventory-every", "20s", "--drift-rate", "0.01"),
)
"""The demo's carrier: enough refusals, resends and drift to watch in two minutes."""


def demo_env(base: Settings, now: datetime) -> dict[str, str]:
    """Environment for this run's worker and feed: own topics, own group, shared clock."""
    suffix = f"demo-{int(time.time())}"
    month_end = month_bounds(month_of(now, base.timezone), base.timezone)[1]
    env = {
        "STREAM_APP_ID": f"{base.app_id}-{suffix}",
        "STREAM_APP_CLOCK": "simulated",
        "STREAM_APP_CLOCK_START": format_time(month_end - LEAD),
        "STREAM_APP_CLOCK_SPEED": "1",
        "STREAM_APP_CLOCK_ANCHOR": str(time.time()),
        "STREAM_APP_TICK_INTERVAL": "5s",
        "STREAM_APP_DATA_DIR": str(Path(base.data_dir) / suffix),
    }
    if base.command_ack_timeout is None:  # short enough to see a resend in two minutes
        env["STREAM_APP_COMMAND_ACK_TIMEOUT"] = "20s"
    for spec in REGISTRY:
        env[env_name(spec.logical)] = f"{base.topic(spec.logical)}.{suffix}"
    return env


class Summary:
    """Counts what the worker sends, read back from its output topics."""

    def __init__(self) -> None:
        self.suspends = self.restores = self.cancels = self.alerts = self.dead_letters = 0
        self.applied = self.refused = self.resends = self.drifts = self.pool_stops = 0

    def add(self, logical: str, value: dict[str, object]) -> None:
        if logical == "commands" and value.get("attempt", 1) != 1:
            self.resends += 1
        elif logical == "commands":
            action = value.get("action")
            self.suspends += action == "suspend"
            self.pool_stops += action == "suspend" and value.get("reason") == "pool"
            self.restores += action == "restore"
            self.cancels += action == "cancel"
        elif logical == "command_results":
            self.applied += value.get("outcome") == "applied"
            self.refused += value.get("outcome") != "applied"
        elif logical == "alerts":
            self.alerts += 1
            self.drifts += value.get("kind") == "status_drift"
        elif logical == "deadletter":
            self.dead_letters += 1


async def _watch(settings: Settings, summary: Summary) -> None:
    watched = [s.logical for s in REGISTRY if s.direction == "out"] + [COMMAND_RESULTS]
    names = {settings.topic(logical): logical for logical in watched}
    consumer = AIOKafkaConsumer(
        *names,
        **settings.kafka_options(),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        while True:
            for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                for message in messages:
                    if message.value is not None:
                        summary.add(names[tp.topic], orjson.loads(message.value))
    finally:
        await consumer.stop()


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _start_worker(env: dict[str, str], log_path: Path, *command: str) -> subprocess.Popen[bytes]:
    """The worker (or another ``command``) in a process group of its own, so that a Ctrl-C
    reaches the demo alone and the demo stops things in order: the feed first, the
    summary, then provisioning and the worker. On Linux it is also told to stop if the
    demo dies without cleaning up (SIGKILL)."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "stream_app", *(command or ("worker",))],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,
            # the demo has started no thread yet, the one case preexec_fn is unsafe in
            preexec_fn=_stop_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
        )


def _stop_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


class Stop:
    """SIGINT, SIGTERM and SIGHUP ask the demo to stop, wherever it runs: a background
    job (`make run &`) inherits SIGINT ignored, and the loop's handlers replace that."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.by: str | None = None
        self.loop = asyncio.get_running_loop()
        for number in self.SIGNALS:
            self.loop.add_signal_handler(number, self._signalled, number)

    def _signalled(self, number: int) -> None:
        self.by = self.by or signal.Signals(number).name
        self.event.set()

    async def wait(self, seconds: float) -> bool:
        """True when asked to stop, within ``seconds``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), seconds)
        return self.event.is_set()

    def close(self) -> None:
        for number in self.SIGNALS:
            self.loop.remove_signal_handler(number)


async def _finish(*tasks: asyncio.Future[Any]) -> BaseException | None:
    """Cancel the tasks and wait for them; the first error one of them ended with."""
    error: BaseException | None = None
    for task in tasks:
        task.cancel()
    for task in tasks:
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            error = error or exc
    return error


async def _until_done(
    worker: subprocess.Popen[bytes],
    feed: asyncio.Future[Any],
    stop: Stop,
    duration: float | None,
    show: Callable[[], None],
) -> tuple[str, int]:
    """Show progress every second until something ends the demo: why, and the status."""
    began = time.monotonic()
    while True:
        if await stop.wait(1):
            return f"stopped by {stop.by}", 0
        if worker.poll() is not None:
            return f"the worker exited with status {worker.returncode}", 1
        if feed.done():
            return "the feed ended", 0
        if duration is not None and time.monotonic() - began >= duration:
            return f"{duration:g} s are up", 0
        show()


def _introduce(settings: Settings, one: str) -> None:
    """Where to look while the demo runs."""
    port = settings.web_port
    print(f"demo: metrics  http://127.0.0.1:{port}/metrics")
    print(f"demo: one SIM  http://127.0.0.1:{port}/sims/{one}   (or: stream-app sim {one})")
    print(f"demo: its trail  STREAM_APP_TOPIC_AUDIT={settings.topic('audit')} stream-app audit {one}")
    print(
        f"demo: refused    STREAM_APP_TOPIC_DEADLETTER={settings.topic('deadletter')} stream-app deadletters"
    )
    print("demo: Ctrl-C stops the demo")


async def run_demo(base: Settings, options: FeedOptions, duration: float | None) -> int:
    """Run until ``duration`` is up, a stop signal, the worker's death or the feed's end;
    always stop the feed, print the summary and stop the worker. Exit status 0 when
    stopped on purpose, 1 when the worker or the feed failed."""
    stop = Stop()
    env = {**os.environ, **demo_env(base, base.clock().now())}
    settings = Settings.from_env(env)
    await ensure_topics(settings)
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    log_path = Path(settings.data_dir) / "worker.log"
    worker = _start_worker(env, log_path)
    provision_log = Path(settings.data_dir) / "provision.log"
    seed = ("--seed", str(options.seed))
    provision = _start_worker(env, provision_log, "provision", *PROVISION_ARGS, *seed)
    port = settings.web_port
    say = print
    say(f"demo: worker pid {worker.pid}, log {log_path}")
    say(f"demo: provisioning (a simulated carrier) pid {provision.pid}, log {provision_log}")
    say(
        f"demo: simulated clock starts at {settings.clock_start} ({base.timezone}): "
        f"the month ends in {LEAD.seconds} s"
    )
    try:
        while not _ready(port):
            if worker.poll() is not None:
                say(f"demo: the worker exited with status {worker.returncode}; see {log_path}")
                return 1
            if await stop.wait(0.5):
                say(f"demo: stopped by {stop.by} before the worker was ready")
                return 0
        _introduce(settings, fleet(options)[0].iccid)
        summary, counts = Summary(), FeedCounts()

        def progress(latest: FeedCounts) -> None:
            nonlocal counts
            counts = latest

        feed = asyncio.ensure_future(run_feed(settings, options, progress))
        watch = asyncio.ensure_future(_watch(settings, summary))
        last_sent = 0

        def show() -> None:
            nonlocal last_sent
            now = settings.clock().now()
            rate, last_sent = counts.sent - last_sent, counts.sent
            print(
                f"\r{month_of(now, base.timezone)} {now.astimezone(zone(base.timezone)):%H:%M:%S} | "
                f"{counts.sent:,} records {rate:,}/s | suspends {summary.suspends:,} "
                f"(pool {summary.pool_stops:,}) "
                f"restores {summary.restores:,} cancels {summary.cancels:,} | "
                f"alerts {summary.alerts:,} | dead letters {summary.dead_letters:,} | "
                f"applied {summary.applied:,} failed {summary.refused:,} "
                f"resends {summary.resends:,} drift {summary.drifts:,}   ",
                end="",
                flush=True,
            )

        ended, status = await _until_done(worker, feed, stop, duration, show)
        if status:
            ended += f"; see {log_path}"
        print()
        failed = await _finish(feed, watch)
        if failed is not None:
            say(f"demo: the feed failed: {failed or type(failed).__name__}")
            status = 1
        say(f"demo: {ended}; feed stopped")
        say(
            f"demo: {counts}; worker sent {summary.suspends} suspends, {summary.restores} restores, "
            f"{summary.alerts} alerts, {summary.dead_letters} dead letters; provisioning applied "
            f"{summary.applied} and refused {summary.refused}, {summary.resends} resends, "
            f"{summary.drifts} drifts"
        )
        return status
    finally:
        _stop_worker(provision)
        _stop_worker(worker)
        stop.close()
