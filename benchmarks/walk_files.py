"""Count the project files each of the three walks of docs/architecture.md touches (issue 18's before/after).

    python benchmarks/walk_files.py --code CHECKOUT_BEFORE --label before --out docs/results/walks/walks.json
    python benchmarks/walk_files.py --label after --out docs/results/walks/walks.json
    python benchmarks/walk_files.py --table docs/results/walks/walks.json    # the table in docs/architecture.md

Two counts per side of a walk, over the files of ROOT's encore/, services/, training/ and feature_repo/, each
side in a fresh process:
- touched: files whose functions run during the walk's request (after one warm-up request; for the benchmark,
  during the whole run), recorded with a profile hook on every thread (module and class bodies, which run
  on import, do not count);
- loaded: project modules imported once the process has started and served the walk (start-up included).
The sides:
- recommend: the ranker app (TestClient; start-up, then GET /recommend) + the retriever app (GET /candidates);
- embed: the embedder app (POST /embed of a generated WAV) + the retriever app (POST /items);
- benchmark: `training.run_benchmark --dataset frappe --models DCNv2 --seeds 2021 --epochs 1`.
The services run over one small world (benchmarks/serving_world.py, sqlite store) plus an MFCC content bundle,
built with this checkout's code; `--code` runs the walks with another checkout (say, the commit before the
refactor) over that same world, which works because the bundle format did not change.
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]
PACKAGES = ("encore", "services", "training", "feature_repo")


def project_modules(root: Path) -> list[str]:
    """Files of `root`'s packages among the loaded modules, relative to root (the walk script itself excluded)."""
    found = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and Path(path).resolve().is_relative_to(root):
            relative = Path(path).resolve().relative_to(root).as_posix()
            if relative.split("/")[0] in PACKAGES:
                found.add(relative)
    return sorted(found)


class Touched:
    """A profile hook on every thread that records the project files whose functions run while `active`."""

    def __init__(self, root: Path) -> None:
        self.prefixes = tuple(f"{root}/{package}/" for package in PACKAGES)
        self.root = f"{root}/"
        self.files: set[str] = set()
        self.active = False

    def __call__(self, frame: Any, event: str, arg: Any) -> None:
        # functions only: a module or class body runs on import, and imports are not the walk
        if self.active and event == "call" and frame.f_code.co_flags & inspect.CO_OPTIMIZED:
            name = frame.f_code.co_filename
            if name.startswith(self.prefixes):
                self.files.add(name[len(self.root) :])

    def install(self) -> None:
        sys.setprofile(self)
        threading.setprofile(self)  # threads started from now on: the app's portal, its worker threads

    def measure(self, walk: Callable[[], object]) -> list[str]:
        self.active = True
        try:
            walk()
        finally:
            self.active = False
        return sorted(self.files)


def build_world(folder: Path) -> dict[str, str]:
    """The serving world (ranker + retriever bundle, sqlite store) and an MFCC content bundle for the embedder."""
    import numpy as np

    from benchmarks.serving_world import build_world as build_serving_world
    from encore.artifacts import BundleBuilder
    from encore.audio import Codebooks, MfccEncoder
    from encore.audio.content import ContentComponent
    from encore.store import StoreSettings

    settings = StoreSettings(folder / "feast", "walks", "sqlite")
    world = build_serving_world(folder / "world", 2000, settings, n_users=200)
    encoder = MfccEncoder()
    rate, seconds = 22_050, 3.0
    t = np.arange(int(rate * seconds)) / rate
    clips = [0.3 * np.sin(2 * np.pi * f * t * (1 + 0.1 * np.sin(b * t))) for f in (110, 220, 440, 880) for b in (1, 3)]
    layers = np.stack([encoder.encode(c.astype(np.float32)) for c in clips])
    with BundleBuilder(folder / "content-artifacts", "content-1") as builder:
        books = Codebooks.fit(layers, encoder_info=encoder.describe(), k=4, seed=0)
        ContentComponent(books, encoder.name).write(builder)
    content = folder / "content-artifacts"
    return {"world": str(world.artifacts_dir), "feast": str(folder / "feast"), "content": str(content)}


def settings_class(service: str, name: str) -> Any:
    """A service's settings class: encore/settings.py since issue 18's settings work, services/<name>/config.py
    before (so the same script runs the walks on either checkout)."""
    import importlib

    try:
        return getattr(importlib.import_module("encore.settings"), name)
    except ModuleNotFoundError:
        return getattr(importlib.import_module(f"services.{service}.config"), name)


def run_side(side: str, paths: dict[str, str], root: Path) -> dict[str, list[str]]:
    """Run one side of a walk in this process; returns the project files touched and loaded."""
    touched = Touched(root)
    touched.install()
    from fastapi.testclient import TestClient

    from encore.store import Store, StoreSettings

    store = Store(StoreSettings(Path(paths["feast"]), "walks", "sqlite"))
    nowhere = "http://127.0.0.1:9"  # the other side runs in its own process; its answer does not change the files
    if side == "ranker":
        from services.ranker.main import create_app

        RankerSettings = settings_class("ranker", "RankerSettings")  # noqa: N806

        app = create_app(RankerSettings(artifacts_dir=paths["world"], retriever_url=nowhere, api_key="k"), store)
        with TestClient(app) as client:
            assert client.get("/recommend", params={"user_id": "u2", "k": 10}).status_code == 200  # warm-up
            files = touched.measure(lambda: client.get("/recommend", params={"user_id": "u1", "k": 10}))
    elif side in ("retriever-recommend", "retriever-embed"):
        from services.retriever.main import create_app

        RetrieverSettings = settings_class("retriever", "RetrieverSettings")  # noqa: N806

        app = create_app(RetrieverSettings(artifacts_dir=paths["world"], api_key="k", retriever_refresh_s=0), store)
        with TestClient(app) as client:
            time.sleep(3)  # the start-up pick-up of new store tracks runs in a thread: let it finish first
            if side == "retriever-recommend":
                assert client.get("/candidates", params={"user_id": "u2", "k": 100}).status_code == 200
                files = touched.measure(lambda: client.get("/candidates", params={"user_id": "u1", "k": 100}))
            else:  # the embedder's notice: a vector of the world's content length, from the world's encoder
                body = {"embedding": [0.0] * 64, "encoder": "mfcc", "encoder_revision": "bench"}
                client.post("/items", json={"track_id": "walk-0", **body}, headers={"X-API-Key": "k"})
                post = lambda: client.post("/items", json={"track_id": "walk-1", **body}, headers={"X-API-Key": "k"})  # noqa: E731
                files = touched.measure(post)
    elif side == "embedder":
        import numpy as np
        import soundfile as sf

        from services.embedder.main import create_app

        EmbedderSettings = settings_class("embedder", "EmbedderSettings")  # noqa: N806

        settings = EmbedderSettings(artifacts_dir=paths["content"], api_key="k", retriever_url=nowhere, encoder="mfcc")
        buf = io.BytesIO()
        t = np.arange(3 * 22_050) / 22_050
        sf.write(buf, (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 22_050, format="WAV")
        with TestClient(create_app(settings, store=store)) as client:

            def embed(track_id: str) -> None:
                form = {"file": ("walk.wav", buf.getvalue())}
                answer = client.post("/embed", files=form, data={"track_id": track_id}, headers={"X-API-Key": "k"})
                assert answer.status_code == 200, answer.text

            embed(f"walk:{os.getpid()}:0")  # new ids on every run: the store keeps what earlier runs wrote
            files = touched.measure(lambda: embed(f"walk:{os.getpid()}:1"))
    elif side == "benchmark":
        from training.run_benchmark import main

        with tempfile.TemporaryDirectory() as out:
            args = ["--dataset", "frappe", "--models", "DCNv2", "--seeds", "2021", "--epochs", "1", "--out", out]
            args += ["--data-root", paths["data_root"], "--no-progress", "--threads", "1"]

            def run() -> None:
                if main(args) != 0:
                    raise SystemExit("the benchmark run failed")

            files = touched.measure(run)
    else:
        raise SystemExit(f"unknown side {side}")
    return {"touched": files, "loaded": project_modules(root)}


WALKS = {
    "recommend": ("ranker", "retriever-recommend"),
    "embed": ("embedder", "retriever-embed"),
    "benchmark": ("benchmark",),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--code", type=Path, default=HERE, help="the checkout whose code runs the walks")
    parser.add_argument("--work", type=Path, default=None, help="folder for the world (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file the counts and file lists go into")
    parser.add_argument("--label", default="after", help="key of this run in --out (other keys are kept)")
    parser.add_argument("--table", type=Path, default=None, help="print the markdown table of a --out file")
    parser.add_argument("--walks", default=",".join(WALKS), help="comma list of walks to run (default: all)")
    parser.add_argument("--data-root", type=Path, default=HERE.parent / "shared" / "data", help="holds frappe/")
    parser.add_argument("--side", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--paths", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return 0
    if args.side:  # a child: run one side with --code on sys.path
        print(json.dumps(run_side(args.side, json.loads(args.paths), args.code.resolve())))
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="encore-walks-"))
    paths_file = work / "paths.json"
    if not paths_file.exists():
        paths_file.write_text(json.dumps(build_world(work)))
    paths = json.dumps({**json.loads(paths_file.read_text()), "data_root": str(args.data_root)})
    result: dict[str, dict] = {}
    for walk in args.walks.split(","):
        sides = WALKS[walk]
        result[walk] = {}
        for side in sides:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(args.code.resolve()), str(HERE)])}
            cmd = [sys.executable, __file__, "--code", str(args.code), "--side", side, "--paths", paths]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=args.code)
            if done.returncode != 0:
                raise SystemExit(f"{walk}/{side} failed:\n{done.stderr[-3000:]}")
            files = json.loads(done.stdout.strip().splitlines()[-1])
            result[walk][side] = {"touched": len(files["touched"]), "loaded": len(files["loaded"]), "files": files}
        counts = [f"{side} {result[walk][side]['touched']} ({result[walk][side]['loaded']})" for side in sides]
        print(f"{walk}: touched (loaded): {' + '.join(counts)}", flush=True)
    if args.out:
        runs = json.loads(args.out.read_text()) if args.out.exists() else {}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        runs[args.label] = {**runs.get(args.label, {}), **result}
        args.out.write_text(json.dumps(runs, indent=1) + "\n")
    return 0


def table(runs: dict[str, dict]) -> str:
    """Markdown: one row per walk, touched (loaded) files per side for every run in the file."""
    labels = list(runs)
    lines = ["| walk | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for walk, sides in WALKS.items():
        cells = []
        for label in labels:
            run = runs[label][walk]
            cells.append(" + ".join(f"{run[side]['touched']} ({run[side]['loaded']})" for side in sides))
        lines.append(f"| {walk} ({' + '.join(sides)}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
