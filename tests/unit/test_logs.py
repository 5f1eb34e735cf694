from __future__ import annotations

import logging

import orjson

from stream_app.worker.logs import JsonFormatter, logging_config


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
