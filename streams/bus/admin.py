"""Topic administration: the worker and the development broker create topics through this one function."""
from __future__ import annotations


def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    """Create the topics that do not exist yet (an auto-created topic would get the broker's default
    partition count, and case.inputs must match its changelog topics)."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(n, partitions, 1) for n in names if n not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:  # another worker won the race
                pass
    finally:
        admin.close()
