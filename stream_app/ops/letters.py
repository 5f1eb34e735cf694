"""A dead letter for a person: where the refused message was, why, and its payload.

Shared by the worker's log summary and `stream-app deadletters`. The payload travels
base64-encoded in ``payload_b64``; it is shown as text when it is UTF-8 (control
characters escaped, so one letter stays on its lines) and as hex otherwise, cut to a
length a terminal line can hold.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

EXCERPT = 160
"""Characters of payload shown by default."""


def where(letter: Mapping[str, Any]) -> str:
    """``topic[partition]@offset`` of the refused message (in replay, offset = line number)."""
    return f"{letter.get('topic') or '?'}[{letter.get('partition', '?')}]@{letter.get('offset', '?')}"


def payload(letter: Mapping[str, Any]) -> bytes:
    """The original bytes kept in the letter (the first 256 KiB of a larger message)."""
    encoded = letter.get("payload_b64")
    if not isinstance(encoded, str):
        return b""
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return b""


def text_of(raw: bytes) -> str | None:
    """The payload as text, or None when it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def excerpt(raw: bytes, limit: int = EXCERPT) -> str:
    """The payload's text with control characters escaped, or ``hex ..`` of its first
    bytes; ``…`` marks a cut."""
    text = text_of(raw)
    if text is None:
        shown = raw[: max(limit // 3, 1)]
        return "hex " + shown.hex(" ") + (" …" if len(shown) < len(raw) else "")
    escaped = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[: limit + 1])
    return escaped[:limit] + "…" if len(escaped) > limit or len(text) > limit else escaped


def describe_payload(letter: Mapping[str, Any], limit: int = EXCERPT) -> str:
    """``payload (N bytes): <excerpt>``, saying when it is not UTF-8 or was cut on the topic."""
    raw = payload(letter)
    size = letter.get("payload_bytes", len(raw))
    if not raw:
        return "payload: empty"
    kind = "" if text_of(raw) is not None else ", not UTF-8"
    kept = f", first {len(raw):,} kept" if size != len(raw) else ""
    return f"payload ({size:,} bytes{kind}{kept}): {excerpt(raw, limit)}"
