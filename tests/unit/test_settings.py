from __future__ import annotations

from datetime import timedelta

import pytest

from stream_app.clock import SimulatedClock, WallClock
from stream_app.settings import VARIABLES, Settings, SettingsError

from .scenario import t


def test_defaults_follow_the_contract() -> None:
    settings = Settings.from_env({})
    assert settings.topic("usage") == "sim.usage"
    assert settings.topic("deadletter") == "sim.deadletter"
    assert settings.partitions == 8
    policy = settings.policy()
    assert policy.timezone == "Asia/Shanghai"
    assert policy.warn_at == (0.8, 0.9, 1.0)
    assert policy.dedupe_horizon == timedelta(days=7)
    assert policy.forecast_horizon == timedelta(hours=72)
    assert isinstance(settings.clock(), WallClock)


def test_every_bad_value_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(
            {
                "STREAM_APP_PARTITIONS": "zero",
                "STREAM_APP_TIMEZONE": "Mars/Olympus",
                "STREAM_APP_WARN_AT": "0.5,1.5",
                "STREAM_APP_DEDUPE_HORIZON": "a week",
                "STREAM_APP_CLOCK": "simulated",
                "STREAM_APP_TOPIC_USAGE": "sim usage",
                "STREAM_APP_FAUST_PROCESSING_GUARANTEE": "exactly_once",
            }
        )
    named = {problem.split("=")[0].split(":")[0] for problem in caught.value.problems}
    assert named == {
        "STREAM_APP_PARTITIONS",
        "STREAM_APP_TIMEZONE",
        "STREAM_APP_WARN_AT",
        "STREAM_APP_DEDUPE_HORIZON",
        "STREAM_APP_CLOCK_START",
        "STREAM_APP_TOPIC_USAGE",
        "STREAM_APP_FAUST_PROCESSING_GUARANTEE",
    }


def test_topic_names_are_configurable_and_must_differ() -> None:
    assert Settings.from_env({"STREAM_APP_TOPIC_USAGE": "cdr.raw"}).topic("usage") == "cdr.raw"
    with pytest.raises(SettingsError):
        Settings.from_env({"STREAM_APP_TOPIC_ALERTS": "sim.commands"})


def test_simulated_clock_runs_at_its_speed_from_its_anchor() -> None:
    settings = Settings.from_env(
        {
            "STREAM_APP_CLOCK": "simulated",
            "STREAM_APP_CLOCK_START": "2026-03-31T23:59:00+08:00",
            "STREAM_APP_CLOCK_SPEED": "60",
            "STREAM_APP_CLOCK_ANCHOR": "1000",
        }
    )
    clock = settings.clock()
    assert isinstance(clock, SimulatedClock)
    assert clock.start == t("2026-03-31T23:59:00+08:00")
    assert clock.speed == 60.0
    assert clock.anchor == 1000.0


def test_every_variable_is_documented_once() -> None:
    names = [v.name for v in VARIABLES]
    assert len(names) == len(set(names))
    assert all(v.help for v in VARIABLES)


def test_the_operations_configuration_table_lists_every_variable_with_its_default() -> None:
    from pathlib import Path

    operations = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    for variable in VARIABLES:
        default = f" `{variable.default}` " if variable.default else " "
        assert f"| `{variable.name}` |{default}|" in operations, variable.name


def test_the_api_token_is_a_secret_never_echoed() -> None:
    token = "s3cret-token-0123456789"
    settings = Settings.from_env({"STREAM_APP_API_TOKEN": token})
    assert settings.api_token == token
    assert token not in repr(settings)
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"STREAM_APP_API_TOKEN": "short-secret"})
    assert "short-secret" not in str(caught.value)
    assert "STREAM_APP_API_TOKEN=<secret>" in str(caught.value)


def test_kafka_security_settings_become_client_options_and_hide_the_password() -> None:
    env = {
        "STREAM_APP_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "STREAM_APP_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "STREAM_APP_KAFKA_SASL_USERNAME": "svc-stream-app",
        "STREAM_APP_KAFKA_SASL_PASSWORD": "hunter2-but-longer",
    }
    settings = Settings.from_env(env)
    options = settings.kafka_options()
    assert (options["security_protocol"], options["sasl_mechanism"], options["sasl_plain_username"]) == (
        "SASL_PLAINTEXT",
        "SCRAM-SHA-512",
        "svc-stream-app",
    )
    assert "hunter2-but-longer" not in repr(settings)
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(
            {**env, "STREAM_APP_KAFKA_SASL_PASSWORD": "", "STREAM_APP_KAFKA_SSL_CAFILE": "/nope"}
        )
    problems = "\n".join(caught.value.problems)
    assert "needs a mechanism, a user name and a password" in problems
    assert "STREAM_APP_KAFKA_SSL_CAFILE" in problems
    assert Settings.from_env({}).kafka_options() == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "PLAINTEXT",
    }


def test_unset_bootstrap_servers_follow_the_local_broker_s_port() -> None:
    assert Settings.from_env({}).bootstrap_servers == "127.0.0.1:9092"
    assert Settings.from_env({"STREAM_APP_KAFKA_PORT": "19092"}).bootstrap_servers == "127.0.0.1:19092"
    given = {"STREAM_APP_KAFKA_PORT": "19092", "KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9092,kafka-2:9092"}
    assert Settings.from_env(given).bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"STREAM_APP_KAFKA_PORT": "ninety", "STREAM_APP_BROKER_LOST_AFTER": "0s"})
    problems = "\n".join(caught.value.problems)
    assert "STREAM_APP_KAFKA_PORT='ninety'" in problems
    assert "STREAM_APP_BROKER_LOST_AFTER='0s'" in problems


def test_readiness_gives_up_on_the_broker_after_a_setting() -> None:
    assert Settings.from_env({}).broker_lost_after == timedelta(seconds=30)
    assert Settings.from_env({"STREAM_APP_BROKER_LOST_AFTER": "5s"}).broker_lost_after == timedelta(seconds=5)


def test_a_misspelled_setting_stops_the_start_with_the_closest_real_name() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(
            {"STREAM_APP_PARTITONS": "4", "STREAM_APP_TOPIC_USGAE": "cdr", "STREAM_APP_FOO": "1"}
        )
    assert caught.value.problems == [
        "STREAM_APP_FOO=1: unknown setting; `stream-app settings` lists them all; "
        "Faust's own take the prefix STREAM_APP_FAUST_",
        "STREAM_APP_PARTITONS=4: unknown setting; did you mean STREAM_APP_PARTITIONS?",
        "STREAM_APP_TOPIC_USGAE=cdr: unknown setting; did you mean STREAM_APP_TOPIC_USAGE?",
    ]


def test_a_misspelled_secret_is_named_but_its_value_never_shown() -> None:
    token = "s3cret-token-0123456789"
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"STREAM_APP_API_TOKN": token, "STREAM_APP_KAFKA_SASL_PASWORD": token})
    assert token not in str(caught.value)
    assert "STREAM_APP_API_TOKN=<secret>: unknown setting; did you mean STREAM_APP_API_TOKEN?" in str(
        caught.value
    )
    assert "did you mean STREAM_APP_KAFKA_SASL_PASSWORD?" in str(caught.value)


def test_faust_local_broker_and_kubernetes_variables_are_not_unknown() -> None:
    Settings.from_env(
        {
            "STREAM_APP_FAUST_BROKER_SESSION_TIMEOUT": "10",
            "STREAM_APP_KAFKA_PORT": "19092",
            "STREAM_APP_KAFKA_CONTROLLER_PORT": "19093",
            "STREAM_APP_KAFKA_HOME": "/tmp/kafka",
            # what Kubernetes service links inject for Services named stream-app*
            "STREAM_APP_SERVICE_HOST": "10.0.0.7",
            "STREAM_APP_SERVICE_PORT": "6066",
            "STREAM_APP_SERVICE_PORT_HTTP": "6066",
            "STREAM_APP_PORT": "tcp://10.0.0.7:6066",
            "STREAM_APP_PORT_6066_TCP": "tcp://10.0.0.7:6066",
            "STREAM_APP_PORT_6066_TCP_ADDR": "10.0.0.7",
            "STREAM_APP_HEADLESS_PORT": "tcp://10.0.0.8:6066",
            "OTHER_APP_PARTITONS": "4",
        }
    )
    with pytest.raises(SettingsError):  # a port that is no service link is a typo
        Settings.from_env({"STREAM_APP_WEBB_PORT": "6067"})
