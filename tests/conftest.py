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


@pytest.fixture(scope="session")
def quick_world(tmp_path_factory):
    """The quick demo world in a Redis of its own (tests/stack_world.py), built once per session."""
    from tests.stack_world import quick_world as build

    with build(tmp_path_factory.mktemp("quick_world")) as world:
        yield world
