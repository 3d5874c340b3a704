"""The GPU variant (docker-compose.gpu.yml over docker-compose.yml), validated offline like the main file:
compose spec, Dockerfile targets, one ONNX Runtime build per image, device reservations, known settings."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.test_deploy_files import (
    COMPOSE,
    DOCKER_DIR,
    ROOT,
    SERVICE_PORTS,
    _chain,
    _check_compose,
    _compose_env,
    _installed_packages,
    _parse_dockerfile,
    _settings_names,
)

COMPOSE_GPU = ROOT / "docker-compose.gpu.yml"
GPU_SERVICES = {"ranker", "embedder"}


@pytest.fixture(scope="module")
def gpu() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_GPU.read_text())


def test_gpu_file_matches_compose_spec() -> None:
    result = _check_compose(COMPOSE_GPU)
    assert result.returncode == 0, result.stdout + result.stderr


def test_gpu_variant_overrides_ranker_and_embedder_only(gpu: dict[str, Any]) -> None:
    main = yaml.safe_load(COMPOSE.read_text())
    assert set(gpu["services"]) == GPU_SERVICES and set(gpu) == {"services"}
    stages = _parse_dockerfile(DOCKER_DIR / "Dockerfile")
    for name, service in gpu["services"].items():
        assert service["build"]["target"] == f"{name}-gpu" and service["build"]["target"] in stages
        assert service["image"] != main["services"][name]["image"]
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}], name
        assert _compose_env(service) == {"ENCORE_ONNX_DEVICE": "cuda"}, name
        # the rest (command, ports, healthcheck, volumes) is the main file's: same target stage contents
        assert stages[f"{name}-gpu"].instructions[-1] == stages[name].instructions[-1], "same CMD"


@pytest.mark.parametrize("service", sorted(SERVICE_PORTS))
def test_each_image_holds_one_onnxruntime_build(service: str) -> None:
    stages = _parse_dockerfile(DOCKER_DIR / "Dockerfile")
    cpu = _installed_packages(_chain(stages, service))
    assert "onnxruntime" in cpu and "onnxruntime-gpu" not in cpu
    if service in GPU_SERVICES:
        packages = _installed_packages(_chain(stages, f"{service}-gpu"))
        assert "onnxruntime-gpu" in packages and "onnxruntime" not in packages
        assert "fastapi" in packages and not packages & {"torch", "torchaudio", "torchvision"}


def test_gpu_env_names_are_known_and_read(gpu: dict[str, Any]) -> None:
    used = {k for s in gpu["services"].values() for k in _compose_env(s)}
    current, _ = _settings_names()
    assert used and used <= current, sorted(used - current)
