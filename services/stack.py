"""Run the three services as local processes (the same stack docker-compose runs), until Ctrl-C.

    .venv/bin/python -m services.stack            # after `python -m training.bootstrap`

Each service is `uvicorn services.<name>.main:create_app --factory` on 127.0.0.1; the environment
(ENCORE_*) is passed through, so the processes share the bundle folder and the feature store.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from encore.settings import PROJECT_ROOT, EncoreSettings
from services.common.server import uvicorn_options


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    port: int


RETRIEVER_URL_SETTINGS = ("ENCORE_RANKER_RETRIEVER_URL", "ENCORE_EMBEDDER_RETRIEVER_URL")
# Start order matters: the embedder and ranker call the retriever.
SERVICES = (ServiceSpec("retriever", 8001), ServiceSpec("embedder", 8002), ServiceSpec("ranker", 8000))


class Stack:
    """The three service processes; `start()` waits until every /readyz answers 200."""

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        ports: Mapping[str, int] | None = None,
        log_dir: Path | None = None,
        workers: int = 1,
        root: Path = PROJECT_ROOT,
    ):
        """`root`: the checkout whose services run (a benchmark may start another commit's code beside)."""
        self.env = dict(os.environ if env is None else env)
        self.root = root
        self.host = host
        self.ports = {s.name: (ports or {}).get(s.name, s.port) for s in SERVICES}
        self.log_dir = log_dir
        self.workers = workers
        self.procs: dict[str, subprocess.Popen] = {}

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.ports[name]}"

    def _retriever_url(self, setting: str) -> str:
        """Where the ranker or embedder finds the retriever: the caller's own setting, the deprecated shared
        one (ENCORE_RETRIEVER_URL), else this stack's retriever."""
        return self.env.get(setting) or self.env.get("ENCORE_RETRIEVER_URL") or self.url("retriever")

    def log_path(self, name: str) -> Path:
        """Where a service's output (its log lines, tracebacks included) goes; needs a log_dir."""
        assert self.log_dir is not None
        return self.log_dir / f"{name}.log"

    def start(self, timeout_s: float = 120.0) -> None:
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**self.env, **{name: self._retriever_url(name) for name in RETRIEVER_URL_SETTINGS}}
        # The demo's listening room: the ranker's page calls the embedder directly (CORS for the page's origin)
        # and plays kept uploads.
        page = [self.url("ranker"), f"http://localhost:{self.ports['ranker']}"]
        env.setdefault("ENCORE_EMBEDDER_CORS_ORIGINS", ",".join(page))
        env.setdefault("ENCORE_RANKER_EMBEDDER_URL", self.url("embedder"))
        env.setdefault("ENCORE_EMBEDDER_KEEP_AUDIO", "true")
        for spec in SERVICES:
            cmd = [
                sys.executable, "-m", "uvicorn", f"services.{spec.name}.main:create_app", "--factory",
                "--host", self.host, "--port", str(self.ports[spec.name]), "--workers", str(self.workers),
                "--log-level", "warning", *uvicorn_options(),
            ]  # fmt: skip
            out = open(self.log_path(spec.name), "ab") if self.log_dir else subprocess.DEVNULL  # noqa: SIM115
            self.procs[spec.name] = subprocess.Popen(
                cmd, cwd=self.root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        for spec in SERVICES:
            self._wait_ready(spec.name, deadline)

    def _wait_ready(self, name: str, deadline: float) -> None:
        last = "no answer"
        while time.monotonic() < deadline:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode} before it was ready ({last})")
            try:
                with urllib.request.urlopen(f"{self.url(name)}/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                last = f"/readyz {exc.code}: {exc.read()[:300].decode(errors='replace')}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.3)
        raise RuntimeError(f"{name} was not ready in time: {last}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def curl_examples(stack: Stack, audio: str, user_id: str) -> str:
    """The example commands; the key is left as $ENCORE_API_KEY for the shell to fill in, never printed."""
    return "\n".join(
        [
            f"Encore is up. Open {stack.url('ranker')}/ (the listening room), or try:",
            f"  curl -s '{stack.url('ranker')}/recommend?user_id={user_id}&k=10'",
            f"  curl -s '{stack.url('ranker')}/recommend?user_id=somebody-new&k=10'",
            f"  curl -s '{stack.url('retriever')}/candidates?user_id={user_id}&k=20'",
            f"  curl -s -H \"X-API-Key: $ENCORE_API_KEY\" -F 'file=@{audio}' -F track_id=my-upload "
            f"{stack.url('embedder')}/embed",
            f"  curl -s '{stack.url('embedder')}/tracks/my-upload'",
            f"  curl -s {stack.url('ranker')}/readyz   # also /healthz, /metrics, /docs on every service",
            "Write calls take the key in ENCORE_API_KEY (make run: encore-dev-key). Ctrl-C stops everything.",
        ]
    )


def example_audio() -> Path:
    """A recording that exists here: a real clip beside the project when ../shared is there, else a rendered demo
    track of the bootstrap's world (a fresh clone has no ../shared)."""
    settings = EncoreSettings()
    real = settings.datasets_dir / "audio" / "gtzan_country.00000.wav"
    if real.is_file():
        return real
    worlds = settings.cache_dir / "synthetic"
    rendered = sorted(worlds.glob("*/audio/*.flac"))
    return rendered[0] if rendered else real


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the ranker, retriever and embedder as local processes.")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers per service")
    # "0": the synthetic world's first user, known to the demo bundle (an unknown id only gets popularity).
    parser.add_argument("--example-user", default="0", help="user id shown in the example commands")
    parser.add_argument("--example-audio", default=str(example_audio()), help="audio file of the upload example")
    parser.add_argument(
        "--log-dir", type=Path, default=PROJECT_ROOT / "logs", help="folder of the services' logs (<service>.log)"
    )
    args = parser.parse_args(argv)
    # SIGTERM (docker stop, kill) takes the same clean path as Ctrl-C: the services run in their own
    # sessions, so nothing else would stop them.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # also when started in the background, where SIGINT is ignored
    stack = Stack(workers=args.workers, log_dir=args.log_dir)
    logs = ", ".join(str(stack.log_path(s.name)) for s in SERVICES)
    print(f"Starting the services; their logs go to {logs}", flush=True)
    try:
        stack.start()
        print(curl_examples(stack, args.example_audio, args.example_user), flush=True)
        while all(p.poll() is None for p in stack.procs.values()):
            time.sleep(0.5)
        dead = [n for n, p in stack.procs.items() if p.poll() is not None]
        print(f"error: {', '.join(dead)} stopped (see {logs}); shutting the stack down", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        print(f"error: {exc} (see the logs: {logs})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # also during start-up: nothing may be left running
        print("\nstopping...", file=sys.stderr)
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
