"""Upload size limits, enforced while the body streams in, before a whole oversized file is held anywhere.

Two layers: the shared `RequestGuard` (services/common/limits.py) checks the key from the headers, caps
uploads in flight and caps the raw body of POST /embed at the file limit plus multipart overhead (413 at
once on a larger Content-Length, a chunked stream cut off as it passes the cap); `read_upload` reads the
parsed file part in chunks and stops at the exact file limit.
"""

from __future__ import annotations

from fastapi import UploadFile

from encore.settings import EmbedderSettings
from services.common.limits import BodyLimit
from services.embedder.encode import EmbedError

READ_CHUNK = 1 << 20


def too_large_message(limit_bytes: int) -> str:
    return f"the upload is larger than the limit of {limit_bytes / 2**20:.2f} MiB (ENCORE_EMBEDDER_MAX_UPLOAD_MB)"


def upload_limit(settings: EmbedderSettings) -> BodyLimit:
    """POST /embed's body cap and its cap on uploads held at once (each may hold up to the file limit)."""
    message = too_large_message(settings.max_upload_bytes)
    return BodyLimit(settings.max_body_bytes, message, max_in_flight=settings.max_uploads_in_flight)


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
