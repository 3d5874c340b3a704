"""A newcomer's stack, driven from outside: logs in files (a fault leaves a line), /docs with no CDN, and the
ranker's /readyz counting the uploads it serves."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from services.stack import SERVICES
from tests.stack_world import API_KEY, running_stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(quick_world, tmp_path_factory):
    with running_stack(quick_world, tmp_path_factory.mktemp("logs")) as running:
        yield running


def a_rendered_track(world) -> Path:
    return sorted((world.base / "data" / "synthetic").glob("*/audio/*.flac"))[0]


def test_docs_pages_load_their_assets_from_the_service_itself(stack) -> None:
    for service in SERVICES:
        page = httpx.get(f"{stack.url(service.name)}/docs", timeout=10)
        assert page.status_code == 200
        assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
        assert {a.rsplit("/", 1)[-1] for a in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css"}
        assert not [a for a in assets if a.startswith("http")], assets  # nothing from another host
        for asset in assets:
            got = httpx.get(f"{stack.url(service.name)}{asset}", timeout=10)
            assert got.status_code == 200 and len(got.content) > 1000, asset
        redoc = httpx.get(f"{stack.url(service.name)}/redoc", timeout=10)
        assert redoc.status_code == 200 and "cdn" not in redoc.text and "fonts.googleapis" not in redoc.text


def test_readyz_counts_an_upload_once_the_ranker_serves_it(stack, quick_world) -> None:
    ranker = stack.url("ranker")
    before = httpx.get(f"{ranker}/readyz", timeout=10).json()["tracks_in_table"]
    with a_rendered_track(quick_world).open("rb") as audio:
        files = {"file": ("clip.flac", audio, "audio/flac")}
        up = httpx.post(
            f"{stack.url('embedder')}/embed",
            headers={"X-API-Key": API_KEY},
            files=files,
            data={"track_id": "readyz-upload"},
            timeout=120,
        )
    assert up.status_code == 200, up.text
    served = [
        u
        for u in map(str, range(40))
        if "readyz-upload" in {i["track_id"] for i in httpx.get(f"{ranker}/recommend?user_id={u}&k=50").json()["items"]}
    ]
    assert served, "the upload reached no list of the first 40 users"
    assert httpx.get(f"{ranker}/readyz", timeout=10).json()["tracks_in_table"] == before + 1


def test_a_store_stopped_under_requests_leaves_lines_in_the_logs(stack, quick_world) -> None:
    """Last in this module: it takes the world's Redis away, then gives it back from its last save."""
    for service in SERVICES:
        assert stack.log_path(service.name).is_file()
    quick_world.redis.stop()
    try:
        answer = httpx.get(f"{stack.url('ranker')}/recommend?user_id=never-seen-user&k=5", timeout=60)
        assert answer.status_code == 200 and answer.json()["degraded"], answer.text
        with a_rendered_track(quick_world).open("rb") as audio:
            refused = httpx.post(
                f"{stack.url('embedder')}/embed",
                headers={"X-API-Key": API_KEY},
                files={"file": ("clip.flac", audio, "audio/flac")},
                timeout=120,
            )
        assert refused.status_code == 503, refused.text
    finally:
        quick_world.redis.start()
    ranker_log = stack.log_path("ranker").read_text()
    embedder_log = stack.log_path("embedder").read_text()
    assert re.search(r"WARNING .*store unavailable", ranker_log), ranker_log[-2000:]
    assert re.search(r"WARNING .*POST /embed answered 503 store_unavailable", embedder_log), embedder_log[-2000:]
