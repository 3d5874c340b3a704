"""schemathesis over a service's own OpenAPI schema: generated requests for every operation, sent to the real
app (lifespan run, real bundle and store) through a TestClient; no 5xx and every response must fit the schema.

Bounded (derandomized, a few dozen examples per operation) so each service's run stays within seconds.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


def fuzz_app(client: TestClient, *, headers: dict[str, str] | None = None, max_examples: int = 25) -> dict[str, int]:
    """Run every operation of `client.app`'s schema; returns examples sent per operation (raises on a failure)."""
    schema = schemathesis.openapi.from_dict(client.app.openapi())
    sent: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        sent[label] = 0
        _runner(client, operation, label, sent, headers, max_examples)()
    return sent


def _runner(client: TestClient, operation: Any, label: str, sent: dict[str, int], headers: Any, max_examples: int):
    @settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        kwargs = case.as_transport_kwargs(base_url=str(client.base_url), headers=headers)
        if not kwargs.get("cookies"):
            kwargs.pop("cookies", None)
        if isinstance(kwargs.get("data"), bytes | str):  # httpx takes raw bodies as content=
            kwargs["content"] = kwargs.pop("data")
        if kwargs.get("files"):  # requests-style parts; httpx wants bytes/str payloads (form numbers as text)
            kwargs["files"] = [(name, _part(part)) for name, part in kwargs["files"]]
        response = client.request(**kwargs)
        response.request.read()  # multipart bodies stream; the checks read the request back for their report
        sent[label] += 1
        case.validate_response(response, checks=CHECKS)

    return run


def _part(part: Any) -> Any:
    if isinstance(part, tuple):
        filename, value, *rest = part
        return (filename, value if isinstance(value, bytes | str) else str(value), *rest)
    return part if isinstance(part, bytes | str) else str(part)
