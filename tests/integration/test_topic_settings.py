"""Topic durability is a setting: created as configured on a real broker, and a topic that exists
with weaker settings stops the worker with an error naming it."""
from __future__ import annotations

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from streams.agents.worker import ensure_topics
from streams.bus.admin import TopicPolicy, TopicSettingsError, create_topics
from streams.bus.topics import TopicNames, changelog_topics
from streams.local.kafka import LocalKafka
from streams.settings import Settings

pytestmark = [pytest.mark.kafka]


def configs(bootstrap: str, names: list[str]) -> dict[str, dict[str, str]]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        found = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names],
                                       config_filter="all")["topic"]
        return {n: {k: v["value"] for k, v in c.items()} for n, c in found.items()}
    finally:
        admin.close()


def test_the_worker_creates_every_topic_as_configured(kafka: LocalKafka, topic_prefix: str) -> None:
    settings = Settings(kafka_bootstrap=kafka.bootstrap, topic_prefix=topic_prefix, app_id=f"app-{topic_prefix}",
                        topic_replication_factor=1, topic_min_insync_replicas=1, topic_partitions=3)
    ensure_topics(settings)
    names = TopicNames(topic_prefix)
    found = configs(kafka.bootstrap, [names.name("cases"), names.name("case.inputs")])
    assert found[names.name("cases")]["cleanup.policy"] == "compact"
    assert found[names.name("case.inputs")]["cleanup.policy"] == "delete"
    assert {c["min.insync.replicas"] for c in found.values()} == {"1"}
    ensure_topics(settings)  # idempotent: existing topics pass the check


def test_the_production_defaults_need_three_brokers_and_say_so(kafka: LocalKafka, topic_prefix: str) -> None:
    with pytest.raises(TopicSettingsError, match="CITYGRID_TOPIC_REPLICATION_FACTOR=1"):
        ensure_topics(Settings(kafka_bootstrap=kafka.bootstrap, topic_prefix=topic_prefix))


def test_existing_topics_with_weaker_settings_are_named(kafka: LocalKafka, topic_prefix: str) -> None:
    names = TopicNames(topic_prefix)
    app_id = f"app-{topic_prefix}"
    changelog = changelog_topics(app_id)[0]
    # made by someone else: not compacted, min ISR 1 (the broker default)
    create_topics(Settings(kafka_bootstrap=kafka.bootstrap), [names.name("cases"), changelog], TopicPolicy(2, 1, 1))
    settings = Settings(kafka_bootstrap=kafka.bootstrap, topic_prefix=topic_prefix, app_id=app_id,
                        topic_replication_factor=1, topic_min_insync_replicas=1)
    with pytest.raises(TopicSettingsError) as err:
        ensure_topics(settings)
    message = str(err.value)
    assert f"{names.name('cases')}: cleanup.policy 'delete' but this state topic must be compacted" in message
    assert f"{changelog}: cleanup.policy 'delete'" in message
    # min.insync.replicas above what a topic has (checked without needing more brokers than exist)
    with pytest.raises(TopicSettingsError, match="above topic_replication_factor"):
        create_topics(Settings(kafka_bootstrap=kafka.bootstrap), [names.name("x")], TopicPolicy(1, 1, 2))
    weak = TopicNames(topic_prefix + "w")
    create_topics(Settings(kafka_bootstrap=kafka.bootstrap), [weak.name("signals")], TopicPolicy(1, 1, 1))
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    try:
        from streams.bus.admin import weaker_topics
        assert weaker_topics(admin, [weak.name("signals")], TopicPolicy(1, 1, 2), set()) == [
            f"{weak.name('signals')}: min.insync.replicas 1 < topic_min_insync_replicas 2"]
        assert weaker_topics(admin, [weak.name("signals")], TopicPolicy(1, 3, 1), set()) == [
            f"{weak.name('signals')}: replication factor 1 < topic_replication_factor 3"]
    finally:
        admin.close()
