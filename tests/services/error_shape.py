"""Walk every operation of a service's OpenAPI and check each refusal has the one error shape (issue 18 item 4).

For every operation: a bad request (every query and path parameter a 10 kB hostile string, a JSON body of the
wrong type), the wrong method, and for key-guarded operations no key and an oversized body. Every answer must
be {"detail": {"code", "message"}}, echo no more than a short prefix of the input, and name no host path.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from urllib.parse import quote

from fastapi.testclient import TestClient
from httpx import Response

from services.common.auth import API_KEY_HEADER

HOSTILE = "\u202e<script>\x00\r\n" + "x" * 10_000
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
OVERSIZED = 2 * 2**20  # bytes, over the 1 MiB default body cap


def assert_error_shape(response: Response, status: int | None = None) -> None:
    where = f"{response.request.method} {response.request.url.path[:60]}"
    assert 400 <= response.status_code < 600, (where, response.status_code, response.text[:200])
    if status is not None:
        assert response.status_code == status, (where, response.text[:300])
    body = response.json()
    assert set(body) == {"detail"} and {"code", "message"} <= set(body["detail"]), (where, body)
    assert isinstance(body["detail"]["code"], str) and isinstance(body["detail"]["message"], str)
    assert "x" * 64 not in response.text, f"{where}: the error echoes the input"
    assert "/tmp/" not in response.text and "Traceback" not in response.text


def walk_routes(
    client: TestClient, key: dict[str, str], oversized: Mapping[str, int] | None = None
) -> Counter[tuple[str, int]]:
    """Send the bad requests to every operation of `client.app`'s OpenAPI; returns (operation, status) counts.

    `oversized`: body sizes over the cap of routes with their own (larger) cap, by path."""
    seen: Counter[tuple[str, int]] = Counter()
    for template, operations in client.app.openapi()["paths"].items():
        for method, operation in operations.items():
            method = method.upper()
            label = f"{method} {template}"
            size = (oversized or {}).get(template, OVERSIZED)
            for response in _bad_requests(client, template, method, operation, key, set(operations), size):
                assert_error_shape(response)
                seen[(label, response.status_code)] += 1
    assert_error_shape(client.get("/no-such-route", params={"q": HOSTILE}), 404)
    return seen


def _bad_requests(
    client: TestClient, template: str, method: str, operation: dict, key: dict, allowed: set, oversized: int
):
    params = operation.get("parameters", [])
    path = template
    for param in (p for p in params if p["in"] == "path"):
        path = path.replace("{" + param["name"] + "}", quote(HOSTILE, safe=""))
    query = {p["name"]: HOSTILE for p in params if p["in"] == "query"}
    if path != template or query or "requestBody" in operation:
        yield client.request(method, path, params=query, json=[HOSTILE], headers=key)
    other = next(m for m in METHODS if m.lower() not in allowed)
    yield client.request(other, template, headers=key)
    if any(p["in"] == "header" and p["name"] == API_KEY_HEADER for p in params):
        yield client.request(method, path, json={})  # no key
        body = b"[" + b"0," * (oversized // 2) + b"0]"
        big = client.request(method, path, content=body, headers={**key, "Content-Type": "application/json"})
        assert_error_shape(big, 413)
        yield big
