"""One error model for every service: each 4xx/5xx body is {"detail": {"code", "message"}}.

`add_error_handlers` turns FastAPI's validation errors, Starlette's HTTP errors (404 unknown route, 405),
`ServiceError` and the service's own coded errors into that shape; unexpected exceptions become a 500 whose
body says nothing about their internals (the traceback goes to the log). Messages never echo more than a
short prefix of the client's input and never carry absolute paths or library messages.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from encore.errors import EncoreError

log = logging.getLogger("encore.services")

# Codes every service may answer, with their status. A service adds its own (e.g. the embedder's audio codes).
COMMON_STATUS: dict[str, int] = {
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "request_timeout": 408,
    "too_large": 413,
    "invalid_request": 422,
    "bundle_refused": 422,
    "internal": 500,
    "not_ready": 503,
    "overloaded": 503,
}
_CODE_FOR_STATUS = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found"}
_CODE_FOR_STATUS |= {405: "method_not_allowed", 408: "request_timeout", 413: "too_large", 422: "invalid_request"}
_CODE_FOR_STATUS |= {503: "not_ready"}
ECHO_CHARS = 32  # at most this much of a bad value goes back to the client
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/[^\s'\"(),;]+")


class ServiceError(EncoreError):
    """A refused request: becomes `status` with {"detail": {"code", "message"}} (plus `extra` fields)."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None, **extra: Any):
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.headers = dict(headers or {})
        self.extra = extra


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str = Field(description="Stable machine-readable error code")
    message: str = Field(description="What was wrong, for a person")
    serving_bundle_id: str | None = Field(None, description="Refused reloads only: the bundle still serving")


class ErrorResponse(BaseModel):
    detail: ErrorDetail

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"detail": {"code": "invalid_request", "message": "query.k: too large"}}]}
    )


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"detail": {"code": code, "message": message, **extra}}


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse(error_body(code, message, **extra), status_code=status, headers=dict(headers or {}))


def error_responses(*statuses: int, codes: Mapping[str, int] = COMMON_STATUS) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given statuses, each naming the codes that produce it."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        names = [code for code, s in codes.items() if s == status] or [_CODE_FOR_STATUS.get(status, "error")]
        out[status] = {"model": ErrorResponse, "description": "Error codes: " + ", ".join(names)}
    return out


def short(value: object) -> str:
    """A client value as it may be echoed: its repr, cut to ECHO_CHARS characters."""
    text = repr(value)
    return text if len(text) <= ECHO_CHARS else text[:ECHO_CHARS] + "..."


def public_message(text: str) -> str:
    """`text` with every absolute path replaced: a refusal must not map the host's files."""
    return _ABSOLUTE_PATH.sub("<path>", text)


def validation_message(errors: Sequence[Any]) -> str:
    """One line per pydantic error: where and what, never the whole input (FastAPI echoes all of it)."""
    parts = []
    for error in list(errors)[:5]:
        # a location may be a client's own field name (an unknown form field): cut like any echoed value
        where = ".".join(str(x)[:ECHO_CHARS] for x in error.get("loc", ())) or "request"
        parts.append(f"{where}: {str(error.get('msg', 'invalid'))[:200]}")
    more = len(errors) - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def bundle_refused(error: Exception, serving: str | None) -> ServiceError:
    """The one answer of every service to a refused reload: 422 bundle_refused, the old bundle still serving.

    422, not 409: the request is well-formed but names a bundle whose content cannot be used; nothing about
    the service's current state conflicts with it, and sending it again will not help. The message keeps
    Encore's own reasons (paths made relative) and drops library messages (ONNX Runtime, JSON parsers), which
    go to the log only.
    """
    log.error("bundle refused: %s; still serving %s", error, serving or "no bundle")
    cause = error.__cause__
    if cause is not None and not isinstance(cause, EncoreError):
        reason = f"a bundle file could not be loaded ({type(cause).__name__}); details are in the service log"
    else:
        reason = public_message(str(error))
    return ServiceError(422, "bundle_refused", f"bundle refused: {reason}", serving_bundle_id=serving)


OnError = Callable[[Request, str], None]


def add_error_handlers(
    app: FastAPI, coded: Mapping[type[Exception], Mapping[str, int]] | None = None, on_error: OnError | None = None
) -> None:
    """Answer every error in the one shape. `coded`: exception types with `.code`/`.message` and their
    code -> status table; `on_error(request, code)` is told of every error answered (e.g. for metrics)."""

    def answer(request: Request, status: int, code: str, message: str, **kw: Any) -> JSONResponse:
        if status >= 500 and code != "internal":  # a fault on our side (internal logs its traceback below)
            log.warning("%s %s answered %d %s: %s", request.method, request.url.path, status, code, message)
        if on_error is not None:
            on_error(request, code)
        return error_response(status, code, message, **kw)

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return answer(request, exc.status, exc.code, exc.message, headers=exc.headers, **exc.extra)

    for exc_type, table in (coded or {}).items():

        async def coded_error(request: Request, exc: Any, table: Mapping[str, int] = table) -> JSONResponse:
            return answer(request, table.get(exc.code, 400), exc.code, public_message(exc.message))

        app.add_exception_handler(exc_type, coded_error)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return answer(request, 422, "invalid_request", validation_message(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODE_FOR_STATUS.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return answer(request, exc.status_code, code, message, headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return answer(request, 500, "internal", "internal error; details are in the service log")
