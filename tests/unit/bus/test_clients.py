"""streams.bus.clients: the configuration of every Kafka client, from Settings, in one module."""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from streams.bus import clients
from streams.settings import Settings
from tests.paths import REPO_ROOT

SETTINGS = Settings(kafka_bootstrap="broker-a:9092,broker-b:9092", kafka_session_timeout_seconds=20.0,
                    kafka_request_timeout_seconds=10.0)
ROLES = {name: fn for name, fn in inspect.getmembers(clients, inspect.isfunction)
         if not name.startswith("_") and fn.__module__ == clients.__name__}


def config_of(name: str) -> clients.KafkaConfig:
    fn = ROLES[name]
    extra = {p: "g" if p == "group_id" else 100 for p in list(inspect.signature(fn).parameters)[1:]}
    return fn(SETTINGS, **extra)


@pytest.mark.parametrize("name", sorted(ROLES))
def test_every_client_gets_the_shared_connection_settings(name: str) -> None:
    """Security settings added to a library's connection reach every client of that library."""
    config = config_of(name)
    if name == "faust_app":
        assert config["broker"] == "kafka://broker-a:9092,broker-b:9092"
    else:
        assert config["bootstrap_servers"] == "broker-a:9092,broker-b:9092"


def test_todays_values() -> None:
    assert clients.derived_producer(SETTINGS) == {"bootstrap_servers": SETTINGS.kafka_bootstrap, "linger_ms": 5,
                                                  "acks": "all", "enable_idempotence": True,
                                                  "max_request_size": SETTINGS.kafka_max_message_bytes + 64 * 1024,
                                                  "max_batch_size": 256 * 1024}
    assert clients.lean_producer(SETTINGS)["linger_ms"] == 2 and clients.lean_producer(SETTINGS)["acks"] == "all"
    consumer = clients.batch_consumer(SETTINGS, "app-lean", 5000)
    assert (consumer["group_id"], consumer["max_poll_records"], consumer["enable_auto_commit"]) == ("app-lean", 5000,
                                                                                                    False)
    assert (consumer["session_timeout_ms"], consumer["heartbeat_interval_ms"]) == (20000, 2000)
    faust = clients.faust_app(SETTINGS)
    assert faust["broker_session_timeout"] == 20.0 and faust["broker_heartbeat_interval"] == 2.0
    assert faust["broker_request_timeout"] == 25.0  # outlasts a session timeout
    for name in ("delivery_producer", "redelivery_producer"):
        assert config_of(name)["enable_idempotence"] is True and config_of(name)["acks"] == "all"
    assert clients.delivery_consumer(SETTINGS, "hooks")["client_id"] == "hooks-consumer"
    assert clients.simulator_cases_consumer(SETTINGS)["auto_offset_reset"] == "latest"
    assert clients.faust_app(Settings(kafka_session_timeout_seconds=1.0))["broker_heartbeat_interval"] == 0.5


def kafka_client_calls(path: Path) -> list[str]:
    """Calls that name brokers themselves (a bootstrap_servers= or broker= keyword)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [f"{path.relative_to(REPO_ROOT)}:{node.lineno}" for node in ast.walk(tree)
            if isinstance(node, ast.Call) and any(k.arg in ("bootstrap_servers", "broker") for k in node.keywords)]


def test_no_client_is_configured_outside_the_factory() -> None:
    """streams/local (the development broker's own readiness probe) is exempt: it is not a pipeline client."""
    package = REPO_ROOT / "streams"
    paths = [p for p in package.rglob("*.py") if "local" not in p.relative_to(package).parts
             and p != package / "bus" / "clients.py"]
    assert [hit for p in paths for hit in kafka_client_calls(p)] == []


SECURE = Settings(kafka_bootstrap="broker-a:9093", kafka_security_protocol="SASL_SSL", kafka_sasl_username="worker",
                  kafka_sasl_password="from-the-environment")


@pytest.mark.parametrize("name", sorted(ROLES))
def test_every_client_authenticates_and_encrypts_when_configured(name: str) -> None:
    fn = ROLES[name]
    extra = {p: "g" if p == "group_id" else 100 for p in list(inspect.signature(fn).parameters)[1:]}
    config = fn(SECURE, **extra)
    if name == "faust_app":
        from faust.auth import SASLCredentials

        credentials = config["broker_credentials"]
        assert isinstance(credentials, SASLCredentials) and credentials.username == "worker"
        assert credentials.mechanism.value == "SCRAM-SHA-512" and credentials.ssl_context is not None
        return
    assert config["security_protocol"] == "SASL_SSL" and config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (config["sasl_plain_username"], config["sasl_plain_password"]) == ("worker", "from-the-environment")
    context = config["ssl_context"]
    assert context.verify_mode.name == "CERT_REQUIRED" and context.check_hostname


def test_plaintext_stays_plain_and_tls_alone_needs_no_password() -> None:
    assert clients.lean_producer(SETTINGS).keys() == {"bootstrap_servers", "linger_ms", "acks", "enable_idempotence",
                                                      "max_request_size", "max_batch_size"}
    tls = clients.lean_producer(Settings(kafka_security_protocol="SSL"))
    assert tls["security_protocol"] == "SSL" and "sasl_mechanism" not in tls and tls["ssl_context"]


def test_the_sasl_password_comes_from_a_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-a-mounted-secret\n", encoding="utf-8")
    settings = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="w", kafka_sasl_password_file=secret)
    assert clients.admin(settings)["sasl_plain_password"] == "from-a-mounted-secret"
    with pytest.raises(ValueError, match="CITYGRID_KAFKA_SASL_PASSWORD_FILE"):
        clients.admin(Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="w"))
