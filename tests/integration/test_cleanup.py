"""`make bench`, `make bench-pools` and `make chaos` interrupted (Ctrl-C, `timeout`, kill): the broker and the
workers they started are stopped, whether the signal comes while the broker starts or
while a worker runs. Both scripts run for real with tiny sizes and their own broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.integration

SCRIPTS = {
    "bench": [
        sys.executable,
        "bench/bench.py",
        "--records",
        "2000",
        "--sims",
        "200",
        "--memory-sims",
        "2000",
        "--latency-seconds",
        "2",
    ],
    "bench-pools": [sys.executable, "bench/pools.py", "--members", "2000"],
    "chaos": [
        sys.executable,
        "-m",
        "tests.integration.chaos",
        "--scenarios",
        "single",
        "--records",
        "2000",
        "--sims",
        "100",
        "--kills",
        "1",
        "--partitions",
        "2",
    ],
}
# where each one's first worker writes its log, under its temporary folder
WORKER_LOGS = {
    "bench": "stream-app-bench-*/worker/worker-*.log",
    "bench-pools": "stream-app-bench-pools-*/empty/worker-*.log",
    "chaos": "stream-app-chaos-*/single/worker-0/*.log",
}
BROKER_PIDS = {
    "bench": "stream-app-bench-*/kafka/broker.pid",
    "bench-pools": "stream-app-bench-pools-*/kafka/broker.pid",
    "chaos": "stream-app-chaos-*/kafka/broker.pid",
}


def parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def descendants(root: int) -> set[int]:
    found: set[int] = set()
    every = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    grew = True
    while grew:
        grew = False
        for pid in every:
            if pid not in found and parent_of(pid) in found | {root}:
                found.add(pid)
                grew = True
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie left to init is no running process


def wait_for(folder: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float = 240) -> Path:
    deadline = time.monotonic() + timeout
    while not (found := sorted(folder.glob(pattern))):
        assert proc.poll() is None, f"exited with {proc.returncode} before {pattern} appeared"
        assert time.monotonic() < deadline, f"no {pattern} in {timeout} s"
        time.sleep(0.1)
    return found[0]


@pytest.mark.parametrize(
    ("script", "signalled", "moment"),
    [
        ("bench", signal.SIGINT, "broker"),
        ("bench", signal.SIGINT, "worker"),  # kill -INT, or Ctrl-C of a background job
        ("bench", signal.SIGTERM, "worker"),  # timeout, kill
        ("bench-pools", signal.SIGINT, "broker"),
        ("bench-pools", signal.SIGTERM, "worker"),
        ("chaos", signal.SIGINT, "broker"),
        ("chaos", signal.SIGTERM, "worker"),
    ],
)
def test_an_interrupted_script_stops_its_broker_and_workers(
    kafka_jars: Path, tmp_path: Path, script: str, signalled: int, moment: str
) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # each starts a broker of its own
    log = (tmp_path / "out.log").open("wb")
    proc = subprocess.Popen(
        [
            *SCRIPTS[script],
            *(["--output", str(tmp_path / "results.json")] if script.startswith("bench") else []),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    started: set[int] = set()
    try:
        pid_file = wait_for(tmp_path, BROKER_PIDS[script], proc)
        broker = int(pid_file.read_text())
        if moment == "worker":
            wait_for(tmp_path, WORKER_LOGS[script], proc)
            # The log is opened just before the worker is forked (CI once looked in
            # between): wait for the process itself.
            deadline = time.monotonic() + 30
            while not descendants(proc.pid) - {broker} and time.monotonic() < deadline:
                time.sleep(0.05)
        started = descendants(proc.pid) | {broker}
        assert running(broker)
        proc.send_signal(signalled)
        status = proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    output = (tmp_path / "out.log").read_text(errors="replace")
    left = [pid for pid in started if running(pid)]
    for pid in left:  # never leave them running behind a failed test
        os.kill(pid, signal.SIGKILL)
    assert left == [], output
    assert status != 0, output
    assert "interrupted" in output.splitlines()[-1], output
    if moment == "worker":
        assert len(started) >= 2  # a broker and at least one worker were running
