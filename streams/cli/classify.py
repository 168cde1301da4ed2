"""`streams classify`: try the knowledge base by hand or in scripts.

Reads JSON lines {"text": ..., "address"?: ..., "lat"?: ..., "lon"?: ...} on stdin and writes one
JSON line per input line: the category, the departments (primary first), level, confidence and
KB version, plus the context flags and the location, and whether (and why) the record would go to
triage 人工分拨. A bad line gets {"error": ...} naming the problem; the exit code is 1 when any line
was bad.

`streams classify --evaluate` instead trains on the corpus' training split and prints how the
classifier does on the held-out split: accuracy, macro-F1, per-category precision/recall and the
categories it confuses (the officer's check after editing the corpus or the keyword rules).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, TextIO, TypedDict

if TYPE_CHECKING:
    from streams.core.knowledge.knowledge import Knowledge


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("classify", help="classify JSON lines of Chinese text against the knowledge base",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--evaluate", action="store_true",
                        help="print the held-out evaluation of the classifier (per-category precision/recall, "
                             "confusions) instead of reading stdin")
    parser.add_argument("--confusions", type=int, default=15, metavar="N",
                        help="with --evaluate: how many confused category pairs to list (default 15)")
    parser.set_defaults(func=run)


class Classified(TypedDict):
    """One output line of ``streams classify``."""

    category_code: str
    category_name: str
    departments: list[str]
    level: int
    confidence: float
    kb_version: str
    rule_id: str
    immediate: bool
    context: list[str]
    location: dict[str, Any] | None  # the Location as a dict
    location_reason: str | None
    out_of_scope: bool
    triage: bool
    triage_reason: str                  # why it goes to triage 人工分拨 ("; "-joined); "" when it does not


def _number(obj: dict[str, object], key: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"'{key}' must be a number, got {value!r}")
    return float(value)


def classify_line(knowledge: Knowledge, line: str, threshold: float) -> Classified:
    """One input line -> one output object. Raises ValueError naming the problem."""
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ValueError("each line must be a JSON object")
    unknown = set(obj) - {"text", "address", "lat", "lon"}
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)}")
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("'text' must be a non-empty string")
    address = obj.get("address")
    if address is not None and not isinstance(address, str):
        raise ValueError("'address' must be a string")
    lat, lon = _number(obj, "lat"), _number(obj, "lon")
    if (lat is None) != (lon is None):
        raise ValueError("give both 'lat' and 'lon' or neither")
    if lat is not None and lon is not None and not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError("'lat'/'lon' out of range")
    cls = knowledge.classify(text)
    location, reason = knowledge.locate(lat, lon, address, text)
    route = knowledge.route(cls.category_code, cls.context, location)
    context = list(dict.fromkeys(cls.context + (location.context if location else [])))
    reasons = []
    if cls.out_of_scope:
        reasons.append("out of scope: the text fits no category of the taxonomy")
    elif cls.confidence < threshold:
        reasons.append(f"low classification confidence {cls.confidence:.2f} < {threshold:.2f}")
    if location is None:
        reasons.append(f"unknown location: {reason}")
    return {
        "category_code": cls.category_code, "category_name": cls.category_name,
        "departments": route.departments, "level": route.level, "confidence": cls.confidence,
        "kb_version": route.kb_version, "rule_id": route.rule_id, "immediate": route.immediate,
        "context": context, "location": asdict(location) if location else None, "location_reason": reason,
        "out_of_scope": cls.out_of_scope, "triage": bool(reasons), "triage_reason": "; ".join(reasons),
    }


def classify_stream(knowledge: Knowledge, threshold: float, stdin: TextIO, stdout: TextIO) -> int:
    bad = 0
    for lineno, line in enumerate(stdin, start=1):
        if not line.strip():
            continue
        out: Classified | dict[str, object]
        try:
            out = classify_line(knowledge, line, threshold)
        except ValueError as exc:
            bad += 1
            out = {"error": str(exc), "line": lineno}
        stdout.write(json.dumps(out, ensure_ascii=False) + "\n")
        stdout.flush()
    return 1 if bad else 0


def run(args: argparse.Namespace) -> int:
    from streams.core.knowledge.knowledge import Knowledge
    from streams.core.knowledge.taxonomy import DataError
    from streams.settings import Settings

    settings = Settings()
    try:
        knowledge = Knowledge.load(settings.kb_path, settings.city_dir)
    except DataError as exc:
        print(f"streams classify: knowledge base not usable: {exc}", file=sys.stderr)
        return 2
    if args.evaluate:
        return evaluate_corpus(knowledge, settings.triage_confidence, sys.stdout, args.confusions)
    return classify_stream(knowledge, settings.triage_confidence, sys.stdin, sys.stdout)


def evaluate_corpus(knowledge: Any, threshold: float, stdout: TextIO, confusions: int = 15) -> int:
    from streams.core.knowledge.classify import load_corpus
    from streams.core.knowledge.evaluate import evaluate, format_report

    examples = load_corpus(knowledge.corpus_dir, knowledge.taxonomy)
    report = evaluate(knowledge.taxonomy, examples, knowledge.kb.keywords, knowledge.kb.context_cues, threshold)
    stdout.write(format_report(report, confusions) + "\n")
    return 0
