"""Logs: human-readable by default, JSON lines with STREAM_APP_LOG_FORMAT=json; a failure that
repeats (a broker outage) is logged once per condition per 10 s."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from datetime import UTC, datetime
from typing import Any

import orjson


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a record's ``fields`` extra is merged in."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def logging_config(log_format: str, level: str) -> dict[str, Any] | None:
    """A dictConfig for Faust's worker; None keeps Faust's own human-readable format."""
    if log_format != "json":
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "stream_app.worker.logs.JsonFormatter"}},
        "handlers": {
            "stdout": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}
        },
        "root": {"level": level.upper(), "handlers": ["stdout"]},
    }


REPEAT_WINDOW = 10.0
"""Seconds during which a condition is logged at most once."""


class Repeats(logging.Filter):
    """At most one warning or error per condition per ``window`` seconds.

    With its broker down, aiokafka logs the same few failures about a hundred times a
    second (every reconnect, metadata refresh, fetch and produce). A *condition* is a
    record's logger, level and message template (before its arguments are filled in),
    or the ``condition`` the record names in its ``extra``. The first record of a
    condition in a window is logged, with how many like it were left out before it;
    the rest of the window's are dropped. Info and debug records always pass.
    """

    def __init__(self, window: float = REPEAT_WINDOW, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window = window
        self.clock = clock
        self._seen: dict[Hashable, tuple[float, int]] = {}
        """Per condition: when it was last logged, and how many were dropped since."""
        self._lock = threading.Lock()  # Faust's consumer thread logs too

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        decided: bool | None = getattr(record, "_repeats_passed", None)
        if decided is not None:  # the same record, at the root logger's next handler
            return decided
        passed = self._passes(record)
        record._repeats_passed = passed
        return passed

    def _passes(self, record: logging.LogRecord) -> bool:
        key: Hashable = getattr(record, "condition", None) or (record.name, record.levelno, str(record.msg))
        with self._lock:
            now = self.clock()
            last, dropped = self._seen.get(key, (None, 0))
            if last is not None and now - last < self.window:
                self._seen[key] = (last, dropped + 1)
                return False
            self._seen[key] = (now, 0)
            if len(self._seen) > 10_000:  # messages formatted before logging make new keys
                self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.window}
        if dropped:
            record.msg = f"{record.msg} [{dropped} more like this not logged]"
        return True


def limit_repeats(worker: Any, repeats: logging.Filter | None = None) -> None:
    """Filter every handler of the root logger through ``repeats`` once Faust's ``worker``
    has set logging up (it replaces the root handlers when it starts)."""
    repeats = repeats or Repeats()
    configured = worker.on_setup_root_logger

    def on_setup_root_logger(logger: logging.Logger, level: int) -> None:
        configured(logger, level)
        for handler in logger.handlers:
            handler.addFilter(repeats)

    worker.on_setup_root_logger = on_setup_root_logger
