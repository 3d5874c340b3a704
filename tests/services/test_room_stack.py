"""The demo stack driven from outside over HTTP: logs in files (a fault leaves a line), /docs with no CDN, the
ranker's /readyz counting the uploads it serves, and the listening room's routes (page, audio, delete)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from services.stack import SERVICES
from tests.stack_world import API_KEY, needs_query_encoder, running_stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]  # the first one builds the quick world


@pytest.fixture(scope="module")
def stack(booted_world, tmp_path_factory):
    with running_stack(booted_world, tmp_path_factory.mktemp("logs")) as running:
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


def test_readyz_counts_an_upload_once_the_ranker_serves_it(stack, booted_world) -> None:
    ranker = stack.url("ranker")
    before = httpx.get(f"{ranker}/readyz", timeout=10).json()["tracks_in_table"]
    with a_rendered_track(booted_world).open("rb") as audio:
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


def upload(stack, path: Path, track_id: str) -> dict:
    with path.open("rb") as audio:
        answer = httpx.post(
            f"{stack.url('embedder')}/embed",
            headers={"X-API-Key": API_KEY},
            files={"file": (path.name, audio, "audio/flac")},
            data={"track_id": track_id},
            timeout=120,
        )
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_the_page_and_its_read_routes_are_served_by_the_ranker(stack) -> None:
    ranker = stack.url("ranker")
    page = httpx.get(f"{ranker}/", timeout=10)
    assert page.status_code == 200 and "listening room" in page.text
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
        assert httpx.get(f"{ranker}{asset}", timeout=10).status_code == 200, asset
    assert "http" not in "".join(re.findall(r'(?:src|href)="([^"]+)"', page.text))  # nothing from elsewhere
    config = httpx.get(f"{ranker}/ui/config", timeout=10).json()
    assert config["embedder_url"] == stack.url("embedder")
    users = httpx.get(f"{ranker}/ui/users", timeout=10).json()["users"]
    assert users[:3] == ["0", "1", "2"]
    history = httpx.get(f"{ranker}/ui/history", params={"user_id": "0"}, timeout=10).json()
    assert history["known_user"] and history["tracks"] and all(t["genre"] for t in history["tracks"])
    recommended = {i["track_id"] for i in httpx.get(f"{ranker}/recommend?user_id=0&k=50", timeout=10).json()["items"]}
    assert not recommended & {t["track_id"] for t in history["tracks"]}  # what was played is not offered again
    unknown = httpx.get(f"{ranker}/ui/history", params={"user_id": "somebody-new"}, timeout=10).json()
    assert unknown == {"user_id": "somebody-new", "known_user": False, "tracks": []}


def test_the_embedder_lets_the_page_origin_in_and_no_other(stack) -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"}
    ok = httpx.options(f"{stack.url('embedder')}/embed", headers={"Origin": stack.url("ranker"), **preflight})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == stack.url("ranker")
    other = httpx.options(f"{stack.url('embedder')}/embed", headers={"Origin": "http://elsewhere.example", **preflight})
    assert "access-control-allow-origin" not in other.headers
    refused = httpx.post(f"{stack.url('embedder')}/embed", headers={"Origin": stack.url("ranker")})
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == stack.url("ranker")


def test_uploaded_audio_plays_by_key_or_signed_link_with_ranges(stack, booted_world) -> None:
    embedder, source = stack.url("embedder"), a_rendered_track(booted_world)
    upload(stack, source, "listen-upload")
    data = source.read_bytes()
    assert httpx.get(f"{embedder}/tracks/listen-upload/audio").status_code == 401  # not public
    by_key = httpx.get(f"{embedder}/tracks/listen-upload/audio", headers={"X-API-Key": API_KEY})
    assert by_key.status_code == 200 and by_key.content == data and by_key.headers["content-type"] == "audio/flac"
    link = httpx.post(f"{embedder}/tracks/listen-upload/audio-link", headers={"X-API-Key": API_KEY}).json()
    part = httpx.get(f"{embedder}{link['url']}", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    assert httpx.get(f"{embedder}{link['url']}".replace("listen-upload", "other")).status_code == 401
    forged = link["url"].replace(f"expires={link['expires']}", f"expires={link['expires'] + 3600}")
    assert httpx.get(f"{embedder}{forged}").status_code == 401  # a longer life needs a new signature
    beyond = httpx.get(f"{embedder}{link['url']}", headers={"Range": f"bytes={len(data) + 10}-"})
    assert beyond.status_code == 416 and beyond.json()["detail"]["code"] == "range_not_satisfiable"
    catalog = httpx.get(f"{embedder}/tracks/{source.stem.lstrip('0') or '0'}/audio", headers={"X-API-Key": API_KEY})
    assert catalog.status_code == 200 and catalog.content == data  # a catalog track plays its rendered file


def test_delete_removes_the_rows_the_audio_and_the_retriever_entry(stack, booted_world) -> None:
    embedder, retriever = stack.url("embedder"), stack.url("retriever")
    upload(stack, a_rendered_track(booted_world), "doomed-upload")
    assert httpx.get(f"{retriever}/items/doomed-upload/similar").status_code == 200
    key = {"X-API-Key": API_KEY}
    assert httpx.delete(f"{embedder}/tracks/doomed-upload").status_code == 401
    gone = httpx.delete(f"{embedder}/tracks/doomed-upload", headers=key, timeout=60)
    assert gone.json() == {"track_id": "doomed-upload", "store_rows": True, "audio": True, "retriever": "removed"}
    assert httpx.get(f"{embedder}/tracks/doomed-upload").status_code == 404
    assert httpx.get(f"{embedder}/tracks/doomed-upload/audio", headers=key).status_code == 404
    assert httpx.get(f"{retriever}/items/doomed-upload/similar").status_code == 404
    for user in map(str, range(20)):
        found = httpx.get(f"{retriever}/candidates?user_id={user}&k=100").json()["candidates"]
        assert "doomed-upload" not in {c["track_id"] for c in found}
    assert httpx.delete(f"{embedder}/tracks/doomed-upload", headers=key).status_code == 404
    catalog = httpx.delete(f"{embedder}/tracks/0", headers=key)
    assert catalog.status_code == 409 and catalog.json()["detail"]["code"] == "in_bundle"
    assert httpx.get(f"{embedder}/tracks/0").status_code == 200  # refused whole: nothing removed


STEERED = {"classical", "strings"}


def steered_share(ranker: str, users: list[str], q: str | None) -> float:
    """Share of the answers' tracks whose top MTT tags include classical or strings."""
    hits = total = 0
    for user in users:
        params = {"user_id": user, "k": 10} | ({"q": q} if q else {})
        answer = httpx.get(f"{ranker}/recommend", params=params, timeout=30)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["query"] == q
        assert all((item["query_match"] is None) == (q is None) for item in body["items"] if item["tags"])
        hits += sum(bool(STEERED & set(item["tags"])) for item in body["items"])
        total += len(body["items"])
    return hits / total


@needs_query_encoder
def test_a_free_text_query_steers_lists_towards_its_tags(stack) -> None:
    ranker = stack.url("ranker")
    users = [str(u) for u in range(20)]
    plain, steered = steered_share(ranker, users, None), steered_share(ranker, users, "classical strings")
    new_plain, new_steered = (steered_share(ranker, ["nobody-yet"], q) for q in (None, "classical strings"))
    print(f"classical/strings share: known {plain:.2f} -> {steered:.2f}, unknown {new_plain:.2f} -> {new_steered:.2f}")
    assert steered >= plain + 0.15, (plain, steered)
    assert new_steered > new_plain, (new_plain, new_steered)
    blank = httpx.get(f"{ranker}/recommend", params={"user_id": "0", "q": "  "}, timeout=10)
    assert blank.status_code == 422 and blank.json()["detail"]["code"] == "invalid_request"


def test_a_store_stopped_under_requests_leaves_lines_in_the_logs(stack, booted_world) -> None:
    """Last in this module: it takes the world's Redis away, then gives it back from its last save."""
    for service in SERVICES:
        assert stack.log_path(service.name).is_file()
    booted_world.redis.stop()
    try:
        answer = httpx.get(f"{stack.url('ranker')}/recommend?user_id=never-seen-user&k=5", timeout=60)
        assert answer.status_code == 200 and answer.json()["degraded"], answer.text
        with a_rendered_track(booted_world).open("rb") as audio:
            refused = httpx.post(
                f"{stack.url('embedder')}/embed",
                headers={"X-API-Key": API_KEY},
                files={"file": ("clip.flac", audio, "audio/flac")},
                timeout=120,
            )
        assert refused.status_code == 503, refused.text
    finally:
        booted_world.redis.start()
    ranker_log = stack.log_path("ranker").read_text()
    embedder_log = stack.log_path("embedder").read_text()
    assert re.search(r"WARNING .*store unavailable", ranker_log), ranker_log[-2000:]
    assert re.search(r"WARNING .*POST /embed answered 503 store_unavailable", embedder_log), embedder_log[-2000:]
