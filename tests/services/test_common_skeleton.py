"""services/common on its own: the skeleton (`build_skeleton`) on a small real app, the API-key check, the
request metrics and the shared input patterns."""

from __future__ import annotations

import re

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from encore.bundle_check import BUNDLE_ID
from encore.settings import ServiceSettings
from services.common.app import build_skeleton
from services.common.auth import API_KEY_HEADER, ApiKey, api_key_problem
from services.common.errors import ServiceError
from services.common.patterns import BUNDLE_ID_PATTERN, BUNDLE_ID_RE, TRACK_ID_RE
from tests.services.error_shape import assert_error_shape

KEY = "skeleton-key"


def make_app(ready: bool = True, api_key: str = KEY) -> FastAPI:
    app = FastAPI()
    router = APIRouter()

    @router.get("/items/{item_id}")
    def item(item_id: int) -> dict:
        if item_id == 0:
            raise ServiceError(404, "not_found", "no item 0")
        if item_id == 13:
            raise RuntimeError("/srv/secret/path exploded")  # an unexpected error
        return {"item_id": item_id}

    @router.post("/admin/write", dependencies=[ApiKey])
    def write(body: dict) -> dict:
        return {"written": len(body)}

    settings = ServiceSettings(api_key=api_key, max_json_mb=0.001)
    app.state.registry = build_skeleton(
        app, "demo", settings, lambda: (ready, {"bundle_id": "b1"}), write_routes={("POST", "/admin/write")}
    )
    app.include_router(router)
    return app


def samples(client: TestClient, name: str) -> dict[tuple, float]:
    families = text_string_to_metric_families(client.get("/metrics").text)
    return {tuple(sorted(s.labels.items())): s.value for f in families for s in f.samples if s.name == name}


def test_the_key_check_refuses_none_wrong_and_a_disabled_key() -> None:
    assert api_key_problem(KEY, KEY) is None
    for given in (None, "", "skeleton-kex", KEY + " "):
        problem = api_key_problem(given, KEY)
        assert problem is not None and (problem.status, problem.code) == (401, "unauthorized")
    problem = api_key_problem(KEY, "")  # no key configured: the endpoint is off for everyone
    assert problem is not None and (problem.status, problem.code) == (403, "forbidden")


def test_the_skeleton_guards_write_routes_and_answers_errors_in_one_shape() -> None:
    with TestClient(make_app(), raise_server_exceptions=False) as client:
        assert client.post("/admin/write", json={"a": 1}, headers={API_KEY_HEADER: KEY}).json() == {"written": 1}
        assert_error_shape(client.post("/admin/write", json={"a": 1}), 401)
        assert_error_shape(client.post("/admin/write", json={"a": "x" * 4000}, headers={API_KEY_HEADER: KEY}), 413)
        assert_error_shape(client.get("/items/abc"), 422)
        assert_error_shape(client.get("/items/0"), 404)
        internal = client.get("/items/13")
        assert_error_shape(internal, 500)
        assert "/srv" not in internal.text and internal.json()["detail"]["code"] == "internal"
        assert_error_shape(client.delete("/items/1"), 405)
    with TestClient(make_app(api_key="")) as client:
        assert_error_shape(client.post("/admin/write", json={}, headers={API_KEY_HEADER: ""}), 403)


def test_health_and_readiness() -> None:
    with TestClient(make_app(ready=True)) as client:
        assert client.get("/healthz").json() == {"status": "ok", "service": "demo"}
        assert client.get("/readyz").json() == {"ready": True, "service": "demo", "bundle_id": "b1"}
    with TestClient(make_app(ready=False)) as client:
        response = client.get("/readyz")
        assert_error_shape(response, 503)
        assert response.json()["detail"] | {"message": ""} == {
            "code": "not_ready",
            "message": "",
            "ready": False,
            "service": "demo",
            "bundle_id": "b1",
        }


def test_requests_are_counted_by_route_template_and_status() -> None:
    with TestClient(make_app()) as client:
        for item_id in (1, 2, 3, 0):
            client.get(f"/items/{item_id}")
        client.post("/admin/write", json={})  # refused by the guard, still counted
        counts = samples(client, "encore_http_requests_total")
    route = ("route", "/items/{item_id}")
    assert counts[(("method", "GET"), route, ("service", "demo"), ("status", "200"))] == 3  # one series, not 3 ids
    assert counts[(("method", "GET"), route, ("service", "demo"), ("status", "404"))] == 1
    assert not any(dict(labels)["route"] == "/items/1" for labels in counts)
    refused = [labels for labels in counts if dict(labels)["status"] == "401"]
    assert len(refused) == 1 and counts[refused[0]] == 1


@pytest.mark.parametrize("good", ["a", "demo-001", "x.y_z", "A" * 128])
def test_the_bundle_id_rule_is_encore_artifacts_own(good: str) -> None:
    assert BUNDLE_ID_RE is BUNDLE_ID and BUNDLE_ID_PATTERN == BUNDLE_ID.pattern  # one definition
    assert BUNDLE_ID_RE.fullmatch(good) and re.fullmatch(BUNDLE_ID_PATTERN, good)


# Checked with fullmatch in Python ("ab\n" passes re.match with "$"); pydantic's engine reads "$" as the end.
@pytest.mark.parametrize("bad", ["", "../up", ".hidden", "a/b", "a" * 129, "a:b", "a\nb", "ab\n", "\u202eab"])
def test_bad_bundle_ids_never_match(bad: str) -> None:
    assert not BUNDLE_ID_RE.fullmatch(bad)


def test_track_ids_allow_namespaces_but_nothing_path_or_markup_like() -> None:
    assert TRACK_ID_RE.fullmatch("upload:8f3a9c") and TRACK_ID_RE.fullmatch("t.1_2-3")
    for bad in ("", " x", "a b", "a/b", "<script>", "nul\x00", "crlf\r\n", "lf\n", "rtl\u202e", "x" * 129):
        assert not TRACK_ID_RE.fullmatch(bad), bad
