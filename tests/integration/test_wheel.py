"""The built wheel is a real install: it carries its own schemas, migrations and data and runs without the checkout.

The wheel is built from the checkout (offline: hatchling from the test environment, no build isolation), installed
with ``--no-deps`` into a fresh venv outside the checkout (no system site-packages, no PYTHONPATH), and run from a
directory that is not the repository. The venv sees only the wheel and the packages its ``Requires-Dist`` pulls in
(transitively), linked from the test environment rather than downloaded, so an undeclared runtime dependency
fails here as it would in a clean install. Then ``streams migrate`` runs on a chdb path and ``streams worker``
starts against the test broker until ``/health/`` answers.
"""
from __future__ import annotations

import email.parser
import importlib.metadata
import json
import os
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from streams.local.kafka import LocalKafka, free_port
from tests.fixtures.worker import TEST_SECRETS, WorkerProcess
from tests.paths import REPO_ROOT

pytestmark = [pytest.mark.wheel, pytest.mark.kafka]

# What the installed package reads at run time, as the probe below reports it.
PROBE = """
import importlib.resources, json, streams
from streams.bus.codec import SCHEMAS_DIR, registry
from streams.local.kafka import POM
migrations = importlib.resources.files("streams.storage.migrations")
print(json.dumps({
    "streams": streams.__file__,
    "schemas_dir": str(SCHEMAS_DIR),
    "schemas": sorted(registry().by_name),
    "pom": str(POM), "pom_exists": POM.is_file(),
    "migrations": sorted(e.name for e in migrations.iterdir() if e.name.endswith(".sql")),
    "migrations_dir": str(migrations),
}))
"""


class InstalledWorker(WorkerProcess):
    """The worker started through the venv's ``streams`` console script."""

    streams_bin: Path = Path()

    def start(self) -> InstalledWorker:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(self.streams_bin), "worker"], env=self.env, cwd=self.workdir,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self


def build_wheel(out_dir: Path) -> Path:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "--wheel-dir", str(out_dir), str(REPO_ROOT)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"building the wheel failed (hatchling is in the test extra):\n{proc.stderr}"
    (wheel,) = out_dir.glob("citygrid_streams-*.whl")
    return wheel


def wheel_requirements(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(zf.read(name).decode("utf-8"))
    return [Requirement(r) for r in metadata.get_all("Requires-Dist") or []]


def _applies(req: Requirement, extras: set[str]) -> bool:
    return req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras | {""})


def link_dependencies(requirements: list[Requirement], target: Path) -> list[str]:
    """Symlink into ``target`` every top-level entry of the distributions ``requirements`` need, transitively,
    from this test environment; returns the distribution names. Nothing else of the environment is visible."""
    target.mkdir()
    todo = [(req, set(req.extras)) for req in requirements if _applies(req, set())]
    seen: dict[str, importlib.metadata.Distribution] = {}
    while todo:
        req, extras = todo.pop()
        key = canonicalize_name(req.name)
        if key in seen:
            continue
        try:
            dist = importlib.metadata.distribution(req.name)
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{req.name} (needed by the wheel) is not installed here: pip install -e '.[test]'")
        assert dist.version in req.specifier or not req.specifier, f"{req} but {dist.version} is installed"
        seen[key] = dist
        todo += [(sub, set(sub.extras)) for sub in (Requirement(r) for r in dist.requires or [])
                 if _applies(sub, extras)]
    for dist in seen.values():
        assert dist.files, f"{dist.metadata['Name']} has no RECORD: cannot tell which files are its own"
        for top in {f.parts[0] for f in dist.files if f.parts[0] not in ("..", "__pycache__")}:
            link = target / top
            if not link.exists():
                link.symlink_to(Path(str(dist.locate_file(top))))
    return sorted(seen)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A fresh venv with the wheel installed and its declared dependencies visible; returns its paths."""
    started = time.monotonic()
    base = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(base / "dist")
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=False, system_site_packages=False, symlinks=True).create(env_dir)
    python = env_dir / "bin" / "python"
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                           "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    site = Path(subprocess.check_output(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    link_dependencies(wheel_requirements(wheel), base / "deps")
    (site / "_citygrid_test_deps.pth").write_text(f"{base / 'deps'}\n")
    print(f"\nwheel built and installed in {time.monotonic() - started:.1f}s")
    return {"venv": env_dir, "python": python, "bin": env_dir / "bin" / "streams", "site": site, "base": base}


def clean_env(**settings: str) -> dict[str, str]:
    """The environment without anything that would point Python back at the checkout."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CITYGRID_", "PYTHON", "VIRTUAL_ENV", "PIP_"))}
    env.update(settings)
    return env


def test_wheel_declares_what_the_install_needs(installed: dict[str, Path]) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(installed["python"]), "check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_installed_package_reads_only_its_own_files(installed: dict[str, Path], tmp_path: Path) -> None:
    out = subprocess.run([str(installed["python"]), "-c", PROBE], cwd=tmp_path, env=clean_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    probe = json.loads(out.stdout)
    site = installed["site"]
    for key in ("streams", "schemas_dir", "pom", "migrations_dir"):
        assert Path(probe[key]).is_relative_to(site), f"{key} = {probe[key]} is not from the installed wheel"
        assert not Path(probe[key]).is_relative_to(REPO_ROOT), probe[key]
    assert probe["schemas"] == sorted(p.stem for p in (REPO_ROOT / "schemas").glob("*.avsc"))
    assert probe["migrations"] == sorted(p.name for p in (REPO_ROOT / "streams/storage/migrations").glob("*.sql"))
    assert probe["pom_exists"]


def test_installed_cli_migrates_and_runs_a_healthy_worker(installed: dict[str, Path], kafka: LocalKafka,
                                                          topic_prefix: str, tmp_path: Path) -> None:
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    store_url = f"chdb://{tmp_path / 'chdb'}"
    migrations = sorted(p.name[:4] for p in (REPO_ROOT / "streams/storage/migrations").glob("*.sql"))

    migrate = subprocess.run([str(installed["bin"]), "migrate", "--store-url", store_url], cwd=workdir,
                             env=clean_env(), capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    assert f"applied {', '.join(migrations)}" in migrate.stdout, migrate.stdout

    metrics_port, web_port = free_port(), free_port()
    env = clean_env(
        CITYGRID_KAFKA_BOOTSTRAP=kafka.bootstrap, CITYGRID_TOPIC_PREFIX=topic_prefix,
        CITYGRID_APP_ID=f"citygrid-{topic_prefix}", CITYGRID_STORE_URL=store_url,
        CITYGRID_DATA_DIR=str(tmp_path / "worker"), CITYGRID_METRICS_PORT=str(metrics_port),
        CITYGRID_WEB_PORT=str(web_port), CITYGRID_KAFKA_SESSION_TIMEOUT_SECONDS="8",
        CITYGRID_KAFKA_REQUEST_TIMEOUT_SECONDS="20", **TEST_SECRETS,
        CITYGRID_TOPIC_REPLICATION_FACTOR="1", CITYGRID_TOPIC_MIN_INSYNC_REPLICAS="1")  # a single test broker
    worker = InstalledWorker(env, workdir, tmp_path / "worker.log", metrics_port=metrics_port, web_port=web_port)
    worker.streams_bin = installed["bin"]
    started = time.monotonic()
    worker.start()
    try:
        worker.wait_healthy(timeout=120)
        print(f"\ninstalled worker healthy after {time.monotonic() - started:.1f}s")
        assert "citygrid" in worker.metrics()
    finally:
        code = worker.stop()
    assert code == 0, worker.tail()
