"""Fixtures shared across the suite: a real Redis (the machine's on 6379, or one started here)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _redis_answers(port: int) -> bool:
    import redis

    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=0.3, socket_timeout=0.3).ping())
    except redis.RedisError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """ENCORE_TEST_REDIS_URL when set, else the shared Redis at 6379, or a throwaway redis-server when that one
    is not up."""
    if os.environ.get("ENCORE_TEST_REDIS_URL"):
        yield os.environ["ENCORE_TEST_REDIS_URL"]
        return
    if _redis_answers(6379):
        yield "redis://127.0.0.1:6379/0"
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no Redis at 6379 and no redis-server binary to start one")
    port = free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while not _redis_answers(port):
            if time.monotonic() > deadline or server.poll() is not None:
                pytest.fail(f"redis-server on port {port} did not come up")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)


@contextmanager
def service_process(service: str, env: dict[str, str], timeout_s: float = 120.0) -> Iterator[str]:
    """`uvicorn services.<service>.main:create_app --factory` (the documented command) in its own process on a
    free port; yields its base URL once /readyz answers 200, and stops it afterwards.

    The timeout is generous: importing feast alone takes 6-9 s on two busy cores.
    """
    import httpx

    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", f"services.{service}.main:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    # Output goes to a temp file, not a pipe: nobody drains a pipe while the test runs, and a service that logs
    # more than the pipe buffer (64 KiB) would block on its next log line.
    log_file = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                log_file.seek(0)
                output = log_file.read().decode(errors="replace")
                pytest.fail(f"{service} exited with {process.returncode}:\n{output[-3000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{service} did not become ready in {timeout_s:.0f} s")
            time.sleep(0.25)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log_file.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    from tests.early_worlds import late_world_modules

    late_world_modules(items)


@pytest.fixture(scope="session", autouse=True)
def early_worlds(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Starts the bootstrapped worlds this session's tests use before its first test (tests/early_worlds.py)."""
    from tests.early_worlds import EarlyWorlds, needed

    worlds = EarlyWorlds(request, tmp_path_factory)
    try:
        worlds.start(needed(request.session.items))
        yield worlds
    finally:
        worlds.close()


@pytest.fixture(scope="session")
def booted_world(early_worlds):
    """The quick demo world in a Redis of its own (tests/stack_world.py's World), built once per session."""
    from tests.stack_world import World

    run = early_worlds.get("booted_world")
    run.redis.save()  # what a test that stops and restarts this Redis gets back
    return World(run.base, run.env, run.info["bundle_id"], run.info["example_user"], run.redis)


@pytest.fixture(scope="session")
def demo_world(early_worlds):
    """The world `make run` builds, in the suite's Redis (a finished tests.early_worlds.Bootstrap)."""
    return early_worlds.get("demo_world")


@pytest.fixture(scope="session")
def retrain_world(early_worlds):
    """The quick world in a SQLite store for the retrain tests (a finished tests.early_worlds.Bootstrap)."""
    return early_worlds.get("retrain_world")
