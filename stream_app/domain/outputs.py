"""Output messages, built as plain JSON-ready dicts with deterministic ids (R16).

An id is a hash of what caused the output, never of the wall clock, so a replay or a
reprocessing after a crash produces the same id and consumers can de-duplicate.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from typing import Any, NamedTuple

from .timeutil import format_time

COMMANDS, ALERTS, AUDIT, CHARGES, DEADLETTER = "commands", "alerts", "audit", "charges", "deadletter"
POOL_USAGE, POOL_NOTICES = "pool_usage", "pool_notices"
"""Internal: what members count for their pool (keyed by pool id), and what a pool tells
its members (keyed by ICCID)."""


class Output(NamedTuple):
    """One message for an output topic, named by its logical topic (see topics.py)."""

    topic: str
    key: str
    value: dict[str, Any]


def derive_id(*parts: object) -> str:
    text = "\x1f".join("" if p is None else str(p) for p in parts)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def command(
    iccid: str,
    action: str,
    reason: str | None,
    trigger: str,
    at: datetime,
    reasons: set[str],
    cause: str | None,
    occasion: str,
    *,
    speed_kbps: int | None = None,
    pool_id: str | None = None,
) -> Output:
    """``occasion`` names what made this command unique when there is no cause (a month).

    ``attempt`` is 1: the first send (a resend repeats the id with the next attempt)."""
    # A pool's effects may be caused by a different record from run to run (live, which
    # member's record reached the pool depends on timing): their ids leave the cause out.
    named_by = None if pool_id is not None else cause
    value: dict[str, Any] = {
        "command_id": derive_id("command", iccid, action, reason, trigger, named_by, occasion),
        "iccid": iccid,
        "action": action,
        "reason": reason,
        "trigger": trigger,
        "at": format_time(at),
        "reasons": sorted(reasons),
        "cause": cause,
        "attempt": 1,
    }
    if speed_kbps is not None:
        value["speed_kbps"] = speed_kbps
    if pool_id is not None:
        value["pool_id"] = pool_id
    return Output(COMMANDS, iccid, value)


def audit(
    iccid: str,
    change: str,
    reason: str,
    trigger: str,
    at: datetime,
    before: set[str],
    after: set[str],
    status_before: str,
    status_after: str,
    cause: str | None,
    occasion: str,
    pool_id: str | None = None,
) -> Output:
    named_by = None if pool_id is not None else cause  # as for the commands of a pool
    value: dict[str, Any] = {
        "audit_id": derive_id("audit", iccid, change, reason, trigger, named_by, occasion),
        "iccid": iccid,
        "at": format_time(at),
        "change": change,
        "reason": reason,
        "trigger": trigger,
        "cause": cause,
        "reasons_before": sorted(before),
        "reasons_after": sorted(after),
        "status_before": status_before,
        "status_after": status_after,
    }
    if pool_id is not None:
        value["pool_id"] = pool_id
    return Output(AUDIT, iccid, value)


def alert(
    iccid: str,
    kind: str,
    at: datetime,
    cause: str | None,
    occasion: str,
    **figures: Any,
) -> Output:
    value: dict[str, Any] = {
        "alert_id": derive_id("alert", iccid, kind, occasion),
        "iccid": iccid,
        "kind": kind,
        "at": format_time(at),
        "cause": cause,
    }
    for name, figure in figures.items():
        value[name] = format_time(figure) if isinstance(figure, datetime) else figure
    return Output(ALERTS, iccid, value)


def pool_alert(
    pool: str, kind: str, at: datetime, cause: str | None, occasion: str, **figures: Any
) -> Output:
    """A pool's alert (R20): keyed by the pool id, with no ICCID; ``figures`` name it."""
    value: dict[str, Any] = {
        "alert_id": derive_id("alert", "pool", pool, kind, occasion),
        "iccid": None,
        "kind": kind,
        "at": format_time(at),
        "cause": cause,
    }
    for name, figure in figures.items():
        value[name] = format_time(figure) if isinstance(figure, datetime) else figure
    return Output(ALERTS, pool, value)


def pool_report(pool_id: str, value: dict[str, Any]) -> Output:
    return Output(POOL_USAGE, pool_id, value)


def pool_notice(iccid: str, value: dict[str, Any]) -> Output:
    return Output(POOL_NOTICES, iccid, value)


MAX_DEAD_LETTER_PAYLOAD = 256 * 1024
"""Original bytes kept in a dead letter; a larger payload is cut (its length and sha256
are kept), so the dead letter itself stays under Kafka's message size limit."""


def dead_letter(
    topic: str,
    partition: int,
    offset: int,
    error: str,
    detail: str,
    payload: bytes,
    key: str = "",
) -> Output:
    value = {
        "deadletter_id": derive_id("deadletter", topic, partition, offset),
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "error": error,
        "detail": detail,
        "payload_b64": base64.b64encode(payload[:MAX_DEAD_LETTER_PAYLOAD]).decode("ascii"),
    }
    if len(payload) > MAX_DEAD_LETTER_PAYLOAD:
        value["payload_bytes"] = len(payload)
        value["payload_sha256"] = hashlib.sha256(payload).hexdigest()
    return Output(DEADLETTER, key, value)


class Rejection(NamedTuple):
    """An input the engine refused after validation (e.g. beyond the dedupe horizon).

    The engine does not know where the input came from; the caller turns this into a
    dead letter with topic, partition, offset and the original bytes.
    """

    error: str
    detail: str


def charge(
    iccid: str, month: str, at: datetime, amount: int, currency: str, kind: str, occasion: str
) -> Output:
    """``occasion`` names the expiry being charged for, so a number that lives again
    and expires again in the same month is charged under a new id."""
    return Output(
        CHARGES,
        iccid,
        {
            "charge_id": derive_id("charge", iccid, month, kind, occasion),
            "iccid": iccid,
            "month": month,
            "at": format_time(at),
            "amount": amount,
            "currency": currency,
            "kind": kind,
        },
    )
