"""The worker's HTTP API: /sims/{iccid}, /sims, /pools/{pool_id}, /healthz, /readyz
and /metrics.

A SIM's state lives on the worker that owns its partition; a request reaching another
worker is proxied there by Faust's router. A listing (/sims) is gathered from every
worker (listing.py). The table is keyed by the ICCID's bytes, the
same bytes the input topics are keyed by, so the router hashes the key exactly as the
producers did (Faust's table_route misroutes most keys when the two serialisations
differ).
"""

from __future__ import annotations

import hmac
from typing import Any, Protocol

from faust import web
from faust.exceptions import SameNode
from faust.sensors.prometheus import setup_prometheus_sensors

from .. import codec
from ..clock import Clock
from ..domain import InvalidInput, Policy, iccid_of
from ..domain.describe import describe
from ..domain.inputs import pool_id_of
from ..domain.pools import describe_pool
from ..settings import Settings
from ..simindex import SimIndex
from .listing import BadQuery, group_answer, local_answer, parse_query


class Served(Protocol):
    """What the views need of a worker (the worker shell imports this module, never
    the other way round)."""

    app: Any
    table: Any
    settings: Settings
    policy: Policy
    clock: Clock
    registry: Any

    def ready(self) -> bool: ...

    def unready(self) -> list[str]: ...

    def roster(self, pool_id: str) -> set[str] | None:
        """The pool's members, when this worker owns the pool."""
        ...

    async def indexes(self) -> dict[int, SimIndex] | None:
        """Each owned partition's index of SIMs; None while not ready."""
        ...


def install_views(worker: Served) -> None:
    app = worker.app
    setup_prometheus_sensors(app, pattern="/metrics", registry=worker.registry, name_prefix="faust")

    @app.page("/healthz")
    class Health(web.View):
        async def get(self, request: web.Request) -> web.Response:
            return self.json({"status": "alive"})

    @app.page("/readyz")
    class Ready(web.View):
        async def get(self, request: web.Request) -> web.Response:
            why = worker.unready()
            return self.json({"ready": not why, "unready": why}, status=503 if why else 200)

    token = worker.settings.api_token
    expected = f"Bearer {token}".encode() if token is not None else None

    @app.page("/sims/{iccid}")
    class Sim(web.View):
        async def get(self, request: web.Request, iccid: str) -> Any:
            # Checked before routing, so an unauthenticated request is never proxied; the
            # proxy forwards the header and the owner checks it again.
            given = request.headers.get("Authorization", "").encode()
            if expected is not None and not hmac.compare_digest(given, expected):
                return self.json({"error": "unauthorized"}, status=401)
            try:
                normalised = iccid_of({"iccid": iccid})
            except InvalidInput as exc:
                return self.json({"error": exc.code, "detail": exc.detail}, status=400)
            key = normalised.encode()
            try:
                return await app.router.route_req(worker.table.name, key, self.web, request)
            except SameNode:
                pass
            stored = codec.load_sim(normalised, worker.table.get, worker.policy)
            if stored is None:
                return self.json({"error": "not_found", "iccid": normalised}, status=404)
            state = stored.state()
            body = describe(state, worker.clock.now(), worker.policy)
            body["served_by"] = str(app.conf.canonical_url)
            return self.json(body)

    @app.page("/sims")
    class Sims(web.View):
        async def get(self, request: web.Request) -> Any:
            given = request.headers.get("Authorization", "")
            if expected is not None and not hmac.compare_digest(given.encode(), expected):
                return self.json({"error": "unauthorized"}, status=401)
            try:
                query = parse_query(request.query.items())
            except BadQuery as exc:
                return self.json({"error": exc.code, "detail": exc.detail}, status=400)
            if query.local:  # a peer asks: this worker's partitions only, never further
                body = await local_answer(worker, query)
            else:
                body = await group_answer(worker, query, given or None)
            body["served_by"] = str(app.conf.canonical_url)
            return self.json(body)

    @app.page("/pools/{pool_id}")
    class PoolView(web.View):
        async def get(self, request: web.Request, pool_id: str) -> Any:
            given = request.headers.get("Authorization", "").encode()
            if expected is not None and not hmac.compare_digest(given, expected):
                return self.json({"error": "unauthorized"}, status=401)
            try:
                pool_id_of(pool_id)
            except InvalidInput as exc:
                return self.json({"error": exc.code, "detail": exc.detail}, status=400)
            try:
                return await app.router.route_req(worker.table.name, pool_id.encode(), self.web, request)
            except SameNode:
                pass
            roster = worker.roster(pool_id) or set()
            state = codec.load_pool(pool_id, worker.table.get, (), roster)
            if state is None:
                return self.json({"error": "not_found", "pool_id": pool_id}, status=404)
            try:
                limit = min(max(int(request.query.get("limit", "100")), 0), 10_000)
            except ValueError:
                return self.json({"error": "bad_limit", "detail": "limit is a whole number"}, status=400)
            after = request.query.get("after", "")
            page = sorted(iccid for iccid in roster if iccid > after)[:limit]
            body = describe_pool(state, worker.clock.now(), worker.policy, page)
            body["served_by"] = str(app.conf.canonical_url)
            return self.json(body)
