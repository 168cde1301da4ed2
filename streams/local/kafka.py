"""A real single-node Apache Kafka broker (KRaft mode) for development, tests and benchmarks.

The broker jars come from Maven Central through ``mvn dependency:copy-dependencies``
into a cache outside git, once. Each broker gets its own port and data dir.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from streams.bus.admin import TopicPolicy, create_topics
from streams.settings import Settings, default_cache_dir, package_data

KAFKA_VERSION = "3.9.1"
POM = package_data("local/kafka-maven/pom.xml", "deploy/local/kafka/pom.xml")  # packaged copy in the wheel


class KafkaError(RuntimeError):
    pass


def jars_dir(cache_dir: Path | None = None) -> Path:
    return (cache_dir or default_cache_dir()) / f"kafka-{KAFKA_VERSION}" / "lib"


def fetch_jars(cache_dir: Path | None = None, quiet: bool = True) -> Path:
    """Download the broker jars once; later calls return the cached dir at once."""
    lib = jars_dir(cache_dir)
    marker = lib / ".complete"
    if marker.exists():
        return lib
    if shutil.which("mvn") is None:
        raise KafkaError("mvn is not installed: it is needed once to fetch the Kafka jars from Maven Central")
    tmp = lib.with_name("lib.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [
        "mvn", "-B", "-f", str(POM), "dependency:copy-dependencies",
        "-DincludeScope=runtime", f"-Dkafka.version={KAFKA_VERSION}", f"-DoutputDirectory={tmp}",
    ]
    if quiet:
        cmd.insert(1, "-q")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not any(tmp.glob("kafka_2.13-*.jar")):
        raise KafkaError(f"fetching Kafka jars failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    shutil.rmtree(lib, ignore_errors=True)
    tmp.rename(lib)
    marker.write_text(KAFKA_VERSION)
    return lib


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


@dataclass
class SaslSslListener:
    """A second, authenticated listener: SASL_SSL with SCRAM-SHA-512 users created when the storage
    is formatted, a PEM keystore (key + certificate chain, e.g. ``DevCA.issue(...).chain``) and the
    StandardAuthorizer (ACLs; ``super_users`` bypass them). The plain listener stays for the broker's
    own controller traffic and readiness probe on 127.0.0.1 (its anonymous principal is a super user);
    a production broker has no such listener."""

    keystore: Path
    users: dict[str, str]                   # SCRAM-SHA-512 user -> password
    super_users: tuple[str, ...] = ("admin",)
    authorizer: bool = True
    port: int = field(default_factory=free_port)


@dataclass
class LocalKafka:
    """One KRaft broker+controller on 127.0.0.1:``port`` with its data under ``data_dir``."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    cache_dir: Path | None = None
    heap: str = "512m"
    process: subprocess.Popen | None = None
    sasl_ssl: SaslSslListener | None = None

    @property
    def sasl_ssl_bootstrap(self) -> str:
        if self.sasl_ssl is None:
            raise KafkaError("this broker has no SASL_SSL listener")
        return f"127.0.0.1:{self.sasl_ssl.port}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    def write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        logs = self.data_dir / "kraft-logs"
        config = self.data_dir / "server.properties"
        config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    *self._listener_lines(),
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={logs}",
                    "num.partitions=4",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=4",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "default.replication.factor=1",
                    "min.insync.replicas=1",
                    # a lone dev broker: no reason to wait for more members before the first rebalance
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=true",
                    "log.retention.hours=168",
                    "log.segment.bytes=104857600",
                    "num.network.threads=2",
                    "num.io.threads=4",
                    "",
                ]
            )
        )
        log4j = self.data_dir / "log4j.properties"
        log4j.write_text(
            "log4j.rootLogger=INFO, stdout\n"
            "log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
            "log4j.logger.kafka=INFO\nlog4j.logger.org.apache.kafka=INFO\n"
            "log4j.logger.kafka.request.logger=WARN\nlog4j.logger.state.change.logger=WARN\n"
        )
        return config

    def _listener_lines(self) -> list[str]:
        plain = f"PLAINTEXT://127.0.0.1:{self.port}"
        controller = f"CONTROLLER://127.0.0.1:{self.controller_port}"
        if self.sasl_ssl is None:
            return [f"listeners={plain},{controller}", f"advertised.listeners={plain}",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"]
        sec = self.sasl_ssl
        secure = f"SASL_SSL://127.0.0.1:{sec.port}"
        lines = [f"listeners={plain},{controller},{secure}", f"advertised.listeners={plain},{secure}",
                 "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL",
                 "sasl.enabled.mechanisms=SCRAM-SHA-512",
                 "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
                 "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                 "ssl.keystore.type=PEM", f"ssl.keystore.location={sec.keystore}", "ssl.client.auth=none",
                 "ssl.enabled.protocols=TLSv1.3,TLSv1.2"]
        if sec.authorizer:
            supers = ";".join(f"User:{u}" for u in ("ANONYMOUS", *sec.super_users))
            lines += ["authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                      f"super.users={supers}", "allow.everyone.if.no.acl.found=false"]
        return lines

    def _scram_args(self) -> list[str]:
        if self.sasl_ssl is None:
            return []
        args: list[str] = []
        for user, password in self.sasl_ssl.users.items():
            args += ["--add-scram", f"SCRAM-SHA-512=[name={user},password={password}]"]
        return args

    def _java(self, lib: Path, *args: str) -> list[str]:
        return [
            "java", f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC",
            f"-Dlog4j.configuration=file:{self.data_dir / 'log4j.properties'}",
            "-cp", f"{lib}/*", *args,
        ]

    def start(self, timeout: float = 90.0) -> LocalKafka:
        lib = fetch_jars(self.cache_dir)
        config = self.write_config()
        logs = self.data_dir / "kraft-logs"
        if not (logs / "meta.properties").exists():
            cluster_id = _kafka_cluster_id()
            fmt = subprocess.run(
                self._java(lib, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config),
                           *self._scram_args()),
                capture_output=True, text=True,
            )
            if fmt.returncode != 0:
                raise KafkaError(f"storage format failed: {fmt.stdout}\n{fmt.stderr}")
        log = open(self.log_file, "ab")
        self.process = subprocess.Popen(
            self._java(lib, "kafka.Kafka", str(config)),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.pid_file.write_text(str(self.process.pid))
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Wait until the broker answers a metadata request."""
        from kafka import KafkaAdminClient  # kafka-python

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise KafkaError(f"broker exited with {self.process.returncode}:\n{self.tail_log()}")
            if port_open("127.0.0.1", self.port):
                try:
                    admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
                    try:
                        admin.describe_cluster()
                        return
                    finally:
                        admin.close()
                except Exception as exc:  # broker still starting
                    last = exc
            time.sleep(0.3)
        raise KafkaError(f"broker not ready after {timeout}s ({last}):\n{self.tail_log()}")

    def tail_log(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no broker log)"

    def stop(self, timeout: float = 30.0) -> None:
        pid = self.process.pid if self.process else _read_pid(self.pid_file)
        if pid is None:
            return
        _terminate(pid, timeout, self.process)
        self.pid_file.unlink(missing_ok=True)
        self.process = None

    def create_topics(self, names: list[str], partitions: int = 4, compacted: list[str] | tuple[str, ...] = ()) -> None:
        """Topics on this single broker: one replica, min.insync.replicas 1."""
        create_topics(Settings(kafka_bootstrap=self.bootstrap), names, TopicPolicy(partitions, 1, 1),
                      compacted=compacted)


def _kafka_cluster_id() -> str:
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _terminate(pid: int, timeout: float, child: subprocess.Popen | None = None) -> None:
    """SIGTERM the process group (clean controlled shutdown), SIGKILL if it lingers.

    ``child`` is reaped while waiting: an unreaped child would look alive as a zombie."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and child.poll() is not None:
            return
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if child is not None:
        child.wait(timeout=10)
