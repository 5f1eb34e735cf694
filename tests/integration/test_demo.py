"""`make run`'s demo, run for a few seconds against the session's broker."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import worker_env

pytestmark = pytest.mark.integration


def test_demo_runs_a_worker_and_a_feed_and_prints_urls_progress_and_a_summary(kafka: str) -> None:
    env = {**os.environ, **worker_env(kafka)}
    result = subprocess.run(
        [sys.executable, "-m", "stream_app", "demo", "--sims", "50", "--rate", "100", "--duration", "8"],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    port = env["STREAM_APP_WEB_PORT"]
    assert f"demo: metrics  http://127.0.0.1:{port}/metrics" in out
    assert re.search(rf"demo: one SIM  http://127\.0\.0\.1:{port}/sims/8986\d{{16}}", out)
    progress = [line for line in out.replace("\r", "\n").splitlines() if " records " in line]
    assert progress, out
    summary = re.search(r"demo: 50 subscriptions, (\d+) records sent", out)
    assert summary is not None and int(summary.group(1)) > 0, out
    assert "the month ends in 90 s" in out
    # provisioning ran next to the worker, is counted on the live line, and was stopped
    provision = re.search(r"demo: provisioning \(a simulated carrier\) pid (\d+), log (\S+)", out)
    assert provision is not None, out
    assert re.search(r"applied \d+ failed \d+ resends \d+ drift \d+", out), out
    assert gone(int(provision.group(1)))
    assert "provision: stopped by SIGTERM" in Path(provision.group(2)).read_text()


class Demo:
    """`stream-app demo` started as a background job would be: SIGINT ignored."""

    def __init__(self, kafka: str) -> None:
        self.env = {**os.environ, **worker_env(kafka)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream_app", "demo", "--sims", "50", "--rate", "100"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # noqa: PLW1509
        )
        self.out = b""
        self.worker_pid = self.provision_pid = 0

    def wait_for_progress(self, timeout: float = 120) -> None:
        """Until the feed has sent records (the worker is ready and fed)."""
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        deadline = time.monotonic() + timeout
        while not re.search(rb"\r\d{4}-\d{2} \d\d:\d\d:\d\d \| [1-9][\d,]* records", self.out):
            assert self.proc.poll() is None, self.out.decode()
            assert time.monotonic() < deadline, self.out.decode()
            self.out += self.proc.stdout.read() or b""
            time.sleep(0.2)
        found = re.search(rb"demo: worker pid (\d+)", self.out)
        assert found is not None
        self.worker_pid = int(found.group(1))
        found = re.search(rb"demo: provisioning \(a simulated carrier\) pid (\d+)", self.out)
        assert found is not None
        self.provision_pid = int(found.group(1))

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        os.set_blocking(self.proc.stdout.fileno(), True)
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, (self.out + out).decode(), err.decode()


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # a zombie waiting for init is no running process


@pytest.mark.parametrize("signalled", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_demo_cleanly_with_a_summary_and_its_worker(kafka: str, signalled: int) -> None:
    demo = Demo(kafka)
    try:
        demo.wait_for_progress()
        demo.proc.send_signal(signalled)
        status, out, err = demo.finish()
    finally:
        demo.proc.kill()
    assert status == 0, out + err
    assert f"demo: stopped by {signal.Signals(signalled).name}; feed stopped" in out
    assert re.search(r"demo: 50 subscriptions, [1-9]\d* records sent .*; worker sent \d+ suspends", out), out
    assert "Task was destroyed" not in err and "Traceback" not in err, err
    assert gone(demo.worker_pid) and gone(demo.provision_pid)


def test_the_demo_stops_its_feed_and_says_so_when_its_worker_dies(kafka: str) -> None:
    demo = Demo(kafka)
    try:
        demo.wait_for_progress()
        os.kill(demo.worker_pid, signal.SIGKILL)
        status, out, err = demo.finish()
    finally:
        demo.proc.kill()
    assert status == 1, out + err
    assert "demo: the worker exited with status -9; see " in out
    assert re.search(r"feed stopped\ndemo: 50 subscriptions, [1-9]\d* records sent", out), out
    assert "Task was destroyed" not in err and "Traceback" not in err, err
    assert gone(demo.provision_pid)
