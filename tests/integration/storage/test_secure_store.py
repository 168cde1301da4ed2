"""The server store with credentials from a secret file and TLS (store_from_settings) on the real 18.16
server: the worker's path to a production ClickHouse."""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.local.clickhouse import LocalClickHouseServer
from streams.local.tls import DevCA
from streams.settings import Settings
from streams.storage import StoreError, store_from_settings

pytestmark = pytest.mark.clickhouse_server

PASSWORD = "worker-password-from-a-secret"
WORKER_USER = f"""<?xml version="1.0"?>
<yandex><users><citygrid_worker>
  <password_sha256_hex>{hashlib.sha256(PASSWORD.encode()).hexdigest()}</password_sha256_hex>
  <networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota>
</citygrid_worker></users></yandex>
"""


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalClickHouseServer, DevCA]]:
    base = tmp_path_factory.mktemp("clickhouse-tls")
    ca = DevCA(base / "pki")
    issued = ca.issue("clickhouse", hosts=["127.0.0.1", "localhost"])
    server = LocalClickHouseServer(base / "server", users_d={"worker.xml": WORKER_USER}, tls=(issued.cert, issued.key))
    (base / "server").mkdir(exist_ok=True)
    server.start()
    yield server, ca
    server.stop()


def settings_for(server: LocalClickHouseServer, tmp_path: Path, ca_file: Path | None, *, secure: bool = True,
                 password: str = PASSWORD) -> Settings:
    secret = tmp_path / "password"
    secret.write_text(password + "\n", encoding="utf-8")   # as a mounted Secret: trailing newline and all
    return Settings(store_url=server.store_url("citygrid", secure=secure), store_user="citygrid_worker",
                    store_password_file=secret, store_tls=True, store_ca_file=ca_file)


def test_worker_store_over_tls_with_password_file(tls_server: tuple[LocalClickHouseServer, DevCA],
                                                  tmp_path: Path) -> None:
    server, ca = tls_server
    store = store_from_settings(settings_for(server, tmp_path, ca.cert))
    try:
        store.migrate()
        store.insert("triage", [{"triage_id": "t1", "topic": "hotline.calls", "reason": "r", "ts_ms": 1,
                                 "record": "{}"}])
        assert store.query("SELECT triage_id FROM triage FINAL") == [{"triage_id": "t1"}]
    finally:
        store.close()


def test_an_untrusted_certificate_is_refused(tls_server: tuple[LocalClickHouseServer, DevCA], tmp_path: Path) -> None:
    server, _ = tls_server
    stranger = DevCA(tmp_path / "other-ca")
    with pytest.raises(StoreError):
        store_from_settings(settings_for(server, tmp_path, stranger.cert))


def test_a_wrong_password_is_refused(tls_server: tuple[LocalClickHouseServer, DevCA], tmp_path: Path) -> None:
    server, ca = tls_server
    with pytest.raises(StoreError):
        store_from_settings(settings_for(server, tmp_path, ca.cert, password="guessed"))


def test_tls_to_the_plain_port_fails_rather_than_falling_back(tls_server: tuple[LocalClickHouseServer, DevCA],
                                                              tmp_path: Path) -> None:
    server, ca = tls_server
    with pytest.raises(StoreError):
        store_from_settings(settings_for(server, tmp_path, ca.cert, secure=False))


def test_a_missing_password_file_names_the_setting(tls_server: tuple[LocalClickHouseServer, DevCA],
                                                   tmp_path: Path) -> None:
    server, ca = tls_server
    settings = Settings(store_url=server.store_url("citygrid", secure=True), store_user="citygrid_worker",
                        store_password_file=tmp_path / "absent", store_tls=True, store_ca_file=ca.cert)
    with pytest.raises(SystemExit, match="CITYGRID_STORE_PASSWORD_FILE"):
        store_from_settings(settings)
