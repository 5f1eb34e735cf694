"""`stream-app audit ICCID --from FILE`: a SIM's audit trail from replay output, as the
table the documentation shows (the table is produced here by the real commands)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from stream_app.ops.audit import partition_of, render

from .scenario import GB, ICCID, OTHER, balance_line, sub_line, usage_line

ROOT = Path(__file__).resolve().parents[2]
HEADER = "at                    change"


def _run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream_app", *args],
        input=stdin.decode(),
        capture_output=True,
        text=True,
        env={**os.environ},
        check=False,
    )


def documented_table() -> str:
    """The audit table as the README (or docs/) shows it."""
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = path.read_text() if path.exists() else ""
        if HEADER in text:
            block = text[text.index(HEADER) :]
            return block[: block.index("```")].rstrip("\n")
    raise AssertionError("no audit table in README.md or docs/")


def replay_output(tmp_path: Path) -> Path:
    """Usage over quota on 20 March, a negative balance on the 25th, the month start and
    a payment on 2 April; and another SIM whose trail must not show."""
    lines = [
        sub_line(quota=1 * GB),
        sub_line(iccid=OTHER, quota=1 * GB),
        usage_line("2026-03-20T09:05:00+08:00", 2 * GB, record_id="cdr-7731"),
        usage_line("2026-03-20T09:05:00+08:00", 2 * GB, iccid=OTHER, record_id="cdr-other"),
        balance_line("2026-03-25T08:00:00+08:00", -100, event_id="bill-0325"),
        balance_line("2026-04-02T10:30:00+08:00", 0, event_id="pay-0402"),
    ]
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    replayed = _run("replay", str(source))
    assert replayed.returncode == 0, replayed.stderr
    output.write_text(replayed.stdout)
    return output


def test_the_documented_audit_table_is_what_audit_prints_from_a_replay(tmp_path: Path) -> None:
    output = replay_output(tmp_path)
    result = _run("audit", ICCID.lower(), "--from", str(output))
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip("\n") == documented_table()


def test_audit_reads_standard_input_and_gives_json_lines(tmp_path: Path) -> None:
    output = replay_output(tmp_path)
    result = _run("audit", OTHER, "--from", "-", "--json", stdin=output.read_bytes())
    records = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [(r["iccid"], r["change"], r["cause"]) for r in records] == [
        (OTHER, "reason_added", "cdr-other"),
        (OTHER, "reason_cleared", None),  # the month start
    ]


def test_audit_says_so_in_one_line_when_there_is_nothing_or_no_file(tmp_path: Path) -> None:
    output = replay_output(tmp_path)
    nothing = _run("audit", "89860099999999999999", "--from", str(output))
    assert (nothing.returncode, nothing.stdout) == (0, "")
    assert nothing.stderr == f"audit: no audit records for 89860099999999999999 in {output}\n"
    missing = _run("audit", ICCID, "--from", str(tmp_path / "missing.jsonl"))
    assert missing.returncode == 2
    assert missing.stderr == f"audit: {tmp_path / 'missing.jsonl'}: No such file or directory\n"
    bad = _run("audit", "12345", "--from", str(output))
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1 and "Traceback" not in bad.stderr


def test_the_table_marks_the_commands_a_change_sent() -> None:
    def record(change: str, before: str, after: str, reasons: list[str]) -> dict[str, object]:
        return {
            "at": "2026-05-01T00:00:00Z",
            "change": change,
            "reason": "expiry",
            "trigger": "grace_elapsed",
            "cause": None,
            "reasons_before": ["expiry"],
            "reasons_after": reasons,
            "status_before": before,
            "status_after": after,
        }

    table = render(
        [
            record("cancelled", "suspended", "cancelled", ["expiry"]),
            record("new_life", "cancelled", "active", []),
        ]
    ).splitlines()
    assert table[1].endswith("cancelled   (+ cancel command)")
    assert table[2].endswith("-> -       active")  # a new life sends no command


JAVA_MURMUR2 = {
    # Kafka's own test vectors for the Java client's murmur2 (UtilsTest.testMurmur2)
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_the_partition_is_the_one_a_kafka_producer_picks_for_the_key() -> None:
    for key, java_hash in JAVA_MURMUR2.items():
        for partitions in (1, 4, 8, 12):
            # the Java client's default partitioner: toPositive(murmur2(key)) % partitions
            assert partition_of(key, partitions) == (java_hash & 0x7FFFFFFF) % partitions, (key, partitions)
