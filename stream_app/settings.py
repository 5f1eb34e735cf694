"""Settings from the environment, in one frozen object that reports every bad value at once.

All variables are prefixed ``STREAM_APP_`` except ``KAFKA_BOOTSTRAP_SERVERS``, the name
every Kafka tool and operator already uses. Faust's own settings are given an env prefix
(``STREAM_APP_FAUST_``) by the app factory, so unprefixed variables such as
``BROKER_URL`` or a Kubernetes-injected ``WEB_PORT`` cannot override them.

Any other ``STREAM_APP_*`` variable is reported as an unknown setting, with the closest
real name, and stops start-up like a bad value: a misspelled setting silently left at
its default (an API token that is never asked for, a partition count that creates the
topics wrong for good) costs far more than a refused start, whose message names the fix.
"""

from __future__ import annotations

import difflib
import os
import re
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from .clock import Clock, SimulatedClock, WallClock
from .domain import Policy
from .domain.timeutil import TimeFormatError, parse_duration, parse_time, zone
from .topics import REGISTRY, env_name

T = TypeVar("T")


class SettingsError(ValueError):
    """Every bad setting, one per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid settings:\n  " + "\n  ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Variable:
    name: str
    default: str
    help: str


# The documented configuration table (docs/operations.md "Configuration" is generated from this).
VARIABLES: tuple[Variable, ...] = (
    Variable(
        "KAFKA_BOOTSTRAP_SERVERS",
        "127.0.0.1:9092",
        "Kafka bootstrap servers, comma-separated; unset: the local broker, 127.0.0.1:STREAM_APP_KAFKA_PORT",
    ),
    Variable(
        "STREAM_APP_KAFKA_PORT",
        "9092",
        "port of the local broker (`stream-app broker`, what `make run` starts)",
    ),
    Variable("STREAM_APP_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
    Variable("STREAM_APP_KAFKA_SASL_MECHANISM", "", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL_*)"),
    Variable("STREAM_APP_KAFKA_SASL_USERNAME", "", "SASL user name"),
    Variable("STREAM_APP_KAFKA_SASL_PASSWORD", "", "SASL password (a secret: never echoed)"),
    Variable("STREAM_APP_KAFKA_SSL_CAFILE", "", "CA bundle for TLS (default: the system's)"),
    Variable("STREAM_APP_KAFKA_SSL_CERTFILE", "", "client certificate for TLS client authentication"),
    Variable("STREAM_APP_KAFKA_SSL_KEYFILE", "", "client key for TLS client authentication"),
    Variable("STREAM_APP_ID", "stream-app", "application id: consumer group and changelog prefix"),
    Variable("STREAM_APP_PARTITIONS", "8", "partitions of every topic (inputs must be co-partitioned)"),
    Variable("STREAM_APP_REPLICATION_FACTOR", "1", "replication factor of topics created by stream-app"),
    Variable(
        "STREAM_APP_TIMEZONE", "Asia/Shanghai", "billing time zone (a subscription's timezone overrides)"
    ),
    Variable("STREAM_APP_WARN_AT", "0.8,0.9,1.0", "default quota thresholds, fractions of the quota"),
    Variable(
        "STREAM_APP_DEDUPE_HORIZON", "7d", "records starting earlier than now minus this go to dead letters"
    ),
    Variable(
        "STREAM_APP_FORECAST_HORIZON", "72h", "forecast alerts when exhaustion is projected within this"
    ),
    Variable("STREAM_APP_MAX_FUTURE_SKEW", "15m", "records ending later than now plus this are rejected"),
    Variable("STREAM_APP_MAX_MESSAGE_BYTES", "65536", "larger input messages are rejected before parsing"),
    Variable("STREAM_APP_GRACE_MONTHS", "3", "calendar months after expiry before the number is cancelled"),
    Variable("STREAM_APP_EXPIRY_WARN_DAYS", "30,7,1", "expiry_upcoming alerts this many days before expiry"),
    Variable("STREAM_APP_GRACE_WARN_DAYS", "7", "grace_ending alert this many days before cancellation"),
    Variable(
        "STREAM_APP_RETENTION_FEE", "500", "number-retention fee per month suspended for expiry (minor units)"
    ),
    Variable("STREAM_APP_RETENTION_CURRENCY", "CNY", "currency of the number-retention fee (ISO 4217)"),
    Variable(
        "STREAM_APP_COMMAND_ACK_TIMEOUT",
        "",
        "acknowledgement tracking on: a command with no result this long is sent again (e.g. 10m)",
    ),
    Variable(
        "STREAM_APP_COMMAND_MAX_ATTEMPTS",
        "6",
        "sends of a command before command_failed (acknowledgement tracking)",
    ),
    Variable("STREAM_APP_CLOCK", "wall", "wall or simulated"),
    Variable("STREAM_APP_CLOCK_START", "", "simulated clock: RFC 3339 time at the anchor"),
    Variable("STREAM_APP_CLOCK_SPEED", "1", "simulated clock: simulated seconds per wall second"),
    Variable(
        "STREAM_APP_CLOCK_ANCHOR",
        "",
        "simulated clock: wall epoch seconds at which it shows START (default: start-up)",
    ),
    Variable(
        "STREAM_APP_TICK_INTERVAL", "10s", "how often each owned partition is ticked (month starts etc.)"
    ),
    Variable("STREAM_APP_STORE", "memory://", "table store: memory:// or rocksdb://"),
    Variable("STREAM_APP_DATA_DIR", ".stream-app-data", "worker data directory (tables)"),
    Variable(
        "STREAM_APP_ROCKSDB_MEMORY_MIB",
        "256",
        "rocksdb:// only: MiB of write buffers and block cache, shared out over the partitions",
    ),
    Variable("STREAM_APP_STANDBY_REPLICAS", "1", "standby table replicas for fast failover"),
    Variable("STREAM_APP_WEB_HOST", "127.0.0.1", "host name peers use to reach this worker's web server"),
    Variable("STREAM_APP_WEB_PORT", "6066", "worker web server port"),
    Variable(
        "STREAM_APP_API_TOKEN",
        "",
        "if set, the /sims and /pools endpoints require 'Authorization: Bearer <token>'",
    ),
    Variable(
        "STREAM_APP_BROKER_LOST_AFTER",
        "30s",
        "/readyz answers 503 once Kafka has not answered the worker this long",
    ),
    Variable("STREAM_APP_EVENT_LOOP", "uvloop", "uvloop (faster) or asyncio"),
    Variable("STREAM_APP_LOG_LEVEL", "info", "debug, info, warning or error"),
    Variable("STREAM_APP_LOG_FORMAT", "text", "text (human-readable) or json (one object per line)"),
    *(
        Variable(env_name(spec.logical), spec.default_name, f"name of the {spec.logical} topic")
        for spec in REGISTRY
    ),
)
_DEFAULTS = {v.name: v.default for v in VARIABLES}
SECRETS = frozenset({"STREAM_APP_API_TOKEN", "STREAM_APP_KAFKA_SASL_PASSWORD"})
"""Never echoed: not in errors, repr, logs or metrics."""
LOCAL_BROKER_VARIABLES: tuple[Variable, ...] = tuple(
    v
    for v in (
        Variable("STREAM_APP_KAFKA_PORT", "9092", "local broker (stream-app broker, make run): client port"),
        Variable("STREAM_APP_KAFKA_CONTROLLER_PORT", "9093", "local broker: KRaft controller port"),
        Variable("STREAM_APP_KAFKA_HOME", ".kafka", "local broker: folder of its jars, data, log and pid"),
    )
    if v.name not in _DEFAULTS  # one the worker reads too is documented in VARIABLES
)
"""Read by the local development broker only, not by the worker."""
FAUST_PREFIX = "STREAM_APP_FAUST_"
_KNOWN = {v.name for v in (*VARIABLES, *LOCAL_BROKER_VARIABLES)}
# What Kubernetes injects for a Service named stream-app* when service links are on
# (deploy/k8s turns them off; other manifests may not): legitimate, never a typo.
_SERVICE_LINK = re.compile(r"STREAM_APP\w*_(SERVICE_HOST|SERVICE_PORT\w*|PORT_\d+_(TCP|UDP|SCTP)\w*)")
_SERVICE_URL = re.compile(r"(tcp|udp|sctp)://")


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """A problem line for every ``STREAM_APP_*`` variable stream-app does not read, with
    the closest real name when one is close (compared without the common prefix)."""
    problems = []
    by_suffix = {name.removeprefix("STREAM_APP_"): name for name in _KNOWN}
    for name in sorted(env):
        if (
            not name.startswith("STREAM_APP_")
            or name in _KNOWN
            or name.startswith(FAUST_PREFIX)
            or _SERVICE_LINK.fullmatch(name)
            or (name.endswith("_PORT") and _SERVICE_URL.match(env[name]))
        ):
            continue
        close = difflib.get_close_matches(name.removeprefix("STREAM_APP_"), by_suffix, n=1, cutoff=0.75)
        guess = by_suffix[close[0]] if close else None
        secret = guess in SECRETS or any(word in name for word in ("TOKEN", "PASSWORD", "SECRET"))
        shown = "<secret>" if secret else env[name]
        hint = (
            f"did you mean {guess}?"
            if guess
            else f"`stream-app settings` lists them all; Faust's own take the prefix {FAUST_PREFIX}"
        )
        problems.append(f"{name}={shown}: unknown setting; {hint}")
    return problems


@dataclass(frozen=True, slots=True)
class Settings:
    bootstrap_servers: str
    app_id: str
    partitions: int
    replication_factor: int
    timezone: str
    warn_at: tuple[float, ...]
    dedupe_horizon: timedelta
    forecast_horizon: timedelta
    max_future_skew: timedelta
    max_message_bytes: int
    grace_months: int
    expiry_warn_days: tuple[int, ...]
    grace_warn_days: int
    retention_fee: int
    retention_currency: str
    command_ack_timeout: timedelta | None
    command_max_attempts: int
    clock_kind: str
    clock_start: datetime | None
    clock_speed: float
    clock_anchor: float
    tick_interval: timedelta
    store: str
    data_dir: str
    rocksdb_memory_mib: int
    standby_replicas: int
    web_host: str
    event_loop: str
    web_port: int
    broker_lost_after: timedelta
    log_level: str
    log_format: str
    api_token: str | None = field(default=None, repr=False)
    """A secret: kept out of repr, logs and metrics."""
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = field(default=None, repr=False)
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    topic_names: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        source = os.environ if env is None else env
        problems: list[str] = unknown_variables(source)

        def get(name: str, parse: Callable[[str], T], fallback: T, default: str | None = None) -> T:
            raw = source.get(name, _DEFAULTS[name] if default is None else default)
            try:
                return parse(raw.strip())
            except (ValueError, TimeFormatError) as exc:
                shown = "<secret>" if name in SECRETS else repr(raw)
                problems.append(f"{name}={shown}: {exc}")
                return fallback

        clock_kind = get("STREAM_APP_CLOCK", _choice("wall", "simulated"), "wall")
        clock_start = get("STREAM_APP_CLOCK_START", _optional(parse_time), None)
        if clock_kind == "simulated" and clock_start is None:
            problems.append("STREAM_APP_CLOCK_START: required when STREAM_APP_CLOCK=simulated")
        names = {
            spec.logical: get(env_name(spec.logical), _topic_name, spec.default_name) for spec in REGISTRY
        }
        if len(set(names.values())) != len(names):
            problems.append("STREAM_APP_TOPIC_*: two topics share one name")
        guarantee = source.get("STREAM_APP_FAUST_PROCESSING_GUARANTEE", "at_least_once").strip()
        if guarantee.lower().replace("-", "_") != "at_least_once":
            # writer.py sends on Faust's plain producer, outside any transaction: exactly_once
            # would commit offsets transactionally around writes that are not
            # (docs/reliability.md says why at-least-once was chosen).
            problems.append(
                f"STREAM_APP_FAUST_PROCESSING_GUARANTEE={guarantee!r}: only at_least_once is supported"
            )
        # Unset, the servers are the local broker's, wherever STREAM_APP_KAFKA_PORT put it.
        local = f"127.0.0.1:{get('STREAM_APP_KAFKA_PORT', _int_range(1, 65535), 9092)}"
        settings = cls(
            bootstrap_servers=get("KAFKA_BOOTSTRAP_SERVERS", _non_empty, local, default=local),
            app_id=get("STREAM_APP_ID", _topic_name, "stream-app"),
            partitions=get("STREAM_APP_PARTITIONS", _int_range(1, 10_000), 8),
            replication_factor=get("STREAM_APP_REPLICATION_FACTOR", _int_range(1, 100), 1),
            timezone=get("STREAM_APP_TIMEZONE", _zone_name, "Asia/Shanghai"),
            warn_at=get("STREAM_APP_WARN_AT", _fractions, (0.8, 0.9, 1.0)),
            dedupe_horizon=get("STREAM_APP_DEDUPE_HORIZON", _positive_duration, timedelta(days=7)),
            forecast_horizon=get("STREAM_APP_FORECAST_HORIZON", _positive_duration, timedelta(hours=72)),
            max_future_skew=get("STREAM_APP_MAX_FUTURE_SKEW", parse_duration, timedelta(minutes=15)),
            max_message_bytes=get("STREAM_APP_MAX_MESSAGE_BYTES", _int_range(256, 1 << 30), 65536),
            grace_months=get("STREAM_APP_GRACE_MONTHS", _int_range(0, 120), 3),
            expiry_warn_days=get("STREAM_APP_EXPIRY_WARN_DAYS", _day_list, (30, 7, 1)),
            grace_warn_days=get("STREAM_APP_GRACE_WARN_DAYS", _int_range(0, 365), 7),
            retention_fee=get("STREAM_APP_RETENTION_FEE", _int_range(0, 10**9), 500),
            retention_currency=get("STREAM_APP_RETENTION_CURRENCY", _currency, "CNY"),
            command_ack_timeout=get("STREAM_APP_COMMAND_ACK_TIMEOUT", _optional(_positive_duration), None),
            command_max_attempts=get("STREAM_APP_COMMAND_MAX_ATTEMPTS", _int_range(1, 100), 6),
            clock_kind=clock_kind,
            clock_start=clock_start,
            clock_speed=get("STREAM_APP_CLOCK_SPEED", _positive_float, 1.0),
            clock_anchor=get("STREAM_APP_CLOCK_ANCHOR", _optional(float), None) or time.time(),
            tick_interval=get("STREAM_APP_TICK_INTERVAL", _positive_duration, timedelta(seconds=10)),
            store=get("STREAM_APP_STORE", _choice("memory://", "rocksdb://"), "memory://"),
            data_dir=get("STREAM_APP_DATA_DIR", _non_empty, ".stream-app-data"),
            rocksdb_memory_mib=get("STREAM_APP_ROCKSDB_MEMORY_MIB", _int_range(16, 1_048_576), 256),
            standby_replicas=get("STREAM_APP_STANDBY_REPLICAS", _int_range(0, 10), 1),
            web_host=get("STREAM_APP_WEB_HOST", _non_empty, "127.0.0.1"),
            web_port=get("STREAM_APP_WEB_PORT", _int_range(1, 65535), 6066),
            broker_lost_after=get("STREAM_APP_BROKER_LOST_AFTER", _positive_duration, timedelta(seconds=30)),
            event_loop=get("STREAM_APP_EVENT_LOOP", _choice("uvloop", "asyncio"), "uvloop"),
            log_level=get("STREAM_APP_LOG_LEVEL", _choice("debug", "info", "warning", "error"), "info"),
            log_format=get("STREAM_APP_LOG_FORMAT", _choice("text", "json"), "text"),
            api_token=get("STREAM_APP_API_TOKEN", _optional(_token), None),
            kafka_security_protocol=get(
                "STREAM_APP_KAFKA_SECURITY_PROTOCOL",
                _choice("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
                "PLAINTEXT",
            ),
            kafka_sasl_mechanism=get(
                "STREAM_APP_KAFKA_SASL_MECHANISM",
                _optional(_choice("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")),
                None,
            ),
            kafka_sasl_username=get("STREAM_APP_KAFKA_SASL_USERNAME", _optional(str), None),
            kafka_sasl_password=get("STREAM_APP_KAFKA_SASL_PASSWORD", _optional(str), None),
            kafka_ssl_cafile=get("STREAM_APP_KAFKA_SSL_CAFILE", _optional(_file), None),
            kafka_ssl_certfile=get("STREAM_APP_KAFKA_SSL_CERTFILE", _optional(_file), None),
            kafka_ssl_keyfile=get("STREAM_APP_KAFKA_SSL_KEYFILE", _optional(_file), None),
            topic_names=names,
        )
        if settings.kafka_security_protocol.startswith("SASL_") and not (
            settings.kafka_sasl_mechanism and settings.kafka_sasl_username and settings.kafka_sasl_password
        ):
            problems.append(
                "STREAM_APP_KAFKA_SASL_*: a SASL protocol needs a mechanism, a user name and a password"
            )
        if problems:
            raise SettingsError(problems)
        return settings

    def topic(self, logical: str) -> str:
        return self.topic_names[logical]

    def policy(self) -> Policy:
        return Policy(
            timezone=self.timezone,
            warn_at=self.warn_at,
            dedupe_horizon=self.dedupe_horizon,
            forecast_horizon=self.forecast_horizon,
            max_future_skew=self.max_future_skew,
            grace_months=self.grace_months,
            expiry_warn_days=self.expiry_warn_days,
            grace_warn_days=self.grace_warn_days,
            retention_fee=self.retention_fee,
            retention_currency=self.retention_currency,
            ack_timeout=self.command_ack_timeout,
            max_attempts=self.command_max_attempts,
        )

    def kafka_options(self) -> dict[str, Any]:
        """Connection and security options for every aiokafka client stream-app makes."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            options["ssl_context"] = self.ssl_context()
        if self.kafka_security_protocol.startswith("SASL_"):
            options["sasl_mechanism"] = self.kafka_sasl_mechanism
            options["sasl_plain_username"] = self.kafka_sasl_username
            options["sasl_plain_password"] = self.kafka_sasl_password
        return options

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.kafka_ssl_cafile)
        if self.kafka_ssl_certfile:
            context.load_cert_chain(self.kafka_ssl_certfile, self.kafka_ssl_keyfile)
        return context

    def clock(self) -> Clock:
        if self.clock_kind == "simulated" and self.clock_start is not None:
            return SimulatedClock(self.clock_start, self.clock_speed, self.clock_anchor)
        return WallClock()


def _non_empty(raw: str) -> str:
    if not raw:
        raise ValueError("must not be empty")
    return raw


def _file(raw: str) -> str:
    if not os.path.isfile(raw):
        raise ValueError("no such file")
    return raw


def _token(raw: str) -> str:
    if len(raw) < 16 or not raw.isascii() or not raw.isprintable():
        raise ValueError("use at least 16 printable ASCII characters")
    return raw


def _topic_name(raw: str) -> str:
    if not raw or len(raw) > 200 or any(not (c.isalnum() or c in "._-") for c in raw):
        raise ValueError("use letters, digits, '.', '_' and '-' only")
    return raw


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return parse


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be positive")
    return value


def _positive_duration(raw: str) -> timedelta:
    value = parse_duration(raw)
    if value <= timedelta(0):
        raise ValueError("must be positive")
    return value


def _zone_name(raw: str) -> str:
    zone(raw)
    return raw


def _fractions(raw: str) -> tuple[float, ...]:
    values = sorted({float(part) for part in raw.split(",") if part.strip()})
    if not values or any(not 0 < v <= 1 for v in values):
        raise ValueError("a comma-separated list of fractions in (0, 1]")
    return tuple(values)


def _day_list(raw: str) -> tuple[int, ...]:
    days = sorted({int(part) for part in raw.split(",") if part.strip()}, reverse=True)
    if any(d < 1 or d > 365 for d in days):
        raise ValueError("a comma-separated list of whole days between 1 and 365")
    return tuple(days)


def _currency(raw: str) -> str:
    if len(raw) != 3 or not raw.isascii() or not raw.isupper():
        raise ValueError("an ISO 4217 code such as CNY")
    return raw


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return raw

    return parse


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def wrapped(raw: str) -> Any:
        return parse(raw) if raw else None

    return wrapped
