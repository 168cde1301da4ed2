"""deploy/Dockerfile builds the wheel, installs only it against pinned dependencies, and runs as a non-root user.

No container engine runs here, so the image's properties are read from the Dockerfile itself, and the constraints
files are checked against pyproject.toml (every runtime dependency pinned, within its declared range).
"""
from __future__ import annotations

import importlib.metadata
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.paths import REPO_ROOT

DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"
CONSTRAINTS = REPO_ROOT / "deploy" / "constraints.txt"
BUILD_CONSTRAINTS = REPO_ROOT / "deploy" / "constraints-build.txt"
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PINNED_IMAGE = re.compile(r"^[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}$")


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def parse_stages(text: str) -> list[Stage]:
    """The Dockerfile's build stages, each with its (KEYWORD, arguments) list; continuations joined."""
    logical, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for instruction in logical:
        keyword, _, arg = instruction.strip().partition(" ")
        keyword, arg = keyword.upper(), arg.strip()
        if keyword == "FROM":
            words = arg.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append((keyword, arg))
    return stages


STAGES = parse_stages(DOCKERFILE.read_text(encoding="utf-8"))
RUNTIME = STAGES[-1]


def read_constraints(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([A-Za-z0-9.+!-]+)", line.strip())
        assert match, f"{path.name}: {line!r} is not an exact pin (name==version)"
        pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def installed_extras() -> set[str]:
    """The extras the runtime stage installs the wheel with (``...whl[rocksdb]``)."""
    runs = " ".join(RUNTIME.args("RUN"))
    return {e.strip() for group in re.findall(r"(?:\.whl|\$1)\[([^\]]+)\]", runs) for e in group.split(",")}


def runtime_requirements() -> list[Requirement]:
    extras = installed_extras()
    optional = PYPROJECT["project"]["optional-dependencies"]
    return [Requirement(r) for r in PYPROJECT["project"]["dependencies"]] + [
        Requirement(r) for extra in sorted(extras) for r in optional[extra]]


def test_every_stage_uses_a_base_image_pinned_by_digest() -> None:
    names = {s.name for s in STAGES if s.name}
    for stage in STAGES:
        if stage.image in names:
            continue
        assert PINNED_IMAGE.match(stage.image), f"FROM {stage.image} is not pinned by an exact tag and digest"


def test_runtime_runs_as_a_non_root_user_like_the_pods() -> None:
    users = RUNTIME.args("USER")
    assert users, "the runtime stage never leaves root"
    user, _, group = users[-1].partition(":")
    assert user not in ("0", "root") and group not in ("0", "root"), users[-1]
    assert user.isdigit(), "a numeric uid lets Kubernetes' runAsNonRoot verify it"
    pod = yaml.safe_load_all((REPO_ROOT / "deploy" / "k8s" / "worker.yaml").read_text())
    security = next(pod)["spec"]["template"]["spec"]["securityContext"]
    assert int(user) == security["runAsUser"]


def test_build_stage_builds_the_wheel_with_a_pinned_backend() -> None:
    build = next(s for s in STAGES if s.name == "build")
    runs = " && ".join(build.args("RUN"))
    assert "pip wheel" in runs and "--no-build-isolation" in runs
    assert "--constraint deploy/constraints-build.txt" in runs
    backend = PYPROJECT["build-system"]["requires"]
    pins = read_constraints(BUILD_CONSTRAINTS)
    for raw in backend:
        req = Requirement(raw)
        assert canonicalize_name(req.name) in pins, f"build backend {req.name} not in {BUILD_CONSTRAINTS.name}"
        assert pins[canonicalize_name(req.name)] in req.specifier, f"{req} vs pin {pins[req.name]}"
        assert req.name in runs


def test_runtime_installs_only_the_wheel_against_the_constraints() -> None:
    copies = RUNTIME.args("COPY")
    assert any(c.startswith("--from=build /dist/") for c in copies), copies
    assert not any(shlex.split(c)[0] in ("streams", ".", "schemas") for c in copies), "source tree copied in"
    runs = " && ".join(RUNTIME.args("RUN"))
    assert re.search(r"pip install --constraint (\S+) ", runs), runs
    constraint_path = re.search(r"pip install --constraint (\S+) ", runs).group(1)  # type: ignore[union-attr]
    assert any(c.split()[0] == "deploy/constraints.txt" and c.split()[-1] == constraint_path for c in copies)
    assert "pip check" in runs
    assert installed_extras() == {"rocksdb"}


def test_every_copied_path_exists() -> None:
    for stage in STAGES:
        for copy in stage.args("COPY"):
            words = [w for w in shlex.split(copy) if not w.startswith("--")]
            if any(w.startswith("--from") for w in shlex.split(copy)):
                continue
            for source in words[:-1]:
                assert (REPO_ROOT / source).exists(), f"COPY {source}: no such path in the repository"


def test_constraints_pin_every_runtime_dependency_within_its_range() -> None:
    pins = read_constraints(CONSTRAINTS)
    assert "citygrid-streams" not in pins, "the wheel itself is installed from the build stage, not pinned"
    for req in runtime_requirements():
        if req.marker is not None and not req.marker.evaluate():
            continue
        key = canonicalize_name(req.name)
        assert key in pins, f"{req.name} (pyproject) is not pinned in {CONSTRAINTS.name}: run `make constraints`"
        assert pins[key] in req.specifier, f"{CONSTRAINTS.name} pins {req.name}=={pins[key]}, pyproject wants {req}"


def test_constraints_are_closed_under_their_own_requirements() -> None:
    """What a pinned package needs is pinned too (checked for the pins installed here at the same version)."""
    pins = read_constraints(CONSTRAINTS)
    # The image's interpreter and platform, whatever runs this test.
    env = {key: str(value) for key, value in default_environment().items()}
    env.update(python_version="3.11", sys_platform="linux", platform_system="Linux")
    checked = 0
    for name, version in pins.items():
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if dist.version != version:
            continue
        checked += 1
        for raw in dist.requires or []:
            req = Requirement(raw)
            if req.marker is not None and not req.marker.evaluate(env | {"extra": ""}):
                continue
            assert canonicalize_name(req.name) in pins, f"{name}=={version} needs {req}, which is not pinned"
    if not checked:
        pytest.skip("none of the pinned versions is installed here to read its requirements from")
