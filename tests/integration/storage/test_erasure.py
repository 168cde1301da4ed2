"""Erasure of one caller's rows on both engines (streams.storage.erasure): found by their pseudonyms under
the current and a previous key, and by their number inside sealed dead-letter originals."""
from __future__ import annotations

import json

from streams.bus.sealing import DeadLetterSealer, SealingError
from streams.core.privacy import Pseudonymizer, PseudonymKey
from streams.storage.erasure import erase_caller
from streams.storage.store import Store

NUMBER = "13912345678"
KEYS = Pseudonymizer(PseudonymKey.from_secret("the-current-pseudonym-key-000000001"),
                     [PseudonymKey.from_secret("the-previous-pseudonym-key-00000001")])
NOW, OLD = KEYS.every_pseudonym(NUMBER)
SOMEONE = KEYS.caller("13800000000")


def seed(store: Store, sealer: DeadLetterSealer) -> None:
    store.insert("signals", [{"signal_id": "s1", "ts_ms": 1_793_581_200_000, "reporter_id": NOW},
                             {"signal_id": "s2", "ts_ms": 1_793_581_200_000, "reporter_id": OLD},
                             {"signal_id": "s3", "ts_ms": 1_793_581_200_000, "reporter_id": SOMEONE}])
    store.insert("triage", [{"triage_id": "t1", "topic": "hotline.calls", "reason": "r", "ts_ms": 1_793_581_200_000,
                             "record": json.dumps({"caller": NOW, "text": "x"})},
                            {"triage_id": "t2", "topic": "hotline.calls", "reason": "r", "ts_ms": 1_793_581_200_000,
                             "record": json.dumps({"caller": SOMEONE, "text": "x"})}])
    store.insert("case_transitions", [{"event_id": "e1", "case_id": "c1", "ts_ms": 1_793_581_200_000,
                                       "action": "discover", "actor_kind": "12345", "actor_id": OLD},
                                      {"event_id": "e2", "case_id": "c1", "ts_ms": 1_793_581_200_000,
                                       "action": "dispatch", "actor_kind": "system", "actor_id": "auto"}])
    sealed = [sealer.seal(json.dumps({"caller": f"+86 {NUMBER[:3]} {NUMBER[3:7]} {NUMBER[7:]}"}).encode()),
              sealer.seal(b'{"caller": "13800000000"}'), DeadLetterSealer.ephemeral().seal(NUMBER.encode())]
    store.insert("dead_letters", [{"topic": "hotline.calls", "partition": 0, "offset": i, "reason": "r",
                                   "ts_ms": 1_793_581_200_000, "original": token.decode()}
                                  for i, token in enumerate(sealed)])


def test_erase_finds_the_caller_under_every_key_and_inside_sealed_originals(store: Store) -> None:
    sealer = DeadLetterSealer.ephemeral()
    seed(store, sealer)

    def open_original(text: str) -> bytes | None:
        try:
            return sealer.open(text.encode())
        except SealingError:
            return None

    dry = erase_caller(store, [NOW, OLD], NUMBER, open_original, dry_run=True)
    assert dry.rows == {"signals": 2, "triage": 1, "case_transitions": 1, "dead_letters": 1}
    assert store.query("SELECT count() AS n FROM signals")[0]["n"] == 3, "a dry run changes nothing"

    report = erase_caller(store, [NOW, OLD], NUMBER, open_original)
    assert report.rows == dry.rows and report.dead_letters_unreadable == 1
    assert [r["signal_id"] for r in store.query("SELECT signal_id FROM signals")] == ["s3"]
    assert [r["triage_id"] for r in store.query("SELECT triage_id FROM triage")] == ["t2"]
    actors = {r["event_id"]: r["actor_id"] for r in store.query("SELECT event_id, actor_id FROM case_transitions")}
    assert actors == {"e1": "erased", "e2": "auto"}
    assert sorted(r["offset"] for r in store.query("SELECT offset FROM dead_letters")) == [1, 2]
    assert erase_caller(store, [NOW, OLD], NUMBER, open_original).total == 0, "nothing left the second time"
