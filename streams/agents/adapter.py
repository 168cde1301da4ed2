"""What every agent adapter shares: records in as :class:`Inbound`, records out through an Emitter,
dead letters with a bounded metric label, an injectable clock.

An adapter is the thin layer between Kafka and the domain core: decode, call the core, map its outputs
to topic records (streams.bus.records). It holds no Kafka client and no Faust object: the topology
(streams.agents.app, streams.agents.lean) feeds it batches; tests feed it through streams.testing.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence

from streams.bus.codec import SchemaRegistry
from streams.bus.emit import Emitter, InputRecord
from streams.bus.records import Inbound
from streams.bus.rules import DEFAULT_RULES, InputRules
from streams.bus.topics import TopicNames
from streams.metrics import PipelineMetrics

Clock = Callable[[], float]  # epoch seconds


def reason_label(reason: str) -> str:
    """A bounded metric label from an error message: its first clause, without quoted values."""
    head = reason.split(":", 1)[0]
    return re.sub(r"'[^']*'|\"[^\"]*\"|\d+", "_", head)[:48]


class Adapter:
    """Base of the adapters: ``await handle(batch, out)`` queues its outputs on ``out``; the caller
    flushes ``out`` and only then acknowledges the batch (at-least-once).

    The failure boundary is one input record: an adapter stages each input's outputs between
    ``out.begin(...)`` and the next input, and a failure of any step -- decode, the input rules,
    the core, encoding an output -- drops what that input staged and dead-letters it instead
    (:meth:`park`). Every input so gets exactly one ledger row (docs/reliability.md)."""

    def __init__(self, codec: SchemaRegistry, metrics: PipelineMetrics, names: TopicNames,
                 clock: Clock = time.time, rules: InputRules = DEFAULT_RULES) -> None:
        self.codec = codec
        self.metrics = metrics
        self.names = names
        self.clock = clock
        self.rules = rules   # the input rules of raw records (streams.bus.rules), from the settings

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def handle(self, batch: Sequence[Inbound], out: Emitter) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def input_record(self, inbound: Inbound, logical: str) -> InputRecord:
        """An input for ``out.begin``: stamped with its Kafka timestamp (a replay writes the same dead letter
        and ledger row), the clock only for a record that has none."""
        return InputRecord(logical, inbound.partition, inbound.offset, inbound.timestamp_ms or self.now_ms(),
                           inbound.value, inbound.key)

    def park(self, out: Emitter, logical: str, reason: str) -> None:
        """Drop what the current input staged and dead-letter it (``out.begin`` was called for it)."""
        self.metrics.dead_letters.labels(topic=logical, reason=reason_label(reason)).inc()
        out.park(reason)

    def dead_letter(self, out: Emitter, logical: str, inbound: Inbound, reason: str) -> None:
        """Park an input on ``<logical>.dlq`` with its original bytes, and count it by reason. Stamped with
        its Kafka timestamp, so a replay writes the same dead letter."""
        self.metrics.dead_letters.labels(topic=logical, reason=reason_label(reason)).inc()
        out.dead_letter(logical, inbound.partition, inbound.offset, reason, inbound.timestamp_ms or self.now_ms(),
                        inbound.value, inbound.key)
