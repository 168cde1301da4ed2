"""Chinese text classification into the taxonomy: keyword rules from the KB plus a statistical
model (character n-gram TF-IDF + linear SVM) trained at load time on the shipped corpus.

Texts are normalised first: traditional -> simplified (OpenCC), full-width -> half-width (NFKC).

The corpus also holds texts no category fits (``_out_of_scope.jsonl``, label ``范围外``: 社保咨询,
网购纠纷, 卖假证 ...). They train one more class of the model; when it wins, the classification says
``out_of_scope`` and the ingest sends the record to triage 人工分拨 with that reason instead of forcing
it into the nearest category.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import opencc
import scipy.sparse
import sklearn
from rapidfuzz import fuzz
from rapidfuzz.process import cdist
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize
from sklearn.svm import LinearSVC

from streams.core.knowledge.taxonomy import DataError, Taxonomy

# Share of the final score given to keyword rules when any keyword hits.
KEYWORD_WEIGHT = 0.3
# Softmax temperature turning SVM margins into 0..1 scores; chosen on the held-out split so that
# most correct answers score above the triage threshold (0.55) and most wrong ones below it. With
# 100+ categories the mass spreads thinner than with 30: 10 (was 6) routes ~91% of the held-out
# texts without triage, ~94% of them right (`streams classify --evaluate`).
SCORE_TEMPERATURE = 10.0
# The corpus label of texts that fit no category, and the model's class for them (never a taxonomy
# code: those start with B or E).
OUT_OF_SCOPE = "范围外"
OUT_OF_SCOPE_CODE = "X0000"
# Out of scope is decided when the out-of-scope class wins, or when it scores at least
# OUT_OF_SCOPE_SCORE while no category reaches CLAIM_CONFIDENCE (the default triage threshold):
# 「小区门口有人卖假证」 scores 0.40 out of scope against 0.42 for 占道经营. On the held-out split no
# in-scope text meets the second condition (checked by the tests).
OUT_OF_SCOPE_SCORE = 0.25
CLAIM_CONFIDENCE = 0.55
# Two texts at least this similar (rapidfuzz ratio of the normalised texts, 0..100) are near-copies:
# the held-out split keeps them on the same side, so evaluation never scores a paraphrase of a
# training text.
NEAR_COPY_RATIO = 80.0
_SPACES = re.compile(r"\s+")
_WHITE_SPACES = re.compile(r"\s\s+")   # what TfidfVectorizer's character analyzer folds into one space
_PAIR = 0x110000   # above every code point: a character pair's lookup key is first * _PAIR + second
_CONVERTER_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _t2s() -> opencc.OpenCC:
    return opencc.OpenCC("t2s")


@lru_cache(maxsize=1)
def _convertible() -> frozenset[str]:
    """Every character that can make the t2s converter change a text. The converter only rewrites
    the spans that match a key of its dictionaries, and a match changes something only when the
    key's value differs from the key; every such key holds at least one of these characters (where
    key and value differ, or all of the key's characters when their lengths differ). A text with
    none of them is its own conversion, so the pure-Python converter (a third of the ingest's CPU
    time) runs only for the ~1 % of texts with a traditional character."""
    converter = _t2s()
    converter.convert("")   # loads the dictionaries
    chars: set[str] = set()
    for _max_len, _min_len, mapping in (entry for chain in converter._dict_chain_data for entry in chain):
        for key, value in mapping.items():
            first = value.split(" ")[0]   # the converter takes the first of several values
            if first == key:
                continue
            if len(first) == len(key):
                chars.update(a for a, b in zip(key, first, strict=True) if a != b)
            else:
                chars.update(key)
    return frozenset(chars)


def _convert_t2s(text: str) -> str:
    """OpenCC's t2s conversion of ``text`` (the converter itself only when it can change something)."""
    if _convertible().isdisjoint(text):
        return text
    with _CONVERTER_LOCK:  # the pure-Python converter keeps per-call state
        return str(_t2s().convert(text))


def normalise_text(text: str) -> str:
    """Simplified, half-width, lower-case, single-spaced. Idempotent."""
    out = _SPACES.sub(" ", unicodedata.normalize("NFKC", text)).strip().lower()
    # OpenCC's table has a few chains (薴 -> 苧 -> 苎): convert until nothing changes.
    for _ in range(3):
        simple = _convert_t2s(out)
        simple = _SPACES.sub(" ", unicodedata.normalize("NFKC", simple)).strip().lower()
        if simple == out:
            break
        out = simple
    return out


@dataclass
class Classification:
    category_code: str
    category_name: str
    confidence: float                      # 0..1, the combined score of the best category
    context: list[str] = field(default_factory=list)
    alternatives: list[tuple[str, float]] = field(default_factory=list)  # (code, score), best first
    keyword_hits: list[str] = field(default_factory=list)
    # The out-of-scope class won: no category fits (category_* and confidence are then the best
    # in-scope guess, for the officer in triage).
    out_of_scope: bool = False
    out_of_scope_score: float = 0.0

    @property
    def label(self) -> str:
        """What the classifier decided: the category name, or 范围外."""
        return OUT_OF_SCOPE if self.out_of_scope else self.category_name


@dataclass(frozen=True)
class Example:
    text: str
    category: str   # Chinese name
    source: str     # file:line


def load_corpus(directory: Path, taxonomy: Taxonomy) -> list[Example]:
    """Every *.jsonl under `directory`: {"text": ..., "category": <Chinese name or code>} per line;
    the category may also be 范围外 (a text no category fits)."""
    examples: list[Example] = []
    files = sorted(directory.glob("*.jsonl"))
    if not files:
        raise DataError(directory, None, "(corpus)", "no *.jsonl files")
    for path in files:
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise DataError(path, lineno, "(json)", str(exc)) from exc
            text, cat = obj.get("text"), obj.get("category")
            if not isinstance(text, str) or not text.strip():
                raise DataError(path, lineno, "text", "missing or empty")
            if cat == OUT_OF_SCOPE:
                examples.append(Example(text, OUT_OF_SCOPE, f"{path.name}:{lineno}"))
                continue
            category = taxonomy.get(cat) if isinstance(cat, str) else None
            if category is None:
                raise DataError(path, lineno, "category", f"not in the taxonomy: {cat!r} (nor {OUT_OF_SCOPE})")
            examples.append(Example(text, category.name, f"{path.name}:{lineno}"))
    return examples


def near_copy_groups(texts: list[str], min_ratio: float = NEAR_COPY_RATIO) -> list[int]:
    """A group number per text: texts linked by a chain of near-copies share a group."""
    norms = [normalise_text(t) for t in texts]
    parent = list(range(len(texts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if len(norms) > 1:
        scores = cdist(norms, norms, scorer=fuzz.ratio, score_cutoff=min_ratio, dtype=np.uint8)
        for i, j in zip(*np.nonzero(scores), strict=True):
            if i < j:
                parent[root(int(i))] = root(int(j))
    return [root(i) for i in range(len(texts))]


def split_corpus(examples: list[Example], held_out_share: float = 0.25) -> tuple[list[Example], list[Example]]:
    """Deterministic stratified split: per category, the texts whose hash ranks lowest are held out,
    near-copies (``NEAR_COPY_RATIO``) together, so no held-out text paraphrases a training text."""
    by_cat: dict[str, list[Example]] = {}
    for ex in examples:
        by_cat.setdefault(ex.category, []).append(ex)
    train: list[Example] = []
    test: list[Example] = []
    for cat in sorted(by_cat):
        ranked = sorted(by_cat[cat], key=lambda e: hashlib.sha1(e.text.encode()).hexdigest())
        groups = near_copy_groups([e.text for e in ranked])
        members: dict[int, list[Example]] = {}
        for ex, group in zip(ranked, groups, strict=True):
            members.setdefault(group, []).append(ex)   # groups in the order of their first (lowest-hash) text
        n = max(1, round(len(ranked) * held_out_share))
        held: list[Example] = []
        for group_members in members.values():
            (held if len(held) < n else train).extend(group_members)
        test += held
    return train, test


class TextClassifier:
    """Keyword rules + statistical model. Deterministic for a given corpus and KB."""

    def __init__(self, taxonomy: Taxonomy, examples: Iterable[Example], keywords: dict[str, list[str]],
                 context_cues: dict[str, list[str]]) -> None:
        self.taxonomy = taxonomy
        examples = list(examples)
        self.keywords = {taxonomy.get(cat).code: [normalise_text(k) for k in words]  # type: ignore[union-attr]
                         for cat, words in keywords.items()}
        self.context_cues = {flag: [normalise_text(c) for c in cues] for flag, cues in context_cues.items()}
        # keyword -> the categories it votes for (100+ categories have ~450 keywords)
        self._keyword_codes: dict[str, list[str]] = {}
        for code, words in self.keywords.items():
            for word in words:
                if word:
                    self._keyword_codes.setdefault(word, []).append(code)
        # A keyword occurs in a text only where its first two characters do: the text's character
        # pairs pick the few keywords worth looking for (one-character keywords are checked always).
        self._keywords_by_pair: dict[str, list[str]] = {}
        self._short_keywords = [w for w in self._keyword_codes if len(w) < 2]
        for word in self._keyword_codes:
            if len(word) >= 2:
                self._keywords_by_pair.setdefault(word[:2], []).append(word)
        self._keyword_rank = {code: rank for rank, code in enumerate(self.keywords)}   # the KB's order
        # One alternation per context flag: a flag is read when any of its cues occurs in the text.
        self._cue_patterns = [(flag, re.compile("|".join(re.escape(c) for c in cues)))
                              for flag, cues in self.context_cues.items() if cues]
        # Characters and character pairs: on the held-out split of the 100-category corpus, (1, 2)
        # scored better than (1, 3) (fewer, less sparse features) and trains in half the time.
        # (``_features`` computes this vectorizer's transform faster: keep the two in step)
        self.vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 2), sublinear_tf=True)
        matrix = self.vectorizer.fit_transform([normalise_text(e.text) for e in examples])
        labels = [OUT_OF_SCOPE_CODE if e.category == OUT_OF_SCOPE else taxonomy.get(e.category).code  # type: ignore[union-attr]
                  for e in examples]
        # A linear SVM trains in well under a second on the shipped corpus (logistic regression took seconds).
        self.model = LinearSVC(C=1.0)
        self.model.fit(matrix, labels)
        self.codes: list[str] = [str(c) for c in self.model.classes_]
        self._code_index = {code: i for i, code in enumerate(self.codes)}
        self._out_of_scope_index = [i for i, c in enumerate(self.codes) if c == OUT_OF_SCOPE_CODE]

    def read_context(self, text: str) -> list[str]:
        return self._context(normalise_text(text))

    def _context(self, norm: str) -> list[str]:
        """The context flags whose cues occur in a normalised text (the KB's order)."""
        return [flag for flag, pattern in self._cue_patterns if pattern.search(norm)]

    def _keyword_hits(self, norm: str) -> list[str]:
        """The categories whose keywords occur in a normalised text, in the KB's order."""
        pairs = {norm[i:i + 2] for i in range(len(norm) - 1)} & self._keywords_by_pair.keys()
        found = [word for pair in pairs for word in self._keywords_by_pair[pair] if word in norm]
        found += [word for word in self._short_keywords if word in norm]
        codes = {code for word in found for code in self._keyword_codes[word]}
        return sorted(codes, key=self._keyword_rank.__getitem__)

    def classify(self, text: str) -> Classification:
        return self.classify_many([text])[0]

    def classify_many(self, texts: list[str]) -> list[Classification]:
        """One vectorise + one decision_function for a whole batch: sklearn's per-call overhead
        (input validation) costs more than the model itself for a single short text. The scores
        are computed for the whole batch at once too (row by row they cost more than the model)."""
        if not texts:
            return []
        norms = [normalise_text(t) for t in texts]
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            margins = self.model.decision_function(self._features(norms)) * SCORE_TEMPERATURE
        margins = margins.reshape(len(norms), -1)
        scores = np.exp(margins - margins.max(axis=1, keepdims=True))
        scores /= scores.sum(axis=1, keepdims=True)
        hits = [self._keyword_hits(norm) for norm in norms]
        hit_rows = [row for row, codes in enumerate(hits) if codes]
        if hit_rows:
            # keyword rules: KEYWORD_WEIGHT of the score shared by the categories whose keywords hit
            votes = np.zeros((len(hit_rows), len(self.codes)))
            for n, row in enumerate(hit_rows):
                votes[n, [self._code_index[c] for c in hits[row] if c in self._code_index]] = 1.0
            with np.errstate(invalid="ignore", divide="ignore"):
                scores[hit_rows] = ((1 - KEYWORD_WEIGHT) * scores[hit_rows]
                                    + KEYWORD_WEIGHT * votes / votes.sum(axis=1, keepdims=True))
        # the best in-scope categories are among the first (3 + out-of-scope classes) of each order
        order = np.argsort(-scores, axis=1)[:, :3 + len(self._out_of_scope_index)]
        top_scores = np.take_along_axis(scores, order, axis=1).tolist()
        oos_scores = (scores[:, self._out_of_scope_index].sum(axis=1).tolist() if self._out_of_scope_index
                      else [0.0] * len(norms))
        return [self._result(norm, codes, top, top_score, oos)
                for norm, codes, top, top_score, oos in zip(norms, hits, order.tolist(), top_scores, oos_scores,
                                                             strict=True)]

    @cached_property
    def _ngram_columns(self) -> tuple[np.ndarray, np.ndarray]:
        """The vectorizer's vocabulary as (sorted keys, their columns): a character's key is its code
        point, a pair's is ``first * _PAIR + second`` (above every code point)."""
        keys = np.array([ord(g) if len(g) == 1 else ord(g[0]) * _PAIR + ord(g[1])
                         for g in self.vectorizer.vocabulary_], dtype=np.int64)
        columns = np.fromiter(self.vectorizer.vocabulary_.values(), dtype=np.int64, count=len(keys))
        order = np.argsort(keys)
        return keys[order], columns[order]

    def _features(self, norms: list[str]) -> scipy.sparse.csr_matrix:
        """``self.vectorizer.transform(norms)``, the same numbers, several times faster: sklearn's
        analyzer and counting loop run per character n-gram in Python, here the characters and
        character pairs of the whole batch are looked up and counted with numpy. The TF-IDF steps
        after the counting are sklearn's own (sublinear tf, idf, l2 norm), in its order.
        tests/unit/core/test_ingest_speedups.py compares the two bit for bit."""
        docs = [_WHITE_SPACES.sub(" ", norm.lower()) for norm in norms]   # the vectorizer's preprocessing
        lengths = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
        points = np.frombuffer("".join(docs).encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)
        rows = np.repeat(np.arange(len(docs), dtype=np.int64), lengths)
        within = rows[:-1] == rows[1:]                          # pairs inside one text: ngram_range=(1, 2)
        keys = np.concatenate([points, (points[:-1] * _PAIR + points[1:])[within]])
        key_rows = np.concatenate([rows, rows[:-1][within]])
        vocabulary, columns = self._ngram_columns
        at = np.minimum(np.searchsorted(vocabulary, keys), len(vocabulary) - 1)
        known = vocabulary[at] == keys                          # n-grams outside the vocabulary drop out
        width = len(vocabulary)
        cells, counts = np.unique(key_rows[known] * width + columns[at[known]], return_counts=True)
        row_starts = np.searchsorted(cells // width, np.arange(len(docs) + 1))
        matrix = scipy.sparse.csr_matrix(
            (counts.astype(np.float64), (cells % width).astype(np.int32), row_starts.astype(np.int32)),
            shape=(len(docs), width))
        matrix.sort_indices()
        np.log(matrix.data, matrix.data)   # sublinear_tf=True
        matrix.data += 1.0
        matrix.data *= self.vectorizer.idf_[matrix.indices]
        return normalize(matrix, norm="l2", copy=False)

    def _result(self, norm: str, hits: list[str], order: list[int], order_scores: list[float],
                oos_score: float) -> Classification:
        """One text's classification from its best-first classes (``order``, their scores alongside)."""
        in_scope = [(i, score) for i, score in zip(order, order_scores, strict=True)
                    if i not in self._out_of_scope_index]
        best, best_score = in_scope[0]
        out_of_scope = (order[0] in self._out_of_scope_index
                        or (oos_score >= OUT_OF_SCOPE_SCORE and best_score < CLAIM_CONFIDENCE))
        return Classification(
            category_code=self.codes[best],
            category_name=self.taxonomy.by_code[self.codes[best]].name,
            confidence=round(best_score, 4),
            context=self._context(norm),
            alternatives=[(self.codes[i], round(score, 4)) for i, score in in_scope[:3]],
            keyword_hits=[self.taxonomy.by_code[c].name for c in hits],
            out_of_scope=out_of_scope,
            out_of_scope_score=round(oos_score, 4),
        )

    def predict(self, texts: Iterable[str]) -> list[str]:
        """The decided label per text: a category name or 范围外."""
        return [c.label for c in self.classify_many(list(texts))]
