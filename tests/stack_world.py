"""A running Encore for tests that drive it from outside: its own redis-server (so a test may stop it), the quick
demo world bootstrapped into it (tests/early_worlds.py), and the three services started by services.stack with logs
in a folder."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from encore.text_query import QUERY_ENCODER_DIR
from services.stack import SERVICES, Stack
from tests.conftest import REPO_ROOT, _redis_answers, free_port

API_KEY = "room-test-key"
# The stack's ranker steers q with it (the world's environment sets no ENCORE_WEIGHTS_DIR: the default folder).
QUERY_ENCODER = REPO_ROOT / "weights" / QUERY_ENCODER_DIR
needs_query_encoder = pytest.mark.skipif(
    not (QUERY_ENCODER / "model.onnx").is_file(),
    reason=f"no query encoder at {QUERY_ENCODER}: python -m training.export_text_encoder (make install does)",
)


class RedisServer:
    """redis-server on a free port, with its data in `folder`; stop() saves nothing, restart() reloads the last
    save(), so a test can take the store away under a request and give it back."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("no redis-server binary: these tests stop and restart a Redis of their own")
        self.binary, self.folder, self.port = binary, folder, free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        cmd = [self.binary, "--port", str(self.port), "--dir", str(self.folder), "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not _redis_answers(self.port):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} did not come up")
            time.sleep(0.05)

    def save(self) -> None:
        import redis

        redis.Redis(port=self.port).save()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@dataclass
class World:
    base: Path
    env: dict[str, str]
    bundle_id: str
    example_user: str
    redis: RedisServer


@contextmanager
def running_stack(world: World, log_dir: Path, **env: str) -> Iterator[Stack]:
    """The three services over `world`, logging to `log_dir`; the logs' tails are shown when start-up fails."""
    stack = Stack(env={**world.env, **env}, ports={s.name: free_port() for s in SERVICES}, log_dir=log_dir)
    try:
        stack.start(timeout_s=180)
    except RuntimeError:
        stack.stop()
        logs = "\n".join(stack.log_path(s.name).read_text()[-2000:] for s in SERVICES)
        raise AssertionError(f"stack did not start:\n{logs}") from None
    try:
        yield stack
    finally:
        stack.stop()
