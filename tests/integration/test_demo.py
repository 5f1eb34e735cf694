"""`make run`'s demo, run for a few seconds against the session's broker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
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
    assert not Path(f"/proc/{provision.group(1)}").exists()
    assert "provision: stopped by SIGTERM" in Path(provision.group(2)).read_text()
