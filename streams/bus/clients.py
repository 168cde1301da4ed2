"""The configuration of every Kafka client the project makes, from one Settings object.

Each function returns the keyword arguments for one client role; the call site constructs the client
(``AIOKafkaProducer(**clients.lean_producer(settings))``), so this module imports no client library
(Faust's credential object excepted, made when a Faust app asks for SASL).
What every client of a library shares — where the brokers are, how to authenticate (SASL/SCRAM) and
encrypt (TLS) — is written once per library: :func:`_faust_connection`, :func:`_aiokafka_connection`,
:func:`_kafka_python_connection`, from the ``kafka_security_protocol``, ``kafka_sasl_*`` and
``kafka_ssl_*`` settings (docs/security.md). Per-role values (acks, linger, timeouts) are gathered here.
"""
from __future__ import annotations

import ssl
from typing import Any

from streams.settings import Settings

KafkaConfig = dict[str, Any]


# -- what every client of one library shares ------------------------------------------------------------
def _uses_tls(settings: Settings) -> bool:
    return settings.kafka_security_protocol in ("SSL", "SASL_SSL")


def _uses_sasl(settings: Settings) -> bool:
    return settings.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")


def _sasl_password(settings: Settings) -> str:
    """The SASL password: from ``kafka_sasl_password_file`` (a mounted Secret) or ``kafka_sasl_password``."""
    if settings.kafka_sasl_password_file is not None:
        from streams.security import read_secret_file

        return read_secret_file(settings.kafka_sasl_password_file, "CITYGRID_KAFKA_SASL_PASSWORD_FILE")
    if settings.kafka_sasl_password is not None:
        return settings.kafka_sasl_password.get_secret_value()
    raise ValueError(f"kafka_security_protocol {settings.kafka_security_protocol} needs a SASL password: set "
                     "CITYGRID_KAFKA_SASL_PASSWORD_FILE (or CITYGRID_KAFKA_SASL_PASSWORD)")


def _ssl_context(settings: Settings) -> ssl.SSLContext:
    """Verifies the brokers' certificates against ``kafka_ssl_cafile`` (or the system's CAs) and their
    host names; presents ``kafka_ssl_certfile``/``keyfile`` when the brokers ask for a client certificate."""
    context = ssl.create_default_context(cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None)
    context.check_hostname = settings.kafka_ssl_check_hostname
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.kafka_ssl_certfile is not None:
        context.load_cert_chain(str(settings.kafka_ssl_certfile),
                                str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None)
    return context


def _faust_connection(settings: Settings) -> KafkaConfig:
    config: KafkaConfig = {"broker": f"kafka://{settings.kafka_bootstrap}"}
    if _uses_sasl(settings):
        from faust.auth import SASLCredentials
        from faust.types.auth import SASLMechanism

        config["broker_credentials"] = SASLCredentials(
            username=settings.kafka_sasl_username, password=_sasl_password(settings),
            mechanism=SASLMechanism(settings.kafka_sasl_mechanism),
            ssl_context=_ssl_context(settings) if _uses_tls(settings) else None)
    elif _uses_tls(settings):
        config["broker_credentials"] = _ssl_context(settings)   # Faust reads an SSLContext as SSLCredentials
    return config


def _aiokafka_connection(settings: Settings) -> KafkaConfig:
    config: KafkaConfig = {"bootstrap_servers": settings.kafka_bootstrap}
    if settings.kafka_security_protocol != "PLAINTEXT":
        config["security_protocol"] = settings.kafka_security_protocol
    if _uses_tls(settings):
        config["ssl_context"] = _ssl_context(settings)
    if _uses_sasl(settings):
        config.update(sasl_mechanism=settings.kafka_sasl_mechanism, sasl_plain_username=settings.kafka_sasl_username,
                      sasl_plain_password=_sasl_password(settings))
    return config


def _kafka_python_connection(settings: Settings) -> KafkaConfig:
    """kafka-python takes the same connection keys as aiokafka (an ``ssl_context`` included)."""
    return _aiokafka_connection(settings)


def _heartbeat_seconds(settings: Settings) -> float:
    """A tenth of the session timeout (Kafka's advice is at most a third), never below half a second."""
    return max(0.5, settings.kafka_session_timeout_seconds / 10)


# -- Faust ---------------------------------------------------------------------------------------------
def faust_app(settings: Settings) -> KafkaConfig:
    """The broker settings of the Faust App (its consumer, its producer for table changelogs)."""
    return {
        **_faust_connection(settings),
        "consumer_auto_offset_reset": "earliest",
        "producer_linger_ms": 5,
        "broker_commit_every": 1000,
        "broker_session_timeout": settings.kafka_session_timeout_seconds,
        # a request must be allowed to outlast a session timeout (a stuck seek during recovery after a crash)
        "broker_request_timeout": max(settings.kafka_request_timeout_seconds,
                                      settings.kafka_session_timeout_seconds + 5),
        "broker_heartbeat_interval": _heartbeat_seconds(settings),
        "broker_max_poll_interval": settings.kafka_max_poll_interval_seconds,
        # Faust creates its changelogs and internal topics with this many replicas (docs/reliability.md).
        # Its producer (changelogs, clock ticks) keeps acks=all (producer_acks -1, Faust's default) but not
        # idempotence: those writes are idempotent by content, and an idempotent producer whose sequence an
        # outage broke fails for good -- inside Faust that would stop the app.
        "topic_replication_factor": settings.topic_replication_factor,
        "producer_acks": -1,
        "producer_max_request_size": _max_request_bytes(settings),
    }


def _max_request_bytes(settings: Settings) -> int:
    """A producer request may carry a record of the largest size the pipeline makes, with room to spare."""
    return settings.kafka_max_message_bytes + 64 * 1024


def _idempotent(settings: Settings) -> KafkaConfig:
    """Every producer of derived records: acks=all (with min.insync.replicas, on two replicas) and
    idempotence (a retried batch is written once), records up to the pipeline's message size."""
    return {"acks": "all", "enable_idempotence": True, "max_request_size": _max_request_bytes(settings)}


# -- aiokafka ------------------------------------------------------------------------------------------
def derived_producer(settings: Settings) -> KafkaConfig:
    """The agents' bulk producer of derived records (bigger batches than the default 16 KiB)."""
    return {**_aiokafka_connection(settings), **_idempotent(settings), "linger_ms": 5, "max_batch_size": 256 * 1024}


def lean_producer(settings: Settings) -> KafkaConfig:
    """The lean consumers' producer (IoT/GPS ingest, the case path): a short linger, lift commands must leave
    within a second; batches as large as the bulk producer's, a flush of the case path carries megabytes."""
    return {**_aiokafka_connection(settings), **_idempotent(settings), "linger_ms": 2, "max_batch_size": 256 * 1024}


def batch_consumer(settings: Settings, group_id: str, max_records: int) -> KafkaConfig:
    """A lean batch consumer (streams.bus.consumer): commits by hand after its batch's outputs are durable."""
    return {
        **_aiokafka_connection(settings),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": max_records,
        "fetch_max_bytes": 32 * 1024 * 1024,
        "session_timeout_ms": int(settings.kafka_session_timeout_seconds * 1000),
        "heartbeat_interval_ms": int(_heartbeat_seconds(settings) * 1000),
        "max_poll_interval_ms": int(settings.kafka_max_poll_interval_seconds * 1000),
    }


def delivery_consumer(settings: Settings, group_id: str) -> KafkaConfig:
    """The webhook deliverer's consumer of webhook.deliveries (commits by hand, per delivered offset)."""
    return {**_aiokafka_connection(settings), "group_id": group_id, "enable_auto_commit": False,
            "auto_offset_reset": "earliest", "client_id": f"{group_id}-consumer"}


def delivery_producer(settings: Settings, group_id: str) -> KafkaConfig:
    """The webhook deliverer's producer (retries and dead letters): idempotent, nothing duplicated."""
    return {**_aiokafka_connection(settings), "acks": "all", "enable_idempotence": True,
            "client_id": f"{group_id}-dlq"}


def redelivery_producer(settings: Settings) -> KafkaConfig:
    """``streams webhooks redeliver``: puts dead deliveries back, idempotent."""
    return {**_aiokafka_connection(settings), "acks": "all", "enable_idempotence": True}


def topic_reader(settings: Settings) -> KafkaConfig:
    """A groupless consumer that reads a topic from its beginning (assigns partitions itself)."""
    return {**_aiokafka_connection(settings), "enable_auto_commit": False, "group_id": None,
            "auto_offset_reset": "earliest"}


def gateway_producer(settings: Settings) -> KafkaConfig:
    """The HTTP gateway's producer of raw feeds and case actions: idempotent, acks=all, big batches."""
    return {**_aiokafka_connection(settings), "acks": "all", "enable_idempotence": True, "linger_ms": 5,
            "max_batch_size": 512 * 1024, "request_timeout_ms": int(settings.kafka_request_timeout_seconds * 1000),
            "client_id": f"{settings.app_id}-gateway"}


def metadata_admin(settings: Settings) -> KafkaConfig:
    """An aiokafka admin client for topic metadata."""
    return _aiokafka_connection(settings)


# -- kafka-python (blocking: topic administration, the lag probe, the simulator) ------------------------------
def admin(settings: Settings) -> KafkaConfig:
    """Topic creation and committed-offset reads."""
    return _kafka_python_connection(settings)


def offsets_consumer(settings: Settings) -> KafkaConfig:
    """A groupless consumer that only reads log-end offsets (the consumer-lag probe)."""
    return _kafka_python_connection(settings)


def simulator_producer(settings: Settings) -> KafkaConfig:
    """``streams simulate``'s producer of raw feeds."""
    return {**_kafka_python_connection(settings), "linger_ms": 5}


def dead_letter_reader(settings: Settings) -> KafkaConfig:
    """``streams dlq``: reads dead-letter topics from their beginning, no group."""
    return {**_kafka_python_connection(settings), "enable_auto_commit": False, "group_id": None}


def operator_producer(settings: Settings) -> KafkaConfig:
    """``streams dlq reprocess`` and ``streams erase``: a few records, each acknowledged by every replica."""
    return {**_kafka_python_connection(settings), "acks": "all"}


def simulator_cases_consumer(settings: Settings) -> KafkaConfig:
    """The simulated departments read case states from now on (``cases`` topic), no group."""
    return {**_kafka_python_connection(settings), "auto_offset_reset": "latest"}
