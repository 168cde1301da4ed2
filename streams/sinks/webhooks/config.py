"""Webhook endpoints per department, read from the YAML file named by ``settings.webhooks_file``.

A department without an endpoint gets no HTTP delivery; its cases still reach the wall and ClickHouse.
See docs/webhooks.md for the file format.
"""
from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# Event kinds a notification can carry (docs/CONTRACTS.md "Webhook events").
Kind = Literal["dispatch", "urge", "escalate", "sla_yellow", "sla_red", "alarm", "closed", "zero_report_missing",
               "response_level"]
KINDS: tuple[Kind, ...] = get_args(Kind)

# The department directory (Chinese names, as the knowledge base routes to them).
DEPARTMENTS: tuple[str, ...] = (
    "区网格中心", "街道网格中心", "居民区工作站", "房管办", "城管执法中队", "市场监管所", "生态环境局",
    "公安派出所", "消防救援站", "绿化市容所", "市政养护单位", "路灯管理所", "物业公司", "街道管理办",
    "供电公司", "供水公司", "燃气公司", "通信运营商", "交警支队", "交通执法大队", "公交公司", "河道管理所",
    "救助管理站", "区建管委",
)


@lru_cache(maxsize=1)
def packaged_instances() -> frozenset[str]:
    """The per-street (community) department instances of the packaged city directory: an endpoint may
    be one street's own unit (徐家汇街道城管中队) instead of a whole kind."""
    from streams.core.knowledge.geo import City
    from streams.core.knowledge.knowledge import DATA_DIR

    return frozenset(City.load(DATA_DIR / "city" / "city.yaml").unit_kind)


class WebhookConfigError(ValueError):
    """The webhooks file is missing, unreadable or invalid; the message names the field."""


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_https(url: str) -> str:
    """An endpoint URL must be https (payloads carry case locations and are signed, not encrypted);
    plain http only to a loopback address (a local receiver or a sidecar)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and is_loopback(parts.hostname):
        return url
    raise ValueError(f"{url!r}: webhook URLs must be https:// (plain http only to a loopback address)")


def _resolve(value: str, env_name: str | None, what: str) -> str:
    if env_name:
        from_env = os.environ.get(env_name)
        if not from_env:
            raise ValueError(f"{what}_env {env_name!r} is not set in the environment")
        return from_env
    return value


class Endpoint(BaseModel):
    """One department's receiving system."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^https?://", description="POST target: https (http only to a loopback address)")
    secret: str = Field("", description="HMAC-SHA256 key; or name an environment variable in secret_env")
    secret_env: str | None = None
    # Rotation: while both are set every request carries two signatures, so the receiver can switch
    # to the new secret at its own pace; then drop the previous one.
    previous_secret: str = Field("", description="the secret being retired (signs too until removed)")
    previous_secret_env: str | None = None
    timeout_seconds: float = Field(10.0, gt=0, description="whole request, connect to last byte")
    max_in_flight: int = Field(4, ge=1, description="concurrent requests to this endpoint")
    rate_per_second: float = Field(20.0, gt=0, description="token-bucket refill rate")
    burst: int = Field(20, ge=1, description="token-bucket size")
    kinds: list[Kind] = Field(default_factory=lambda: list(KINDS), min_length=1, description="event kinds wanted")

    @field_validator("url")
    @classmethod
    def _https(cls, value: str) -> str:
        return require_https(value)

    @model_validator(mode="after")
    def _resolve_secret(self) -> Endpoint:
        object.__setattr__(self, "secret", _resolve(self.secret, self.secret_env, "secret"))
        if len(self.secret) < 16:
            raise ValueError("secret must be at least 16 characters (set secret or secret_env)")
        previous = _resolve(self.previous_secret, self.previous_secret_env, "previous_secret")
        if previous and len(previous) < 16:
            raise ValueError("previous_secret must be at least 16 characters")
        if previous == self.secret:
            previous = ""
        object.__setattr__(self, "previous_secret", previous)
        return self

    @property
    def signing_secrets(self) -> list[str]:
        """The secrets every request is signed with: the current one, then the one being retired."""
        return [self.secret] + ([self.previous_secret] if self.previous_secret else [])


class WebhooksConfig(BaseModel):
    """Endpoints by department plus the delivery policy shared by all of them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    links_base_url: str = Field("http://localhost:3000", pattern=r"^https?://",
                                description="base of links in payloads (https, or http on loopback)")
    endpoints: dict[str, Endpoint] = Field(default_factory=dict)
    max_attempts: int = Field(8, ge=1, description="attempts before the dead-letter topic")
    ttl_seconds: float = Field(86_400.0, gt=0, description="age (from created_ms) after which a delivery is dead")
    backoff_initial_seconds: float = Field(1.0, gt=0)
    backoff_max_seconds: float = Field(300.0, gt=0)
    retry_after_max_seconds: float = Field(3_600.0, gt=0, description="cap on a receiver's Retry-After")
    breaker_failures: int = Field(5, ge=1, description="consecutive failures that open an endpoint's circuit")
    breaker_reset_seconds: float = Field(30.0, gt=0, description="open time before a half-open probe")
    max_pending: int = Field(10_000, ge=1, description="records held in memory before consumption pauses")
    commit_interval_seconds: float = Field(0.5, gt=0)
    pii_hash_key: str | None = Field(None, description="key for the keyed hash of a caller's phone; None drops it")

    @field_validator("links_base_url")
    @classmethod
    def _https_links(cls, value: str) -> str:
        return require_https(value)

    @field_validator("endpoints")
    @classmethod
    def _known_departments(cls, value: dict[str, Endpoint]) -> dict[str, Endpoint]:
        unknown = sorted(set(value) - set(DEPARTMENTS) - set(packaged_instances()))
        if unknown:
            raise ValueError(f"unknown department(s) {unknown}; known: {', '.join(DEPARTMENTS)} "
                             "or an instance of the city directory (e.g. 徐家汇街道城管中队)")
        return value

    def endpoint_for(self, department: str, kind: str) -> Endpoint | None:
        """The department's endpoint if it wants this kind of event, else None."""
        endpoint = self.endpoints.get(department)
        if endpoint is None or kind not in endpoint.kinds:
            return None
        return endpoint


def parse_config(data: object, source: str = "<webhooks>") -> WebhooksConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise WebhookConfigError(f"{source}: must be a mapping (links_base_url, endpoints, ...)")
    try:
        return WebhooksConfig.model_validate(data)
    except ValidationError as exc:
        raise WebhookConfigError(f"{source}: {exc}") from exc


def load_config(path: Path | str | None) -> WebhooksConfig:
    """Read the webhooks YAML. ``None`` (no file configured) means no endpoints: nothing is delivered."""
    if path is None:
        return WebhooksConfig()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WebhookConfigError(f"cannot read webhooks file {path}: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise WebhookConfigError(f"{path}: not YAML: {exc}") from exc
    return parse_config(data, str(path))
