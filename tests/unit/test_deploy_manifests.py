"""The Kubernetes manifests validate against the API schemas and agree with the settings object."""
from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from streams.settings import Settings

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_kustomization_lists_existing_files() -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for name in kust["resources"]:
        assert (K8S / name).exists(), name


def test_configmap_keys_are_real_settings() -> None:
    data = yaml.safe_load((K8S / "configmap.yaml").read_text())["data"]
    fields = {f"CITYGRID_{name.upper()}" for name in Settings.model_fields}
    unknown = set(data) - fields
    assert not unknown, f"configmap sets unknown settings {unknown}"


def test_worker_ports_match_settings_defaults() -> None:
    docs = list(yaml.safe_load_all((K8S / "worker.yaml").read_text()))
    ports = {p["name"]: p["containerPort"] for p in docs[0]["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert ports == {"metrics": Settings().metrics_port, "web": Settings().web_port}
