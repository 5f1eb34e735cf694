"""Builders for operator-style scenarios: subscriptions, usage records, replay runs."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import orjson

from stream_app.domain.timeutil import format_time, parse_time
from stream_app.settings import Settings
from stream_app.tools.replay import replay_lines

ICCID = "89860012345678901234"
OTHER = "898602B9201650109563"
GB = 1_000_000_000
_ids = itertools.count(1)


def t(text: str) -> datetime:
    return parse_time(text)


def subscription_msg(
    iccid: str = ICCID,
    quota: int | None = 10 * GB,
    auto_suspend: bool = True,
    updated_at: str = "2026-03-01T00:00:00+08:00",
    **extra: Any,
) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "iccid": iccid,
        "plan_id": "iot-10g",
        "quota_bytes": quota,
        "valid_from": "2026-01-01T00:00:00+08:00",
        "expires_at": None,
        "auto_suspend": auto_suspend,
        "updated_at": updated_at,
    }
    msg.update(extra)
    return msg


def usage_msg(
    start: str,
    total: int,
    iccid: str = ICCID,
    record_id: str | None = None,
    minutes: int = 10,
) -> dict[str, Any]:
    begin = parse_time(start)
    return {
        "record_id": record_id or f"r{next(_ids)}",
        "iccid": iccid,
        "carrier": "cmcc",
        "start": format_time(begin),
        "end": format_time(begin + timedelta(minutes=minutes)),
        "bytes_up": total // 3,
        "bytes_down": total - total // 3,
    }


def line(topic: str, value: dict[str, Any]) -> bytes:
    return orjson.dumps({"topic": topic, "value": value})


def sub_line(**kwargs: Any) -> bytes:
    return line("sim.subscriptions", subscription_msg(**kwargs))


def usage_line(start: str, total: int, **kwargs: Any) -> bytes:
    return line("sim.usage", usage_msg(start, total, **kwargs))


def tick_line(at: str) -> bytes:
    return orjson.dumps({"tick": at})


def replay(lines: Iterable[bytes], env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Run replay and return the decoded output lines."""
    settings = Settings.from_env(env or {})
    return [orjson.loads(out) for out in replay_lines(settings, lines)]


def of(outputs: list[dict[str, Any]], topic: str, **match: Any) -> list[dict[str, Any]]:
    """The values on ``topic`` whose fields equal ``match``."""
    return [
        o["value"]
        for o in outputs
        if o["topic"] == topic and all(o["value"].get(k) == v for k, v in match.items())
    ]


def balance_line(at: str, balance: int, iccid: str = ICCID, event_id: str | None = None) -> bytes:
    return line(
        "sim.billing",
        {
            "event_id": event_id or f"b{next(_ids)}",
            "iccid": iccid,
            "at": at,
            "balance": balance,
            "currency": "CNY",
        },
    )


def request_line(at: str, action: str, iccid: str = ICCID, request_id: str | None = None) -> bytes:
    return line(
        "sim.requests",
        {
            "request_id": request_id or f"q{next(_ids)}",
            "iccid": iccid,
            "action": action,
            "at": at,
            "requested_by": "ops@example.com",
        },
    )


def commands(outputs: list[dict[str, Any]], iccid: str = ICCID) -> list[tuple[str, str, str]]:
    """(action, reason, trigger) of the SIM's commands, in order."""
    return [
        (o["value"]["action"], o["value"]["reason"], o["value"]["trigger"])
        for o in outputs
        if o["topic"] == "sim.commands" and o["key"] == iccid
    ]


def expiring(**kwargs: Any) -> bytes:
    """A subscription line whose plan expires (by default on 15 March 2026)."""
    kwargs.setdefault("expires_at", "2026-03-15T00:00:00+08:00")
    return sub_line(**kwargs)
