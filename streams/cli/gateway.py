"""``streams gateway``: the HTTP front door (feeds, work API, Open311, progress page); ``--new-key`` prints a
fresh API key and the keys-file entry that stores only its SHA-256."""

from __future__ import annotations

import argparse
import secrets
import sys

from streams.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gateway", help="HTTP gateway: feeds, departments' work API, Open311 GeoReport v2, progress page"
    )
    p.add_argument("--new-key", metavar="NAME", help="print a new API key and its keys-file entry, then exit")
    p.add_argument(
        "--scope", action="append", default=[], help="scope of the new key (repeat), e.g. feed:hotline.calls"
    )
    p.set_defaults(func=cmd_gateway)


def new_key_entry(name: str, scopes: list[str]) -> tuple[str, str]:
    """(the key to hand over once, the YAML entry to add to the keys file)."""
    import yaml

    from streams.gateway.keys import KeyRing, digest

    key = secrets.token_urlsafe(32)
    entry = {"name": name, "key_sha256": digest(key).hex(), "scopes": scopes}
    KeyRing.from_entries([entry], "the new key")  # the same checks as the keys file
    return key, yaml.safe_dump([entry], allow_unicode=True, sort_keys=False)


def cmd_gateway(args: argparse.Namespace) -> int:
    if args.new_key:
        key, entry = new_key_entry(args.new_key, args.scope or ["read"])
        print(f"# API key for {args.new_key} (shown once; give it to the client):\n# {key}\n{entry}", end="")
        return 0
    import asyncio
    import logging

    from streams.gateway.app import serve
    from streams.gateway.keys import KeysFileError
    from streams.storage import StoreError, open_configured_store

    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        store = open_configured_store(settings)
    except StoreError as exc:
        print(
            f"gateway: cannot open the case store {settings.store_url}: {str(exc).splitlines()[0]}\n"
            "(an embedded chdb store is held by the worker: point both at clickhouse://..., or run the gateway "
            "inside the worker with CITYGRID_GATEWAY_IN_WORKER=true)",
            file=sys.stderr,
        )
        return 2
    try:
        store.migrate()  # the gateway reads open311_requests: make sure the tables exist
        asyncio.run(serve(settings, store))
    except KeysFileError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    return 0
