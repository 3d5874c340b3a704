"""Kubernetes manifests (deploy/k8s): every object against the Kubernetes OpenAPI schemas, offline and strict
(kubernetes-validate ships them), plus the wiring the issue asks for, checked on the rendered overlays.

No cluster runs here. The overlays are rendered with `kubectl kustomize` (skipped where kubectl is missing);
the plain YAML files of the base and the components are validated without it. Negative cases show that each
check can fail: a broken copy of a real object is refused.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate comes with the dev extra")

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "production")
# The oldest Kubernetes the manifests promise to work on, and the newest schema the validator ships.
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
SERVICE_PORTS = {"ranker": 8000, "retriever": 8001, "embedder": 8002}
TRACK_TABLE_LOAD_S_PER_1M = 400  # docs/performance.md: track table of 1M tracks loaded in 400 s on 2 vCPUs


# --- helpers ----------------------------------------------------------------------------------------------


def _plain_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def _load_all(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _validate(doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (its built-in kustomize renders the overlays) is not installed")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / request.param)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return request.param, _load_all(result.stdout)


def _by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def _workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job", "CronJob")]


def service_problems(deployment: dict[str, Any], port: int) -> list[str]:
    """What a service Deployment lacks: probes on the right paths and port, requests, the watcher, the key."""
    problems = []
    containers = {c["name"]: c for c in _pod_spec(deployment)["containers"]}
    name = deployment["metadata"]["name"]
    main = containers.get(name)
    if main is None:
        return [f"no container named {name}"]
    if [p["containerPort"] for p in main.get("ports", [])] != [port]:
        problems.append(f"container port is not {port}")
    command = main.get("command", [])
    if "--port" not in command or command[command.index("--port") + 1] != str(port):
        problems.append("uvicorn is not started on the service port")
    expected = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for probe, path in expected.items():
        got = main.get(probe, {}).get("httpGet", {}).get("path")
        if got != path:
            problems.append(f"{probe} path is {got!r}, expected {path}")
    watch = containers.get("bundle-watch")
    if watch is None or watch["command"][-2:] != ["--port", str(port)]:
        problems.append("no bundle-watch sidecar pointed at the service port")
    for container in containers.values():
        key = {e["name"]: e for e in container.get("env", [])}.get("ENCORE_API_KEY", {})
        if "secretKeyRef" not in key.get("valueFrom", {}):
            problems.append(f"{container['name']}: ENCORE_API_KEY does not come from a Secret")
    return problems


# --- (1) schemas ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", _plain_files(), ids=lambda p: str(p.relative_to(K8S)))
@pytest.mark.parametrize("version", VERSIONS)
def test_plain_files_match_kubernetes_schemas(path: Path, version: str) -> None:
    docs = _load_all(path.read_text())
    assert docs, path
    for doc in docs:
        _validate(doc, version)


@pytest.mark.parametrize("version", VERSIONS)
def test_rendered_overlays_match_kubernetes_schemas(rendered: tuple[str, list[dict[str, Any]]], version: str) -> None:
    _, docs = rendered
    for doc in docs:
        _validate(doc, version)


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


def _drop(path: tuple[Any, ...]) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        node = doc
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return mutate


POD = ("spec", "template", "spec")


@pytest.mark.parametrize(
    "mutate",
    [
        _set(("spec", "replicas"), "two"),
        _set((*POD, "containers", 0, "readinessProbe", "httpGett"), {"path": "/readyz", "port": "http"}),
        _drop((*POD, "containers")),
        _set((*POD, "containers", 0, "ports", 0, "containerPort"), "eight thousand"),
        _set(("spec", "strategy", "type"), 7),
        _set(("apiVersion",), "apps/v0"),
    ],
    ids=["replicas-not-int", "misspelt-probe-key", "no-containers", "port-not-int", "strategy-not-string", "bad-api"],
)
def test_schema_check_refuses_a_broken_deployment(mutate: Callable[[dict[str, Any]], None]) -> None:
    """The validation can fail: the real ranker Deployment with one mistake in it is refused."""
    deployment = _load_all((K8S / "base" / "ranker.yaml").read_text())[0]
    _validate(deployment, VERSIONS[0])  # the intact object passes
    broken = copy.deepcopy(deployment)
    mutate(broken)
    with pytest.raises((kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError)):
        _validate(broken, VERSIONS[0])


def test_kustomize_refuses_a_broken_overlay(tmp_path: Path) -> None:
    """An overlay naming a resource that is not there does not render (kustomize's own check)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    shutil.copytree(K8S, tmp_path / "k8s")
    overlay = tmp_path / "k8s" / "overlays" / "dev" / "kustomization.yaml"
    overlay.write_text(overlay.read_text().replace("- namespace.yaml", "- namespace.yaml\n  - missing.yaml"))
    result = subprocess.run([kubectl, "kustomize", str(overlay.parent)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "missing.yaml" in result.stderr


# --- (2) wiring -------------------------------------------------------------------------------------------


def test_overlays_hold_the_stack(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    overlay, docs = rendered
    deployments = _by_kind(docs, "Deployment")
    assert set(SERVICE_PORTS) <= set(deployments)
    assert set(_by_kind(docs, "Job")) >= {"bootstrap"}
    assert _pod_spec(_by_kind(docs, "Job")["bootstrap"])["containers"][0]["command"] == [
        "python", "-m", "training.bootstrap",
    ]  # fmt: skip
    retrain = _by_kind(docs, "CronJob")["retrain"]
    assert _pod_spec(retrain)["containers"][0]["command"] == ["python", "-m", "training.retrain"]
    assert retrain["spec"]["concurrencyPolicy"] == "Forbid"
    statefulsets = _by_kind(docs, "StatefulSet")
    if overlay == "dev":
        assert set(statefulsets) == {"redis"}
    else:
        assert statefulsets["redis-cluster"]["spec"]["replicas"] == 6  # 3 masters + 3 replicas
        assert {"ray-head", "ray-worker"} <= set(deployments)
        embed = _pod_spec(_by_kind(docs, "Job")["catalog-embed"])["containers"][0]["command"]
        assert embed[:5] == ["python", "-m", "training.extract_audio", "--engine", "ray"]
        assert embed[embed.index("--address") + 1] == "ray-head:6379"


@pytest.mark.parametrize("service", sorted(SERVICE_PORTS))
def test_services_probe_watch_and_take_the_key_from_a_secret(
    rendered: tuple[str, list[dict[str, Any]]], service: str
) -> None:
    _, docs = rendered
    deployment = _by_kind(docs, "Deployment")[service]
    assert service_problems(deployment, SERVICE_PORTS[service]) == []
    assert _by_kind(docs, "Service")[service]["spec"]["ports"][0]["port"] == SERVICE_PORTS[service]


def test_service_check_finds_what_is_missing(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    ranker = copy.deepcopy(_by_kind(docs, "Deployment")["ranker"])
    spec = _pod_spec(ranker)
    main = spec["containers"][0]
    main["readinessProbe"]["httpGet"]["path"] = "/healthz"
    main["env"] = [e for e in main["env"] if e["name"] != "ENCORE_API_KEY"] + [
        {"name": "ENCORE_API_KEY", "value": "in-plain-sight"}
    ]
    spec["containers"] = [main]
    problems = service_problems(ranker, 8000)
    assert any("readinessProbe" in p for p in problems)
    assert any("bundle-watch" in p for p in problems)
    assert any("ENCORE_API_KEY" in p for p in problems)


def test_startup_probe_covers_a_large_track_table(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    """The ranker answers nothing until its track table is loaded: the startup probe must wait for a table of
    a few million tracks (at the measured rate) before liveness may restart the pod."""
    _, docs = rendered
    probe = _pod_spec(_by_kind(docs, "Deployment")["ranker"])["containers"][0]["startupProbe"]
    budget_s = probe["periodSeconds"] * probe["failureThreshold"]
    assert budget_s >= 4 * TRACK_TABLE_LOAD_S_PER_1M, budget_s


def test_every_container_requests_resources(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    for workload in _workloads(docs):
        for container in _pod_spec(workload)["containers"]:
            requests = container.get("resources", {}).get("requests", {})
            assert {"cpu", "memory"} <= set(requests), (workload["metadata"]["name"], container["name"])


def test_ranker_autoscales_and_keeps_one_pod(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    hpa = _by_kind(docs, "HorizontalPodAutoscaler")["ranker"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ranker"}
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    pdb = _by_kind(docs, "PodDisruptionBudget")["ranker"]
    assert (
        pdb["spec"]["selector"]["matchLabels"]
        == _by_kind(docs, "Deployment")["ranker"]["spec"]["selector"]["matchLabels"]
    )


def test_bundles_reach_every_pod_through_one_shared_volume(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    """Writers (bootstrap, retrain) mount the artifacts claim read-write, every service pod read-only, and the
    claim is ReadWriteMany so pods on different nodes see the same CURRENT."""
    _, docs = rendered
    claims = _by_kind(docs, "PersistentVolumeClaim")
    assert claims["encore-artifacts"]["spec"]["accessModes"] == ["ReadWriteMany"]
    for workload in _workloads(docs):
        spec = _pod_spec(workload)
        for volume in spec.get("volumes", []):  # every claim a pod names exists
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
        name = workload["metadata"]["name"]
        artifacts = [m for c in spec["containers"] for m in c.get("volumeMounts", []) if m["name"] == "artifacts"]
        if name in SERVICE_PORTS:
            assert artifacts and all(m["readOnly"] and m["mountPath"] == "/artifacts" for m in artifacts), name
        if name in ("bootstrap", "retrain"):
            assert artifacts and not any(m.get("readOnly") for m in artifacts), name


def test_the_demo_world_is_one_claim_the_bootstrap_writes_and_the_embedder_reads(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    """The embedder plays the bootstrap's rendered tracks, so the world lives on a shared claim (an emptyDir would
    vanish with the bootstrap pod); the retrain CronJob runs on schedule from the store alone, without the world."""
    _, docs = rendered
    workloads = {w["metadata"]["name"]: w for w in _workloads(docs)}
    assert not [v for v in _pod_spec(workloads["retrain"])["volumes"] if v["name"] == "worlds"]
    for name in ("bootstrap", "embedder"):
        spec = _pod_spec(workloads[name])
        (worlds,) = [v for v in spec["volumes"] if v["name"] == "worlds"]
        assert worlds["persistentVolumeClaim"]["claimName"] == "encore-worlds", name
        env = {e["name"]: e.get("value") for c in spec["containers"] for e in c.get("env", [])}
        assert env["ENCORE_CACHE_DIR"] == "/data/worlds", name
    retrain = workloads["retrain"]
    assert retrain["spec"]["suspend"] is False and retrain["spec"]["concurrencyPolicy"] == "Forbid"
    assert _pod_spec(retrain)["containers"][0]["command"] == ["python", "-m", "training.retrain"]


def test_api_key_secret(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    """Dev generates the Secret the pods name (hashed name rewritten into every reference); production
    commits none, so no key ever sits in the repository for it."""
    overlay, docs = rendered
    secrets = _by_kind(docs, "Secret")
    refs = {
        env["valueFrom"]["secretKeyRef"]["name"]
        for workload in _workloads(docs)
        for container in _pod_spec(workload)["containers"]
        for env in container.get("env", [])
        if "secretKeyRef" in env.get("valueFrom", {})
    }
    assert len(refs) == 1
    (ref,) = refs
    if overlay == "dev":
        assert ref in secrets and re.fullmatch(r"encore-api-key-[a-z0-9]+", ref)
        assert "api-key" in secrets[ref]["data"]
    else:
        assert secrets == {} and ref == "encore-api-key"


def test_env_matches_compose_and_names_are_known(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    from encore import settings

    current = settings.all_variable_names() - set(settings.deprecated_names())  # no deprecated name either
    overlay, docs = rendered
    config = _by_kind(docs, "ConfigMap")["encore-env"]["data"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["x-encore-env"]
    names = set(config)
    for workload in _workloads(docs):
        for container in _pod_spec(workload)["containers"]:
            names |= {e["name"] for e in container.get("env", []) if e["name"].startswith("ENCORE_")}
    assert names <= current, sorted(names - current)
    if overlay == "dev":
        assert config == compose  # the same settings as the compose stack
    else:
        assert config["ENCORE_FEAST_ONLINE"] == "redis_cluster"
        assert config["ENCORE_REDIS_URL"] == "redis://redis-cluster:6379"


def test_pods_run_as_the_images_user(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    for workload in _workloads(docs):
        security = _pod_spec(workload).get("securityContext", {})
        assert security.get("runAsNonRoot") is True, workload["metadata"]["name"]
