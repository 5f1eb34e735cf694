from __future__ import annotations

import logging

import orjson

from stream_app.domain.outputs import dead_letter
from stream_app.worker.logs import JsonFormatter, Repeats, limit_repeats, logging_config
from stream_app.worker.refusals import Refusals


def test_json_logs_are_one_object_per_line_with_the_fields() -> None:
    record = logging.LogRecord("stream_app", logging.INFO, __file__, 1, "command %s", ("suspend",), None)
    record.fields = {"command_id": "abc", "iccid": "89860012345678901234"}
    entry = orjson.loads(JsonFormatter().format(record))
    assert entry["message"] == "command suspend"
    assert entry["command_id"] == "abc"
    assert entry["level"] == "info"


def test_text_logs_keep_fausts_format_and_json_installs_the_formatter() -> None:
    assert logging_config("text", "info") is None
    config = logging_config("json", "info")
    assert config is not None
    assert config["formatters"]["json"]["()"] == "stream_app.worker.logs.JsonFormatter"
    assert config["root"]["handlers"] == ["stdout"]


def _record(name: str, level: int, msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord(name, level, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def test_a_repeated_failure_is_logged_once_per_condition_per_window() -> None:
    now = [0.0]
    repeats = Repeats(window=10.0, clock=lambda: now[0])
    shown: list[str] = []
    # An outage: aiokafka's two usual failures ten times a second for 25 s, node ids varying.
    for tick in range(250):
        now[0] = tick / 10
        for record in (
            _record(
                "aiokafka.conn", logging.ERROR, "Unable connect to node with id %s: %s", tick % 3, "refused"
            ),
            _record("aiokafka.client", logging.ERROR, "Unable to update metadata from %s", [1]),
        ):
            if repeats.filter(record):
                shown.append(f"{now[0]:.1f} {record.name} {record.getMessage()}")
    assert shown == [
        "0.0 aiokafka.conn Unable connect to node with id 0: refused",
        "0.0 aiokafka.client Unable to update metadata from [1]",
        "10.0 aiokafka.conn Unable connect to node with id 1: refused [99 more like this not logged]",
        "10.0 aiokafka.client Unable to update metadata from [1] [99 more like this not logged]",
        "20.0 aiokafka.conn Unable connect to node with id 2: refused [99 more like this not logged]",
        "20.0 aiokafka.client Unable to update metadata from [1] [99 more like this not logged]",
    ]


def test_info_lines_distinct_conditions_and_named_conditions_are_not_merged() -> None:
    repeats = Repeats(window=10.0, clock=lambda: 0.0)
    commands = [_record("stream_app", logging.INFO, "command %s", n) for n in range(5)]
    assert all(repeats.filter(r) for r in commands)  # traffic, not a failure: every line
    assert repeats.filter(_record("aiokafka", logging.WARNING, "a"))
    assert not repeats.filter(_record("aiokafka", logging.WARNING, "a"))
    assert repeats.filter(_record("aiokafka", logging.ERROR, "a"))  # another level
    assert repeats.filter(_record("faust", logging.WARNING, "a"))  # another logger
    # one line per held partition, though they share a template
    held = [_record("x", logging.ERROR, "%s held", p, condition=f"held sim.usage[{p}]") for p in (1, 2)]
    assert all(repeats.filter(r) for r in held)
    assert not repeats.filter(_record("x", logging.ERROR, "%s held", 1, condition="held sim.usage[1]"))


def test_a_record_reaching_several_handlers_is_decided_once() -> None:
    repeats = Repeats(window=10.0, clock=lambda: 0.0)
    record = _record("aiokafka", logging.ERROR, "down")
    assert repeats.filter(record) and repeats.filter(record)  # the root's second handler
    assert not repeats.filter(_record("aiokafka", logging.ERROR, "down"))


def test_the_filter_goes_on_every_root_handler_once_faust_has_set_logging_up() -> None:
    class Runner:
        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            logger.addHandler(logging.NullHandler())

    runner, root, repeats = Runner(), logging.Logger("root-for-the-test"), Repeats()
    limit_repeats(runner, repeats)
    runner.on_setup_root_logger(root, logging.INFO)
    assert [repeats in h.filters for h in root.handlers] == [True]


def test_refused_input_lines_per_topic_and_error_are_not_merged_by_the_limit() -> None:
    # refusals.py limits itself to a line a minute per topic and error; the repeat limit
    # must not drop the line of another topic or error that comes within 10 s.
    shown: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            shown.append(record.getMessage())

    logger = logging.Logger("test.refusals.limit")
    handler = Keep()
    handler.addFilter(Repeats(window=10.0, clock=lambda: 0.0))
    logger.addHandler(handler)
    refusals = Refusals(logger, clock=lambda: 0.0, schedule=lambda delay, callback: None)
    for topic, error in (
        ("sim.usage", "invalid_json"),
        ("sim.usage", "bad_iccid"),
        ("sim.billing", "invalid_json"),
    ):
        refusals.add(dead_letter(topic, 0, 1, error, "detail", b"x").value)
    assert [line.split(";")[0] for line in shown] == [
        "refused 1 message from sim.usage: invalid_json",
        "refused 1 message from sim.usage: bad_iccid",
        "refused 1 message from sim.billing: invalid_json",
    ]
