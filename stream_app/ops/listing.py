"""GET /sims: the SIMs of the whole group that match a filter, paged in ICCID order.

Each worker answers for the partitions it owns, from its books' index (simindex.py).
The worker asked answers for its own and asks every peer the group's assignment names
for theirs (``scope=local``: a peer never asks further), then merges the pages. A peer
that does not answer in time leaves its partitions out: the answer says which, under
``partial``, rather than failing. The cursor is an ICCID, so a walk stays in order
across rebalances and restarts; ``next`` is null at the end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson
from yarl import URL

from .. import codec
from ..domain import InvalidInput, Policy
from ..domain.inputs import pool_id_of
from ..settings import Settings
from ..simindex import STATUSES, SimIndex, Want, keys_of, merge

log = logging.getLogger("stream_app")

LIMIT, MAX_LIMIT = 100, 10_000
PEER_TIMEOUT = 10.0
"""Seconds a peer has to answer (a peer that has just been assigned its partitions
first reads its table once to build their index)."""
PARAMETERS = ("status", "reason", "pool", "throttled", "pending", "limit", "after", "scope")
REASONS = tuple(codec.REASON_BITS)
PENDING = tuple(codec.PENDING_BITS)


class BadQuery(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.detail = code, detail


@dataclass(frozen=True, slots=True)
class Query:
    want: Want
    after: str
    limit: int
    local: bool
    """Answer for this worker's partitions only (how a peer is asked)."""
    params: dict[str, str]
    """The filter and page as given, for the peers."""


def _choices(name: str, value: str, allowed: tuple[str, ...]) -> frozenset[str]:
    chosen = frozenset(v.strip() for v in value.split(","))
    wrong = sorted(chosen - set(allowed))
    if wrong:
        raise BadQuery(
            f"bad_{name}", f"{name} must be one or more of {', '.join(allowed)} (not {wrong[0]!r})"
        )
    return chosen


def _flag(name: str, value: str) -> bool:
    if value not in ("true", "false"):
        raise BadQuery(f"bad_{name}", f"{name} is true or false")
    return value == "true"


def parse_query(pairs: Iterable[tuple[str, str]]) -> Query:
    """The filter and page of ``GET /sims``; BadQuery for anything not understood (an
    ignored misspelt filter would list the wrong SIMs without a word)."""
    given: dict[str, str] = {}
    for name, value in pairs:
        if name not in PARAMETERS:
            raise BadQuery("unknown_parameter", f"{name!r} is not one of {', '.join(PARAMETERS)}")
        if name in given:
            raise BadQuery("repeated_parameter", f"{name} is given twice (list values with commas)")
        given[name] = value
    groups: list[frozenset[str]] = []
    none_of: set[str] = set()
    if "status" in given:
        groups.append(frozenset(f"status:{s}" for s in _choices("status", given["status"], STATUSES)))
    if "reason" in given:
        groups.append(frozenset(f"reason:{r}" for r in _choices("reason", given["reason"], REASONS)))
    if "pool" in given:
        try:
            groups.append(frozenset({f"pool:{pool_id_of(given['pool'], 'pool')}"}))
        except InvalidInput as exc:
            raise BadQuery(exc.code, exc.detail) from None
    if "throttled" in given:
        if _flag("throttled", given["throttled"]):
            groups.append(frozenset({"throttled"}))
        else:
            none_of.add("throttled")
    if "pending" in given:
        value = given["pending"]
        every = {f"pending:{d}" for d in PENDING}
        if value == "true":
            groups.append(frozenset(every))
        elif value == "false":
            none_of.update(every)
        else:
            groups.append(frozenset(f"pending:{d}" for d in _choices("pending", value, PENDING)))
    try:
        limit = int(given.get("limit", LIMIT))
    except ValueError:
        raise BadQuery("bad_limit", f"limit is a whole number from 1 to {MAX_LIMIT:,}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadQuery("bad_limit", f"limit is a whole number from 1 to {MAX_LIMIT:,}")
    scope = given.get("scope", "group")
    if scope not in ("group", "local"):
        raise BadQuery("bad_scope", "scope is group (the default) or local (this worker's partitions)")
    params = {name: value for name, value in given.items() if name != "scope"}
    return Query(
        Want(tuple(groups), frozenset(none_of)),
        given.get("after", "").upper(),
        limit,
        scope == "local",
        params,
    )


class Lister(Protocol):
    """What a listing needs of a worker."""

    app: Any
    table: Any
    settings: Settings
    policy: Policy

    async def indexes(self) -> dict[int, SimIndex] | None:
        """Each owned partition's index of SIMs; None while not ready."""
        ...


def listed(card: codec.Card) -> dict[str, Any]:
    """One SIM as a listing shows it."""
    return {
        "iccid": card.iccid,
        "status": card.status,
        "reasons": sorted(card.reasons),
        "throttled": card.throttled,
        "pending": sorted(card.pending),
        "pool_id": card.pool_id,
    }


async def local_answer(worker: Lister, query: Query) -> dict[str, Any]:
    """The page over the partitions this worker owns, with their numbers."""
    indexes = await worker.indexes()
    if indexes is None:
        return {"sims": [], "next": None, "partitions": []}
    pages = [index.page(query.want, query.after, query.limit) for index in indexes.values()]
    iccids, frontier = merge(pages, query.limit, str)
    sims = []
    read = worker.table.data.get  # the store itself: the table's per-key sensors cost 4x the rest
    check = bool(query.want.groups or query.want.none_of)
    for iccid in iccids:
        raw = read(iccid.encode())
        if raw is None:
            continue
        card = codec.read_card(iccid, raw, worker.policy)
        # A write stores the card, then sends its changelog records, then updates the
        # index: a card newer than the index by that moment is shown only if it matches.
        if not check or query.want.matches(
            keys_of(card.status, card.reasons, card.throttled, card.pending, card.pool_id)
        ):
            sims.append(listed(card))
    return {"sims": sims, "next": frontier, "partitions": sorted(indexes)}


async def group_answer(worker: Lister, query: Query, authorization: str | None) -> dict[str, Any]:
    """This worker's page merged with its peers'; ``partial``: the partitions unanswered."""
    app = worker.app
    own = _ident(URL(str(app.conf.canonical_url)))
    try:
        owners = app.router.table_metadata(worker.table.name)
    except Exception:  # no assignment yet
        owners = {}
    peers = [url for url, topics in owners.items() if any(topics.values()) and _ident(URL(url)) != own]
    answers = await asyncio.gather(
        local_answer(worker, query), *(_ask(app, url, query, authorization) for url in peers)
    )
    answered: set[int] = set()
    pages: list[tuple[list[dict[str, Any]], str | None]] = []
    for answer in answers:
        if answer is not None:
            answered.update(answer["partitions"])
            pages.append((answer["sims"], answer["next"]))
    sims, frontier = merge(pages, query.limit, _iccid)
    return {
        "sims": sims,
        "next": frontier,
        "partial": sorted(set(range(worker.settings.partitions)) - answered),
    }


async def _ask(app: Any, url: str, query: Query, authorization: str | None) -> dict[str, Any] | None:
    """A peer's page for its own partitions, or None (logged) when it does not answer."""
    target = URL(url).with_path("/sims").with_query({**query.params, "scope": "local"})
    headers = {"Authorization": authorization} if authorization else {}
    try:
        async with app.http_client.get(
            target, headers=headers, timeout=aiohttp.ClientTimeout(total=PEER_TIMEOUT)
        ) as response:
            body = await response.read()
            if response.status != 200:
                raise ValueError(f"status {response.status}: {body[:200]!r}")
        answer = orjson.loads(body)
        if not isinstance(answer.get("sims"), list) or not isinstance(answer.get("partitions"), list):
            raise ValueError("not a listing")
        return dict(answer)
    except Exception as exc:  # whatever it is, the answer is partial, never an error
        log.warning(
            "GET /sims: peer %s did not answer (%s); its partitions are left out", url, exc or type(exc)
        )
        return None


def _iccid(item: dict[str, Any]) -> str:
    return str(item["iccid"])


def _ident(url: URL) -> tuple[str, int]:
    return (url.host or "", url.port or 80)
