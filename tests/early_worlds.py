"""Bootstrapped worlds, started when a test session begins and awaited by the fixtures that use them.

A bootstrap (`python -m training.bootstrap`) is one process that keeps about one core busy for 40-150 s, mostly
encoding audio; the unit tests leave the other core idle much of the time. So the session starts every world its
collected tests need before its first test (`nice`d: the tests keep priority), and `late_world_modules` runs the
modules that use one last. Each world is then built beside the unit tests instead of in front of its own.

A world is named by the fixture in tests/conftest.py that hands it out (WORLDS); `EarlyWorlds.get` waits for it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.stack_world import API_KEY, REPO_ROOT, RedisServer

BOOTSTRAP_TIMEOUT_S = 900


class WorldUnavailable(Exception):
    """This machine cannot build the world (say, no real recordings): its tests skip with this reason."""


def clean_env(**encore: str) -> dict[str, str]:
    """This process's environment without its ENCORE_ settings, plus `encore`."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("ENCORE_")}, **encore}


def store_env(base: Path, project: str, **more: str) -> dict[str, str]:
    """A world's folders under `base` and its Feast project: what the bootstrap and the services read."""
    return {
        "ENCORE_ARTIFACTS_DIR": str(base / "artifacts"),
        "ENCORE_CACHE_DIR": str(base / "data"),
        "ENCORE_FEAST_DATA_DIR": str(base / "feast"),
        "ENCORE_FEAST_PROJECT": project,
        **more,
    }


@dataclass
class Bootstrap:
    """One `training.bootstrap` run in the background; its output goes to files in `base`."""

    base: Path
    env: dict[str, str]
    args: list[str]
    redis: RedisServer | None = None  # a Redis of the world's own, stopped at the end of the session
    on_close: list[Callable[[], None]] = field(default_factory=list)
    process: subprocess.Popen | None = None
    info: dict | None = None

    def start(self) -> Bootstrap:
        cmd = ["nice", "-n", "10", sys.executable, "-m", "training.bootstrap", *self.args, "--quiet"]
        with (self.base / "bootstrap.out").open("wb") as out, (self.base / "bootstrap.err").open("wb") as err:
            self.process = subprocess.Popen(cmd, cwd=REPO_ROOT, env=self.env, stdout=out, stderr=err)
        return self

    def wait(self) -> dict:
        """The bootstrap's last stdout line ({"bundle_id", "example_user"}), once it has finished."""
        if self.info is None:
            assert self.process is not None
            code = self.process.wait(timeout=BOOTSTRAP_TIMEOUT_S)
            assert code == 0, (self.base / "bootstrap.err").read_text()[-3000:]
            self.info = json.loads((self.base / "bootstrap.out").read_text().strip().splitlines()[-1])
        return self.info

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for step in self.on_close:
            step()
        if self.redis is not None:
            self.redis.stop()


def quick_world(base: Path, _request: pytest.FixtureRequest) -> Bootstrap:
    """The quick demo world in a Redis of its own (a test may stop and restart it): the stack tests' world."""
    redis = RedisServer(base)
    redis.start()
    env = clean_env(
        **store_env(base, f"room_{uuid.uuid4().hex[:8]}", ENCORE_FEAST_ONLINE="redis", ENCORE_REDIS_URL=redis.url),
        ENCORE_API_KEY=API_KEY,
    )
    return Bootstrap(base, env, ["--size", "quick", "--epochs", "2"], redis=redis)


def demo_world(base: Path, request: pytest.FixtureRequest) -> Bootstrap:
    """The world `make run` builds (default settings) in the suite's Redis: the product check's world, which
    uploads the real recordings (so without them there is nothing to build it for)."""
    from encore.settings import EncoreSettings

    audio = EncoreSettings().datasets_dir / "audio"
    if not audio.is_dir():
        raise WorldUnavailable(f"real audio clips not found at {audio}")
    redis_url = request.getfixturevalue("redis_url")
    project = f"e2e_{uuid.uuid4().hex[:10]}"
    env = clean_env(
        **store_env(base, project, ENCORE_FEAST_ONLINE="redis", ENCORE_REDIS_URL=redis_url), ENCORE_API_KEY=API_KEY
    )

    def forget_keys() -> None:
        import redis

        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(match=f"*{project}*".encode()):
            client.delete(key)

    return Bootstrap(base, env, [], on_close=[forget_keys])


def retrain_world(base: Path, _request: pytest.FixtureRequest) -> Bootstrap:
    """The quick world in a SQLite store, with more recall epochs: what the retrain tests retrain."""
    env = {**os.environ, **store_env(base, "retrain_test", ENCORE_FEAST_ONLINE="sqlite")}
    return Bootstrap(base, env, ["--size", "quick", "--epochs", "2", "--recall-epochs", "3"])


# fixture name -> how its world is built
WORLDS: dict[str, Callable[[Path, pytest.FixtureRequest], Bootstrap]] = {
    "booted_world": quick_world,
    "demo_world": demo_world,
    "retrain_world": retrain_world,
}


class EarlyWorlds:
    """The worlds this session's tests need, started at once; `get` waits for one."""

    def __init__(self, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.request, self.tmp_path_factory = request, tmp_path_factory
        self.runs: dict[str, Bootstrap] = {}
        self.unavailable: dict[str, str] = {}

    def start(self, names: Iterable[str]) -> None:
        for name in names:
            if name not in self.runs and name not in self.unavailable:
                try:
                    self.runs[name] = WORLDS[name](self.tmp_path_factory.mktemp(name), self.request).start()
                except WorldUnavailable as why:
                    self.unavailable[name] = str(why)

    def get(self, name: str) -> Bootstrap:
        """The finished world; skips the asking test when this machine cannot build it."""
        self.start([name])
        if name in self.unavailable:
            pytest.skip(self.unavailable[name])
        self.runs[name].wait()
        return self.runs[name]

    def close(self) -> None:
        for run in self.runs.values():
            run.close()


def needed(items: Iterable[pytest.Item]) -> set[str]:
    return {name for item in items for name in getattr(item, "fixturenames", ()) if name in WORLDS}


def late_world_modules(items: list[pytest.Item]) -> None:
    """Run the modules whose tests use a bootstrapped world after the others (a stable sort: every module stays
    whole and in its order), so their worlds have been building meanwhile."""
    late = {item.module for item in items if needed([item]) and getattr(item, "module", None) is not None}
    items.sort(key=lambda item: getattr(item, "module", None) in late)
