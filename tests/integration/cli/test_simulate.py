"""`streams simulate` on the real broker: the scenario's records reach the raw topics, malformed ones included."""
from __future__ import annotations

import collections
import json

import pytest
from kafka import KafkaConsumer

from streams.bus.topics import TopicNames
from streams.core.knowledge.knowledge import Knowledge
from streams.local.kafka import LocalKafka
from streams.settings import Settings
from streams.sources import simulate

pytestmark = pytest.mark.kafka


def test_simulate_produces_the_scenario_to_kafka(kafka: LocalKafka, topic_prefix: str) -> None:
    settings = Settings(kafka_bootstrap=kafka.bootstrap, topic_prefix=topic_prefix)
    sent = simulate.run(settings, rate=2000, duration=None, seed=9, sources={"hotline", "field", "camera", "registry"},
                        knowledge=Knowledge.load(), count=600, malformed=0.1)
    assert sent == 600
    names = TopicNames(topic_prefix)
    topics = [names.name(t) for t in ("hotline.calls", "field.reports", "field.tracks", "camera.alerts",
                                      "registry.changes")]
    consumer = KafkaConsumer(*topics, bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=5000)
    by_topic: collections.Counter[str] = collections.Counter()
    not_json = 0
    for message in consumer:
        by_topic[names.logical(message.topic)] += 1
        try:
            json.loads(message.value)
        except ValueError:
            not_json += 1
    consumer.close()
    assert sum(by_topic.values()) == 600
    assert by_topic["hotline.calls"] > by_topic["camera.alerts"] > 0
    assert 0 < not_json < 60  # a quarter of the 10 % malformed are cut off in transit
