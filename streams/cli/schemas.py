"""``streams schemas check|freeze``: the released-schema history (schemas/history/)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("schemas", help="check the Avro schema history, or freeze the current schemas into it")
    p.add_argument("action", choices=["check", "freeze"],
                   help="check: every current schema is in the history and every released version is still "
                        "readable; freeze: add the current schemas to the history (do this when releasing a change)")
    p.set_defaults(func=cmd_schemas)


def cmd_schemas(args: argparse.Namespace) -> int:
    from streams.bus.codec import SchemaRegistry

    codec = SchemaRegistry()
    if args.action == "freeze":
        for path in codec.freeze():
            print(f"schemas: added {path}")
        codec = SchemaRegistry()
    missing, unreadable = codec.missing_history(), codec.unreadable_history()
    for name in missing:
        print(f"schemas: {name}: the current version is not in schemas/history (run `streams schemas freeze`)")
    for problem in unreadable:
        print(f"schemas: incompatible change: {problem}")
    if not missing and not unreadable:
        print(f"schemas: {len(codec.by_name)} schemas, {len(codec.writers)} readable versions")
    return 1 if missing or unreadable else 0
