"""The one codec: bytes on the wire and in the table <-> the engine's values.

Messages are JSON (orjson). A SIM's stored state spans up to four table entries, so
that what a usage record rewrites stays small however many ids the SIM remembers:

========================  ===============================================================
key                       value
========================  ===============================================================
``ICCID``                 the *card* (binary, ~60 bytes + 8 per recent id): the month,
                          its total, the newest remembered ids, the fast lane (what the
                          common record needs, domain/fast.py), status, reasons, next due
                          time, a pooled SIM's pool id; after a step of the general
                          engine, the profile too
``ICCID/p``               the *profile* (JSON): plan, reasons, months, alerts fired,
                          balance, expiry, last commands
``ICCID/m``               the dedupe memory's middle tier and its list of segments
``ICCID/s<n>``            segment ``n`` of the dedupe memory (128 ids, written once)
========================  ===============================================================

A record on the fast lane rewrites the card only (and, one record in 16, the middle
tier; one in 128, a new segment and the removal of one beyond the horizon): about 200
bytes, however many ids the SIM remembers. Exactness under reprocessing comes from the
order in which a SIM's entries are written, always to one changelog partition: a new
segment and the middle tier before the card (an id may then be in two tiers after a
crash, never in none), and a changed profile inside the card itself, in the same record
as the totals and ids it goes with. The first fast-lane write after that moves the profile out to its
own key, writing it before the card that stops holding it, so the latest profile is
always either in the card or in ``ICCID/p``.

Values of the first format (one JSON object per SIM, ``"v": 1``) are still read, and
rewritten in this format at the SIM's next write.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from .domain import InvalidInput, Policy, SimState
from .domain.fast import Hot, Lane, hot_of
from .domain.memory import HASH_BYTES, IdMemory, Segment, id_hash
from .domain.pools import PoolState, member_from_dict, member_to_dict, pool_from_dict, pool_to_dict
from .domain.state import profile_from_dict, profile_to_dict

Entry = tuple[bytes, bytes | None]
"""One table entry: its key and its encoded value (None deletes the key)."""

PROFILE, MIDDLE_TIER, SEGMENT = b"/p", b"/m", b"/s"
_VERSION = 2
_LANE, _CANCELLED, _EMBEDDED, _THROTTLED = 1, 2, 4, 8
_POOLED = 64
"""The card carries its pool id after the recent ids: one length byte, then the id.
Only a pooled SIM's card has it, so the others stay as long as before."""
PENDING_BITS = {"suspension": 16, "throttling": 32}
REASON_BITS = {"quota": 1, "arrears": 2, "expiry": 4, "manual": 8, "pool": 16}
_CARD = struct.Struct("<BBBxiIqIIdqqIH")
"""version, flags, reasons, partition (-1: none), month (YYYYMM), the month's total,
the month's bounds (minutes since the epoch), next due time, the lane's limit and
forecast quota, the newest start among the recent ids (minutes), how many recent ids."""
_MIDDLE = struct.Struct("<IIH")
"""The middle tier's newest start (minutes), the next segment number, how many segments."""
_LISTED = struct.Struct("<II")
"""A listed segment: its number and the newest start it holds (minutes)."""


def decode_message(raw: bytes | None, max_bytes: int) -> dict[str, Any]:
    """Parse one input message; the size limit is enforced before parsing (R15)."""
    if raw is None:
        raise InvalidInput("empty", "message has no value")
    if len(raw) > max_bytes:
        raise InvalidInput("too_large", f"message is {len(raw)} bytes, limit {max_bytes}")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput("invalid_json", f"not UTF-8 JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInput("not_an_object", "a message must be a JSON object")
    return value


def encode(value: dict[str, Any]) -> bytes:
    return orjson.dumps(value)


# --- a SIM's stored state ------------------------------------------------------------


@dataclass(slots=True)
class Stored:
    """A SIM as stored: its card decoded, its profile still encoded (decoded only when
    a record leaves the fast lane)."""

    hot: Hot
    profile: bytes
    embedded: bool
    """The card holds the profile (as written after a general step)."""
    profile_changed: bool = False
    """A general step changed the profile: the next write puts it in the card."""

    def state(self) -> SimState:
        """The SIM's whole state, with what the fast lane has counted meanwhile."""
        hot = self.hot
        state = profile_from_dict(hot.iccid, hot.month, hot.ids, orjson.loads(self.profile))
        if hot.used or hot.month in state.months:
            state.usage(hot.month).used_bytes = hot.used
        return state


def stored_of(state: SimState, policy: Policy) -> Stored:
    """What to store after a step of the general engine."""
    return Stored(hot_of(state, policy), encode_profile(state), embedded=True, profile_changed=True)


def encode_profile(state: SimState) -> bytes:
    return orjson.dumps(profile_to_dict(state))


def _month_number(month: str) -> int:
    return int(month[:4]) * 100 + int(month[5:7])


def _card(hot: Hot, profile: bytes | None) -> bytes:
    lane = hot.lane
    flags = (_LANE if lane is not None else 0) | (_CANCELLED if hot.status == "cancelled" else 0)
    flags |= (_EMBEDDED if profile is not None else 0) | (_THROTTLED if hot.throttled else 0)
    for dimension in hot.pending:
        flags |= PENDING_BITS[dimension]
    reasons = 0
    for reason in hot.reasons:
        reasons |= REASON_BITS[reason]
    recent = hot.ids.recent
    pool = _pool_field(hot.pool_id)
    if pool:
        flags |= _POOLED
    head = _CARD.pack(
        _VERSION,
        flags,
        reasons,
        -1 if hot.partition is None else hot.partition,
        _month_number(hot.month),
        hot.used,
        lane.month_start // 60 if lane is not None else 0,
        lane.month_end // 60 if lane is not None else 0,
        hot.due,
        lane.limit if lane is not None else 0,
        lane.forecast_quota if lane is not None else 0,
        hot.ids.recent_newest,
        len(recent) // HASH_BYTES,
    )
    return head + recent + pool + (profile or b"")


def _pool_field(pool_id: str | None) -> bytes:
    if pool_id is None:
        return b""
    raw = pool_id.encode()
    if not 0 < len(raw) < 256:
        raise ValueError(f"pool id of {len(raw)} bytes cannot be stored in a card")
    return bytes((len(raw),)) + raw


def _read_pool(raw: bytes, at: int, flags: int) -> tuple[str | None, int]:
    """The card's pool id, if any, and where what follows it starts."""
    if not flags & _POOLED:
        return None, at
    end = at + 1 + raw[at]
    return raw[at + 1 : end].decode(), end


def sim_entries(stored: Stored) -> list[Entry]:
    """Every entry a write of the SIM changes, in the order they must be written."""
    hot = stored.hot
    key = hot.iccid.encode()
    ids = hot.ids
    entries: list[Entry] = []
    if stored.profile_changed:
        card = _card(hot, stored.profile)
    else:
        if stored.embedded:
            entries.append((key + PROFILE, stored.profile))
        card = _card(hot, None)
    entries += [(_segment_key(key, s.number), s.hashes) for s in ids.written]
    entries += [(_segment_key(key, number), None) for number in ids.dropped]
    if ids.middle_changed:
        entries.append((key + MIDDLE_TIER, _middle(ids)))
    entries.append((key, card))
    return entries


def _segment_key(key: bytes, number: int) -> bytes:
    return key + SEGMENT + str(number).encode()


def _middle(ids: IdMemory) -> bytes:
    listed = b"".join(_LISTED.pack(s.number, s.newest) for s in ids.segments)
    return _MIDDLE.pack(ids.middle_newest, ids.next_number, len(ids.segments)) + listed + ids.middle


def _memory(key: bytes, recent: bytes, recent_newest: int, get: Callable[[bytes], bytes | None]) -> IdMemory:
    middle = get(key + MIDDLE_TIER)
    if not middle:
        return IdMemory(recent, recent_newest)
    newest, next_number, count = _MIDDLE.unpack_from(middle)
    segments = []
    for i in range(count):
        number, segment_newest = _LISTED.unpack_from(middle, _MIDDLE.size + i * _LISTED.size)
        # A listed segment may be gone after a crash between its removal and the middle
        # tier's rewrite: its ids were beyond the horizon anyway.
        segments.append(Segment(number, segment_newest, get(_segment_key(key, number)) or b""))
    start = _MIDDLE.size + count * _LISTED.size
    return IdMemory(recent, recent_newest, middle[start:], newest, tuple(segments), next_number)


@dataclass(frozen=True, slots=True)
class Card:
    """What the card says without its ids and profile: enough to index a SIM."""

    iccid: str
    status: str
    reasons: frozenset[str]
    due: float
    partition: int | None
    throttled: bool = False
    pending: frozenset[str] = frozenset()
    pool_id: str | None = None


_REASON_SETS = tuple(
    frozenset(name for name, bit in REASON_BITS.items() if mask & bit)
    for mask in range(2 ** len(REASON_BITS))
)
"""Every set of reasons, by its bits: a card is read for each SIM a book or listing sees."""
_PENDING_MASK = sum(PENDING_BITS.values())
_PENDING_SETS = {
    mask: frozenset(name for name, bit in PENDING_BITS.items() if mask & bit)
    for mask in range(_PENDING_MASK + 1)
}


def _reasons(mask: int) -> frozenset[str]:
    return _REASON_SETS[mask]


def _pending(flags: int) -> frozenset[str]:
    return _PENDING_SETS[flags & _PENDING_MASK]


def read_card(iccid: str, raw: bytes, policy: Policy) -> Card:
    """The index fields of a SIM's card (``raw`` is the value under the ICCID key)."""
    if raw[:1] == b"{":
        hot = stored_of(_state_v1(iccid, orjson.loads(raw)), policy).hot
        return Card(
            iccid, hot.status, hot.reasons, hot.due, hot.partition, hot.throttled, hot.pending, hot.pool_id
        )
    _v, flags, reasons, partition, _month, _used, _start, _end, due, *_lane, count = _CARD.unpack_from(raw)
    status = "cancelled" if flags & _CANCELLED else "suspended" if reasons else "active"
    where = None if partition < 0 else partition
    pool_id, _ = _read_pool(raw, _CARD.size + count * HASH_BYTES, flags)
    return Card(
        iccid, status, _reasons(reasons), due, where, bool(flags & _THROTTLED), _pending(flags), pool_id
    )


def load_sim(iccid: str, get: Callable[[bytes], bytes | None], policy: Policy) -> Stored | None:
    """A SIM from its table entries (``get`` reads one key), or None if unknown."""
    key = iccid.encode()
    raw = get(key)
    if raw is None:
        return None
    if raw[:1] == b"{":
        return stored_of(_state_v1(iccid, orjson.loads(raw)), policy)
    (
        _v,
        flags,
        reasons,
        partition,
        month,
        used,
        month_start,
        month_end,
        due,
        limit,
        forecast_quota,
        recent_newest,
        count,
    ) = _CARD.unpack_from(raw)
    recent_end = _CARD.size + count * HASH_BYTES
    pool_id, end = _read_pool(raw, recent_end, flags)
    ids = _memory(key, raw[_CARD.size : recent_end], recent_newest, get)
    month_text = f"{month // 100:04d}-{month % 100:02d}"
    lane = (
        Lane(month_text, month_start * 60, month_end * 60, due, limit, forecast_quota)
        if flags & _LANE
        else None
    )
    status = "cancelled" if flags & _CANCELLED else "suspended" if reasons else "active"
    hot = Hot(
        iccid,
        month_text,
        used,
        ids,
        lane,
        due,
        status,
        _reasons(reasons),
        None if partition < 0 else partition,
        # kept, so that a record on the fast lane rewrites the card with them
        bool(flags & _THROTTLED),
        _pending(flags),
        pool_id,
    )
    if flags & _EMBEDDED:
        return Stored(hot, raw[end:], embedded=True)
    profile = get(key + PROFILE)
    if profile is None:
        raise ValueError(f"the profile of {iccid} is missing")
    return Stored(hot, profile, embedded=False)


def is_card_key(key: bytes) -> bool:
    return b"/" not in key and not key.startswith(POOL)


def past_sim(key: bytes) -> bytes | None:
    """The first key after every entry of ``key``'s SIM (None for a pool's key): a SIM's
    entries are its ICCID and the ICCID followed by ``/``, which sorts before ``0``, so
    a scan that needs cards only seeks there and reads none of the SIM's ids."""
    if key.startswith(POOL):
        return None
    return key.partition(b"/")[0] + b"0"


def states_of(entries: Mapping[bytes, bytes], policy: Policy) -> dict[str, SimState]:
    """Every SIM's whole state from a table's entries (e.g. read from its changelog)."""
    states: dict[str, SimState] = {}
    for key in entries:
        if is_card_key(key):
            stored = load_sim(key.decode(), entries.get, policy)
            if stored is not None:
                states[stored.hot.iccid] = stored.state()
    return states


# --- the first format ---------------------------------------------------------------


def _state_v1(iccid: str, obj: dict[str, Any]) -> SimState:
    """A state of the first format: one JSON object, record ids kept as strings."""
    ids = IdMemory()
    for record_id, start in obj["seen"].items():  # in the order they were remembered
        ids.add(id_hash(record_id), int(start // 60), 0, 2**31)
    ids.middle_changed = True  # written out at the next write
    return profile_from_dict(iccid, obj["month"], ids, obj)


# --- a pool's stored state ------------------------------------------------------------

POOL = b"pool:"
"""Pool keys start so (an ICCID never does): ``pool:<id>`` holds the pool's own value,
``pool:<id>/m/<ICCID>`` one member's row (what it counted for the pool, and whether it is
a member now), so no stored value grows with the number of members."""
_MEMBER = b"/m/"


@dataclass(slots=True)
class PoolStored:
    state: PoolState
    partition: int | None = None


def pool_key(pool_id: str) -> bytes:
    return POOL + pool_id.encode()


def member_key(pool_id: str, iccid: str) -> bytes:
    return pool_key(pool_id) + _MEMBER + iccid.encode()


def is_pool_key(key: bytes) -> bool:
    return key.startswith(POOL) and _MEMBER not in key


def is_member_key(key: bytes) -> bool:
    return key.startswith(POOL) and _MEMBER in key


def pool_entries(stored: PoolStored) -> list[Entry]:
    """The pool's value, then the member rows the last steps changed.

    The pool's value carries those rows too: the totals and the rows they were summed
    from are then written in one record, and a crash before the rows themselves are
    written leaves them in the pool's value, which reading prefers (``load_pool``).
    The next write of the pool drops the rows that were written since, and carries
    those that were not (``load_pool`` marks them changed), so none is ever lost.
    """
    state = stored.state
    rows = {iccid: member_to_dict(state.members[iccid]) for iccid in sorted(state.touched)}
    value = {**pool_to_dict(state), "p": stored.partition, "rows": rows}
    entries: list[Entry] = [(pool_key(state.pool_id), orjson.dumps(value))]
    entries += [(member_key(state.pool_id, iccid), orjson.dumps(row)) for iccid, row in rows.items()]
    state.touched.clear()
    return entries


def load_pool(
    pool_id: str, get: Callable[[bytes], bytes | None], iccids: Iterable[str], roster: set[str] | None
) -> PoolState | None:
    """A pool with the rows of ``iccids`` (the members a batch reports for) and its
    roster (the worker's index of members); None if the pool was never stored."""
    raw = get(pool_key(pool_id))
    if raw is None:
        return None
    obj = orjson.loads(raw)
    state = pool_from_dict(obj)
    pending: dict[str, Any] = obj.get("rows", {})
    for iccid, row in pending.items():
        if get(member_key(pool_id, iccid)) != orjson.dumps(row):
            # In the pool's value but not under its own key: a crash came between the
            # two writes. The next write of the pool writes it again (or the pool's
            # value would drop it, and the member's next report be counted twice).
            state.members[iccid] = member_from_dict(row)
            state.touched.add(iccid)
    for iccid in iccids:
        if iccid in state.members:
            continue
        row = pending.get(iccid)
        if row is None:
            stored_row = get(member_key(pool_id, iccid))
            row = orjson.loads(stored_row) if stored_row is not None else None
        if row is not None:
            state.members[iccid] = member_from_dict(row)
    if roster is not None:
        state.roster = roster
    return state


def read_pool_index(key: bytes, raw: bytes) -> tuple[str, str | None, dict[str, Any]]:
    """What indexing needs of a pool entry: (pool_id, member ICCID or None, value)."""
    text = key[len(POOL) :].decode()
    pool_id, _, iccid = text.partition("/m/")
    return pool_id, iccid or None, orjson.loads(raw)


def entries_of(stored: Stored | PoolStored) -> list[Entry]:
    """What to write for a SIM or a pool."""
    return pool_entries(stored) if isinstance(stored, PoolStored) else sim_entries(stored)


def place(stored: Stored | PoolStored, partition: int) -> None:
    """Record the partition a state is written to: a worker finds its own after recovery."""
    if isinstance(stored, PoolStored):
        stored.partition = partition
    else:
        stored.hot.partition = partition
