"""The `stream-app` command as a user runs it (a real process, no broker needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from stream_app.settings import VARIABLES
from stream_app.tools.localbroker import free_port

from .scenario import GB, sub_line, tick_line, usage_line


def _run(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None, unset: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[bytes]:
    environment = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(
        [sys.executable, "-m", "stream_app", *args],
        input=stdin,
        capture_output=True,
        env={**environment, **(env or {})},
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


@pytest.mark.parametrize(
    "command",
    [
        ["topics", "create"],
        ["worker"],
        ["demo", "--duration", "1"],
        ["feed", "--records", "1"],
        ["provision", "--seconds", "1"],
        ["deadletters"],
        ["audit", "89860012345678901234"],
    ],
    ids=lambda c: c[0],
)
def test_a_broker_that_does_not_answer_is_one_line_and_a_failure(command: list[str], tmp_path: Path) -> None:
    nobody = f"127.0.0.1:{free_port()}"  # a free port: nothing listens there
    result = _run(*command, env={"KAFKA_BOOTSTRAP_SERVERS": nobody, "STREAM_APP_DATA_DIR": str(tmp_path)})
    assert result.returncode == 1
    assert result.stdout == b""  # no worker log either
    stderr = result.stderr.decode()
    [line] = stderr.splitlines()
    assert line.startswith(f"stream-app {command[0]}: no Kafka broker answers at {nobody} ("), line
    assert "correct KAFKA_BOOTSTRAP_SERVERS" in line


def test_unset_the_servers_are_the_local_broker_s_and_the_line_says_how_to_start_it() -> None:
    port = free_port()
    result = _run(
        "topics", "create", env={"STREAM_APP_KAFKA_PORT": str(port)}, unset=("KAFKA_BOOTSTRAP_SERVERS",)
    )
    assert result.returncode == 1
    [line] = result.stderr.decode().splitlines()
    assert f"no Kafka broker answers at 127.0.0.1:{port} (" in line
    assert "`make broker-start`" in line


def test_a_bad_local_broker_port_is_reported_not_raised() -> None:
    result = _run("broker", "status", env={"STREAM_APP_KAFKA_PORT": "ninety"})
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        "broker: STREAM_APP_KAFKA_PORT='ninety': must be a port number"
    ]


COMMANDS = (
    *("worker", "demo", "replay", "feed", "provision", "sim", "sims", "audit", "deadletters", "settings"),
    *("topics", "broker"),
)


def test_every_command_says_what_it_does_its_formats_and_an_example() -> None:
    assert set(COMMANDS) <= set(_run("--help").stdout.decode().split())
    for command in COMMANDS:
        result = _run(command, "--help")
        text = result.stdout.decode()
        assert result.returncode == 0, command
        assert "example" in text, command
        assert "``" not in text, command
        description = text.split("\n\n")[1]
        assert len(description.split()) >= 15, (command, description)
    replay = _run("replay", "--help").stdout.decode()
    assert '{"topic": "sim.usage", "value":' in replay and '{"tick": ' in replay
    assert "offset is its line number" in replay
    worker = _run("worker", "--help").stdout.decode()
    assert "STREAM_APP_PARTITIONS     8" in worker and "stream-app settings" in worker


def test_a_missing_file_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    for args in (("replay", str(missing)), ("audit", "89860012345678901234", "--from", str(missing))):
        result = _run(*args)
        assert result.returncode == 2
        assert result.stderr.decode() == f"{args[0]}: {missing}: No such file or directory\n"
    folder = _run("replay", str(tmp_path))
    assert folder.returncode == 2 and folder.stderr.decode() == f"replay: {tmp_path}: Is a directory\n"


def test_a_misspelled_setting_stops_a_command_and_names_the_fix() -> None:
    result = _run("replay", env={"STREAM_APP_PARTITONS": "4"}, stdin=b"")
    assert result.returncode == 2
    assert result.stderr.decode() == (
        "invalid settings:\n  STREAM_APP_PARTITONS=4: unknown setting; did you mean STREAM_APP_PARTITIONS?\n"
    )


def test_settings_lists_every_variable_its_default_and_value_with_secrets_masked() -> None:
    token = "s3cret-token-0123456789"
    env = {
        "STREAM_APP_API_TOKEN": token,
        "STREAM_APP_PARTITIONS": "4",
        "STREAM_APP_FAUST_WEB_BIND": "0.0.0.0",
    }
    result = _run("settings", env=env)
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr
    assert token not in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    for variable in VARIABLES:
        assert variable.name in rows, variable.name
    assert rows["STREAM_APP_PARTITIONS"][1:3] == ["8", "4"]
    assert rows["STREAM_APP_API_TOKEN"][1:3] == ["-", "<secret>"]
    assert rows["STREAM_APP_TIMEZONE"][1:3] == ["Asia/Shanghai", "-"]
    assert "STREAM_APP_FAUST_WEB_BIND=0.0.0.0" in out and "STREAM_APP_KAFKA_HOME" in out
    wrong = _run("settings", env={"STREAM_APP_PARTITONS": "4", "STREAM_APP_TIMEZONE": "Mars/Olympus"})
    assert wrong.returncode == 2
    problems = wrong.stderr.decode()
    assert "STREAM_APP_PARTITONS=4: unknown setting; did you mean STREAM_APP_PARTITIONS?" in problems
    assert "STREAM_APP_TIMEZONE='Mars/Olympus'" in problems
