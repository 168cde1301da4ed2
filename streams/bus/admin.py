"""Topic administration: the worker and the development broker create topics through this one function."""
from __future__ import annotations

from streams.bus import clients
from streams.settings import Settings


def create_topics(settings: Settings, names: list[str], partitions: int) -> None:
    """Create the topics that do not exist yet (an auto-created topic would get the broker's default
    partition count, and case.inputs must match its changelog topics)."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(**clients.admin(settings))
    try:
        existing = set(admin.list_topics())
        from streams.bus.topics import COMPACTED

        compact = {"cleanup.policy": "compact"}
        new = [NewTopic(n, partitions, 1, topic_configs=compact if _logical_in(n, COMPACTED) else {})
               for n in names if n not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:  # another worker won the race
                pass
    finally:
        admin.close()


def _logical_in(name: str, logical: frozenset[str]) -> bool:
    """Whether a physical topic name (maybe under a prefix) is one of the logical names."""
    return any(name == t or name.endswith(f".{t}") for t in logical)
