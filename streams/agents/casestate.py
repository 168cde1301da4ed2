"""The case state of one ``case.inputs`` partition: a local RocksDB (rocksdict) and a compacted changelog.

What a partition holds (one RocksDB under ``data_dir/cases/<partition>``, keys by prefix):

    c|<case_id>                  the case document (JSON)
    s|<source_id>                the case holding that source record
    t|<due ms>|<case>|<seq>|<k>  a pending timer (yellow, red, purge): sorted by due time, so a tick reads
                                 only what is due
    w|<window end>|<case_id>     until when a report may join the case, with what the dedup index needs of
                                 it (the engine's summary): a restart reads only these small values of the cases
                                 still within their merge window
    z|<station id>               the zero-report book 零报告 of the partition's stations (streams.core.field)
    m|...                        the input offset the state reaches, the changelog offset it holds, the
                                 newest report's time, and the open cases by (stage, light) for the gauge

Nothing walks every case: the gauge counts and the window and timer keys change with each committed
document (the engine's ``on_change``), a tick seeks to the due timers, a closed case is purged by its own
timer.

Every batch ends in this order (``LeanLifecycle``): outputs acknowledged → changed documents, sources and a
checkpoint on the changelog (``case.state``, compacted, partition = input partition) acknowledged → the
RocksDB batch written (with the changelog offset it reflects) → input offsets committed. On assignment the
local RocksDB is brought up to the changelog's end (all of it when the files are new here, only the tail
after a restart), and the input is read from the checkpoint's offset: a crash anywhere replays, never loses,
and never applies an input twice to the state.
"""
from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any, cast

import orjson

from streams.core.cases import lifecycle
from streams.core.cases.engine import CaseEngine
from streams.core.cases.model import CaseDoc
from streams.core.cases.sla import WorkCalendar
from streams.core.cases.timers import Timer

DOC, SOURCE, TIMER, WINDOW, META, ZERO = b"c|", b"s|", b"t|", b"w|", b"m|", b"z|"
META_KEY = META + b"state"
# changelog record keys (case.state): documents, sources, and the checkpoint
LOG_DOC, LOG_SOURCE, LOG_ZERO, LOG_CHECKPOINT = b"c:", b"s:", b"z:", b"\x00checkpoint"
# A document on the changelog is `header 0x1E document`: the header says what the disk indexes need (gauge
# label, window end, timers), so a restore of a million cases stores the documents without decoding them.
HEADER_END = b"\x1e"


def _due_key(timer: Timer) -> bytes:
    due, case_id, seq, kind = timer
    return TIMER + f"{max(due, 0):019d}|{case_id}|{seq}|{kind}".encode()


def _parse_due_key(key: bytes) -> Timer:
    due, case_id, seq, kind = key[len(TIMER):].decode().rsplit("|", 3)
    return int(due), case_id, int(seq), kind


def _window_key(end: int, case_id: str) -> bytes:
    return WINDOW + f"{end:019d}|{case_id}".encode()


def header_of(engine: CaseEngine, doc: CaseDoc) -> dict[str, Any]:
    """What the disk indexes keep of a document (see HEADER_END): gauge label, window end, the index's
    summary (while the window is open), timers."""
    end = engine.window_end(doc)
    return {"g": gauge_key(doc), "w": end, "s": engine.summary(doc) if end is not None else None,
            "t": [[due, seq, kind] for due, _, seq, kind in engine.timers_of(doc)]}


def changelog_value(engine: CaseEngine, doc: CaseDoc, data: bytes | None = None) -> bytes:
    """A document as the changelog carries it: ``header 0x1E document``."""
    return orjson.dumps(header_of(engine, doc)) + HEADER_END + (data if data is not None else orjson.dumps(doc))


def gauge_key(doc: CaseDoc) -> str | None:
    """``status|light`` of an open case (the open-cases gauge's labels); None for a closed or void one."""
    status = lifecycle.status_of(doc)
    if status in ("closed", "void"):
        return None
    return f"{status}|{CaseEngine.current_light(doc)}"


class _Documents(MutableMapping[str, CaseDoc]):
    """The engine's ``cases`` mapping: changed documents are held until the batch is persisted."""

    def __init__(self, state: PartitionCaseState) -> None:
        self.state = state

    def __getitem__(self, case_id: str) -> CaseDoc:
        doc = self.get(case_id)
        if doc is None:
            raise KeyError(case_id)
        return doc

    def get(self, case_id: str, default: Any = None) -> Any:
        dirty = self.state.dirty_docs
        if case_id in dirty:
            doc = dirty[case_id]
            return default if doc is None else doc
        data = self.state.db.get(DOC + case_id.encode())
        return default if data is None else orjson.loads(data)

    def __setitem__(self, case_id: str, doc: CaseDoc) -> None:
        self.state.record(self.state.dirty_docs, case_id, doc)

    def __delitem__(self, case_id: str) -> None:
        self.state.record(self.state.dirty_docs, case_id, None)

    def __iter__(self) -> Iterator[str]:  # O(cases): for tests and tools, never on the hot path
        seen = set()
        for case_id, doc in list(self.state.dirty_docs.items()):
            seen.add(case_id)
            if doc is not None:
                yield case_id
        for key in self.state.db.keys(from_key=DOC):
            if not key.startswith(DOC):
                break
            case_id = key[len(DOC):].decode()
            if case_id not in seen:
                yield case_id

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _Sources(MutableMapping[str, str]):
    def __init__(self, state: PartitionCaseState) -> None:
        self.state = state

    def __getitem__(self, source_id: str) -> str:
        case_id = self.get(source_id)
        if case_id is None:
            raise KeyError(source_id)
        return cast(str, case_id)

    def get(self, source_id: str, default: Any = None) -> Any:
        dirty = self.state.dirty_sources
        if source_id in dirty:
            case_id = dirty[source_id]
            return default if case_id is None else case_id
        data = self.state.db.get(SOURCE + source_id.encode())
        return default if data is None else data.decode()

    def __setitem__(self, source_id: str, case_id: str) -> None:
        self.state.record(self.state.dirty_sources, source_id, case_id)

    def __delitem__(self, source_id: str) -> None:
        self.state.record(self.state.dirty_sources, source_id, None)

    def __iter__(self) -> Iterator[str]:
        for key in self.state.db.keys(from_key=SOURCE):
            if not key.startswith(SOURCE):
                break
            yield key[len(SOURCE):].decode()

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _ZeroReports(MutableMapping[str, Any]):
    """The zero-report book's mapping (station id -> days reported / alerted, and the partition's last check)."""

    def __init__(self, state: PartitionCaseState) -> None:
        self.state = state

    def __getitem__(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        dirty = self.state.dirty_zero
        if key in dirty:
            value = dirty[key]
            return default if value is None else value
        data = self.state.db.get(ZERO + key.encode())
        return default if data is None else orjson.loads(data)

    def __setitem__(self, key: str, value: Any) -> None:
        self.state.record(self.state.dirty_zero, key, value)

    def __delitem__(self, key: str) -> None:
        self.state.record(self.state.dirty_zero, key, None)

    def __iter__(self) -> Iterator[str]:
        seen = set()
        for key, value in list(self.state.dirty_zero.items()):
            seen.add(key)
            if value is not None:
                yield key
        for raw in self.state.db.keys(from_key=ZERO):
            if not raw.startswith(ZERO):
                break
            key = raw[len(ZERO):].decode()
            if key not in seen:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _DiskTimers:
    """The engine's timer queue as sorted RocksDB keys (streams.core.cases.timers.TimerQueue)."""

    def __init__(self, state: PartitionCaseState) -> None:
        self.state = state

    def push(self, partition: int, timer: Timer) -> None:
        key = _due_key(timer)
        self.state.undelete(key)
        self.state.record(self.state.puts, key, b"")

    def pop_due(self, partition: int, now_ms: int) -> Iterator[Timer]:
        state = self.state
        stop = TIMER + f"{max(now_ms, 0):019d}|~".encode()
        due = [key for key in state.puts if key.startswith(TIMER) and key <= stop]
        for key in state.db.keys(from_key=TIMER):
            if key > stop or not key.startswith(TIMER):
                break
            if key not in state.deletes:
                due.append(key)
        for key in sorted(set(due)):
            state.remove_key(key)
            yield _parse_due_key(key)

    def next_due(self, partition: int | None = None) -> int | None:
        heads = [key for key in self.state.puts if key.startswith(TIMER)]
        for key in self.state.db.keys(from_key=TIMER):
            if key.startswith(TIMER) and key not in self.state.deletes:
                heads.append(key)
            break
        return _parse_due_key(min(heads))[0] if heads else None

    def pending(self) -> int:
        on_disk = 0
        for key in self.state.db.keys(from_key=TIMER):
            if not key.startswith(TIMER):
                break
            on_disk += key not in self.state.deletes
        return on_disk + sum(1 for key in self.state.puts if key.startswith(TIMER))

    def partitions(self) -> list[int]:
        return [self.state.partition]

    def clear(self) -> None:
        """Timers live on disk: a rebuild keeps them."""


class PartitionCaseState:
    """A case engine over one partition's RocksDB; see the module docstring."""

    def __init__(self, partition: int, path: Path, knowledge: Any, calendar: WorkCalendar, auto_dispatch: bool,
                 closed_ttl_ms: int | None, index_lateness_ms: int | None) -> None:
        from rocksdict import Options, Rdict

        self.partition = partition
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db: Any = Rdict(str(path), Options(raw_mode=True))
        self.dirty_docs: dict[str, CaseDoc | None] = {}
        self._restored: dict[str, bytes | None] = {}  # documents from the changelog, as stored there
        self.dirty_sources: dict[str, str | None] = {}
        self.dirty_zero: dict[str, Any] = {}      # the zero-report book's changes (None: deleted)
        self.zero_reports = _ZeroReports(self)
        self.puts: dict[bytes, bytes] = {}
        self.deletes: set[bytes] = set()
        self._undo: list[tuple[Any, ...]] | None = None   # how to take back the current input's writes
        self._undo_watermark = 0
        self._encoded: dict[str, bytes | None] | None = None   # the batch's documents, encoded once
        meta = json.loads(self.db.get(META_KEY) or b"{}")
        self.upto: int | None = meta.get("upto")                 # next case.inputs offset the state needs
        self.changelog_next: int = meta.get("changelog_next", 0)  # next case.state offset to apply
        self.counts: Counter[str] = Counter(meta.get("counts", {}))
        self.engine = CaseEngine(knowledge, _Documents(self), _Sources(self), calendar, auto_dispatch,
                                 timers=_DiskTimers(self), closed_ttl_ms=closed_ttl_ms,
                                 index_lateness_ms=index_lateness_ms, on_change=self._changed)
        self.engine.watermark_ms = int(meta.get("watermark_ms", 0))

    # ------------------------------------------------------------ incremental indexes
    def header(self, doc: CaseDoc) -> dict[str, Any]:
        return header_of(self.engine, doc)

    def _changed(self, before: CaseDoc | None, after: CaseDoc | None) -> None:
        doc = after if after is not None else before
        case_id = str(doc["case_id"]) if doc is not None else ""
        self._header_changed(case_id, self.header(before) if before is not None else None,
                             self.header(after) if after is not None else None)

    def _header_changed(self, case_id: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
        for header, step in ((before, -1), (after, 1)):
            if header is not None and header["g"] is not None:
                self.counts[header["g"]] += step
                if self._undo is not None:
                    self._undo.append(("count", header["g"], step))
        old_end = before["w"] if before is not None else None
        new_end = after["w"] if after is not None else None
        if old_end is not None and old_end != new_end:
            self.remove_key(_window_key(old_end, case_id))
        if after is not None and new_end is not None:
            key = _window_key(new_end, case_id)
            self.undelete(key)
            self.record(self.puts, key, orjson.dumps(after["s"]))

    # ------------------------------------------------------------ one input's writes, undone together
    # (streams.agents.lifecycle.Journal: an input that fails half-way leaves no state behind)
    def mark(self) -> None:
        """From now on record how to take back each write (until the next mark)."""
        self._undo = []
        self._undo_watermark = self.engine.watermark_ms

    def undo(self) -> bool:
        """Take back the writes since :meth:`mark`; True when there were any."""
        entries, self._undo = self._undo or [], []
        changed = bool(entries) or self.engine.watermark_ms != self._undo_watermark
        for entry in reversed(entries):
            if entry[0] == "count":
                self.counts[entry[1]] -= entry[2]
            elif entry[0] == "deleted":
                self.deletes.discard(entry[1])
            elif entry[0] == "undeleted":
                self.deletes.add(entry[1])
            else:
                _, mapping, key, had, old = entry
                if had:
                    mapping[key] = old
                else:
                    mapping.pop(key, None)
        self.engine.watermark_ms = self._undo_watermark
        return changed

    def rollback(self) -> None:
        """Drop every change not yet persisted (a tick that failed) and rebuild the index from disk."""
        self.dirty_docs, self.dirty_sources, self.puts, self.deletes = {}, {}, {}, set()
        self.dirty_zero = {}
        self._undo = None
        self.counts = Counter(json.loads(self.db.get(META_KEY) or b"{}").get("counts", {}))
        self.rebuild()

    def record(self, mapping: dict[Any, Any], key: Any, value: Any) -> None:
        if self._undo is not None:
            self._undo.append(("set", mapping, key, key in mapping, mapping.get(key)))
        mapping[key] = value

    def undelete(self, key: bytes) -> None:
        if key in self.deletes:
            self.deletes.discard(key)
            if self._undo is not None:
                self._undo.append(("undeleted", key))

    def remove_key(self, key: bytes) -> None:
        if key in self.puts:
            if self._undo is not None:
                self._undo.append(("set", self.puts, key, True, self.puts[key]))
            del self.puts[key]
        if key not in self.deletes:
            self.deletes.add(key)
            if self._undo is not None:
                self._undo.append(("deleted", key))

    def open_counts(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for label, n in self.counts.items():
            if n > 0:
                status, light = label.split("|", 1)
                out[(status, light)] = n
        return out

    def live_documents(self) -> Iterator[CaseDoc]:
        """The summaries of the cases a report may still join (window end ≥ watermark − lateness): what
        the index needs, read in one sequential scan of small values."""
        lateness = self.engine.index_lateness_ms
        horizon = max(0, self.engine.watermark_ms - lateness) if lateness is not None else 0
        start = _window_key(horizon, "")
        for key, value in self.db.items(from_key=start):
            if not key.startswith(WINDOW):
                break
            if key not in self.deletes and key not in self.puts:
                yield cast(CaseDoc, orjson.loads(value))
        for key, value in list(self.puts.items()):   # the batch's, not yet persisted
            if key.startswith(WINDOW) and key >= start:
                yield cast(CaseDoc, orjson.loads(value))

    def rebuild(self) -> None:
        self.engine.rebuild(self.live_documents())

    # ------------------------------------------------------------ the batch's changes
    def has_changes(self) -> bool:
        return bool(self.dirty_docs or self._restored or self.dirty_sources or self.dirty_zero or self.puts
                    or self.deletes)

    def changelog_records(self) -> tuple[list[tuple[bytes, bytes | None]], dict[str, str | None]]:
        """(changelog records for case.state, source changes for case.sources). Documents are encoded once
        here and kept for :meth:`persist`."""
        self._encoded = {case_id: (orjson.dumps(doc) if doc is not None else None)
                         for case_id, doc in self.dirty_docs.items()}
        records: list[tuple[bytes, bytes | None]] = []
        for case_id, data in self._encoded.items():
            doc = self.dirty_docs[case_id]
            value = None if doc is None or data is None else changelog_value(self.engine, doc, data)
            records.append((LOG_DOC + case_id.encode(), value))
        records += [(LOG_SOURCE + source_id.encode(), case_id.encode() if case_id is not None else None)
                    for source_id, case_id in self.dirty_sources.items()]
        records += [(LOG_ZERO + key.encode(), orjson.dumps(value) if value is not None else None)
                    for key, value in self.dirty_zero.items()]
        return records, dict(self.dirty_sources)

    def checkpoint(self, upto: int | None) -> bytes:
        return orjson.dumps({"upto": upto if upto is not None else self.upto,
                             "watermark_ms": self.engine.watermark_ms})

    def persist(self, upto: int | None, changelog_next: int | None) -> None:
        """Write the batch's changes and the offsets they reach in one RocksDB write."""
        from rocksdict import WriteBatch

        encoded = getattr(self, "_encoded", None)
        if encoded is None:
            encoded = {case_id: (orjson.dumps(doc) if doc is not None else None)
                       for case_id, doc in self.dirty_docs.items()}
        encoded = {**self._restored, **encoded}
        self._restored = {}
        batch = WriteBatch(raw_mode=True)
        for case_id, data in encoded.items():
            if data is None:
                batch.delete(DOC + case_id.encode())
            else:
                batch.put(DOC + case_id.encode(), data)
        for source_id, case_id in self.dirty_sources.items():
            if case_id is None:
                batch.delete(SOURCE + source_id.encode())
            else:
                batch.put(SOURCE + source_id.encode(), case_id.encode())
        for zkey, zvalue in self.dirty_zero.items():
            if zvalue is None:
                batch.delete(ZERO + zkey.encode())
            else:
                batch.put(ZERO + zkey.encode(), orjson.dumps(zvalue))
        for key in self.deletes:
            batch.delete(key)
        for key, value in self.puts.items():
            batch.put(key, value)
        if upto is not None:
            self.upto = upto
        if changelog_next is not None:
            self.changelog_next = changelog_next
        batch.put(META_KEY, self._meta())
        self.db.write(batch)
        self.dirty_docs, self.dirty_sources, self.puts, self.deletes = {}, {}, {}, set()
        self.dirty_zero = {}
        self._encoded = None
        self._undo = None

    def _meta(self) -> bytes:
        return orjson.dumps({"upto": self.upto, "changelog_next": self.changelog_next,
                             "watermark_ms": self.engine.watermark_ms,
                             "counts": {k: n for k, n in self.counts.items() if n}})

    # ------------------------------------------------------------ restore from the changelog
    def apply_changelog(self, key: bytes, value: bytes | None) -> None:
        """One changelog record, as if the batch that wrote it had run here (call :meth:`persist` after)."""
        if key == LOG_CHECKPOINT:
            if value is not None:
                checkpoint = orjson.loads(value)
                self.upto = checkpoint.get("upto", self.upto)
                self.engine.watermark_ms = max(self.engine.watermark_ms, int(checkpoint.get("watermark_ms", 0)))
            return
        if key.startswith(LOG_SOURCE):
            self.dirty_sources[key[len(LOG_SOURCE):].decode()] = value.decode() if value is not None else None
            return
        if key.startswith(LOG_ZERO):
            self.dirty_zero[key[len(LOG_ZERO):].decode()] = orjson.loads(value) if value is not None else None
            return
        if not key.startswith(LOG_DOC):
            return
        case_id = key[len(LOG_DOC):].decode()
        old = self.dirty_docs.get(case_id) if case_id in self.dirty_docs else None
        if old is None and case_id in self._restored:
            restored = self._restored[case_id]
            old = cast(CaseDoc, orjson.loads(restored)) if restored is not None else None
        elif old is None:
            stored = self.db.get(DOC + case_id.encode())
            old = cast(CaseDoc, orjson.loads(stored)) if stored is not None else None
        before = self.header(old) if old is not None else None
        if value is None:
            self._restored[case_id] = None
            self._header_changed(case_id, before, None)
            return
        head, _, data = value.partition(HEADER_END)
        after = orjson.loads(head)
        self._restored[case_id] = data  # stored as it came: no decode of the document
        self._header_changed(case_id, before, after)
        for due, seq, kind in after["t"]:
            self.engine.timers.push(self.partition, (due, case_id, seq, kind))

    def close(self) -> None:
        self.db.close()

    def destroy(self) -> None:
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)
