"""Bulk, Avro-encoded produce with one await for the whole batch (few round trips per batch).

An adapter stages the outputs of each input record, then ``flush()`` sends them all and waits
for the acks; the input is acknowledged only after that (at-least-once end to end). Staging a
record checks it can be sent: encoded, and no larger than ``max_message_bytes`` (the broker would
refuse it and fail the whole batch). A record that cannot be staged raises here, inside the
input's failure boundary; the adapter then ``rollback``s that input's staged outputs to its
``checkpoint`` and dead-letters the input instead. A dead letter itself always fits: its reason
and original bytes are cut to size (the cut is said in the reason); the original and its key are
sealed (Fernet, streams.bus.sealing) and the reason masked (a validation message may quote a field).
"""
from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from streams.bus.codec import SchemaRegistry
from streams.bus.records import TopicRecord, dead_letter_value
from streams.bus.sealing import DeadLetterSealer
from streams.bus.topics import (
    ACTIONS_REJECTED,
    CASE_EVENTS,
    CASE_INPUTS,
    DISPATCHES,
    IOT_COMMANDS,
    SLA_ALERTS,
    STORE_ROWS,
    TRIAGE,
    TopicNames,
    dlq,
)
from streams.core.privacy import mask_text
from streams.settings import Settings

# send(topic, key, value, partition) -> awaitable resolving to a delivery future
SendFn = Callable[[str, bytes | None, bytes, int | None], Awaitable[Awaitable[Any]]]
# send_many([(topic, key, value, partition), ...]) -> per record None (acknowledged) or its exception
# (streams.bus.produce.PartitionedSender: per-partition batches, one future per batch)
SendManyFn = Callable[[Sequence[tuple[str, bytes | None, bytes, int | None]]], Awaitable[list[BaseException | None]]]

DEFAULT_MAX_MESSAGE_BYTES: int = Settings.model_fields["kafka_max_message_bytes"].default
MAX_REASON_CHARS = 2000
STORE_ROWS_PER_MESSAGE = 2000  # rows per store.rows message at most (and never above the message size)
MAX_KEY_BYTES = 1000
ENVELOPE_BYTES = 256  # Avro overhead of a dead_letter / store_rows record beyond its strings


LEDGER_TABLE = "input_ledger"
# An input's outcome in the ledger is its most telling output's topic (or 'dlq', 'rows', 'none').
OUTCOME_ORDER = (CASE_INPUTS, TRIAGE, ACTIONS_REJECTED, CASE_EVENTS, DISPATCHES, SLA_ALERTS, IOT_COMMANDS)
DEAD_LETTERED, ROWS_ONLY, NOTHING, STATE = "dlq", "rows", "none", "state"


@dataclass(frozen=True)
class InputRecord:
    """The Kafka record an adapter is processing: where it came from and its bytes (for its dead letter)."""

    topic: str            # logical topic
    partition: int
    offset: int
    ts_ms: int            # Kafka timestamp
    value: bytes | None
    key: bytes | None


class SendFailed(RuntimeError):
    """Some staged records were not acknowledged (the broker is away, most likely); they stay staged
    and the next ``flush()`` sends them again."""

    def __init__(self, unsent: int, error: BaseException, broken: bool = False) -> None:
        super().__init__(f"{unsent} records not acknowledged: {type(error).__name__}: {error}")
        self.unsent = unsent
        self.error = error
        self.broken = broken  # the producer's idempotence state is lost: only a new producer can send


def producer_broken(error: BaseException) -> bool:
    """An idempotent producer that lost its sequence (batches expired during an outage, the broker
    forgot the producer id) refuses every later send: it must be replaced, not retried."""
    from aiokafka import errors

    fatal = tuple(getattr(errors, name) for name in ("OutOfOrderSequenceNumber", "UnknownProducerId",
                                                      "InvalidProducerEpoch", "InvalidProducerIdMapping",
                                                      "ProducerFenced", "ProducerClosed")
                  if hasattr(errors, name))
    return isinstance(error, fatal)


def _refused_by_broker(error: BaseException) -> bool:
    """The broker refuses this record for good (retrying it cannot help), as opposed to being away."""
    from aiokafka import errors

    refusals = tuple(getattr(errors, name) for name in ("MessageSizeTooLargeError", "RecordTooLargeError",
                                                         "CorruptRecordException", "InvalidRecord")
                     if hasattr(errors, name))
    return isinstance(error, refusals)


class RecordTooLarge(ValueError):
    """A derived record above the message size limit; the message names the topic and the sizes."""


def _key(key: str | None) -> bytes | None:
    return key.encode("utf-8") if key is not None else None


def _plaintext_fitting(sealed_room: int) -> int:
    """The longest plaintext whose Fernet token fits in ``sealed_room`` bytes (token: URL-safe base64 of
    57 bytes of header and tag plus the ciphertext, padded to 16-byte blocks)."""
    payload = (max(0, sealed_room) // 4) * 3 - 57
    return max(0, (payload // 16) * 16 - 1)


def _json_array(items: list[bytes]) -> str:
    return (b"[" + b",".join(items) + b"]").decode("utf-8")


def safe_text(text: str, limit: int) -> str:
    """Text that can always be encoded as UTF-8 (lone surrogates escaped), cut to ``limit`` characters."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[:limit - 1] + "…"


class Emitter:
    """Collects outgoing records for one processing batch, then sends them all and waits for acks.

    The caller acknowledges its input only after ``flush()`` returned: at-least-once end to end.
    """

    def __init__(self, send: SendFn, codec: SchemaRegistry, topics: TopicNames, schemas: dict[str, str],
                 sealer: DeadLetterSealer | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, ledger: bool = True,
                 send_many: SendManyFn | None = None) -> None:
        self._send = send
        self._send_many = send_many  # when given, flush() hands it every staged record at once
        self._sealer = sealer  # encrypts dead-letter originals; required to dead-letter anything
        self._codec = codec
        self._topics = topics
        self._schemas = schemas  # logical topic -> schema name
        self.max_message_bytes = max_message_bytes
        self._pending: list[tuple[str, bytes | None, bytes, int | None]] = []
        self._logical: list[str] = []  # logical topic of each pending record ("<topic>.dlq" for dead letters)
        self._origin: list[InputRecord | None] = []  # the input that staged each pending record
        self._rows: list[tuple[str, bytes]] = []  # (table, row as UTF-8 JSON)
        self._input: InputRecord | None = None
        self._input_start: tuple[int, int] = (0, 0)
        self._quiet_outcome = NOTHING
        self.ledger = ledger  # write an input_ledger row per input (off: the testing bus, unless asked)
        self.accounted = 0  # inputs given a ledger row by this emitter

    # -- staging ------------------------------------------------------------------------------
    def record(self, topic: str, value: Mapping[str, Any], key: str | None = None,
               partition: int | None = None) -> None:
        data = self._codec.encode(self._schemas[topic], value)
        if len(data) > self.max_message_bytes:
            raise RecordTooLarge(f"derived {topic} record is {len(data)} bytes; the message limit is "
                                 f"{self.max_message_bytes} (kafka_max_message_bytes)")
        self._pending.append((self._topics.name(topic), _key(key), data, partition))
        self._logical.append(topic)
        self._origin.append(self._input)

    def emit(self, records: Iterable[TopicRecord]) -> None:
        for rec in records:
            self.record(rec.topic, rec.value, rec.key)

    def raw(self, physical_topic: str, data: bytes, key: bytes | None = None, partition: int | None = None) -> None:
        self._pending.append((physical_topic, key, data, partition))
        self._logical.append(self._topics.logical(physical_topic))
        self._origin.append(self._input)

    def rows(self, table: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """Rows for a table that has no topic of its own: sent as store.rows messages (as many as
        the size limit needs). Each row is serialized now, so a row that cannot be sent fails here."""
        limit = self.max_message_bytes - ENVELOPE_BYTES - len(table.encode("utf-8"))
        for row in rows:
            for value in row.values():   # orjson would write NaN/Infinity as null: refuse them as json did
                if type(value) is float and not math.isfinite(value):
                    raise ValueError(f"{table} row: out of range float value {value!r} is not JSON compliant")
            try:
                data = orjson.dumps(row, option=orjson.OPT_NON_STR_KEYS)
            except orjson.JSONEncodeError as exc:   # a lone surrogate, an int beyond 64 bits, ...
                raise ValueError(f"{table} row cannot be sent: {exc}") from None
            if len(data) > limit:
                raise RecordTooLarge(f"derived {table} row is {len(data)} bytes; the message limit is "
                                     f"{self.max_message_bytes} (kafka_max_message_bytes)")
            self._rows.append((table, data))

    def dead_letter(self, logical_topic: str, partition: int, offset: int, reason: str, ts_ms: int,
                    original: bytes | None, key: bytes | None) -> None:
        """The input record, its position and why it was parked. Its original bytes and key are sealed
        (streams.bus.sealing), the reason is masked; the record has no Kafka key (the original key may
        itself be personal data). Fits whatever the input was: a tombstone's original is empty, and the
        reason and original are cut so that the sealed record stays under the message size."""
        if self._sealer is None:
            raise RuntimeError("dead-lettering needs a DeadLetterSealer (CITYGRID_DLQ_KEY)")
        reason = safe_text(mask_text(str(reason)), MAX_REASON_CHARS)
        original_bytes = bytes(original) if original is not None else b""
        if original is None:
            reason = f"{reason} [the record's value was null]"
        sealed_key = self._sealer.seal(bytes(key)[:MAX_KEY_BYTES]) if key is not None else None
        room = self.max_message_bytes - ENVELOPE_BYTES - len(reason.encode("utf-8")) - len(sealed_key or b"") - 160
        fits = _plaintext_fitting(room)
        if len(original_bytes) > fits:
            reason = safe_text(f"{reason} [original cut to its first {fits} of {len(original_bytes)} bytes]",
                               MAX_REASON_CHARS + 80)
            original_bytes = original_bytes[:fits]
        value = dead_letter_value(logical_topic, int(partition), int(offset), reason, int(ts_ms),
                                  self._sealer.seal(original_bytes), sealed_key)
        data = self._codec.encode("dead_letter", value)
        self._pending.append((self._topics.name(dlq(logical_topic)), None, data, None))
        self._logical.append(dlq(logical_topic))
        self._origin.append(None)  # a dead letter is never rolled back into another one

    # -- the failure boundary of one input record --------------------------------------------
    def begin(self, record: InputRecord, quiet_outcome: str | None = None) -> None:
        """Outputs staged from now on belong to ``record`` (closing the previous input). ``quiet_outcome``:
        its ledger outcome when it stages nothing of its own (default 'none', filtered; 'state' for a
        reading absorbed into keyed state whose outputs the batch sends together)."""
        self.end()
        self._input = record
        self._input_start = self.checkpoint()
        self._quiet_outcome = quiet_outcome or NOTHING

    def park(self, reason: str) -> None:
        """Drop what the current input staged and dead-letter it instead: ``<topic>.dlq`` with the
        reason, its bytes and position, stamped with its Kafka timestamp (a replay writes the same)."""
        record = self._input
        if record is None:
            raise RuntimeError("park() outside begin()/end()")
        self.rollback(self._input_start)
        self.dead_letter(record.topic, record.partition, record.offset, reason, record.ts_ms, record.value,
                         record.key)

    def end(self) -> str | None:
        """Close the current input: its ledger row (outcome, outputs) joins the staged rows."""
        record, self._input = self._input, None
        if record is None:
            return None
        start_pending, start_rows = self._input_start
        topics = self._logical[start_pending:]
        rows = len(self._rows) - start_rows
        if any(t.endswith(".dlq") for t in topics):
            outcome = DEAD_LETTERED
        else:
            outcome = next((t for t in OUTCOME_ORDER if t in topics), topics[0] if topics else
                           (ROWS_ONLY if rows else self._quiet_outcome))
        self.accounted += 1
        if self.ledger:
            row = {"topic": record.topic, "partition": record.partition, "offset": record.offset,
                   "ts_ms": record.ts_ms, "outcome": outcome, "outputs": len(topics) + rows}
            self._rows.append((LEDGER_TABLE, orjson.dumps(row)))
        return outcome

    # -- one input's outputs, all or none -----------------------------------------------------
    def checkpoint(self) -> tuple[int, int]:
        """The staging position before an input's outputs; ``rollback`` returns to it."""
        return len(self._pending), len(self._rows)

    def rollback(self, checkpoint: tuple[int, int]) -> None:
        pending, rows = checkpoint
        del self._pending[pending:]
        del self._logical[pending:]
        del self._origin[pending:]
        del self._rows[rows:]

    def __len__(self) -> int:
        return len(self._pending) + len(self._rows)

    # -- sending ------------------------------------------------------------------------------
    def _row_messages(self) -> None:
        """Pack the staged rows into store.rows records of at most the message size, per table."""
        by_table: dict[str, list[bytes]] = {}
        for table, data in self._rows:
            by_table.setdefault(table, []).append(data)
        self._rows = []
        for table, rows in by_table.items():
            limit = self.max_message_bytes - ENVELOPE_BYTES - len(table.encode("utf-8"))
            chunk: list[bytes] = []
            used = 2
            for data in rows:
                size = len(data)
                if chunk and (used + size + 1 > limit or len(chunk) >= STORE_ROWS_PER_MESSAGE):
                    self.record(STORE_ROWS, {"table": table, "rows": _json_array(chunk)}, key=table)
                    chunk, used = [], 2
                chunk.append(data)
                used += size + 1
            if chunk:
                self.record(STORE_ROWS, {"table": table, "rows": _json_array(chunk)}, key=table)

    async def flush(self) -> int:
        """Send everything staged and wait for the acks. Raises SendFailed when some records were not
        acknowledged: they stay staged, and calling ``flush()`` again sends just those (a record the
        broker may have taken before the error is sent twice: consumers keep ids, at-least-once).
        A record the broker refuses for good (too large for it) does not block the rest: the input
        that staged it is dead-lettered instead."""
        self.end()
        self._row_messages()
        if not self._pending:
            return 0
        outcomes: list[Any]
        if self._send_many is not None:
            outcomes = list(await self._send_many(self._pending))
        else:
            outcomes = []
            for topic, key, value, partition in self._pending:
                try:
                    outcomes.append(await self._send(topic, key, value, partition))
                except Exception as exc:  # no metadata (broker away), producer closed, ...
                    outcomes.append(exc)
            waiting = [(i, f) for i, f in enumerate(outcomes) if not isinstance(f, BaseException)]
            for (i, _), result in zip(waiting, await asyncio.gather(*(f for _, f in waiting),
                                                                   return_exceptions=True), strict=True):
                outcomes[i] = result
        failed = [i for i, result in enumerate(outcomes) if isinstance(result, BaseException)]
        sent = len(outcomes) - len(failed)
        if not failed:
            self._pending, self._logical, self._origin = [], [], []
            return sent
        keep = [i for i in failed if not (_refused_by_broker(outcomes[i]) and self._origin[i] is not None)]
        refused = {id(self._origin[i]): (self._origin[i], outcomes[i]) for i in failed if i not in keep}
        first_error = outcomes[failed[0]]
        self._pending = [self._pending[i] for i in keep]
        self._logical = [self._logical[i] for i in keep]
        self._origin = [self._origin[i] for i in keep]
        for record, error in refused.values():
            assert record is not None
            self.dead_letter(record.topic, record.partition, record.offset,
                             f"the broker refused an output of this record: {type(error).__name__}: {error}",
                             record.ts_ms, record.value, record.key)
        raise SendFailed(len(self._pending), first_error, any(producer_broken(outcomes[i]) for i in failed))
