"""A single-node KRaft Apache Kafka broker from Maven Central, run with plain ``java``.

For local runs (`make run`) and the test suite; production uses a real cluster. The
jars are collected with Maven on first use into ``<home>/libs`` (cached in ~/.m2
afterwards); pid, logs and data live in ``<home>`` (default ``.kafka/``, git-ignored).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

JVM_OPTS = (
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
"""A small broker that starts fast, for `make run` and the tests. Under load its serial
collector stops it for 158-270 ms in a full collection (about once in a 30 s latency run)."""

KAFKA_JVM_OPTS = (
    "-Xms1g",
    "-Xmx1g",
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
"""What Kafka's own start scripts give a broker (kafka-server-start.sh's heap,
kafka-run-class.sh's collector and JIT settings; exiting on OutOfMemoryError is ours):
the broker a deployment runs, for figures that must not measure the small broker's
collection pauses (`make bench`)."""

STARTED = b"Kafka Server started"


class BrokerError(RuntimeError):
    pass


def _default_deploy_dir() -> Path:
    for candidate in (
        Path(__file__).resolve().parents[2] / "deploy" / "kafka",
        Path.cwd() / "deploy" / "kafka",
    ):
        if (candidate / "pom.xml").exists():
            return candidate
    raise BrokerError("deploy/kafka/pom.xml not found; run from the stream-app checkout")


@dataclass(frozen=True, slots=True)
class LocalBroker:
    home: Path
    """Folder for libs/, data/, broker.log, broker.pid and server.properties."""
    port: int = 9092
    controller_port: int = 9093
    libs: Path | None = None
    """Where the jars are; default ``<home>/libs``."""
    deploy_dir: Path | None = None
    extra_properties: str = ""
    """Appended to server.properties (a later key wins), e.g. a SASL listener for tests."""
    format_args: tuple[str, ...] = ()
    """Extra StorageTool format arguments, e.g. ``--add-scram`` credentials."""
    jvm_options: tuple[str, ...] = JVM_OPTS
    """The JVM's options: the small broker's, or ``KAFKA_JVM_OPTS`` for a deployment's."""

    @classmethod
    def from_env(cls) -> LocalBroker:
        deploy = _default_deploy_dir()
        home = Path(os.environ.get("STREAM_APP_KAFKA_HOME", deploy.parents[1] / ".kafka"))
        return cls(
            home=home.resolve(),
            port=_port("STREAM_APP_KAFKA_PORT", 9092),
            controller_port=_port("STREAM_APP_KAFKA_CONTROLLER_PORT", 9093),
            deploy_dir=deploy,
        )

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def _deploy(self) -> Path:
        return self.deploy_dir or _default_deploy_dir()

    @property
    def _libs(self) -> Path:
        return self.libs or self.home / "libs"

    @property
    def log_file(self) -> Path:
        return self.home / "broker.log"

    @property
    def _pid_file(self) -> Path:
        return self.home / "broker.pid"

    # --- jars ----------------------------------------------------------------------

    def ensure_jars(self) -> Path:
        """Collect the broker's runtime closure once; later calls are instant."""
        libs = self._libs
        if (libs / ".complete").exists():
            return libs
        staging = libs.with_name(libs.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [
            "mvn",
            "-B",
            "-ntp",
            "-q",
            "-f",
            str(self._deploy / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BrokerError(f"mvn failed:\n{result.stdout}\n{result.stderr}")
        if not any(staging.glob("kafka_2.13-*.jar")):
            raise BrokerError(f"mvn produced no kafka_2.13 jar in {staging}")
        (staging / ".complete").write_text("ok\n")
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        return libs

    # --- lifecycle -------------------------------------------------------------------

    def pid(self) -> int | None:
        try:
            pid = int(self._pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except OSError:
            return None
        return pid

    def status(self) -> str:
        pid = self.pid()
        if pid is None:
            return "stopped"
        return f"running pid={pid} bootstrap={self.bootstrap}" + (
            "" if serving(self.bootstrap, timeout=5.0) else " (not serving)"
        )

    def start(self, timeout: float = 90.0) -> str:
        """Start the broker, or reuse one already running here; return its bootstrap."""
        if self.pid() is not None and serving(self.bootstrap, timeout=10.0):
            return self.bootstrap
        self.stop()
        libs = self.ensure_jars()
        self.home.mkdir(parents=True, exist_ok=True)
        data = self.home / "data"
        props = self.home / "server.properties"
        template = (self._deploy / "server.properties.in").read_text()
        props.write_text(
            template.replace("${BROKER_PORT}", str(self.port))
            .replace("${CONTROLLER_PORT}", str(self.controller_port))
            .replace("${DATA_DIR}", str(data))
            + "\n"
            + self.extra_properties
        )
        java = [
            "java",
            *self.jvm_options,
            f"-Dlog4j2.configurationFile={self._deploy / 'log4j2.xml'}",
            "-cp",
            f"{libs}/*",
        ]
        if not (data / "meta.properties").exists():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            result = subprocess.run(
                [
                    *java,
                    "kafka.tools.StorageTool",
                    "format",
                    # "=" keeps an id starting with "-" (1 in 64) from reading as an option
                    f"--cluster-id={cluster_id}",
                    "-c",
                    str(props),
                    *self.format_args,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise BrokerError(f"formatting storage failed:\n{result.stdout}{result.stderr}")
        with self.log_file.open("wb") as log:
            proc = subprocess.Popen(
                [*java, "kafka.Kafka", str(props)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._pid_file.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + timeout
        while STARTED not in self.log_file.read_bytes():
            if proc.poll() is not None:
                raise BrokerError("Kafka exited:\n" + self.log_file.read_text(errors="replace"))
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"Kafka did not start in {timeout:.0f} s; see {self.log_file}")
            time.sleep(0.2)
        if not serving(self.bootstrap, timeout=max(5.0, deadline - time.monotonic())):
            self.stop()
            raise BrokerError(f"Kafka started but does not serve requests; see {self.log_file}")
        return self.bootstrap

    def stop(self, timeout: float = 30.0) -> None:
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.pid() is not None and time.monotonic() < deadline:
                _reap(pid)
                time.sleep(0.2)
            if self.pid() is not None:
                os.kill(pid, signal.SIGKILL)
                time.sleep(0.5)
            _reap(pid)
        self._pid_file.unlink(missing_ok=True)


def _port(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        port = int(raw)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise BrokerError(f"{name}={raw!r}: must be a port number")
    return port


def _reap(pid: int) -> None:
    """Collect our own child's exit status so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def serving(bootstrap: str, timeout: float = 10.0) -> bool:
    """True when the broker answers a real metadata request (a TCP connect is not enough)."""

    async def probe() -> bool:
        from aiokafka.admin import AIOKafkaAdminClient

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
            try:
                await admin.start()
                await admin.list_topics()
                return True
            except Exception:
                await asyncio.sleep(0.5)
            finally:
                await admin.close()
        return False

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(probe())
    # called from async code: probe on a thread of its own rather than nest event loops
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, probe()).result()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
