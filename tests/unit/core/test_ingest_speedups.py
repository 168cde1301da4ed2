"""The ingest's shortcuts change no result: each is compared with the plain way it replaces.

- ``classify._convert_t2s`` skips OpenCC for texts without a character its dictionaries can change;
- ``privacy.mask_text`` skips the number patterns for texts without a run of 7 digits;
- ``TextClassifier._features`` computes the TF-IDF vectorizer's transform itself;
- ``TextClassifier.classify_many`` scores a whole batch at once and finds keywords by character pairs;
- ``City.at_address`` / ``parse_address`` keep parsed and located addresses.

The reference implementations below are the code these replaced (opencc on every text, the row by row
scoring, no address cache). Over the city scenario's records (those ``bench/core.py`` measures) the
ingest's signals and triage records must be the same either way, so a future shortcut that changes a
result fails here.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import sys
import time
import unicodedata
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rapidfuzz import fuzz, process

from streams.core import privacy
from streams.core.ingest import Ingestor, RejectRecord
from streams.core.knowledge import classify
from streams.core.knowledge.classify import (
    KEYWORD_WEIGHT,
    OUT_OF_SCOPE_CODE,
    OUT_OF_SCOPE_SCORE,
    SCORE_TEMPERATURE,
    Classification,
    TextClassifier,
)
from streams.core.knowledge.knowledge import Knowledge
from streams.core.privacy import Pseudonymizer
from tests.paths import REPO_ROOT

RECORDS = 4000   # scenario records compared (bench/core.py measures 20,000 of the same scenario)


@pytest.fixture(scope="module")
def kb() -> Knowledge:
    return Knowledge.load()


# ---------------------------------------------------------------- reference implementations
def reference_normalise(text: str) -> str:
    """normalise_text with the converter run on every text."""
    out = classify._SPACES.sub(" ", unicodedata.normalize("NFKC", text)).strip().lower()
    for _ in range(3):
        simple = classify._t2s().convert(out)
        simple = classify._SPACES.sub(" ", unicodedata.normalize("NFKC", simple)).strip().lower()
        if simple == out:
            break
        out = simple
    return out


def reference_classify(clf: TextClassifier, texts: list[str]) -> list[Classification]:
    """classify_many as it was: sklearn's transform, then each text's scores row by row."""
    keyword_codes: dict[str, list[str]] = {}
    for code, words in clf.keywords.items():
        for word in words:
            if word:
                keyword_codes.setdefault(word, []).append(code)
    lengths = sorted({len(w) for w in keyword_codes})
    in_scope_mask = np.array([c != OUT_OF_SCOPE_CODE for c in clf.codes])
    norms = [reference_normalise(t) for t in texts]
    all_margins = clf.model.decision_function(clf.vectorizer.transform(norms)) * SCORE_TEMPERATURE
    out = []
    for norm, margins in zip(norms, all_margins, strict=True):
        probs = np.exp(margins - margins.max())
        probs /= probs.sum()
        found = {norm[i:i + n] for n in lengths for i in range(len(norm) - n + 1)}
        hit_codes = {code for word in found & keyword_codes.keys() for code in keyword_codes[word]}
        hits = [code for code in clf.keywords if code in hit_codes]
        scores = probs.copy()
        if hits:
            kw = np.array([1.0 if code in hits else 0.0 for code in clf.codes])
            scores = (1 - KEYWORD_WEIGHT) * probs + KEYWORD_WEIGHT * kw / kw.sum()
        order = np.argsort(-scores)
        in_scope = [int(i) for i in order if in_scope_mask[i]]
        best = clf.codes[in_scope[0]]
        oos_score = float(scores[~in_scope_mask].sum()) if not in_scope_mask.all() else 0.0
        out.append(Classification(
            category_code=best,
            category_name=clf.taxonomy.by_code[best].name,
            confidence=round(float(scores[in_scope[0]]), 4),
            context=[flag for flag, cues in clf.context_cues.items() if any(c in norm for c in cues)],
            alternatives=[(clf.codes[i], round(float(scores[i]), 4)) for i in in_scope[:3]],
            keyword_hits=[clf.taxonomy.by_code[c].name for c in hits],
            out_of_scope=(clf.codes[int(order[0])] == OUT_OF_SCOPE_CODE
                          or (oos_score >= OUT_OF_SCOPE_SCORE and float(scores[in_scope[0]]) < 0.55)),
            out_of_scope_score=round(oos_score, 4)))
    return out


def reference_fuzzy_community(kb: Knowledge, norm: str) -> str | None:
    """City._fuzzy_community without its pre-check."""
    best = process.extractOne(norm, list(kb.city.communities), scorer=fuzz.partial_ratio, score_cutoff=80)
    if best and len(best[0]) >= 3 and sum(1 for ch in best[0] if ch in norm) >= len(best[0]) - 1:
        return str(best[0])
    return None


# ---------------------------------------------------------------- the scenario's records
@pytest.fixture(scope="module")
def scenario(kb: Knowledge) -> list[tuple[str, Any, int]]:
    """(feed, decoded record, ts_ms) of the first RECORDS records bench/core.py ingests."""
    sys.path.insert(0, str(REPO_ROOT))
    from bench.run import CASE_PATH_SOURCES
    from streams.bus.codec import DecodeError, registry
    from streams.bus.topics import RAW_SCHEMAS
    from streams.sources.scenario import scenario_for

    start_ms = int(time.time() * 1000) - 7 * 86_400_000
    timeline = scenario_for(kb, 7, sources=CASE_PATH_SOURCES).timeline(start_ms)
    codec, out = registry(), []
    for record in timeline:
        if record.topic == "field.tracks":
            continue
        feed = RAW_SCHEMAS[record.topic]
        try:
            out.append((feed, codec.decode(record.payload(), feed)[1], record.ts_ms))
        except DecodeError:
            pass
        if len(out) >= RECORDS:
            break
    return out


def _texts(records: list[tuple[str, Any, int]]) -> list[str]:
    return [raw["text"] for _, raw, _ in records if isinstance(raw.get("text"), str) and raw["text"].strip()]


# ---------------------------------------------------------------- OpenCC only when it can change the text
_CONVERTIBLE = sorted(classify._convertible())
# characters OpenCC's t2s tables hold but never change (taken from its keys), and common simplified ones
_KEY_CHARS = sorted({ch for chain in classify._t2s()._dict_chain_data for _, _, mapping in chain
                     for key in mapping for ch in key} - set(_CONVERTIBLE))
_ALPHABET = _CONVERTIBLE[::3] + _KEY_CHARS[::5] + list("的了是在路号弄街道小区垃圾噪音扰民，。 、ab12")


def test_convertible_characters_hold_traditional_ones() -> None:
    assert {"麵", "點", "廣", "東", "車", "覆"} <= set(_CONVERTIBLE)
    assert not {"面", "点", "广", "东", "车", "路", "号"} & set(_CONVERTIBLE)


def test_every_character_outside_the_set_is_left_alone_by_opencc() -> None:
    converter = classify._t2s()
    changed = [ch for ch in _KEY_CHARS if converter.convert(ch) != ch]
    assert changed == []


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(_ALPHABET), max_size=24)
       | st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), max_size=24))
def test_fast_conversion_equals_opencc(text: str) -> None:
    assert classify._convert_t2s(text) == classify._t2s().convert(text)
    assert classify.normalise_text(text) == reference_normalise(text)


def test_scenario_texts_normalise_as_with_opencc_always(scenario: list[tuple[str, Any, int]]) -> None:
    texts = _texts(scenario)
    assert [classify.normalise_text(t) for t in texts] == [reference_normalise(t) for t in texts]


# ---------------------------------------------------------------- masking only where a number can be
_NUMBERISH = st.text(alphabet=st.sampled_from(list("0123456789０１２３４５６７８９ -.—xX+号路电话手机微信tel:：是")),
                     max_size=30)


@settings(max_examples=400, deadline=None)
@given(_NUMBERISH)
def test_mask_guard_changes_nothing(text: str) -> None:
    assert privacy.mask_text(text) == privacy._NUMBERS.sub(privacy._replace, text)


# ---------------------------------------------------------------- classification
def test_features_equal_the_vectorizer(kb: Knowledge, scenario: list[tuple[str, Any, int]]) -> None:
    clf = kb.classifier
    # empty, spaces, a lone surrogate, a character beyond the BMP
    odd = ["", "a", "路  灯\t坏了", "ab  cd", "坏\ud800了", "𠀀路灯"]
    norms = [classify.normalise_text(t) for t in _texts(scenario)] + odd
    for start in range(0, len(norms), 500):
        expected = clf.vectorizer.transform(norms[start:start + 500])
        got = clf._features(norms[start:start + 500])
        assert got.shape == expected.shape
        assert np.array_equal(got.indptr, expected.indptr)
        assert np.array_equal(got.indices, expected.indices)
        assert np.array_equal(got.data, expected.data)   # bit for bit, not approximately


def test_batch_classification_equals_the_row_by_row_one(kb: Knowledge, scenario: list[tuple[str, Any, int]]) -> None:
    texts = _texts(scenario) + ["路灯不亮了", "小区门口有人卖假证", "麵包店門口垃圾堆積", "x", "坏\ud800了"]
    for start in range(0, len(texts), 500):
        batch = texts[start:start + 500]
        assert kb.classifier.classify_many(batch) == reference_classify(kb.classifier, batch)
    contexts = [c.context for c in reference_classify(kb.classifier, texts)]
    assert [kb.classifier.read_context(t) for t in texts] == contexts


# ---------------------------------------------------------------- the whole ingest
def _ingest_all(kb: Knowledge, records: list[tuple[str, Any, int]], pseudonyms: Pseudonymizer) -> list[Any]:
    ingestor = Ingestor(kb, pseudonyms=pseudonyms)
    out: list[Any] = []
    for start in range(0, len(records), 500):
        chunk = records[start:start + 500]
        ingestor.prepare([raw for _, raw, _ in chunk])
        for feed, raw, ts_ms in chunk:
            try:
                result = ingestor.ingest(feed, raw, ts_ms)
            except RejectRecord as exc:
                out.append(("reject", str(exc)))
                continue
            out.append(json.dumps(dataclasses.asdict(result), ensure_ascii=False, sort_keys=True, default=str))
    return out


def test_ingest_equals_the_reference_path(kb: Knowledge, scenario: list[tuple[str, Any, int]],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pseudonyms = Pseudonymizer.ephemeral()
    fast = _ingest_all(kb, scenario, pseudonyms)
    assert sum(1 for r in fast if '"signals": [{' in r) > len(scenario) // 2   # the comparison sees signals

    city, clf = kb.city, kb.classifier
    with monkeypatch.context() as patch:   # opencc always, row by row scores, no address cache
        patch.setattr(classify, "_convert_t2s", lambda text: classify._t2s().convert(text))
        patch.setattr(clf, "classify_many", lambda texts: reference_classify(clf, texts))
        patch.setattr(clf, "read_context", lambda text: reference_classify(clf, [text])[0].context)
        patch.setattr(city, "_located", city._at_address)
        patch.setattr(city, "_parsed", city._parse_address)
        patch.setattr(city, "_fuzzy_community", lambda norm: reference_fuzzy_community(kb, norm))
        patch.setattr(privacy, "_MAYBE_NUMBER", privacy.re.compile(r"\d"))
        reference = _ingest_all(kb, scenario, pseudonyms)
    assert fast == reference


def test_cached_locations_are_copies(kb: Knowledge) -> None:
    address = next(iter(kb.city.addresses))
    first, _ = kb.city.at_address(address)
    assert first is not None
    first.context.append("changed by a caller")
    first.street = "changed"
    second, _ = kb.city.at_address(address)
    assert second is not None and "changed by a caller" not in second.context and second.street != "changed"
    parsed = kb.city.parse_address(address)
    parsed.road = "changed"
    assert kb.city.parse_address(address).road != "changed"


def test_fuzzy_community_pre_check_changes_nothing(kb: Knowledge, scenario: list[tuple[str, Any, int]]) -> None:
    names = list(kb.city.communities)
    probes = [classify.normalise_text(t) for t in _texts(scenario)]
    probes += [name[:-1] + "x" + "号楼门口" for name in names] + [name[1:] for name in names] + names
    found = [kb.city._fuzzy_community(p) for p in probes]
    assert found == [reference_fuzzy_community(kb, p) for p in probes]
    assert any(found)   # the probes reach the fuzzy match


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("0123456789０１２３４５６７８９+ -()86")), min_size=1, max_size=20))
def test_caller_pseudonym_is_the_hmac_it_was(phone: str) -> None:
    pseudonyms = Pseudonymizer.ephemeral()
    key = pseudonyms.current
    digits = privacy.phone_digits(phone) or phone.strip()
    mac = hmac.new(key.secret, b"caller\x00" + digits.encode("utf-8"), hashlib.sha256).hexdigest()
    assert pseudonyms.caller(phone) == f"{privacy.PSEUDONYM_PREFIX}-{key.key_id}-{mac[:privacy.PSEUDONYM_HEX]}"
