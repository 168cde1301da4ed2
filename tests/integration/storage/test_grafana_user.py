"""The read-only ClickHouse user for Grafana (deploy/clickhouse/users.d/citygrid-grafana.xml) on the real
18.16 server: it reads the pipeline's tables and the wall's queries, and cannot write, alter, drop or
read another database."""
from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from streams.local.clickhouse import LocalClickHouseServer
from streams.storage import open_store
from streams.wall import queries as wall
from tests.paths import REPO_ROOT

pytestmark = pytest.mark.clickhouse_server

SNIPPET = REPO_ROOT / "deploy" / "clickhouse" / "users.d" / "citygrid-grafana.xml"
PASSWORD = "grafana-test-password-1"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalClickHouseServer]:
    digest = hashlib.sha256(PASSWORD.encode()).hexdigest()
    xml = SNIPPET.read_text(encoding="utf-8").replace("PASSWORD_SHA256_HEX", digest)
    server = LocalClickHouseServer(tmp_path_factory.mktemp("clickhouse-grafana"),
                                   users_d={"citygrid-grafana.xml": xml})
    server.start()
    admin = open_store(server.store_url("citygrid"))
    admin.migrate()
    admin.insert("cases", [{"case_id": "XH07-20261102-0a1b2c3d", "version": 1, "updated_ms": 1_793_581_200_000,
                            "opened_ms": 1_793_581_200_000, "status": "handle", "light": "green"}])
    admin.execute("CREATE DATABASE IF NOT EXISTS other")
    admin.execute("CREATE TABLE IF NOT EXISTS other.secrets (x String) ENGINE = Memory")
    admin.close()
    yield server
    server.stop()


def grafana_client(server: LocalClickHouseServer, password: str = PASSWORD):  # noqa: ANN201
    from clickhouse_driver import Client

    return Client("127.0.0.1", port=server.tcp_port, user="citygrid_grafana", password=password, database="citygrid")


def test_grafana_reads_the_wall(server: LocalClickHouseServer) -> None:
    client = grafana_client(server)
    assert client.execute("SELECT case_id FROM cases FINAL") == [("XH07-20261102-0a1b2c3d",)]
    sql = wall.expand(wall.QUERIES["case_detail"].sql, 0, 2_000_000_000,
                      variables={"case_id": "XH07-20261102-0a1b2c3d"})
    assert client.execute(sql)[0][0] == "XH07-20261102-0a1b2c3d"
    client.execute("SELECT 1", settings={"max_execution_time": 30})  # the plugin's per-query settings


@pytest.mark.parametrize("statement", [
    "INSERT INTO cases (case_id, version) VALUES ('x', 1)",
    "ALTER TABLE cases DELETE WHERE 1",
    "ALTER TABLE cases DROP PARTITION 202611",
    "DROP TABLE cases",
    "CREATE TABLE t (x UInt8) ENGINE = Memory",
    "OPTIMIZE TABLE cases FINAL",
    "SET readonly = 0",
])
def test_grafana_cannot_change_anything(server: LocalClickHouseServer, statement: str) -> None:
    from clickhouse_driver.errors import ServerException

    with pytest.raises(ServerException) as caught:
        grafana_client(server).execute(statement)
    assert caught.value.code in (164, 497, 81), caught.value   # READONLY (or access denied)


def test_grafana_sees_only_the_pipeline_database(server: LocalClickHouseServer) -> None:
    from clickhouse_driver.errors import ServerException

    with pytest.raises(ServerException):
        grafana_client(server).execute("SELECT * FROM other.secrets")


def test_a_wrong_password_is_refused(server: LocalClickHouseServer) -> None:
    from clickhouse_driver.errors import ServerException

    with pytest.raises(ServerException):
        grafana_client(server, password="guess").execute("SELECT 1")


def test_the_sql_for_newer_servers_grants_select_only() -> None:
    sql = (SNIPPET.parent.parent / "grafana-readonly.sql").read_text(encoding="utf-8")
    grants = [line for line in sql.splitlines() if line.startswith("GRANT")]
    assert grants == ["GRANT SELECT ON citygrid.* TO citygrid_grafana;"]
    assert "readonly = 2 CONST" in sql


def test_grafana_datasource_logs_in_as_the_read_only_user() -> None:
    import yaml

    doc = yaml.safe_load((REPO_ROOT / "grafana" / "provisioning" / "datasources" / "citygrid.yaml").read_text())
    [clickhouse] = [d for d in doc["datasources"] if d["type"] == "grafana-clickhouse-datasource"]
    assert clickhouse["jsonData"]["username"] == "citygrid_grafana"
    assert clickhouse["secureJsonData"]["password"].startswith("$")   # from the environment, not the file


