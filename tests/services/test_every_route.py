"""The three services share one skeleton (issue 18 item 4): every route of every service, read from each app's
route table, refuses bad input, a missing key and a wrong method in the one shape {"detail": {"code", "message"}};
the routes that need the key are the ones the guard checks before the body; a refused reload is the same answer.

The apps are the real ones (lifespans run) over a real, empty feature store and an empty artifacts folder: each
starts without a bundle, as after a first deploy, so their not-ready answers are walked too.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute

from encore.settings import EmbedderSettings, RankerSettings, RetrieverSettings
from encore.store import Store, StoreSettings
from services.common.auth import API_KEY_HEADER
from services.common.middleware import RequestGuard
from services.embedder.main import create_app as create_embedder
from services.ranker.main import create_app as create_ranker
from services.retriever.main import create_app as create_retriever
from tests.services.error_shape import assert_error_shape, walk_routes

API_KEY = "every-route-key"
AUTH = {API_KEY_HEADER: API_KEY}
SERVICES = ("ranker", "retriever", "embedder")
DOC_ROUTES = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}  # FastAPI's own pages
STATIC_MOUNTS = {"/static", "/docs-assets"}  # the page's files and Swagger UI's, served from the repository
PAGE_ROUTES = DOC_ROUTES | {"/"}  # HTML pages (the listening room, offline /docs), outside the API's schema
# The key or a signed link (services/embedder/listen.py): the route checks which, so the guard cannot.
KEY_OR_SIGNED_LINK = {("GET", "/tracks/{track_id}/audio")}


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, TestClient]]:
    root = tmp_path_factory.mktemp("every-route")
    store = Store(StoreSettings(root / "feast", f"routes_{uuid.uuid4().hex[:10]}", "sqlite"))
    store.apply()
    artifacts = root / "artifacts"  # no bundle: every service starts and is not ready
    common = {"artifacts_dir": artifacts, "api_key": API_KEY}
    apps = {
        "ranker": create_ranker(RankerSettings(**common, retriever_url="http://127.0.0.1:9"), store),
        "retriever": create_retriever(RetrieverSettings(**common, retriever_refresh_s=0), store),
        "embedder": create_embedder(EmbedderSettings(**common, retriever_url="", encoder="mfcc"), store=store),
    }
    with ExitStack() as stack:
        yield {name: stack.enter_context(TestClient(app)) for name, app in apps.items()}


def _operations(app: FastAPI) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, ops in app.openapi()["paths"].items() for method in ops}


def _flat_routes(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, BaseRoute]]:
    """(path prefix, route) of every route, through included routers (FastAPI >= 0.16x keeps them nested)."""
    for route in routes:
        nested = getattr(route, "original_router", None)
        if nested is not None:
            yield from _flat_routes(nested.routes, prefix + route.include_context.prefix)
        else:
            yield prefix, route


def _route_table(app: FastAPI) -> set[tuple[str, str]]:
    routes = [(p, r) for p, r in _flat_routes(app.routes) if isinstance(r, APIRoute)]
    pages = {p + r.path for p, r in routes if not r.include_in_schema}
    assert pages <= PAGE_ROUTES, pages - PAGE_ROUTES  # only pages may stay out of the schema (and the walk)
    return {(m, p + r.path) for p, r in routes if r.include_in_schema for m in r.methods if m != "HEAD"}


def _guarded(app: FastAPI) -> set[tuple[str, str]]:
    """The (method, path) pairs whose key RequestGuard checks before reading the body."""
    (guard,) = [m for m in app.user_middleware if m.cls is RequestGuard]
    return set(guard.kwargs["write_routes"])


@pytest.mark.parametrize("service", SERVICES)
def test_the_walk_reaches_every_route(clients: dict[str, TestClient], service: str) -> None:
    """The walk goes by the OpenAPI document: no route may be left out of it, so none escapes the walk."""
    app = clients[service].app
    assert _route_table(app) == _operations(app)
    others = {p + getattr(r, "path", "") for p, r in _flat_routes(app.routes) if not isinstance(r, APIRoute)}
    assert others <= DOC_ROUTES | STATIC_MOUNTS, others - DOC_ROUTES - STATIC_MOUNTS


@pytest.mark.parametrize("service", SERVICES)
def test_every_route_refuses_bad_input_no_key_and_wrong_methods_in_one_shape(
    clients: dict[str, TestClient], service: str
) -> None:
    client = clients[service]
    oversized = {"/embed": client.app.state.settings.max_body_bytes + 1} if service == "embedder" else None
    seen = walk_routes(client, AUTH, oversized)
    operations = {op for op, _ in seen}
    assert operations == {f"{m} {p}" for m, p in _operations(client.app)}  # every operation got bad requests
    assert all(any(status == 405 for (op, status) in seen if op == name) for name in operations)
    for method, path in _guarded(client.app):
        assert (f"{method} {path}", 401) in seen, (method, path)  # no key: refused
        assert (f"{method} {path}", 413) in seen, (method, path)  # too large: refused before parsing


@pytest.mark.parametrize("service", SERVICES)
def test_the_key_is_documented_exactly_where_the_guard_checks_it(clients: dict[str, TestClient], service: str) -> None:
    app = clients[service].app
    documented = {
        (method.upper(), path)
        for path, ops in app.openapi()["paths"].items()
        for method, op in ops.items()
        if any(p["in"] == "header" and p["name"] == API_KEY_HEADER for p in op.get("parameters", []))
    }
    assert documented == _guarded(app) | (KEY_OR_SIGNED_LINK & documented) and documented
    for method, path in documented:  # a wrong key as well as none
        concrete = re.sub(r"\{[^/]+\}", "t1", path)  # a valid id, so the key is what gets refused
        response = clients[service].request(method, concrete, json={}, headers={API_KEY_HEADER: "wrong"})
        assert_error_shape(response, 401)
        assert response.json()["detail"]["code"] == "unauthorized"


def test_not_ready_is_one_answer_everywhere(clients: dict[str, TestClient]) -> None:
    for service, client in clients.items():
        response = client.get("/readyz")
        assert_error_shape(response, 503)
        detail = response.json()["detail"]
        assert detail["code"] == "not_ready" and detail["service"] == service and detail["ready"] is False
        assert client.get("/healthz").json() == {"status": "ok", "service": service}


def test_a_refused_reload_is_the_same_answer_in_all_three(clients: dict[str, TestClient]) -> None:
    answers = {}
    for service, client in clients.items():
        response = client.post("/admin/reload", json={"bundle_id": "no-such-bundle"}, headers=AUTH)
        assert_error_shape(response, 422)
        detail = response.json()["detail"]
        answers[service] = (response.status_code, detail["code"], detail.get("serving_bundle_id"))
        assert "no-such-bundle" in detail["message"] and str(Path.cwd()) not in detail["message"]
    assert set(answers.values()) == {(422, "bundle_refused", None)}, answers
