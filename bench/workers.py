"""The workers the bench runs: real `stream-app worker` processes on the bench's topics,
their readiness and resident memory, and the clean-up of whatever the run started."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson
from fleet import PARTITIONS, WORKER_NOW

from stream_app.domain.timeutil import format_time
from stream_app.tools.interrupt import interrupt_on_signals
from stream_app.tools.localbroker import KAFKA_JVM_OPTS, LocalBroker, free_port
from stream_app.topics import REGISTRY, env_name

ROOT = Path(__file__).resolve().parents[1]


def check_aiokafka_c_extension() -> None:
    from aiokafka.record.default_records import DefaultRecordBatch

    if not DefaultRecordBatch.__module__.startswith("aiokafka.record._crecords"):
        sys.exit(
            "bench: aiokafka's C extension is not in use (pure-Python records cost ~30 us "
            "each in CRC alone); reinstall aiokafka from a binary wheel"
        )


WORKER = ["-m", "stream_app", "worker"]


class Worker:
    def __init__(self, env: dict[str, str], data_dir: Path, command: list[str] = WORKER) -> None:
        """``command``: the Python arguments that run the worker (another for a baseline)."""
        self.env = {**os.environ, **env, "STREAM_APP_DATA_DIR": str(data_dir)}
        self.port = int(env["STREAM_APP_WEB_PORT"])
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = data_dir / f"worker-{uuid.uuid4().hex[:6]}.log"
        self.started = time.perf_counter()
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, *command],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        STARTED.append(self)

    def wait_ready(self, timeout: float = 900) -> float:
        """Until /readyz answers 200: partitions owned and tables recovered."""
        url = f"http://127.0.0.1:{self.port}/readyz"
        deadline = time.perf_counter() + timeout
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return time.perf_counter()
            except OSError:
                pass
            if self.proc.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError("worker failed:\n" + self.log.read_text(errors="replace")[-3000:])
            time.sleep(0.05)

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def bench_env(bootstrap: str, suffix: str, **extra: str) -> dict[str, str]:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "STREAM_APP_ID": f"bench-{suffix}",
        "STREAM_APP_PARTITIONS": str(PARTITIONS),
        "STREAM_APP_STANDBY_REPLICAS": "0",
        "STREAM_APP_WEB_PORT": str(free_port()),
        "STREAM_APP_LOG_LEVEL": "warning",
        "STREAM_APP_CLOCK": "simulated",
        "STREAM_APP_CLOCK_START": format_time(WORKER_NOW),
        "STREAM_APP_CLOCK_SPEED": "1",
        "STREAM_APP_CLOCK_ANCHOR": str(time.time()),
        "STREAM_APP_FAUST_BROKER_SESSION_TIMEOUT": "10",
    }
    for spec in REGISTRY:
        env[env_name(spec.logical)] = f"{spec.default_name}.bench-{suffix}"
    env.update(extra)
    return env


def settled_rss(worker: Worker, timeout: float = 120) -> int:
    """RSS once it stops growing (after recovery the worker builds its due index)."""
    deadline = time.perf_counter() + timeout
    previous = worker.rss()
    while time.perf_counter() < deadline:
        time.sleep(3)
        current = worker.rss()
        if abs(current - previous) < previous * 0.005:
            return current
        previous = current
    return worker.rss()


def wait_books(worker: Worker, partitions: int, timeout: float = 600) -> float:
    """Until the worker has logged its books built (one line per partition)."""
    deadline = time.perf_counter() + timeout
    while worker.log.read_text(errors="replace").count(" pools, ") < partitions:
        if worker.proc.poll() is not None or time.perf_counter() > deadline:
            raise RuntimeError("books never built:\n" + worker.log.read_text(errors="replace")[-3000:])
        time.sleep(0.05)
    return time.perf_counter()


def own_broker(workdir: Path) -> str:
    """Start a broker of the run's own in ``workdir`` (stopped by stop_started); its address.

    It runs with Kafka's own JVM settings, as deployed, not the small broker of the
    tests: that one's serial collector stopped it for 158-270 ms about once per latency
    run, which put a burst of probes above 250 ms on every run (docs/performance.md)."""
    broker = LocalBroker(
        home=workdir / "kafka",
        port=free_port(),
        controller_port=free_port(),
        libs=LocalBroker(home=ROOT / ".kafka").ensure_jars(),
        jvm_options=KAFKA_JVM_OPTS,
    )
    STARTED.append(broker)
    return broker.start()


def show_results(results: dict[str, Any], output: str) -> None:
    """Write the results to ``output`` as JSON and print them as a table."""
    Path(output).write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print()
    print(f"{'figure':<36}{'value':>18}")
    for key, value in results.items():
        shown = (
            f"{value:,.2f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else value
        )
        print(f"{key:<36}{shown:>18}")
    print(f"\nwritten to {output}")


def run_script(main: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
    """Run a bench script; interrupted (Ctrl-C, `timeout`, kill), stop what it started."""
    interrupt_on_signals()
    try:
        asyncio.run(main())
    except KeyboardInterrupt as signalled:
        stop_started()
        print(f"{name}: interrupted ({signalled}); its broker and workers are stopped", file=sys.stderr)
        sys.stdout.flush()
        os._exit(1)  # the Kafka clients' sends cut short are dropped on purpose


# Interrupted (Ctrl-C, `timeout`, kill) or not, the bench stops what it started: its
# broker runs in a session of its own and would outlive it otherwise.
STARTED: list[Worker | LocalBroker] = []


def stop_started() -> None:
    """Stop every worker and broker this run started, newest first (each stop is idempotent)."""
    while STARTED:
        STARTED.pop().stop()
