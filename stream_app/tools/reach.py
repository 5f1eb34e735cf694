"""Does Kafka answer? Asked before a command that needs it starts, for one clear line when not.

Without this, a command pointed at a broker that is not there fails deep inside aiokafka
or Faust: a traceback (topic creation, the demo) or a screen of log lines (the worker).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping

from aiokafka.client import AIOKafkaClient

from ..settings import Settings

WAIT = 5.0
"""Seconds to keep asking: a broker that is just starting gets that long."""


class Unreachable(Exception):
    """No broker answers; the message is the one line to show."""


def check(settings: Settings, env: Mapping[str, str] | None = None, wait: float = WAIT) -> None:
    """Return when a broker answers a metadata request at the configured servers, else
    raise :class:`Unreachable` saying where it looked and what to do."""
    cause = _ask(settings, wait)
    if cause is None:
        return
    source = os.environ if env is None else env
    servers = settings.bootstrap_servers
    if source.get("KAFKA_BOOTSTRAP_SERVERS"):
        advice = (
            "start that broker or correct KAFKA_BOOTSTRAP_SERVERS (unset, stream-app uses "
            "the local broker `make run` starts)"
        )
    else:
        advice = (
            "KAFKA_BOOTSTRAP_SERVERS is unset, so this is the local broker's address: start it with "
            "`make broker-start` (it listens on STREAM_APP_KAFKA_PORT), or set KAFKA_BOOTSTRAP_SERVERS"
        )
    raise Unreachable(f"no Kafka broker answers at {servers} ({cause}): {advice}")


def _ask(settings: Settings, wait: float) -> str | None:
    """None when the broker answered, else the last reason it did not."""
    reasons = _Reasons()
    quiet = logging.getLogger("aiokafka")
    level, propagate = quiet.level, quiet.propagate
    # aiokafka logs each failed attempt; they become the one line's cause instead.
    quiet.addHandler(reasons)
    quiet.setLevel(logging.WARNING)
    quiet.propagate = False
    try:
        return asyncio.run(_probe(settings, wait, reasons))
    finally:
        quiet.removeHandler(reasons)
        quiet.setLevel(level)
        quiet.propagate = propagate


async def _probe(settings: Settings, wait: float, reasons: _Reasons) -> str | None:
    deadline = time.monotonic() + wait
    while True:
        left = deadline - time.monotonic()
        client = AIOKafkaClient(**settings.kafka_options(), request_timeout_ms=int(max(left, 1.0) * 1000))
        try:
            await asyncio.wait_for(client.bootstrap(), max(left, 1.0))
            return None
        except Exception as exc:  # refused, timed out, TLS or SASL failures: all say "no"
            failure = reasons.last or f"{type(exc).__name__}: {exc}"
        finally:
            await client.close()
        if time.monotonic() + 0.5 > deadline:
            return failure
        await asyncio.sleep(0.5)


class _Reasons(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        # 'Unable connect to "host:port": <error>': the address is said already
        args = record.args if isinstance(record.args, tuple) else ()
        error = args[-1] if args and isinstance(args[-1], BaseException) else None
        self.last = str(error) if error is not None else record.getMessage()
