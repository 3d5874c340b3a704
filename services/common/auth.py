"""API-key check for write and admin endpoints (constant-time comparison)."""

import secrets
from collections.abc import Callable

from fastapi import Header, HTTPException, status

API_KEY_HEADER = "X-API-Key"


def api_key_dependency(get_key: Callable[[], str]) -> Callable[..., None]:
    """A FastAPI dependency that accepts a request only when its X-API-Key equals the configured key."""

    def require_api_key(x_api_key: str | None = Header(default=None, alias=API_KEY_HEADER)) -> None:
        expected = get_key()
        if not expected:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "this endpoint is disabled: no ENCORE_API_KEY is set")
        if x_api_key is None or not secrets.compare_digest(x_api_key.encode(), expected.encode()):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"missing or wrong {API_KEY_HEADER} header")

    return require_api_key
