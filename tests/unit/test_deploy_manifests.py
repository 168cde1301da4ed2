"""The Kubernetes manifests validate against the API schemas of two Kubernetes versions, agree with the
settings object, and are hardened (docs/security.md): non-root, no privilege escalation, read-only root
filesystem, all capabilities dropped, RuntimeDefault seccomp, every key and password from a Secret, a
startup probe, a default-deny NetworkPolicy."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from streams.settings import Settings

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
KUBERNETES_VERSIONS = ("1.30.0", "1.34.0")
# Settings that are secrets: they may reach a pod only from a Secret (env secretKeyRef), never a ConfigMap.
SECRET_SETTINGS = {f"CITYGRID_{name.upper()}" for name in ("pii_key", "pii_previous_keys", "dlq_key",
                                                            "kafka_sasl_password", "wall_token")}
# Settings naming files that hold secrets: they must point into a mounted Secret volume.
SECRET_FILE_SETTINGS = {"CITYGRID_KAFKA_SASL_PASSWORD_FILE", "CITYGRID_STORE_PASSWORD_FILE",
                        "CITYGRID_KAFKA_SSL_CAFILE", "CITYGRID_STORE_CA_FILE", "CITYGRID_WEBHOOKS_FILE"}


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def deployed() -> list[dict[str, Any]]:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [doc for name in kust["resources"] for doc in documents(K8S / name)]


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in deployed():
        kind, spec = doc["kind"], doc.get("spec", {})
        if kind in ("StatefulSet", "Deployment", "Job", "DaemonSet"):
            yield doc["metadata"]["name"], spec["template"]["spec"]
        elif kind == "CronJob":
            yield doc["metadata"]["name"], spec["jobTemplate"]["spec"]["template"]["spec"]


def configmap() -> dict[str, str]:
    return documents(K8S / "configmap.yaml")[0]["data"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_strictly(path: Path, version: str) -> None:
    for doc in documents(path):
        kubernetes_validate.validate(doc, version, strict=True)


def test_kustomization_lists_existing_files_and_no_example_secret() -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for name in kust["resources"]:
        assert (K8S / name).exists(), name
        assert "example" not in name, f"{name}: example secrets are not deployed"
    assert not [d for d in deployed() if d["kind"] == "Secret"], "a real Secret does not live in git"


def test_configmap_keys_are_real_settings_and_hold_no_secret() -> None:
    fields = {f"CITYGRID_{name.upper()}" for name in Settings.model_fields}
    data = configmap()
    assert not set(data) - fields, f"configmap sets unknown settings {set(data) - fields}"
    assert not set(data) & SECRET_SETTINGS, "a secret in the ConfigMap"
    assert data["CITYGRID_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL" and data["CITYGRID_STORE_TLS"] == "true"


def test_worker_ports_match_settings_defaults() -> None:
    docs = documents(K8S / "worker.yaml")
    ports = {p["name"]: p["containerPort"] for p in docs[0]["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert ports == {"metrics": Settings().metrics_port, "web": Settings().web_port}


@pytest.mark.parametrize("name, spec", list(pod_specs()), ids=[n for n, _ in pod_specs()])
def test_every_pod_is_hardened(name: str, spec: dict[str, Any]) -> None:
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    writable = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v} | {"state"}
    for container in spec["containers"] + spec.get("initContainers", []):
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False, container["name"]
        assert ctx["readOnlyRootFilesystem"] is True, container["name"]
        assert ctx["capabilities"]["drop"] == ["ALL"] and "add" not in ctx["capabilities"]
        assert ctx.get("privileged", False) is False and ctx["runAsNonRoot"] is True
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
        mounts = {m["name"]: m for m in container.get("volumeMounts", [])}
        assert any(m["mountPath"] == "/tmp" for m in mounts.values()), "a read-only root needs a writable /tmp"
        for mount in mounts.values():
            assert mount.get("readOnly") or mount["name"] in writable, f"{mount['name']} mounted writable"


@pytest.mark.parametrize("name, spec", list(pod_specs()), ids=[n for n, _ in pod_specs()])
def test_secrets_come_from_secrets(name: str, spec: dict[str, Any]) -> None:
    secret_volumes = {v["name"]: v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
    for container in spec["containers"]:
        for env in container.get("env", []):
            if env["name"] in SECRET_SETTINGS:
                assert "secretKeyRef" in env.get("valueFrom", {}), f"{env['name']} is not from a Secret"
        for source in container.get("envFrom", []):
            assert "configMapRef" in source or "secretRef" in source
        mounted = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        for setting in SECRET_FILE_SETTINGS & set(configmap()):
            path = configmap()[setting]
            directory = str(Path(path).parent)
            if directory in mounted:
                assert mounted[directory] in secret_volumes, f"{setting}: {path} is not on a Secret volume"
    worker_env = {e["name"] for e in spec["containers"][0].get("env", [])}
    if name == "citygrid-worker":
        assert {"CITYGRID_PII_KEY", "CITYGRID_DLQ_KEY"} <= worker_env, "the worker refuses to start without its keys"
        assert configmap()["CITYGRID_WEB_HOST"] == "0.0.0.0" and "CITYGRID_WALL_TOKEN" in worker_env, \
            "an open web port needs the wall token (the worker refuses to start without it)"


def test_worker_has_a_startup_probe_before_liveness() -> None:
    container = documents(K8S / "worker.yaml")[0]["spec"]["template"]["spec"]["containers"][0]
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/health/"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "changelog recovery needs minutes"
    assert "initialDelaySeconds" not in container["livenessProbe"], "the startup probe guards the start"


def test_network_policy_denies_by_default_and_opens_only_listed_ports() -> None:
    policies = {d["metadata"]["name"]: d for d in documents(K8S / "networkpolicy.yaml")}
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"} \
        and "ingress" not in deny and "egress" not in deny
    worker = policies["citygrid-worker"]["spec"]
    assert worker["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "worker"
    ingress_ports = {p["port"] for rule in worker["ingress"] for p in rule["ports"]}
    assert ingress_ports == {Settings().metrics_port, Settings().web_port}
    egress_ports = {p["port"] for rule in worker["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 9093, 9440, 443}, "webhooks leave over https only"


def test_retention_runs_nightly_as_a_cronjob() -> None:
    [cron] = documents(K8S / "retention-cronjob.yaml")
    assert cron["kind"] == "CronJob" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["retention"]


def test_the_namespace_enforces_the_restricted_pod_security_standard() -> None:
    [ns] = documents(K8S / "namespace.yaml")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_gateway_is_its_own_kafka_principal_behind_its_own_policy() -> None:
    [deployment, _service] = documents(K8S / "gateway.yaml")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["CITYGRID_KAFKA_SASL_USERNAME"]["value"] == "citygrid-gateway", "ACLs let this principal write actions"
    assert "secretKeyRef" in env["CITYGRID_PII_KEY"]["valueFrom"]
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    policy = {d["metadata"]["name"]: d for d in documents(K8S / "networkpolicy.yaml")}["citygrid-gateway"]["spec"]
    assert {p["port"] for rule in policy["ingress"] for p in rule["ports"]} == {8080}
    assert {p["port"] for rule in policy["egress"] for p in rule["ports"]} == {53, 9093, 9440, 6066}
