"""The worker's summary of dead letters in its log, on a fake clock; and how a dead
letter's payload is shown to a person (shared with `stream-app deadletters`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from stream_app.domain.outputs import dead_letter
from stream_app.ops.letters import describe_payload, excerpt
from stream_app.worker.refusals import Refusals


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeSchedule:
    def __init__(self) -> None:
        self.calls: list[tuple[float, Callable[[], None]]] = []

    def __call__(self, delay: float, callback: Callable[[], None]) -> object:
        self.calls.append((delay, callback))
        return object()


def letter(
    offset: int, error: str = "invalid_json", payload: bytes = b"not json", topic: str = "sim.usage"
) -> Any:
    return dead_letter(topic, 3, offset, error, f"detail of {offset}", payload).value


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    caplog.set_level(logging.WARNING, logger="test.refusals")

    def lines() -> list[str]:
        found = [r.getMessage() for r in caplog.records if r.name == "test.refusals"]
        caplog.clear()
        return found

    return lines


def test_the_first_refusal_is_logged_at_once_with_where_why_and_the_payload(
    logged: Callable[[], list[str]],
) -> None:
    refusals = Refusals(logging.getLogger("test.refusals"), clock=FakeClock(), schedule=FakeSchedule())
    refusals.add(letter(1234))
    assert logged() == [
        "refused 1 message from sim.usage: invalid_json; e.g. sim.usage[3]@1234: detail of 1234; "
        "payload (8 bytes): not json"
    ]


def test_at_most_one_line_a_minute_per_topic_and_error_with_the_count_held_back(
    logged: Callable[[], list[str]],
) -> None:
    clock, schedule = FakeClock(), FakeSchedule()
    refusals = Refusals(logging.getLogger("test.refusals"), clock=clock, schedule=schedule)
    refusals.add(letter(1))
    logged()
    for offset in range(2, 7):
        clock.now += 5
        refusals.add(letter(offset))
    refusals.add(letter(7, error="bad_iccid"))  # another error: its own line, at once
    assert logged() == [
        "refused 1 message from sim.usage: bad_iccid; e.g. sim.usage[3]@7: detail of 7; "
        "payload (8 bytes): not json"
    ]
    refusals.add(letter(8, topic="sim.billing"))  # another topic: its own line too
    assert len(logged()) == 1
    # the held-back count is due 60 s after the first line, asked for once
    assert [round(delay) for delay, _ in schedule.calls] == [55]
    clock.now += 30  # 55 s after the first line: not yet
    schedule.calls[0][1]()
    assert logged() == []
    clock.now += 5
    schedule.calls[-1][1]()
    assert logged() == [
        "refused 5 messages from sim.usage: invalid_json in the last 60 s (6 since start); "
        "e.g. sim.usage[3]@2: detail of 2; payload (8 bytes): not json"
    ]
    # nothing held back any more: no line and nothing scheduled
    calls = len(schedule.calls)
    clock.now += 120
    refusals.flush()
    assert logged() == [] and len(schedule.calls) == calls
    # a minute since its last line: the next one is logged at once again
    refusals.add(letter(9))
    assert logged() == [
        "refused 1 message from sim.usage: invalid_json in the last 120 s (7 since start); "
        "e.g. sim.usage[3]@9: detail of 9; payload (8 bytes): not json"
    ]


def test_the_json_log_carries_the_counts_and_the_example(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="test.refusals")
    Refusals(logging.getLogger("test.refusals"), clock=FakeClock(), schedule=FakeSchedule()).add(
        letter(5, error="key_mismatch", payload=b'{"iccid": "89860012345678901234"}')
    )
    [record] = caplog.records
    fields = record.fields  # type: ignore[attr-defined]
    assert fields["deadletter_topic"] == "sim.usage" and fields["error"] == "key_mismatch"
    assert (fields["count"], fields["total"]) == (1, 1)
    assert fields["example"] == {
        "where": "sim.usage[3]@5",
        "detail": "detail of 5",
        "payload": '{"iccid": "89860012345678901234"}',
    }


async def test_in_the_worker_a_held_back_count_is_written_without_another_letter(
    logged: Callable[[], list[str]],
) -> None:
    refusals = Refusals(logging.getLogger("test.refusals"), interval=0.05)  # the event loop's timer
    refusals.add(letter(1))
    refusals.add(letter(2))
    assert len(logged()) == 1
    lines: list[str] = []
    for _ in range(200):
        await asyncio.sleep(0.05)
        lines = logged()
        if lines:
            break
    assert len(lines) == 1 and lines[0].startswith(
        "refused 1 message from sim.usage: invalid_json in the last"
    )


def test_a_payload_is_text_when_utf8_with_control_characters_escaped_and_cut_when_long() -> None:
    assert excerpt('{"名": 1}\n\x00'.encode()) == '{"名": 1}\\n\\x00'
    long = excerpt(b"x" * 500, limit=20)
    assert long == "x" * 20 + "…"
    assert excerpt(b"x" * 20, limit=20) == "x" * 20


def test_a_payload_that_is_not_utf8_is_shown_as_hex() -> None:
    value = dead_letter("sim.usage", 0, 1, "invalid_json", "d", b"\xff\xfe\x00ab").value
    assert describe_payload(value) == "payload (5 bytes, not UTF-8): hex ff fe 00 61 62"
    assert excerpt(bytes(range(200)) + b"\xff", limit=30) == "hex " + bytes(range(10)).hex(" ") + " …"
    assert describe_payload(dead_letter("t", 0, 1, "empty", "d", b"").value) == "payload: empty"


def test_a_payload_cut_on_the_topic_says_how_long_it_was() -> None:
    value = dead_letter("sim.usage", 0, 1, "too_large", "d", b"a" * 300_000).value
    assert describe_payload(value, limit=5) == "payload (300,000 bytes, first 262,144 kept): aaaaa…"
