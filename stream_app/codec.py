"""The one codec: bytes on the wire and in the table <-> the engine's values (orjson)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from .domain import InvalidInput, SimState, state_from_dict, state_to_dict


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


def encode_state(state: SimState) -> bytes:
    return orjson.dumps(state_to_dict(state))


def decode_state(raw: bytes) -> SimState:
    return state_from_dict(orjson.loads(raw))


Entry = tuple[bytes, bytes | None]
"""One table entry: its key and its encoded value (None deletes the key)."""


def sim_entries(state: SimState) -> list[Entry]:
    """Every table entry that holds one SIM's state, in the order they must be written."""
    return [(state.iccid.encode(), encode_state(state))]


def load_sim(iccid: str, get: Callable[[bytes], bytes | None]) -> SimState | None:
    """A SIM's state from its table entries (``get`` reads one key), or None if unknown."""
    raw = get(iccid.encode())
    return None if raw is None else decode_state(raw)
