"""The worker's HTTP API and metrics on the real broker, with one and with two workers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from stream_app.tools.localbroker import free_port

from .conftest import WorkerProcess, outputs_for, send, wait_known, worker_env
from .test_worker import iccid, subscription, usage

pytestmark = pytest.mark.integration


def get(port: int, path: str, authorization: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        body, status = error.read(), error.code
    try:
        return status, orjson.loads(body)
    except orjson.JSONDecodeError:
        return status, body.decode()


async def get_once_stored(port: int, path: str, stored: Callable[[Any], bool]) -> tuple[int, Any]:
    """The state is stored only once the outputs are acknowledged (writer.py), so a
    reader that has just seen a command may be a moment early: ask again for a while."""
    deadline = time.monotonic() + 10
    status, body = get(port, path)
    while not stored(body) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        status, body = get(port, path)
    return status, body


def scrape(port: int) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value}."""
    status, text = get(port, "/metrics")
    assert status == 200
    samples = {}
    for line in str(text).splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def check_public_tables_off_and_the_sim_command(worker: WorkerProcess, sim: str) -> None:
    port = worker.settings.web_port
    assert get(port, "/table/sims")[0] == 404  # Faust's public table endpoints are off
    shown = subprocess.run(
        [sys.executable, "-m", "stream_app", "sim", sim],
        env=worker.env,
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert shown.returncode == 0, shown.stderr
    assert f"SIM {sim}  SUSPENDED  (reasons: quota)" in shown.stdout.decode()


async def wait_ready(*workers: WorkerProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not all(get(w.settings.web_port, "/readyz")[0] == 200 for w in workers):
        assert time.monotonic() < deadline, "workers never became ready"
        await asyncio.sleep(0.5)


async def test_sim_state_health_readiness_and_metrics(
    kafka: str, start_worker: Callable[[dict[str, str]], WorkerProcess], producer: AIOKafkaProducer
) -> None:
    worker = start_worker(worker_env(kafka))
    settings, port = worker.settings, worker.settings.web_port
    assert get(port, "/healthz") == (200, {"status": "alive"})
    await wait_ready(worker)
    sim = iccid()
    out = await outputs_for(kafka, settings)
    try:
        await send(producer, settings, "subscriptions", subscription(sim, 1000))
        await wait_known(worker, sim)
        await send(producer, settings, "usage", usage(sim, 600, "u1"))
        await send(producer, settings, "usage", usage(sim, 600, "u1"))  # duplicate
        await send(producer, settings, "usage", usage(sim, 500, "u2"))
        await send(producer, settings, "usage", b"garbage", key=sim)
        await out.wait_for(lambda _: len(out.of("commands")) == 1 and len(out.of("deadletter")) == 1)
    finally:
        await out.consumer.stop()
    status, body = await get_once_stored(
        port, f"/sims/{sim.lower()}", lambda b: b.get("status") == "suspended"
    )
    assert status == 200
    assert (body["iccid"], body["status"], body["reasons"]) == (sim, "suspended", ["quota"])
    assert (body["used_bytes"], body["remaining_bytes"]) == (1100, 0)
    assert body["plan"]["quota_bytes"] == 1000
    assert body["next_due"]["event"] == "month_start"
    assert [c["action"] for c in body["last_commands"]] == ["suspend"]
    check_public_tables_off_and_the_sim_command(worker, sim)
    assert get(port, "/sims/12345")[0] == 400
    assert get(port, f"/sims/{iccid()}")[0] == 404

    deadline = time.monotonic() + 30
    while True:  # gauges refresh every tick interval
        samples = scrape(port)
        if samples.get('stream_app_suspended_sims{reason="quota"}') == 1 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert samples['stream_app_suspended_sims{reason="quota"}'] == 1
    assert samples['stream_app_sims{status="suspended"}'] == 1
    assert samples['stream_app_commands_total{action="suspend",reason="quota",trigger="usage"}'] == 1
    assert samples['stream_app_input_messages_total{outcome="duplicate",topic="usage"}'] == 1
    assert samples['stream_app_input_messages_total{outcome="accepted",topic="usage"}'] == 2
    assert samples['stream_app_input_messages_total{outcome="invalid",topic="usage"}'] == 1
    assert samples["stream_app_usage_bytes_total"] == 1100
    dead = f'stream_app_dead_letters_total{{error="invalid_json",topic="{settings.topic("usage")}"}}'
    assert samples[dead] == 1
    assert samples['stream_app_alerts_total{kind="quota_threshold"}'] == 3
    assert samples["stream_app_decision_latency_seconds_count"] >= 2  # inputs that had outputs
    assert samples["stream_app_data_freshness_seconds_count"] == 3  # valid records
    assert samples["stream_app_owned_partitions"] == settings.partitions
    assert "secret" not in str(get(port, "/metrics")[1]).lower()
    command_id = out.of("commands")[0]["command_id"]
    assert worker.log().count(f"command suspend {sim} quota/usage {command_id}") == 1


async def test_a_bearer_token_guards_the_sim_api_through_the_proxy_too(
    kafka: str, start_worker: Callable[[dict[str, str]], WorkerProcess], producer: AIOKafkaProducer
) -> None:
    token = "test-token-0123456789abcdef"
    env = worker_env(kafka, STREAM_APP_API_TOKEN=token)
    first = start_worker(env)
    second = start_worker({**env, "STREAM_APP_WEB_PORT": str(free_port())})
    await wait_ready(first, second)
    sims = [iccid() for _ in range(6)]
    for sim in sims:
        await send(producer, first.settings, "subscriptions", subscription(sim, 10**9))
    await wait_known_with_token(first, token, *sims)
    for worker in (first, second):
        port = worker.settings.web_port
        for sim in sims:
            assert get(port, f"/sims/{sim}")[0] == 401
            assert get(port, f"/sims/{sim}", "Bearer wrong-token-0123456789")[0] == 401
            status, body = get(port, f"/sims/{sim}", f"Bearer {token}")
            assert (status, body["iccid"]) == (200, sim)
        assert get(port, "/healthz")[0] == 200  # probes and metrics stay open
        assert get(port, "/metrics")[0] == 200
        assert token not in str(get(port, "/metrics")[1])
    shown = subprocess.run(
        [sys.executable, "-m", "stream_app", "sim", sims[0]],
        env=first.env,
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert shown.returncode == 0, shown.stderr
    assert token not in first.log() + second.log()


async def wait_known_with_token(worker: WorkerProcess, token: str, *sims: str) -> None:
    deadline = time.monotonic() + 30
    for sim in sims:
        while get(worker.settings.web_port, f"/sims/{sim}", f"Bearer {token}")[0] != 200:
            assert time.monotonic() < deadline, f"{sim} never known"
            await asyncio.sleep(0.3)


async def test_two_workers_route_each_sim_to_its_owner(
    kafka: str, start_worker: Callable[[dict[str, str]], WorkerProcess], producer: AIOKafkaProducer
) -> None:
    env = worker_env(kafka)
    first = start_worker(env)
    second = start_worker({**env, "STREAM_APP_WEB_PORT": str(free_port())})
    await wait_ready(first, second)
    settings = first.settings
    sims = [iccid() for _ in range(24)]
    for sim in sims:
        await send(producer, settings, "subscriptions", subscription(sim, 10**9))
    ports = (first.settings.web_port, second.settings.web_port)
    deadline = time.monotonic() + 60
    answers: dict[str, list[tuple[int, Any]]] = {}
    while time.monotonic() < deadline:
        answers = {sim: [get(port, f"/sims/{sim}") for port in ports] for sim in sims}
        if all(status == 200 for replies in answers.values() for status, _ in replies):
            break
        await asyncio.sleep(1)
    owners = set()
    for sim, replies in answers.items():
        assert [status for status, _ in replies] == [200, 200], (sim, replies)
        (_, via_first), (_, via_second) = replies
        assert via_first["iccid"] == via_second["iccid"] == sim
        assert via_first["served_by"] == via_second["served_by"]  # one owner, whoever is asked
        owners.add(via_first["served_by"])
    assert owners == {f"http://127.0.0.1:{port}" for port in ports}  # both own some SIMs


async def test_a_restarted_worker_that_has_written_nothing_yet_serves_sims_and_pools(
    kafka: str, start_worker: Callable[[dict[str, str]], WorkerProcess], producer: AIOKafkaProducer
) -> None:
    """A worker killed and replaced serves the SIMs it recovered before it has written
    anything itself: Faust's router finds a SIM's owner from the changelog topic's
    metadata, which the new worker's producer has not needed yet. (A chaos run once saw
    every GET /sims fail while /readyz said ready; this is one start it could have
    been, and it serves.)"""
    env = worker_env(kafka)
    first = start_worker(env)
    sim = iccid()
    await send(producer, first.settings, "subscriptions", subscription(sim, 1000))
    await wait_known(first, sim)
    first.kill()
    second = start_worker({**env, "STREAM_APP_WEB_PORT": str(free_port())})
    await wait_ready(second)
    status, body = get(second.settings.web_port, f"/sims/{sim}")
    assert (status, body.get("iccid") if isinstance(body, dict) else body) == (200, sim)
    assert get(second.settings.web_port, "/pools/nosuchpool")[0] == 404
