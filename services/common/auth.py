"""API-key check for write and admin endpoints (constant-time comparison)."""

import secrets
from collections.abc import Callable

from fastapi import Header, HTTPException, status

API_KEY_HEADER = "X-API-Key"


def api_key_problem(given: str | None, expected: str) -> tuple[int, str] | None:
    """(status, message) when `given` does not open an endpoint guarded by `expected`; None when it does.

    The comparison takes the same time wherever the strings differ (secrets.compare_digest on bytes).
    """
    if not expected:
        return status.HTTP_403_FORBIDDEN, "this endpoint is disabled: no ENCORE_API_KEY is set"
    if given is None or not secrets.compare_digest(given.encode(), expected.encode()):
        return status.HTTP_401_UNAUTHORIZED, f"missing or wrong {API_KEY_HEADER} header"
    return None


def api_key_dependency(get_key: Callable[[], str]) -> Callable[..., None]:
    """A FastAPI dependency that accepts a request only when its X-API-Key equals the configured key."""

    def require_api_key(x_api_key: str | None = Header(default=None, alias=API_KEY_HEADER)) -> None:
        problem = api_key_problem(x_api_key, get_key())
        if problem is not None:
            raise HTTPException(*problem)

    return require_api_key
