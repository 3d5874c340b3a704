"""The commands a newcomer is shown work as written, against a running stack of the demo world, with no
../shared: the README's "What to try" block, docs/api.md's examples and every curl line `make run` prints.

Each block runs as one bash script whose `curl` fails on any HTTP error (--fail-with-body), with the
documented ports swapped for the test stack's, in a folder laid out like the project after `make run`
(data/synthetic/..., artifacts/CURRENT).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import pytest

from services.stack import curl_examples, example_audio
from tests.stack_world import API_KEY, running_stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]  # the first one builds the quick world

ROOT = Path(__file__).resolve().parents[1]
PRELUDE = 'set -euo pipefail\ncurl() { command curl --fail-with-body -sS "$@"; echo; }\n'


@pytest.fixture(scope="module")
def stack(booted_world, tmp_path_factory):
    with running_stack(booted_world, tmp_path_factory.mktemp("readme_logs")) as running:
        yield running


def bash_blocks(markdown: Path, after_heading: str | None = None) -> list[str]:
    text = markdown.read_text()
    if after_heading:
        text = text.split(after_heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def run(script: str, stack, cwd: Path) -> str:
    for port, name in ((8000, "ranker"), (8001, "retriever"), (8002, "embedder")):
        script = script.replace(f"http://127.0.0.1:{port}", stack.url(name))
    script = script.replace("encore-dev-key", API_KEY)
    done = subprocess.run(["bash", "-c", PRELUDE + script], cwd=cwd, capture_output=True, text=True, timeout=600)
    report = f"rc {done.returncode}\n{script}\n--- out\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}"
    assert done.returncode == 0, report
    return done.stdout


def forget(stack, track_id: str) -> None:
    httpx.delete(f"{stack.url('embedder')}/tracks/{track_id}", headers={"X-API-Key": API_KEY}, timeout=60)


def test_the_api_doc_examples_run_as_written(stack, booted_world) -> None:
    (block,) = bash_blocks(ROOT / "docs" / "api.md")
    out = run(block, stack, booted_world.base)
    assert '"bundle_id":"' + booted_world.bundle_id in out.replace(" ", "")  # the reload by name took CURRENT
    assert '"status":"added"' in out  # the hand-made /items call
    assert "206" in out  # the ranged audio request


def test_the_readme_what_to_try_block_runs_as_written(stack, booted_world) -> None:
    (block,) = bash_blocks(ROOT / "README.md", "## What to try")
    forget(stack, "my-upload")
    out = run(block, stack, booted_world.base)
    assert '"candidate_source":"popularity"' in out and '"degraded":false' in out  # the unknown user
    assert '"track_id":"my-upload"' in out and '"ready":true' in out


def test_the_quick_start_names_the_two_commands_make_has() -> None:
    (block,) = bash_blocks(ROOT / "README.md", "## Quick start")
    targets = re.findall(r"^make (\w+)", block, flags=re.M)
    assert targets == ["run", "test"]
    makefile = (ROOT / "Makefile").read_text()
    assert all(re.search(rf"^{t}:", makefile, flags=re.M) for t in targets)
    assert "services.stack" in makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]


def test_every_example_make_run_prints_works_in_a_fresh_clone(stack, booted_world, monkeypatch) -> None:
    monkeypatch.setenv("ENCORE_CACHE_DIR", str(booted_world.base / "data"))
    monkeypatch.setenv("ENCORE_DATASETS_DIR", str(booted_world.base / "no-shared"))  # a fresh clone has no ../shared
    audio = example_audio()
    assert audio.is_file() and audio.suffix == ".flac"  # a rendered demo track, as a fresh clone has
    printed = curl_examples(stack, str(audio), "0")
    lines = [line.strip().split("   #")[0] for line in printed.splitlines() if line.strip().startswith("curl ")]
    assert len(lines) >= 5
    forget(stack, "my-upload")
    out = run("export ENCORE_API_KEY=encore-dev-key\n" + "\n".join(lines), stack, booted_world.base)
    assert '"track_id":"my-upload"' in out and '"user_id":"0"' in out
