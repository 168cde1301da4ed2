"""API keys: only digests in memory, constant-time match over every key, scopes and the one actor."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.cli.gateway import new_key_entry
from streams.gateway.keys import Actor, KeyRing, KeysFileError, digest


def ring(*entries: dict) -> KeyRing:
    return KeyRing.from_entries(list(entries))


def test_clear_and_hashed_keys_authenticate_and_only_digests_are_kept() -> None:
    keys = ring(
        {"name": "a", "key": "a-key-0123456789abcdef", "scopes": ["read"]},
        {"name": "b", "key_sha256": digest("b-key-0123456789abcdef").hex(), "scopes": ["open311"]},
    )
    assert keys.authenticate("a-key-0123456789abcdef").name == "a"
    assert keys.authenticate("b-key-0123456789abcdef").name == "b"
    assert keys.authenticate("a-key-0123456789abcdeX") is None
    assert keys.authenticate("") is None and keys.authenticate(None) is None
    assert all("a-key" not in repr(k) and "a-key" not in str(vars(k)) for k in keys.keys)


def test_scopes_give_feeds_open311_reads_and_the_actor() -> None:
    keys = ring(
        {"name": "dept", "key": "d" * 20, "scopes": ["department:房管办", "feed:field.reports"]},
        {"name": "centre-desk", "key": "c" * 20, "scopes": ["centre"]},
        {"name": "hm", "key": "h" * 20, "scopes": ["centre:街道网格中心"]},
        {"name": "st", "key": "s" * 20, "scopes": ["station:ST-9", "read"]},
        {"name": "app", "key": "p" * 20, "scopes": ["open311"]},
    )
    dept, centre, named, station, app = keys.keys
    assert dept.actor == Actor("department", "房管办") and dept.department == "房管办"
    assert dept.may_feed("field.reports") and not dept.may_feed("hotline.calls")
    assert dept.may_read_cases and not dept.reads_all_cases
    assert centre.actor == Actor("center", "centre-desk") and centre.reads_all_cases
    assert named.actor == Actor("center", "街道网格中心")
    assert station.actor == Actor("station", "ST-9") and station.reads_all_cases and station.department is None
    assert app.actor is None and app.may_file_open311 and not app.may_read_cases


@pytest.mark.parametrize(
    "entry, problem",
    [
        ({"name": "x", "scopes": ["read"]}, "exactly one of"),
        ({"name": "x", "key": "k" * 20, "key_sha256": "0" * 64, "scopes": ["read"]}, "exactly one of"),
        ({"name": "x", "key": "short", "scopes": ["read"]}, "key"),
        ({"name": "x", "key_sha256": "abc", "scopes": ["read"]}, "key_sha256"),
        ({"name": "x", "key": "k" * 20, "scopes": ["admin"]}, "scopes"),
        ({"name": "x", "key": "k" * 20, "scopes": []}, "scopes"),
        ({"name": "x", "key": "k" * 20, "scopes": ["department:房管办", "station:S1"]}, "one actor"),
        ({"name": "x", "key": "k" * 20, "scopes": ["read"], "role": "boss"}, "role"),
    ],
)
def test_a_bad_entry_is_named(entry: dict, problem: str) -> None:
    with pytest.raises(KeysFileError, match=problem) as info:
        ring(entry)
    assert "key #1" in str(info.value)


def test_duplicates_and_the_file(tmp_path: Path) -> None:
    with pytest.raises(KeysFileError, match="duplicate name"):
        ring({"name": "x", "key": "k" * 20, "scopes": ["read"]}, {"name": "x", "key": "j" * 20, "scopes": ["read"]})
    with pytest.raises(KeysFileError, match="share one key"):
        ring({"name": "x", "key": "k" * 20, "scopes": ["read"]}, {"name": "y", "key": "k" * 20, "scopes": ["read"]})
    path = tmp_path / "keys.yaml"
    path.write_text("- {name: a, key: aaaaaaaaaaaaaaaaaaaa, scopes: [read]}\n", encoding="utf-8")
    assert KeyRing.load(path).authenticate("a" * 20).name == "a"
    path.write_text("name: a\n", encoding="utf-8")
    with pytest.raises(KeysFileError, match="list"):
        KeyRing.load(path)
    with pytest.raises(KeysFileError, match="cannot read"):
        KeyRing.load(tmp_path / "missing.yaml")


def test_new_key_entry_stores_only_the_hash() -> None:
    key, entry = new_key_entry("app", ["open311"])
    assert key not in entry and digest(key).hex() in entry
    import yaml

    assert KeyRing.from_entries(yaml.safe_load(entry)).authenticate(key).name == "app"
