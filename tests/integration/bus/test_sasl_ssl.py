"""Kafka over SASL_SSL (SCRAM-SHA-512) on the real local broker, with certificates made in the test: the
trust model of docs/security.md — only the gateway's principal may write case.actions."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
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
        topic = ResourcePattern(ResourceType.TOPIC, f"{PREFIX}.case.actions", ACLResourcePatternType.LITERAL)
        admin.create_acls([
            ACL("User:citygrid-gateway", "*", ACLOperation.WRITE, ACLPermissionType.ALLOW, topic),
            ACL("User:citygrid-gateway", "*", ACLOperation.DESCRIBE, ACLPermissionType.ALLOW, topic),
            ACL("User:citygrid-worker", "*", ACLOperation.READ, ACLPermissionType.ALLOW, topic),
            ACL("User:citygrid-worker", "*", ACLOperation.DESCRIBE, ACLPermissionType.ALLOW, topic),
        ])
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
