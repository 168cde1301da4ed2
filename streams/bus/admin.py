"""Topic administration: the worker and the development broker create topics through this one module.

Durability is a setting, not a constant: every topic the pipeline creates gets
``topic_replication_factor`` replicas and ``min.insync.replicas = topic_min_insync_replicas``
(production defaults 3 and 2: with acks=all producers a record survives the loss of a broker);
state topics (``cases``, and the Faust table changelogs) are compacted. The local development
broker and the tests pass 1 and 1 explicitly. Topics that already exist are checked, and a topic
weaker than the settings (fewer replicas, a lower ``min.insync.replicas``, a state topic that is
not compacted) stops the worker with an error naming the topic and the fix: a silently weaker
topic is how records get lost when a broker dies.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from streams.bus import clients
from streams.settings import Settings


class TopicSettingsError(RuntimeError):
    """Topics that cannot be created as configured, or exist with weaker settings; the message lists them."""


@dataclass(frozen=True)
class TopicPolicy:
    partitions: int
    replication_factor: int
    min_insync_replicas: int

    @classmethod
    def from_settings(cls, settings: Settings) -> TopicPolicy:
        return cls(settings.topic_partitions, settings.topic_replication_factor, settings.topic_min_insync_replicas)

    def configs(self, compacted: bool) -> dict[str, str]:
        configs = {"min.insync.replicas": str(self.min_insync_replicas)}
        if compacted:
            configs["cleanup.policy"] = "compact"
        return configs


def create_topics(settings: Settings, names: list[str], policy: TopicPolicy | None = None,
                  compacted: Iterable[str] = (), check: Iterable[str] = ()) -> None:
    """Create the topics that do not exist yet (an auto-created topic would get the broker's default
    partition count and replication, and case.inputs must match its changelog topics), with
    ``policy`` (default: the settings'); names in ``compacted`` keep the latest record per key
    (``cleanup.policy=compact``: state topics). Then check every one of ``names`` and ``check``
    that exists. Raises TopicSettingsError."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import InvalidReplicationFactorError, TopicAlreadyExistsError

    policy = policy or TopicPolicy.from_settings(settings)
    compacted = set(compacted)
    bootstrap = settings.kafka_bootstrap
    admin = KafkaAdminClient(**clients.admin(settings))
    try:
        brokers = len(admin.describe_cluster()["brokers"])
        if policy.replication_factor > brokers:
            raise TopicSettingsError(
                f"topic_replication_factor={policy.replication_factor} needs {policy.replication_factor} brokers; "
                f"the cluster at {bootstrap} has {brokers}. For a single development broker set "
                "CITYGRID_TOPIC_REPLICATION_FACTOR=1 and CITYGRID_TOPIC_MIN_INSYNC_REPLICAS=1.")
        if policy.min_insync_replicas > policy.replication_factor:
            raise TopicSettingsError(
                f"topic_min_insync_replicas={policy.min_insync_replicas} is above topic_replication_factor="
                f"{policy.replication_factor}: no write with acks=all could ever succeed")
        existing = set(admin.list_topics())
        new = [NewTopic(n, policy.partitions, policy.replication_factor,
                        topic_configs=policy.configs(n in compacted)) for n in names if n not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:  # another worker won the race; checked below
                pass
            except InvalidReplicationFactorError as exc:
                raise TopicSettingsError(
                    f"cannot create topics with {policy.replication_factor} replicas: {exc}") from exc
        if new:
            _wait_visible(admin, [t.name for t in new])
        present = set(admin.list_topics())
        to_check = [n for n in dict.fromkeys([*names, *check]) if n in present]
        problems = weaker_topics(admin, to_check, policy, compacted)
        if problems:
            raise TopicSettingsError(
                "topics exist with weaker settings than configured:\n  " + "\n  ".join(problems)
                + "\nRaise them (kafka-topics.sh --alter / kafka-configs.sh --alter, or a partition reassignment "
                  "for replicas), or lower the settings deliberately.")
    finally:
        admin.close()


def _wait_visible(admin: Any, names: list[str], timeout: float = 30.0) -> None:
    """Until the new topics' partitions show in the metadata (right after creation they may not yet)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        topics = admin.describe_topics(names)
        if len(topics) == len(names) and all(t["partitions"] and t["error_code"] == 0 for t in topics):
            return
        time.sleep(0.2)


def weaker_topics(admin: Any, names: list[str], policy: TopicPolicy, compacted: set[str]) -> list[str]:
    """One line per topic whose replication, min.insync.replicas or cleanup policy is weaker than asked."""
    from kafka.admin import ConfigResource, ConfigResourceType

    if not names:
        return []
    problems: list[str] = []
    for topic in admin.describe_topics(names):
        replicas = min((len(p["replica_nodes"]) for p in topic["partitions"]), default=0)
        if replicas < policy.replication_factor:
            problems.append(f"{topic['name']}: replication factor {replicas} < topic_replication_factor "
                            f"{policy.replication_factor}")
    described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names],
                                       config_filter="all")
    for name, config in described.get("topic", {}).items():
        min_isr = int(config.get("min.insync.replicas", {}).get("value") or 1)
        if min_isr < policy.min_insync_replicas:
            problems.append(f"{name}: min.insync.replicas {min_isr} < topic_min_insync_replicas "
                            f"{policy.min_insync_replicas}")
        cleanup = config.get("cleanup.policy", {}).get("value") or "delete"
        if name in compacted and "compact" not in cleanup.split(","):
            problems.append(f"{name}: cleanup.policy {cleanup!r} but this state topic must be compacted")
    return sorted(problems)
