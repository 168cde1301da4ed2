"""A running gateway (real Kafka broker, real chdb store) for the integration tests of this folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.bus.topics import TopicNames
from streams.core.knowledge.knowledge import Knowledge
from streams.local.kafka import LocalKafka
from streams.settings import Settings
from streams.storage import Store
from tests.fixtures.gateway import GatewayThread, write_keys_file


@pytest.fixture(scope="session")
def knowledge() -> Knowledge:
    return Knowledge.load()


@pytest.fixture
def gateway_settings(kafka: LocalKafka, topic_prefix: str, tmp_path: Path) -> Settings:
    kafka.create_topics(TopicNames(topic_prefix).all(), partitions=2)
    return Settings(
        kafka_bootstrap=kafka.bootstrap,
        topic_prefix=topic_prefix,
        gateway_port=0,
        gateway_keys_file=write_keys_file(tmp_path / "keys.yaml", {"slow": "2/minute"}),
        gateway_max_body_bytes=2 * 1024 * 1024,
        gateway_max_record_bytes=4096,
        gateway_max_field_chars=1000,
        gateway_jurisdiction_id="xuhui.sh.cn",
    )


@pytest.fixture
def gateway(gateway_settings: Settings, chdb_store: Store, knowledge: Knowledge) -> Iterator[GatewayThread]:
    running = GatewayThread(gateway_settings, chdb_store).start(knowledge)
    yield running
    running.stop()
