"""Kafka over SASL_SSL (SCRAM-SHA-512) on the real local broker, with certificates made in the test: the
trust model of docs/security.md — only the gateway's principal may write case.actions."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import ACL, ACLOperation, ACLPermissionType, NewTopic, ResourcePattern, ResourceType
from kafka.admin._acls import ACLResourcePatternType
from kafka.errors import KafkaError

from streams.local.kafka import LocalKafka, SaslSslListener
from streams.local.tls import DevCA

pytestmark = pytest.mark.kafka

USERS = {"admin": "admin-secret-1", "citygrid-worker": "worker-secret-1", "citygrid-gateway": "gateway-secret-1",
         "intruder": "intruder-secret-1"}
PREFIX = "sec"


def _acl(user: str, kind: ResourceType, name: str, operation: ACLOperation, prefixed: bool = False,
         deny: bool = False) -> ACL:
    pattern = ACLResourcePatternType.PREFIXED if prefixed else ACLResourcePatternType.LITERAL
    return ACL(f"User:{user}", "*", operation, ACLPermissionType.DENY if deny else ACLPermissionType.ALLOW,
               ResourcePattern(kind, name, pattern))


# The ACLs docs/security.md describes: the worker owns its topics, groups and changelogs but may not write
# case.actions; the gateway may only write case.actions (and raw feeds, not needed here).
WORKER_ACLS = [
    _acl("citygrid-worker", ResourceType.TOPIC, f"{PREFIX}.", ACLOperation.ALL, prefixed=True),
    _acl("citygrid-worker", ResourceType.TOPIC, f"citygrid-{PREFIX}", ACLOperation.ALL, prefixed=True),
    _acl("citygrid-worker", ResourceType.GROUP, f"citygrid-{PREFIX}", ACLOperation.ALL, prefixed=True),
    _acl("citygrid-worker", ResourceType.CLUSTER, "kafka-cluster", ACLOperation.CREATE),
    _acl("citygrid-worker", ResourceType.CLUSTER, "kafka-cluster", ACLOperation.DESCRIBE),
    _acl("citygrid-worker", ResourceType.CLUSTER, "kafka-cluster", ACLOperation.IDEMPOTENT_WRITE),
    _acl("citygrid-worker", ResourceType.TOPIC, f"{PREFIX}.case.actions", ACLOperation.WRITE, deny=True),
]
GATEWAY_ACLS = [
    _acl("citygrid-gateway", ResourceType.TOPIC, f"{PREFIX}.case.actions", ACLOperation.WRITE),
    _acl("citygrid-gateway", ResourceType.TOPIC, f"{PREFIX}.case.actions", ACLOperation.DESCRIBE),
]


@dataclass
class SecureBroker:
    broker: LocalKafka
    ca: DevCA

    def client(self, user: str, password: str | None = None, cafile: Path | None = None) -> dict[str, object]:
        """kafka-python options for ``user`` over SASL_SSL."""
        return {"bootstrap_servers": self.broker.sasl_ssl_bootstrap, "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": user,
                "sasl_plain_password": password or USERS[user], "ssl_cafile": str(cafile or self.ca.cert)}


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    base = tmp_path_factory.mktemp("kafka-sasl")
    ca = DevCA(base / "pki")
    issued = ca.issue("broker", hosts=["127.0.0.1", "localhost"])
    broker = LocalKafka(base / "broker", sasl_ssl=SaslSslListener(issued.chain, dict(USERS)))
    broker.start()
    secure = SecureBroker(broker, ca)
    admin = KafkaAdminClient(**secure.client("admin"))
    try:
        admin.create_topics([NewTopic(f"{PREFIX}.case.actions", 1, 1)])
        admin.create_acls(WORKER_ACLS + GATEWAY_ACLS)
    finally:
        admin.close()
    yield secure
    broker.stop()


def produce(options: dict[str, object], topic: str) -> None:
    producer = KafkaProducer(**options, acks="all", max_block_ms=10_000, request_timeout_ms=10_000, retries=0)
    try:
        producer.send(topic, b'{"action": "close"}').get(timeout=15)
    finally:
        producer.close(timeout=5)


def test_the_gateway_principal_may_write_case_actions(secure_broker: SecureBroker) -> None:
    produce(secure_broker.client("citygrid-gateway"), f"{PREFIX}.case.actions")


@pytest.mark.parametrize("user", ["intruder", "citygrid-worker"])
def test_other_principals_may_not_write_case_actions(secure_broker: SecureBroker, user: str) -> None:
    with pytest.raises(KafkaError) as caught:
        produce(secure_broker.client(user), f"{PREFIX}.case.actions")
    assert "Authorization" in type(caught.value).__name__ or "Authorization" in str(caught.value)


def _start_producer(secure: SecureBroker, user: str, password: str, cafile: Path) -> None:
    """An aiokafka producer over SASL_SSL: started and stopped (raises when refused)."""
    import asyncio

    from aiokafka import AIOKafkaProducer
    from aiokafka.helpers import create_ssl_context

    async def main() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=secure.broker.sasl_ssl_bootstrap, security_protocol="SASL_SSL",
                                    sasl_mechanism="SCRAM-SHA-512", sasl_plain_username=user,
                                    sasl_plain_password=password, ssl_context=create_ssl_context(cafile=str(cafile)))
        try:
            await producer.start()
        finally:
            await producer.stop()

    asyncio.run(main())


def test_a_wrong_password_is_refused(secure_broker: SecureBroker) -> None:
    from aiokafka.errors import KafkaConnectionError

    with pytest.raises(KafkaConnectionError):
        _start_producer(secure_broker, "citygrid-gateway", "guessed", secure_broker.ca.cert)
    assert "invalid credentials with SASL mechanism SCRAM-SHA-512" in secure_broker.broker.tail_log(400)


def test_an_untrusted_broker_certificate_is_refused(secure_broker: SecureBroker, tmp_path: Path) -> None:
    from aiokafka.errors import KafkaConnectionError

    stranger = DevCA(tmp_path / "other")
    with pytest.raises(KafkaConnectionError):
        _start_producer(secure_broker, "admin", USERS["admin"], stranger.cert)
    _start_producer(secure_broker, "admin", USERS["admin"], secure_broker.ca.cert)   # the right CA works


@pytest.mark.e2e
def test_the_worker_runs_over_sasl_ssl_through_the_client_factory(secure_broker: SecureBroker, tmp_path: Path) -> None:
    """The real worker with SASL_SSL settings: Faust (agents, tables), aiokafka (lean ingest, derived
    producer, ClickHouse sink) and kafka-python (topic creation, lag probe) all get their security from
    streams.bus.clients; a call goes through to ClickHouse."""
    import json
    import os
    import time

    from streams.local.kafka import free_port
    from streams.storage import open_store
    from tests.e2e.helpers import metric_total, wait_until
    from tests.fixtures.worker import TEST_SECRETS, WorkerProcess

    password = tmp_path / "kafka-password"
    password.write_text(USERS["citygrid-worker"] + "\n", encoding="utf-8")
    metrics_port, web_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYGRID_")}
    env.update(TEST_SECRETS)
    env.update({
        "CITYGRID_KAFKA_BOOTSTRAP": secure_broker.broker.sasl_ssl_bootstrap,
        "CITYGRID_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "CITYGRID_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "CITYGRID_KAFKA_SASL_USERNAME": "citygrid-worker", "CITYGRID_KAFKA_SASL_PASSWORD_FILE": str(password),
        "CITYGRID_KAFKA_SSL_CAFILE": str(secure_broker.ca.cert),
        "CITYGRID_TOPIC_PREFIX": PREFIX, "CITYGRID_APP_ID": f"citygrid-{PREFIX}",
        "CITYGRID_STORE_URL": f"chdb://{tmp_path / 'chdb'}", "CITYGRID_DATA_DIR": str(tmp_path / "worker"),
        "CITYGRID_METRICS_PORT": str(metrics_port), "CITYGRID_WEB_PORT": str(web_port),
        "CITYGRID_BATCH_SECONDS": "0.05", "CITYGRID_KAFKA_SESSION_TIMEOUT_SECONDS": "8",
        "CITYGRID_KAFKA_REQUEST_TIMEOUT_SECONDS": "20",
        # a single test broker
        "CITYGRID_TOPIC_REPLICATION_FACTOR": "1", "CITYGRID_TOPIC_MIN_INSYNC_REPLICAS": "1"})
    worker = WorkerProcess(env, tmp_path, tmp_path / "worker.log", metrics_port=metrics_port, web_port=web_port)
    worker.start()
    try:
        worker.wait_healthy(timeout=180)
        received = datetime.now(UTC).isoformat(timespec="seconds")   # inside the event-time window
        call = {"call_id": "SEC-1", "line": "12345", "received_at": received,
                "caller": "13912345678", "text": "钦江路101号楼下饭店油烟直排，呛得人受不了", "address": "钦江路101号"}
        producer = KafkaProducer(**secure_broker.client("admin"), acks="all")
        producer.send(f"{PREFIX}.hotline.calls", json.dumps(call, ensure_ascii=False).encode()).get(timeout=30)
        producer.close()

        def written() -> bool:
            try:
                text = worker.metrics()
            except OSError:
                return False
            return metric_total(text, "citygrid_clickhouse_rows_written_total", table="signals") >= 1 and \
                metric_total(text, "citygrid_clickhouse_rows_written_total", table="dispatches") >= 1

        wait_until(written, 180, "the call in ClickHouse over SASL_SSL", worker.tail)
        started = time.monotonic()
        while "citygrid_consumer_lag{" not in worker.metrics() and time.monotonic() - started < 60:
            time.sleep(1)   # the lag probe (kafka-python admin + consumer) reads offsets over SASL_SSL too
        assert "citygrid_consumer_lag{" in worker.metrics(), worker.tail()
    finally:
        worker.stop()
    store = open_store(f"chdb://{tmp_path / 'chdb'}")
    try:
        assert [r["source_id"] for r in store.query("SELECT source_id FROM signals FINAL")] == ["SEC-1"]
    finally:
        store.close()
