"""Upload size limits, enforced while the body streams in, before a whole oversized file is held anywhere.

Two layers: `UploadLimitMiddleware` caps the raw request body of POST /embed (refusing at once on a
Content-Length above the cap, and cutting a chunked stream off as it passes the cap), and `read_upload`
reads the parsed file part in chunks and stops at the exact file limit. The middleware also checks the API
key from the headers before one byte of the body is read: FastAPI parses a form before it runs a route's
dependencies, so the route's own key check alone would let anyone make the server buffer and parse uploads.
"""

from __future__ import annotations

from fastapi import UploadFile
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.auth import API_KEY_HEADER, api_key_problem
from services.embedder.encode import EmbedError

READ_CHUNK = 1 << 20


def too_large_message(limit_bytes: int) -> str:
    return f"the upload is larger than the limit of {limit_bytes / 2**20:.2f} MiB (ENCORE_MAX_UPLOAD_MB)"


def _too_large_response(limit_bytes: int) -> JSONResponse:
    return JSONResponse({"detail": {"code": "too_large", "message": too_large_message(limit_bytes)}}, 413)


class UploadLimitMiddleware:
    """Cap the body of POST `path` at `max_body_bytes` (the file limit plus multipart overhead).

    A body over the cap is never read past it: the app sees a client disconnect (so form parsing stops)
    and whatever it answers is replaced by a 413.
    """

    def __init__(
        self, app: ASGIApp, *, path: str, max_body_bytes: int, file_limit_bytes: int, api_key: str | None = None
    ) -> None:
        self.app = app
        self.path = path
        self.max_body_bytes = max_body_bytes
        self.file_limit_bytes = file_limit_bytes
        self.api_key = api_key  # None: the route checks the key itself (and only after parsing the body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if self.api_key is not None:
            problem = api_key_problem(headers.get(API_KEY_HEADER), self.api_key)
            if problem is not None:
                status, message = problem
                code = "unauthorized" if status == 401 else "forbidden"
                await JSONResponse({"detail": {"code": code, "message": message}}, status)(scope, receive, send)
                return
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await _too_large_response(self.file_limit_bytes)(scope, receive, send)
            return

        received, over, answered = 0, False, False

        async def limited_receive() -> Message:
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal answered
            if not over:
                await send(message)
            elif not answered:  # swap the app's answer to the cut-off body for the 413
                answered = True
                await _too_large_response(self.file_limit_bytes)(scope, receive, send)

        await self.app(scope, limited_receive, guarded_send)
        if over and not answered:
            await _too_large_response(self.file_limit_bytes)(scope, receive, send)


async def read_upload(file: UploadFile, limit_bytes: int) -> bytes:
    """The file's bytes, read in chunks; EmbedError too_large as soon as they pass `limit_bytes`."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await file.read(READ_CHUNK):
        size += len(chunk)
        if size > limit_bytes:
            raise EmbedError("too_large", too_large_message(limit_bytes))
        chunks.append(chunk)
    return b"".join(chunks)
