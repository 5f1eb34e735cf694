"""Kafka SASL (PLAIN and SCRAM) and TLS through the normal settings, on a broker with both listeners."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from stream_app.settings import Settings
from stream_app.tools.admin import ensure_topics
from stream_app.tools.localbroker import LocalBroker, free_port

from .conftest import WorkerProcess, outputs_for, send, worker_env
from .test_worker import iccid, subscription, usage

pytestmark = pytest.mark.integration

ALICE = ("alice", "alice-password-1")  # PLAIN
BOB = ("bob", "bob-password-1")  # SCRAM-SHA-256
LOGIN = "org.apache.kafka.common.security"


class Listeners(NamedTuple):
    plain: str
    sasl: str
    tls: str
    ca_file: str


@pytest.fixture(scope="module")
def sasl_broker(kafka_jars: Path) -> Iterator[Listeners]:
    """A broker with a PLAINTEXT, a SASL_PLAINTEXT and an SSL listener (self-signed cert)."""
    home = Path(tempfile.mkdtemp(prefix="stream-app-sasl-"))
    cert, key, keystore = home / "cert.pem", home / "key.pem", home / "keystore.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    keystore.write_bytes(key.read_bytes() + cert.read_bytes())
    port, sasl_port, tls_port, controller = free_port(), free_port(), free_port(), free_port()
    extra = "\n".join(
        [
            f"listeners=PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port},"
            f"SSL://127.0.0.1:{tls_port},CONTROLLER://127.0.0.1:{controller}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port},"
            f"SSL://127.0.0.1:{tls_port}",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,"
            "SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL",
            "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256",
            f"listener.name.sasl_plaintext.plain.sasl.jaas.config={LOGIN}.plain.PlainLoginModule required "
            f'user_{ALICE[0]}="{ALICE[1]}";',
            "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config="
            f"{LOGIN}.scram.ScramLoginModule required;",
            "listener.name.ssl.ssl.keystore.type=PEM",
            f"listener.name.ssl.ssl.keystore.location={keystore}",
        ]
    )
    broker = LocalBroker(
        home=home,
        port=port,
        controller_port=controller,
        libs=kafka_jars,
        extra_properties=extra,
        format_args=("--add-scram", f"SCRAM-SHA-256=[name={BOB[0]},password={BOB[1]}]"),
    )
    try:
        plain = broker.start(timeout=90)
        yield Listeners(plain, f"127.0.0.1:{sasl_port}", f"127.0.0.1:{tls_port}", str(cert))
    finally:
        broker.stop()
        shutil.rmtree(home, ignore_errors=True)


def sasl_env(bootstrap: str, mechanism: str, user: tuple[str, str]) -> dict[str, str]:
    return {
        **worker_env(bootstrap),
        "STREAM_APP_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "STREAM_APP_KAFKA_SASL_MECHANISM": mechanism,
        "STREAM_APP_KAFKA_SASL_USERNAME": user[0],
        "STREAM_APP_KAFKA_SASL_PASSWORD": user[1],
    }


def tls_env(listeners: Listeners) -> dict[str, str]:
    return {
        **worker_env(listeners.tls),
        "STREAM_APP_KAFKA_SECURITY_PROTOCOL": "SSL",
        "STREAM_APP_KAFKA_SSL_CAFILE": listeners.ca_file,
    }


async def round_trip(settings: Settings, payload: bytes) -> list[bytes]:
    """Produce one message with the settings' security options and read it back."""
    producer = AIOKafkaProducer(**settings.kafka_options())
    await producer.start()
    await producer.send_and_wait(settings.topic("usage"), payload, key=b"k")
    await producer.stop()
    consumer = AIOKafkaConsumer(
        settings.topic("usage"), **settings.kafka_options(), auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=10_000)
    finally:
        await consumer.stop()
    return [m.value for messages in batch.values() for m in messages]


async def test_scram_clients_round_trip_and_a_wrong_password_is_refused(sasl_broker: Listeners) -> None:
    sasl = sasl_broker.sasl
    settings = Settings.from_env(sasl_env(sasl, "SCRAM-SHA-256", BOB))
    assert await ensure_topics(settings)
    assert await round_trip(settings, b"hello") == [b"hello"]
    wrong = Settings.from_env(sasl_env(sasl, "SCRAM-SHA-256", (BOB[0], "not-the-password")))
    with pytest.raises(Exception):  # noqa: B017 - aiokafka raises its own authentication error
        await asyncio.wait_for(ensure_topics(wrong), 30)


@pytest.mark.parametrize("transport", ["sasl_plain", "tls"])
async def test_a_worker_over_sasl_or_tls_suspends_and_never_logs_the_password(
    transport: str, sasl_broker: Listeners, start_worker: Callable[[dict[str, str]], WorkerProcess]
) -> None:
    plain = sasl_broker.plain
    env = tls_env(sasl_broker) if transport == "tls" else sasl_env(sasl_broker.sasl, "PLAIN", ALICE)
    worker = start_worker(env)
    settings = worker.settings
    sim = iccid()
    producer = AIOKafkaProducer(**settings.kafka_options())
    await producer.start()
    out = await outputs_for(plain, settings)
    try:
        await send(producer, settings, "subscriptions", subscription(sim, 1000))
        await send(producer, settings, "usage", usage(sim, 400, "s1"))
        await send(producer, settings, "usage", usage(sim, 700, "s2"))
        await out.wait_for(lambda _: len(out.of("commands", iccid=sim)) == 1)
    finally:
        await out.consumer.stop()
        await producer.stop()
    assert out.of("commands", iccid=sim)[0]["action"] == "suspend"
    assert ALICE[1] not in worker.log()
    assert ALICE[1] not in repr(settings)
    assert os.environ.get("STREAM_APP_KAFKA_SASL_PASSWORD") is None  # the test did not leak it


async def test_tls_clients_verify_the_broker_and_round_trip(sasl_broker: Listeners) -> None:
    env = tls_env(sasl_broker)
    settings = Settings.from_env(env)
    assert await asyncio.wait_for(ensure_topics(settings), 60)
    assert await round_trip(settings, b"over tls") == [b"over tls"]
    # without the CA the broker's self-signed certificate is refused
    untrusted = Settings.from_env({**env, "STREAM_APP_KAFKA_SSL_CAFILE": ""})
    with pytest.raises(Exception):  # noqa: B017 - aiokafka wraps the TLS failure in its own error
        await asyncio.wait_for(ensure_topics(untrusted), 30)
