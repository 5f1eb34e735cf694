"""One input message -> one decision: decode, validate, call the engine, dead-letter.

Shared by the Faust agents and by replay, so both treat every message identically
(R16). Nothing here raises for bad input: every failure becomes a dead letter (R15),
and so does an unexpected error, so one poisoned message never stops a partition.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

from . import codec
from .domain import (
    InvalidInput,
    Output,
    Policy,
    SimState,
    apply_tick,
    balance_event,
    carrier_status,
    command_result,
    iccid_of,
    manual_request,
    new_state,
    subscription,
    usage_record,
)
from .domain.engine import Input, apply_input
from .domain.inputs import pool_notice
from .domain.outputs import dead_letter
from .topics import BILLING, COMMAND_RESULTS, INVENTORY, POOL_NOTICES, REQUESTS, SUBSCRIPTIONS, USAGE

log = logging.getLogger(__name__)


class Source(NamedTuple):
    """Where a message came from: its Kafka coordinates, or a replay line (offset)."""

    topic: str
    partition: int
    offset: int


class Decision(NamedTuple):
    iccid: str | None
    state: SimState | None
    """The SIM's new state to store, or None when nothing is to be stored."""
    outputs: list[Output]
    outcome: str
    """The engine's outcome (see domain.engine.Step), or invalid | error."""
    item: Input | None = None
    """The validated input, when it was valid."""
    addons: int = 0
    """Add-on packs the input made count (R22)."""


def parse(logical: str, raw: bytes | None, max_bytes: int, key: bytes | None = None) -> Input:
    """Decode and validate one message of input topic ``logical``; raises InvalidInput.

    ``key`` is the Kafka key; None only in replay, which has no keys. A SIM's state lives
    in the partition its key hashes to, and the hash is of the raw bytes, so the key
    must be exactly the normalised (upper-case) ICCID: a lower-case or missing key would
    put part of a SIM's messages in another partition (key_mismatch).
    """
    message = codec.decode_message(raw, max_bytes)
    if logical == USAGE:
        with contextlib.suppress(InvalidInput):
            record = usage_record(message)  # the common case, at once
            if key is None or key == record.iccid.encode():
                return record
    iccid = iccid_of(message)
    if key is not None and key != iccid.encode():
        raise InvalidInput("key_mismatch", "the Kafka key must be the message's ICCID in upper case")
    return validate(logical, message)


def validate(logical: str, message: dict[str, Any]) -> Input:
    """Validate an already decoded message of input topic ``logical``; raises InvalidInput."""
    if logical == USAGE:
        return usage_record(message)
    if logical == SUBSCRIPTIONS:
        return subscription(message)
    if logical == BILLING:
        return balance_event(message)
    if logical == REQUESTS:
        return manual_request(message)
    if logical == COMMAND_RESULTS:
        return command_result(message)
    if logical == INVENTORY:
        return carrier_status(message)
    if logical == POOL_NOTICES:
        return pool_notice(message)
    raise InvalidInput("unsupported_topic", f"{logical} is not an input topic")


def apply(
    item: Input,
    source: Source,
    raw: bytes | None,
    load: Callable[[str], SimState | None],
    now: datetime,
    policy: Policy,
) -> Decision:
    """Run the engine for one valid input; ``raw`` is kept for a dead letter."""
    iccid = item.iccid
    try:
        state = load(iccid) or new_state(iccid, now, policy)
        step = apply_input(state, item, now, policy)
    except Exception as exc:  # a bug must not stall the partition; keep the evidence
        log.exception("unexpected error on %s[%s]@%s", *source)
        return rejected(source, raw, iccid, "internal_error", repr(exc), "error")
    if step.rejection is not None:
        return rejected(source, raw, iccid, step.rejection.error, step.rejection.detail, step.outcome)
    return Decision(iccid, step.state, step.outputs, step.outcome, item, step.addons)


def decide(
    logical: str,
    raw: bytes | None,
    source: Source,
    load: Callable[[str], SimState | None],
    now: datetime,
    policy: Policy,
    max_bytes: int,
    key: bytes | None = None,
) -> Decision:
    """Parse and apply one message; never raises."""
    try:
        item = parse(logical, raw, max_bytes, key)
    except InvalidInput as exc:
        return rejected(source, raw, None, exc.code, exc.detail, "invalid")
    except Exception as exc:
        log.exception("unexpected error decoding %s[%s]@%s", *source)
        return rejected(source, raw, None, "internal_error", repr(exc), "error")
    return apply(item, source, raw, load, now, policy)


def decide_tick(state: SimState, now: datetime, policy: Policy) -> Decision:
    """Roll one SIM forward to ``now``; never raises (outcome ``error`` stores nothing)."""
    try:
        step = apply_tick(state, now, policy)
    except Exception:
        log.exception("rolling %s forward failed", state.iccid)
        return Decision(state.iccid, None, [], "error")
    return Decision(state.iccid, step.state, step.outputs, step.outcome)


def rejected(
    source: Source, raw: bytes | None, iccid: str | None, error: str, detail: str, outcome: str
) -> Decision:
    """A dead letter for a message that could not be applied; nothing is stored."""
    letter = dead_letter(
        source.topic, source.partition, source.offset, error, detail, raw or b"", key=iccid or ""
    )
    return Decision(iccid, None, [letter], outcome)
