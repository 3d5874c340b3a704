"""services/common's RequestGuard on a small real ASGI app: the key before any body byte, body caps before
parsing (declared and streamed), and the in-flight caps with 503 + Retry-After."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI, Request

from services.common.errors import add_error_handlers
from services.common.middleware import BodyLimit, RequestGuard, json_limit

KEY = "k3y"


def make_app(gate: asyncio.Event | None = None) -> FastAPI:
    app = FastAPI()
    add_error_handlers(app)

    @app.post("/write")
    async def write(request: Request) -> dict:
        body = await request.body()
        if gate is not None:
            await gate.wait()
        return {"bytes": len(body)}

    app.add_middleware(
        RequestGuard,
        api_key=KEY,
        write_routes={("POST", "/write")},
        default_limit=json_limit(1000),
        route_limits={"/upload": BodyLimit(5000, "too big for uploads", max_in_flight=1)},
        max_in_flight=2,
    )
    return app


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def test_key_is_checked_before_any_body_byte_is_read() -> None:
    pulled: list[int] = []

    async def body():
        for i in range(100):
            pulled.append(i)
            yield b"x" * 10_000

    async def run() -> httpx.Response:
        async with client(make_app()) as c:
            return await c.post("/write", content=body())

    response = asyncio.run(run())
    assert response.status_code == 401 and response.json()["detail"]["code"] == "unauthorized"
    assert response.headers["connection"] == "close"
    assert len(pulled) <= 1  # httpx may pull the first chunk to start the request; the app never reads


@pytest.mark.parametrize("streamed", [False, True])
def test_a_body_over_the_cap_is_413_declared_or_streamed(streamed: bool) -> None:
    pulled: list[int] = []

    async def body():
        for i in range(100):
            pulled.append(i)
            yield b"x" * 300

    async def run() -> httpx.Response:
        async with client(make_app()) as c:
            content = body() if streamed else b"x" * 30_000
            return await c.post("/write", content=content, headers={"X-API-Key": KEY})

    response = asyncio.run(run())
    assert response.status_code == 413 and response.json()["detail"]["code"] == "too_large"
    assert "ENCORE_MAX_JSON_MB" in response.json()["detail"]["message"]
    assert len(pulled) <= 5 if streamed else not pulled  # cut off just past 1000 bytes


def test_a_body_under_the_cap_reaches_the_route() -> None:
    async def run() -> httpx.Response:
        async with client(make_app()) as c:
            return await c.post("/write", content=b"x" * 999, headers={"X-API-Key": KEY})

    assert asyncio.run(run()).json() == {"bytes": 999}


def test_requests_beyond_the_in_flight_cap_get_503_with_retry_after() -> None:
    gate = asyncio.Event()

    async def run() -> list[httpx.Response]:
        app = make_app(gate)
        async with client(app) as c:
            held = [asyncio.create_task(c.post("/write", content=b"{}", headers={"X-API-Key": KEY})) for _ in range(2)]
            await asyncio.sleep(0.2)  # both are inside the route, waiting on the gate
            refused = await c.post("/write", content=b"{}", headers={"X-API-Key": KEY})
            gate.set()
            return [refused, *await asyncio.gather(*held)]

    refused, *held = asyncio.run(run())
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["detail"]["code"] == "overloaded"
    assert [r.status_code for r in held] == [200, 200]
