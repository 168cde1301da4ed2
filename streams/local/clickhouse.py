"""Runs Debian's clickhouse-server (18.16) with a generated minimal config on given ports.

Used by the test fixtures and usable by bench/: ``LocalClickHouseServer(dir).start()``.
The Debian default config in /etc/clickhouse-server/ is not used: it listens on fixed ports
and writes to /var/lib. ``LocalClickHouseCluster`` runs several such servers that know each other
as the shards of one cluster (``remote_servers``), for the sharded (``Distributed``) layout.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from xml.sax.saxutils import escape

DEFAULT_BINARY = "/usr/sbin/clickhouse-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


class LocalClickHouseServer:
    def __init__(self, base_dir: Path, tcp_port: int | None = None, http_port: int | None = None,
                 binary: str = DEFAULT_BINARY, timezone: str = "Asia/Shanghai",
                 users_d: dict[str, str] | None = None, tls: tuple[Path, Path] | None = None,
                 remote_servers: dict[str, list[int]] | None = None) -> None:
        self.base_dir = Path(base_dir)
        self.tls = tls                 # (certificate, key) PEM: also listen with TLS on tcp_port_secure
        self.tcp_port_secure = free_port() if tls else 0
        self.users_d = users_d or {}   # file name -> XML merged into users.xml (users.d/, e.g. extra users)
        # cluster name -> tcp ports of its shards on 127.0.0.1 (one replica each)
        self.remote_servers = remote_servers or {}
        self.tcp_port = tcp_port or free_port()
        self.http_port = http_port or free_port()
        self.binary = binary
        self.timezone = timezone
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"clickhouse://127.0.0.1:{self.tcp_port}/default"

    def store_url(self, database: str, secure: bool = False) -> str:
        port = self.tcp_port_secure if secure else self.tcp_port
        return f"clickhouse://127.0.0.1:{port}/{database}"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "server.log"

    def write_config(self) -> Path:
        data = self.base_dir / "data"
        for sub in ("tmp", "user_files", "format_schemas"):
            (data / sub).mkdir(parents=True, exist_ok=True)
        users = self.base_dir / "users.xml"
        users.write_text(_USERS_XML, encoding="utf-8")
        if self.users_d:
            (self.base_dir / "users.d").mkdir(exist_ok=True)
            for name, text in self.users_d.items():
                (self.base_dir / "users.d" / name).write_text(text, encoding="utf-8")
        config = self.base_dir / "config.xml"
        secure = ""
        if self.tls:
            secure = _TLS_XML.format(port=self.tcp_port_secure, cert=escape(str(self.tls[0])),
                                     key=escape(str(self.tls[1])))
        config.write_text(_CONFIG_XML.format(
            log=escape(str(self.log_file)), errlog=escape(str(self.base_dir / "server.err.log")),
            tcp_port=self.tcp_port, http_port=self.http_port, data=escape(str(data)), users=escape(str(users)),
            timezone=escape(self.timezone), secure=secure,
            remote_servers=_remote_servers_xml(self.remote_servers)), encoding="utf-8")
        return config

    def start(self, timeout: float = 60.0) -> None:
        if shutil.which(self.binary) is None:
            raise FileNotFoundError(f"{self.binary} not found: apt-get install clickhouse-server")
        config = self.write_config()
        stdout = open(self.base_dir / "stdout.log", "ab")
        # cwd is the config dir: the server (and chdb!) read a config.xml from the working directory.
        self.process = subprocess.Popen([self.binary, f"--config-file={config}"], cwd=self.base_dir,
                                        stdout=stdout, stderr=subprocess.STDOUT, start_new_session=True)
        stdout.close()
        deadline = time.monotonic() + timeout
        while not _port_open(self.tcp_port):
            if self.process.poll() is not None:
                raise RuntimeError(f"clickhouse-server exited with {self.process.returncode}:\n{self.tail_log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"clickhouse-server did not listen on {self.tcp_port} in {timeout}s:\n"
                                   f"{self.tail_log()}")
            time.sleep(0.1)

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            self.process = None
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def tail_log(self, lines: int = 60) -> str:
        chunks = []
        for name in ("stdout.log", "server.err.log", "server.log"):
            path = self.base_dir / name
            if path.exists():
                chunks.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(chunks)


_CONFIG_XML = """<?xml version="1.0"?>
<yandex>
  <logger>
    <level>warning</level>
    <log>{log}</log>
    <errorlog>{errlog}</errorlog>
    <console>0</console>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>{tcp_port}</tcp_port>
  <http_port>{http_port}</http_port>
  <path>{data}/</path>
  <tmp_path>{data}/tmp/</tmp_path>
  <user_files_path>{data}/user_files/</user_files_path>
  <format_schema_path>{data}/format_schemas/</format_schema_path>
  <users_config>{users}</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>{timezone}</timezone>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
{secure}{remote_servers}
</yandex>
"""

# The native protocol over TLS (clickhouse-server's openSSL section, 18.16 syntax).
_TLS_XML = """  <tcp_port_secure>{port}</tcp_port_secure>
  <openSSL>
    <server>
      <certificateFile>{cert}</certificateFile>
      <privateKeyFile>{key}</privateKeyFile>
      <verificationMode>none</verificationMode>
      <loadDefaultCAFile>false</loadDefaultCAFile>
      <cacheSessions>true</cacheSessions>
      <disableProtocols>sslv2,sslv3,tlsv1,tlsv1_1</disableProtocols>
      <preferServerCiphers>true</preferServerCiphers>
    </server>
  </openSSL>
"""

def _remote_servers_xml(clusters: dict[str, list[int]]) -> str:
    if not clusters:
        return ""
    body = "".join(
        f"<{escape(name)}>" + "".join(
            f"<shard><replica><host>127.0.0.1</host><port>{port}</port></replica></shard>" for port in ports)
        + f"</{escape(name)}>" for name, ports in clusters.items())
    return f"  <remote_servers>{body}</remote_servers>"


class LocalClickHouseCluster:
    """``shards`` local clickhouse-servers, each configured with the cluster ``name`` listing all of them."""

    def __init__(self, base_dir: Path, shards: int = 2, name: str = "citygrid") -> None:
        self.name = name
        ports = [free_port() for _ in range(shards)]
        self.servers = [LocalClickHouseServer(Path(base_dir) / f"shard{i + 1}", tcp_port=port,
                                              remote_servers={name: ports})
                        for i, port in enumerate(ports)]

    def start(self, timeout: float = 60.0) -> LocalClickHouseCluster:
        try:
            for server in self.servers:
                server.base_dir.mkdir(parents=True, exist_ok=True)
                server.start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def store_url(self, database: str, shard: int = 0) -> str:
        """A store URL through one of the shards (any shard serves the whole cluster's tables)."""
        return self.servers[shard].store_url(database)


_USERS_XML = """<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas>
    <default>
      <interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows>
        <read_rows>0</read_rows><execution_time>0</execution_time></interval>
    </default>
  </quotas>
</yandex>
"""
