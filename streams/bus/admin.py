"""Topic administration: the worker and the development broker create topics through this one function."""
from __future__ import annotations

from collections.abc import Collection

from streams.bus import clients
from streams.settings import Settings


def create_topics(settings: Settings, names: list[str], partitions: int, compacted: Collection[str] = ()) -> None:
    """Create the topics that do not exist yet (an auto-created topic would get the broker's default
    partition count, and case.inputs must match its changelog topics). Names in ``compacted`` keep the
    latest record per key (``cleanup.policy=compact``: state changelogs)."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(**clients.admin(settings))
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(n, partitions, 1, topic_configs={"cleanup.policy": "compact"} if n in compacted else {})
               for n in names if n not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:  # another worker won the race
                pass
    finally:
        admin.close()
