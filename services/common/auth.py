"""API-key check for write and admin endpoints (constant-time comparison), one dependency for all services.

The key is read from the headers only: `RequestGuard` (services/common/middleware.py) checks it before one byte
of a write route's body is read, and `require_api_key` checks it again inside the route, so the OpenAPI page
documents the header and a route stays guarded even where the middleware is not mounted.
"""

import secrets
from typing import Annotated

from fastapi import Depends, Header, Request

from services.common.errors import ServiceError

API_KEY_HEADER = "X-API-Key"


def api_key_problem(given: str | None, expected: str) -> ServiceError | None:
    """The refusal when `given` does not open an endpoint guarded by `expected`; None when it does.

    The comparison takes the same time wherever the strings differ (secrets.compare_digest on bytes).
    """
    if not expected:
        return ServiceError(403, "forbidden", "this endpoint is disabled: no ENCORE_API_KEY is set")
    if given is None or not secrets.compare_digest(given.encode(), expected.encode()):
        return ServiceError(401, "unauthorized", f"missing or wrong {API_KEY_HEADER} header")
    return None


def require_api_key(request: Request, x_api_key: Annotated[str | None, Header(alias=API_KEY_HEADER)] = None) -> None:
    """Accept the request only when its X-API-Key equals the app's configured key (app.state.settings)."""
    problem = api_key_problem(x_api_key, request.app.state.settings.api_key.get_secret_value())
    if problem is not None:
        raise problem


ApiKey = Depends(require_api_key)
