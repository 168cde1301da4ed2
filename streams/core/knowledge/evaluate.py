"""How well the text classifier does on the corpus it ships with: train on the training split,
classify the held-out split (``split_corpus``: per category, near-copies kept together) and score
per category, with the out-of-scope class 范围外 scored like a category.

``streams classify --evaluate`` prints this report; tests assert its figures on the committed corpus.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from rapidfuzz import fuzz
from rapidfuzz.process import cdist
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from streams.core.knowledge.classify import (
    NEAR_COPY_RATIO,
    OUT_OF_SCOPE,
    Example,
    TextClassifier,
    normalise_text,
    split_corpus,
)
from streams.core.knowledge.taxonomy import Taxonomy


@dataclass(frozen=True)
class CategoryScore:
    code: str          # taxonomy code, or "-" for 范围外
    name: str
    precision: float
    recall: float
    f1: float
    support: int       # held-out texts of this category


@dataclass(frozen=True)
class NearCopy:
    train_text: str
    test_text: str
    ratio: float


@dataclass
class Evaluation:
    n_train: int
    n_test: int
    n_categories: int                       # taxonomy categories with held-out texts
    accuracy: float
    macro_f1: float
    train_seconds: float
    threshold: float                        # the triage confidence
    auto_routed: int                        # held-out texts routed without triage (in scope, confident)
    auto_correct: int                       # of which the category was right
    per_category: list[CategoryScore] = field(default_factory=list)
    confusions: list[tuple[str, str, int]] = field(default_factory=list)   # (gold, predicted, count), most first
    near_copies: list[NearCopy] = field(default_factory=list)              # train/test pairs >= NEAR_COPY_RATIO

    @property
    def precision_when_auto(self) -> float:
        return self.auto_correct / self.auto_routed if self.auto_routed else 0.0

    def score(self, name: str) -> CategoryScore | None:
        return next((s for s in self.per_category if s.name == name), None)


def near_copies(train: list[Example], test: list[Example], min_ratio: float = NEAR_COPY_RATIO) -> list[NearCopy]:
    """Every (training, held-out) pair of texts at least ``min_ratio`` similar, whatever their labels."""
    if not train or not test:
        return []
    a = [normalise_text(e.text) for e in train]
    b = [normalise_text(e.text) for e in test]
    scores = cdist(a, b, scorer=fuzz.ratio, score_cutoff=min_ratio, dtype=np.uint8)
    return [NearCopy(train[i].text, test[j].text, float(scores[i, j]))
            for i, j in zip(*np.nonzero(scores), strict=True)]


def evaluate(taxonomy: Taxonomy, examples: list[Example], keywords: dict[str, list[str]],
             context_cues: dict[str, list[str]], threshold: float, held_out_share: float = 0.25) -> Evaluation:
    train, test = split_corpus(examples, held_out_share)
    started = time.perf_counter()
    classifier = TextClassifier(taxonomy, train, keywords, context_cues)
    train_seconds = time.perf_counter() - started
    results = classifier.classify_many([e.text for e in test])
    gold = [e.category for e in test]
    pred = [r.label for r in results]
    labels = sorted(set(gold))
    precision, recall, f1, support = precision_recall_fscore_support(gold, pred, labels=labels, zero_division=0)
    per_category = []
    for name, p, r, f, n in zip(labels, precision, recall, f1, support, strict=True):
        category = taxonomy.get(name)
        per_category.append(CategoryScore(category.code if category else "-", name, float(p), float(r), float(f),
                                          int(n)))
    per_category.sort(key=lambda s: (s.code == "-", s.code))
    auto = [(g, r) for g, r in zip(gold, results, strict=True) if not r.out_of_scope and r.confidence >= threshold]
    confusions = Counter((g, p) for g, p in zip(gold, pred, strict=True) if g != p)
    return Evaluation(
        n_train=len(train), n_test=len(test), n_categories=sum(1 for s in per_category if s.code != "-"),
        accuracy=float(accuracy_score(gold, pred)),
        macro_f1=float(f1_score(gold, pred, labels=labels, average="macro")),
        train_seconds=train_seconds, threshold=threshold, auto_routed=len(auto),
        auto_correct=sum(1 for g, r in auto if r.category_name == g), per_category=per_category,
        confusions=[(g, p, n) for (g, p), n in confusions.most_common()],
        near_copies=near_copies(train, test))


def format_report(ev: Evaluation, top_confusions: int = 15) -> str:
    """The evaluation as an officer reads it: totals, per-category table, confusion summary."""
    lines = [
        f"held-out evaluation: {ev.n_train} training texts, {ev.n_test} held-out texts, "
        f"{ev.n_categories} categories + {OUT_OF_SCOPE}",
        f"accuracy {ev.accuracy:.4f}   macro-F1 {ev.macro_f1:.4f}   training {ev.train_seconds:.2f} s",
        f"routed without triage (confidence >= {ev.threshold:.2f}, in scope): {ev.auto_routed}/{ev.n_test}, "
        f"right {ev.precision_when_auto:.4f}",
        f"near-copies between training and held-out texts (ratio >= {NEAR_COPY_RATIO:.0f}): {len(ev.near_copies)}",
        "",
        f"{'code':<6} {'category':<12} {'precision':>9} {'recall':>7} {'F1':>6} {'n':>4}",
    ]
    for s in ev.per_category:
        lines.append(f"{s.code:<6} {s.name:<12}\t{s.precision:>9.2f} {s.recall:>7.2f} {s.f1:>6.2f} {s.support:>4}")
    lines += ["", f"confusions (held-out category -> predicted), {sum(n for _, _, n in ev.confusions)} errors:"]
    for gold, pred, n in ev.confusions[:top_confusions]:
        lines.append(f"  {n:>3} x {gold} -> {pred}")
    if len(ev.confusions) > top_confusions:
        lines.append(f"  ... {len(ev.confusions) - top_confusions} more pairs")
    return "\n".join(lines)
