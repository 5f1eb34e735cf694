"""The `stream-app` command as a user runs it (a real process, no broker needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from .scenario import GB, sub_line, tick_line, usage_line


def _run(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "stream_app", *args],
        input=stdin,
        capture_output=True,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_replay_reads_a_file_or_stdin_and_writes_json_lines(tmp_path: Path) -> None:
    lines = [
        sub_line(quota=1 * GB),
        usage_line("2026-03-10T00:00:00+08:00", 2 * GB),
        b"",
        b"not json",
        tick_line("2026-04-01T00:00:30+08:00"),
    ]
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    from_file = _run("replay", str(source))
    from_stdin = _run("replay", "-", stdin=source.read_bytes())
    assert from_file.returncode == 0, from_file.stderr
    assert from_file.stdout == from_stdin.stdout
    out = [orjson.loads(x) for x in from_file.stdout.splitlines()]
    assert [o["value"]["action"] for o in out if o["topic"] == "sim.commands"] == ["suspend", "restore"]
    [letter] = [o["value"] for o in out if o["topic"] == "sim.deadletter"]
    assert letter["offset"] == 4  # the blank line 3 still counts


def test_replay_uses_the_worker_settings_for_topic_names() -> None:
    raw = (
        sub_line(quota=1).replace(b"sim.subscriptions", b"crm.subs")
        + b"\n"
        + usage_line("2026-03-10T00:00:00+08:00", 5).replace(b"sim.usage", b"cdr.raw")
        + b"\n"
    )
    result = _run(
        "replay",
        env={
            "STREAM_APP_TOPIC_SUBSCRIPTIONS": "crm.subs",
            "STREAM_APP_TOPIC_USAGE": "cdr.raw",
            "STREAM_APP_TOPIC_COMMANDS": "prov.cmds",
        },
        stdin=raw,
    )
    out = [orjson.loads(x) for x in result.stdout.splitlines()]
    assert [o["topic"] for o in out if o["value"].get("action") == "suspend"] == ["prov.cmds"]


def test_bad_settings_are_all_reported_and_exit_2() -> None:
    result = _run("replay", env={"STREAM_APP_PARTITIONS": "-1", "STREAM_APP_TIMEZONE": "Nowhere"})
    assert result.returncode == 2
    assert b"STREAM_APP_PARTITIONS" in result.stderr and b"STREAM_APP_TIMEZONE" in result.stderr
