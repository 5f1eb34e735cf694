"""A pool's notices to its members, many to a message (R18, R19 at 100,000 members).

The engine tells each member apart (domain/pools.py: one notice per member, as replay
applies them). Sent that way, a pool of 100,000 members running out costs 100,000
messages on ``sim.pool-notices`` and as many framework events on the members' side,
which alone took longer than the minute R21 allows. So the worker sends the notices of
one step (they differ only in the ICCID) as groups: one message per member partition
and up to ``NOTICES_PER_MESSAGE`` members, keyed by its first member's ICCID, so Kafka
routes it to the partition where all its members live. The members' side expands a
group back into one notice per member before deciding them, exactly as if each had
come alone. No message grows with the pool: a group holds at most
``NOTICES_PER_MESSAGE`` ICCIDs (about 23 kB).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from ..domain import Output
from ..topics import POOL_NOTICES
from .batch import Incoming
from .routing import partition_of

NOTICES_PER_MESSAGE = 1000
NOTICES_PER_PART = 2000
"""Members' notices decided and written at a time, out of the groups of a batch."""
MEMBERS = "iccids"
"""A group's field: the ICCIDs of the members it tells (instead of ``iccid``)."""


def grouped(outputs: list[Output], partitions: int, size: int = NOTICES_PER_MESSAGE) -> list[Output]:
    """``outputs`` with their notices in groups: each run of notices that differ only in
    the ICCID (one step's notices to every member), per member partition, in order. A
    member is in a run once, so each member's notices keep their order."""
    result: list[Output] = []
    run: list[Output] = []
    shape: dict[str, Any] | None = None
    for output in outputs:
        if output.topic != POOL_NOTICES:
            result.append(output)
            continue
        rest = {k: v for k, v in output.value.items() if k != "iccid"}
        if run and rest != shape:
            result += _groups(run, partitions, size)
            run = []
        run.append(output)
        shape = rest
    return result + _groups(run, partitions, size)


def _groups(run: list[Output], partitions: int, size: int) -> list[Output]:
    if len(run) < 2:
        return run
    shared = {k: v for k, v in run[0].value.items() if k != "iccid"}
    by_partition: dict[int, list[str]] = {}
    for output in run:
        # Not remembered: a pool's members outnumber the hashes kept, and the members'
        # side hashes each again just before it sends the member's command and audit.
        by_partition.setdefault(partition_of(output.key, partitions, remember=False), []).append(output.key)
    groups = []
    for _partition, members in sorted(by_partition.items()):
        for first in range(0, len(members), size):
            chunk = members[first : first + size]
            groups.append(Output(POOL_NOTICES, chunk[0], {**shared, MEMBERS: chunk}))
    return groups


def expanded(
    batch: list[Incoming], partitions: int, size: int = NOTICES_PER_PART
) -> Iterator[list[Incoming]]:
    """The members' side: each group becomes one notice per member (same offset), in
    parts of at most ``size`` notices, each decided and written on its own so that the
    first members' commands go out while the next are decided. A message that is not a
    group, or not a valid one, passes as it is (the pipeline dead-letters what is bad);
    a member that does not live in the group's partition gets a notice with no key,
    which the pipeline refuses as ``key_mismatch``."""
    part: list[Incoming] = []
    for incoming in batch:
        members = _members(incoming.raw)
        if members is None:
            part.append(incoming)
        else:
            value, iccids = members
            for iccid in iccids:
                own = partition_of(iccid, partitions) == incoming.source.partition
                raw = orjson.dumps({**value, "iccid": iccid})
                part.append(incoming._replace(raw=raw, key=iccid.encode() if own else b""))
                if len(part) >= size:
                    yield part
                    part = []
        if len(part) >= size:
            yield part
            part = []
    if part:
        yield part


def _members(raw: bytes | None) -> tuple[dict[str, Any], list[str]] | None:
    if raw is None or b'"' + MEMBERS.encode() + b'"' not in raw:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict):
        return None
    iccids = value.pop(MEMBERS, None)
    if not isinstance(iccids, list) or not all(isinstance(i, str) for i in iccids):
        return None
    return value, iccids
