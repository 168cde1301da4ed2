"""API keys: who is calling and what they may do.

The keys file is a YAML list ``[{name, key | key_sha256, scopes, rate_limit?, record_rate_limit?}]``. Only
SHA-256 digests are kept in memory; a presented key is hashed and compared with every known digest in
constant time (``hmac.compare_digest``, no early exit), so neither the comparison nor the loop tells an
attacker how close a guess was.

Scopes: ``feed:<topic>`` (POST that raw feed), ``open311`` (file Open311 requests), ``read`` (read the work
API), and at most one actor scope, which is who the key acts as on ``case.actions`` (never the body):
``department:<name>`` (a department of the directory; also reads its own cases), ``centre`` or
``centre:<name>`` (the grid centre; reads everything), ``station:<id>``, ``committee:<id>``, ``inspector:<id>``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

SCOPE_OPEN311 = "open311"
SCOPE_READ = "read"
FEED_PREFIX = "feed:"
# actor scope -> actor_kind of case.actions (schemas/case_action.avsc)
ACTOR_SCOPES = {
    "department": "department",
    "centre": "center",
    "station": "station",
    "committee": "committee",
    "inspector": "inspector",
}


class KeysFileError(ValueError):
    """The keys file cannot be used; the message names the file and the entry."""


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


@dataclass(frozen=True)
class Actor:
    kind: str  # department | center | station | committee | inspector
    id: str


@dataclass(frozen=True)
class ApiKey:
    name: str
    sha256: bytes = field(repr=False)
    scopes: frozenset[str]
    rate_limit: str | None = None
    record_rate_limit: str | None = None

    def may_feed(self, topic: str) -> bool:
        return f"{FEED_PREFIX}{topic}" in self.scopes

    @property
    def may_file_open311(self) -> bool:
        return SCOPE_OPEN311 in self.scopes

    @property
    def actor(self) -> Actor | None:
        """Who this key acts as on a case, from its one actor scope."""
        for scope in self.scopes:
            kind, _, rest = scope.partition(":")
            if kind in ACTOR_SCOPES and scope not in (SCOPE_OPEN311, SCOPE_READ):
                if kind == "centre":
                    return Actor("center", rest or self.name)
                return Actor(ACTOR_SCOPES[kind], rest)
        return None

    @property
    def reads_all_cases(self) -> bool:
        return SCOPE_READ in self.scopes or "centre" in self.scopes or any(s.startswith("centre:") for s in self.scopes)

    @property
    def department(self) -> str | None:
        """The department a department key is limited to when reading (None: not a department key)."""
        actor = self.actor
        return actor.id if actor is not None and actor.kind == "department" else None

    @property
    def may_read_cases(self) -> bool:
        return self.reads_all_cases or self.department is not None


Scope = Annotated[
    str,
    StringConstraints(
        min_length=1,
        pattern=r"^(feed:[a-z0-9._]+|open311|read|centre(:.+)?|"
        r"(department|station|committee|inspector):.+)$",
    ),
]


class _KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    key: str | None = Field(None, min_length=16)
    key_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    scopes: list[Scope] = Field(min_length=1)
    rate_limit: str | None = None
    record_rate_limit: str | None = None

    @model_validator(mode="after")
    def _one_secret_one_actor(self) -> _KeyIn:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of 'key' and 'key_sha256'")
        actors = [s for s in self.scopes if s.split(":", 1)[0] in ACTOR_SCOPES]
        if len(actors) > 1:
            raise ValueError(f"a key acts as one actor; it has {actors}")
        return self


class KeyRing:
    """The known keys; ``authenticate`` is the only way to find one."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self.keys = list(keys)

    @classmethod
    def empty(cls) -> KeyRing:
        return cls([])

    @classmethod
    def from_entries(cls, entries: Any, source: str = "keys") -> KeyRing:
        if entries is None:
            entries = []
        if not isinstance(entries, list):
            raise KeysFileError(f"{source}: expected a list of keys")
        keys: list[ApiKey] = []
        names: set[str] = set()
        for i, entry in enumerate(entries):
            try:
                parsed = _KeyIn.model_validate(entry)
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(p) for p in err["loc"]) or "(entry)"
                raise KeysFileError(f"{source}: key #{i + 1}: {where}: {err['msg']}") from None
            if parsed.name in names:
                raise KeysFileError(f"{source}: key #{i + 1}: duplicate name {parsed.name!r}")
            names.add(parsed.name)
            sha = digest(parsed.key) if parsed.key is not None else bytes.fromhex(parsed.key_sha256 or "")
            keys.append(ApiKey(parsed.name, sha, frozenset(parsed.scopes), parsed.rate_limit, parsed.record_rate_limit))
        digests = [k.sha256 for k in keys]
        if len(set(digests)) != len(digests):
            raise KeysFileError(f"{source}: two entries share one key")
        return cls(keys)

    @classmethod
    def load(cls, path: Path | str) -> KeyRing:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise KeysFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise KeysFileError(f"{path}: not YAML: {exc}") from None
        return cls.from_entries(data, str(path))

    def authenticate(self, presented: str | None) -> ApiKey | None:
        if not presented:
            return None
        candidate = digest(presented)
        found: ApiKey | None = None
        for key in self.keys:  # every digest is compared: the time does not depend on which matched
            if hmac.compare_digest(candidate, key.sha256):
                found = key
        return found

    def __len__(self) -> int:
        return len(self.keys)
