"""Deciding a batch of one topic's messages: each SIM loaded once and stored once.

The agents take messages in batches; the messages of one SIM are applied in order to
one state (domain.engine.apply_many in effect), so a batch costs one load and one write
per SIM rather than per message. A usage record on the SIM's fast lane (domain/fast.py)
is decided from the SIM's card alone; the first message that needs more decodes the
whole state, and the rest of the SIM's messages take the general path. The outcome is
exactly that of applying the messages one by one (tests/unit/test_batch.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple, TypeVar

from ..codec import Stored, stored_of
from ..domain import InvalidInput, Policy, SimState, UsageRecord, new_state
from ..domain.engine import Input, apply_input
from ..domain.fast import DUPLICATE, fast_usage
from ..domain.memory import id_hash
from ..pipeline import Decision, Source, apply, parse, rejected

Item = TypeVar("Item")


class Incoming(NamedTuple):
    source: Source
    raw: bytes | None
    key: bytes | None
    """The Kafka key; None only in replay (no key check)."""
    received: float | None
    """The message's Kafka timestamp (seconds), for decision latency."""
    ref: object
    """The framework's event, opaque here (it routes the SIM's changelog write)."""


class SimBatch(NamedTuple):
    iccid: str
    state: Stored | None
    """The SIM's new state to store, or None when nothing is to be stored."""
    last: Incoming
    decisions: list[tuple[Incoming, Decision]]


def grouped(
    batch: list[Incoming], parse_one: Callable[[Incoming], Item], key_of: Callable[[Item], str]
) -> tuple[list[tuple[Incoming, Decision]], dict[str, list[tuple[Incoming, Item]]]]:
    """The dead letters of the messages that do not parse, and the others grouped by
    ``key_of`` (a SIM's ICCID, a pool's id), each group in batch order."""
    invalid: list[tuple[Incoming, Decision]] = []
    groups: dict[str, list[tuple[Incoming, Item]]] = {}
    for incoming in batch:
        try:
            item = parse_one(incoming)
        except InvalidInput as exc:
            invalid.append(
                (incoming, rejected(incoming.source, incoming.raw, None, exc.code, exc.detail, "invalid"))
            )
        except Exception as exc:  # a bug must not stall the partition
            invalid.append(
                (
                    incoming,
                    rejected(incoming.source, incoming.raw, None, "internal_error", repr(exc), "error"),
                )
            )
        else:
            groups.setdefault(key_of(item), []).append((incoming, item))
    return invalid, groups


def decide_batch(
    logical: str,
    batch: list[Incoming],
    load: Callable[[str], Stored | None],
    now: datetime,
    policy: Policy,
    max_bytes: int,
) -> tuple[list[tuple[Incoming, Decision]], list[SimBatch]]:
    """Return the invalid messages' dead letters, and each SIM's decisions in order."""
    invalid, by_sim = grouped(
        batch, lambda incoming: parse(logical, incoming.raw, max_bytes, incoming.key), lambda item: item.iccid
    )
    sims = []
    for iccid, entries in by_sim.items():
        try:
            sims.append(_decide_sim(iccid, entries, load, now, policy))
        except Exception as exc:  # e.g. a stored state that cannot be read: keep the evidence
            invalid += [
                (
                    incoming,
                    rejected(
                        incoming.source,
                        incoming.raw,
                        iccid,
                        "internal_error",
                        f"the SIM's state could not be loaded: {exc!r}",
                        "error",
                    ),
                )
                for incoming, _item in entries
            ]
    return invalid, sims


def _loader(state: SimState) -> Callable[[str], SimState]:
    return lambda _iccid: state


def _decide_sim(
    iccid: str,
    entries: list[tuple[Incoming, Input]],
    load: Callable[[str], Stored | None],
    now: datetime,
    policy: Policy,
) -> SimBatch:
    stored = load(iccid)
    state: SimState | None = None
    """The whole state, once a message needed it."""
    applied: list[Input] = []
    decisions: list[tuple[Incoming, Decision]] = []
    counted = False
    timestamp = now.timestamp()
    for incoming, item in entries:
        if state is None and stored is not None and isinstance(item, UsageRecord):
            hot = stored.hot
            if hot.lane is not None:
                used = fast_usage(
                    hot.lane,
                    hot.used,
                    hot.ids,
                    id_hash(item.record_id),
                    item.start.timestamp(),
                    item.end.timestamp(),
                    item.total_bytes,
                    timestamp,
                    policy,
                )
                if used == DUPLICATE:
                    decisions.append((incoming, Decision(iccid, None, [], "duplicate", item)))
                    continue
                if used is not None:
                    hot.used, counted = used, True
                    applied.append(item)
                    decisions.append((incoming, Decision(iccid, None, [], "accepted", item)))
                    continue
        if state is None:
            state = stored.state() if stored is not None else new_state(iccid, now, policy)
        decision = apply(item, incoming.source, incoming.raw, _loader(state), now, policy)
        if decision.outcome == "error":
            # The engine failed midway and may have left the state half changed: start
            # again from the stored state with the inputs that went through.
            again = load(iccid)
            state = again.state() if again is not None else new_state(iccid, now, policy)
            for earlier in applied:
                apply_input(state, earlier, now, policy)
        elif decision.state is not None:
            applied.append(item)
        decisions.append((incoming, decision))
    last = entries[-1][0]
    if state is not None and applied:
        return SimBatch(iccid, stored_of(state, policy), last, decisions)
    return SimBatch(iccid, stored if counted else None, last, decisions)
