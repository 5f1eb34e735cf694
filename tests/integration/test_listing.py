"""GET /sims and `stream-app sims` with two workers in one group on the real broker:
each answers for its partitions, either one gathers the whole list, paged; a worker
killed leaves its partitions out of the answer, named, until the other takes them over."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from stream_app.domain.timeutil import format_time
from stream_app.tools.localbroker import free_port

from .conftest import WorkerProcess, outputs_for, send, worker_env
from .test_api import get, wait_ready
from .test_worker import iccid, subscription, usage

pytestmark = pytest.mark.integration

TOKEN = "listing-token-0123456789"
BEARER = f"Bearer {TOKEN}"


def walk(port: int, limit: int, **filters: str) -> tuple[list[dict[str, Any]], list[int], int]:
    """Every page of a listing: the SIMs, the partitions any page missed, the pages."""
    sims: list[dict[str, Any]] = []
    partial: set[int] = set()
    after: str | None = ""
    pages = 0
    while after is not None:
        query = urllib.parse.urlencode({**filters, "limit": limit, "after": after})
        status, body = get(port, f"/sims?{query}", BEARER)
        assert status == 200, body
        assert len(body["sims"]) <= limit
        sims += body["sims"]
        partial.update(body["partial"])
        after = body["next"]
        pages += 1
    return sims, sorted(partial), pages


async def until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.5)


def sims_command(worker: WorkerProcess, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "stream_app", "sims", *args],
        env=worker.env,
        capture_output=True,
        check=False,
        timeout=60,
    )


async def suspend(
    kafka: str,
    producer: AIOKafkaProducer,
    worker: WorkerProcess,
    over_quota: list[str],
    in_arrears: list[str],
    pooled: list[str],
    active: list[str],
) -> None:
    """Subscribe every SIM, then stop some for quota and some for arrears."""
    settings = worker.settings
    out = await outputs_for(kafka, settings)
    try:
        for sim in over_quota + in_arrears + active:
            extra: dict[str, Any] = {"pool_id": "fleet-it"} if sim in pooled else {}
            await send(producer, settings, "subscriptions", subscription(sim, 1000, **extra))
        await until(
            lambda: all(
                get(worker.settings.web_port, f"/sims/{s}", BEARER)[1].get("plan") for s in in_arrears
            ),
            "subscriptions applied",
        )
        for sim in over_quota:
            await send(producer, settings, "usage", usage(sim, 1500, f"u-{sim}"))
        for sim in in_arrears:
            at = format_time(datetime.now(UTC))
            balance = {"event_id": f"b-{sim}", "iccid": sim, "at": at, "balance": -100, "currency": "CNY"}
            await send(producer, settings, "billing", balance)
        await out.wait_for(lambda _: len(out.of("commands", action="suspend")) == 15)
    finally:
        await out.consumer.stop()


async def test_either_worker_lists_the_whole_groups_suspended_sims_paged_and_a_dead_one_is_named(
    kafka: str, start_worker: Callable[[dict[str, str]], WorkerProcess], producer: AIOKafkaProducer
) -> None:
    env = worker_env(kafka, STREAM_APP_API_TOKEN=TOKEN)
    first = start_worker(env)
    second = start_worker({**env, "STREAM_APP_WEB_PORT": str(free_port())})
    await wait_ready(first, second)
    over_quota = sorted(iccid() for _ in range(10))
    in_arrears = sorted(iccid() for _ in range(5))
    pooled = over_quota[:3]
    active = sorted(iccid() for _ in range(5))
    await suspend(kafka, producer, first, over_quota, in_arrears, pooled, active)

    ports = (first.settings.web_port, second.settings.web_port)
    # states are stored once the commands are acknowledged: a moment after they are seen
    await until(
        lambda: all(len(walk(port, 100, status="suspended")[0]) == 15 for port in ports), "all 15 listed"
    )
    owners = {get(ports[0], f"/sims/{sim}", BEARER)[1]["served_by"] for sim in over_quota}
    assert len(owners) == 2  # the SIMs stopped for quota live on both workers
    for port in ports:
        sims, partial, pages = walk(port, 3, status="suspended", reason="quota")
        assert [s["iccid"] for s in sims] == over_quota and partial == [] and pages >= 4
        assert {(s["status"], tuple(s["reasons"])) for s in sims} == {("suspended", ("quota",))}
        assert [s["iccid"] for s in sims if s["pool_id"] == "fleet-it"] == pooled
        assert [s["iccid"] for s in walk(port, 2, reason="arrears")[0]] == in_arrears
        assert [s["iccid"] for s in walk(port, 100, pool="fleet-it")[0]] == pooled
        assert [s["iccid"] for s in walk(port, 4, status="active")[0]] == active
        assert get(port, "/sims?status=suspended")[0] == 401  # the token, as for one SIM
        assert get(port, "/sims?status=stopped", BEARER)[0] == 400

    shown = sims_command(second, "--status", "suspended", "--reason", "quota", "--json")
    assert shown.returncode == 0, shown.stderr
    assert [orjson.loads(line)["iccid"] for line in shown.stdout.splitlines()] == over_quota
    table = sims_command(first, "--reason", "arrears", "--limit", "2").stdout.decode().splitlines()
    assert [line.split()[0] for line in table[1:3]] == in_arrears[:2]
    assert (
        table[3] == f"2 SIMs (reason arrears); more after {in_arrears[1]} (--after {in_arrears[1]}, or --all)"
    )

    status, own = get(ports[0], "/sims?scope=local&status=suspended", BEARER)
    assert status == 200 and "partial" not in own  # a peer's answer: its own partitions only
    first_partitions = own["partitions"]
    second.kill()
    sims, partial, _pages = walk(ports[0], 4, status="suspended", reason="quota")
    assert partial == sorted(set(range(first.settings.partitions)) - set(first_partitions))
    assert [s["iccid"] for s in sims] == [s["iccid"] for s in own["sims"] if s["reasons"] == ["quota"]]
    assert 0 < len(sims) < len(over_quota)
    incomplete = sims_command(first, "--status", "suspended", "--reason", "quota")
    assert incomplete.returncode == 3 and b"did not answer" in incomplete.stderr

    # once the group has moved the dead worker's partitions, the list is whole again
    await until(
        lambda: (
            walk(ports[0], 100, status="suspended", reason="quota")[1:2] == ([],)
            and [s["iccid"] for s in walk(ports[0], 100, status="suspended", reason="quota")[0]] == over_quota
        ),
        "the survivor lists every partition",
        timeout=90,
    )
