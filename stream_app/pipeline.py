"""One input message -> one decision: decode, validate, call the engine, dead-letter.

Shared by the Faust agents and by replay, so both treat every message identically
(R16). Nothing here raises for bad input: every failure becomes a dead letter (R15),
and so does an unexpected error, so one poisoned message never stops a partition.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple

from . import codec
from .domain import (
    InvalidInput,
    Output,
    Policy,
    SimState,
    apply_subscription,
    apply_tick,
    apply_usage,
    iccid_of,
    new_state,
    subscription,
    usage_record,
)
from .domain.outputs import dead_letter
from .topics import SUBSCRIPTIONS, USAGE

log = logging.getLogger(__name__)

HANDLED_INPUTS = (USAGE, SUBSCRIPTIONS)


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
    """accepted | duplicate | late | unknown_sim | stale | invalid | rejected | error"""


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
    """Decide one message. ``key`` is the Kafka key, None in replay.

    The key must be the message's ICCID: a SIM's state lives in the partition its key
    hashes to, so a message keyed otherwise would split that state (key_mismatch).
    """
    iccid: str | None = None
    try:
        message = codec.decode_message(raw, max_bytes)
        iccid = iccid_of(message)
        if key is not None and key.decode(errors="replace").upper() != iccid:
            raise InvalidInput("key_mismatch", "the Kafka key must be the message's ICCID")
        state = load(iccid) or new_state(iccid, now, policy)
        if logical == USAGE:
            step = apply_usage(state, usage_record(message), now, policy)
        elif logical == SUBSCRIPTIONS:
            step = apply_subscription(state, subscription(message), now, policy)
        else:
            raise InvalidInput("unsupported_topic", f"{logical} messages are not processed yet")
    except InvalidInput as exc:
        return _rejected(source, raw, iccid, exc.code, exc.detail, "invalid")
    except Exception as exc:  # a bug must not stall the partition; keep the evidence
        log.exception("unexpected error on %s[%s]@%s", *source)
        return _rejected(source, raw, iccid, "internal_error", repr(exc), "error")
    if step.rejection is not None:
        return _rejected(source, raw, iccid, step.rejection.error, step.rejection.detail, step.outcome)
    return Decision(iccid, step.state, step.outputs, step.outcome)


def decide_tick(state: SimState, now: datetime, policy: Policy) -> Decision:
    step = apply_tick(state, now, policy)
    return Decision(state.iccid, step.state, step.outputs, step.outcome)


def _rejected(
    source: Source, raw: bytes | None, iccid: str | None, error: str, detail: str, outcome: str
) -> Decision:
    letter = dead_letter(
        source.topic, source.partition, source.offset, error, detail, raw or b"", key=iccid or ""
    )
    return Decision(iccid, None, [letter], outcome)
