"""Best-effort notice to the retriever that a track is live, so it is retrievable before its next refresh."""

from __future__ import annotations

import logging

import httpx

from services.common.auth import API_KEY_HEADER

log = logging.getLogger(__name__)


class RetrieverNotifier:
    """POST {retriever_url}/items with one pooled client per process; never raises.

    The retriever also picks new tracks up from the store periodically, so a failed notice only delays
    retrievability; it is logged and reported, not an error.
    """

    def __init__(self, base_url: str, api_key: str, timeout_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = (
            httpx.AsyncClient(
                base_url=self.base_url,
                timeout=httpx.Timeout(timeout_s),
                headers={API_KEY_HEADER: api_key},
                limits=httpx.Limits(max_connections=8, max_keepalive_connections=4),
            )
            if self.base_url
            else None
        )

    @property
    def enabled(self) -> bool:
        return self._client is not None

    async def notify(self, track_id: str, embedding: list[float], encoder: str, encoder_revision: str) -> bool:
        if self._client is None:
            return False
        payload = {
            "track_id": track_id,
            "embedding": embedding,
            "encoder": encoder,
            "encoder_revision": encoder_revision,
        }
        try:
            response = await self._client.post("/items", json=payload)
        except httpx.HTTPError as exc:
            log.warning("retriever notice for %s failed: %s: %s", track_id, type(exc).__name__, exc)
            return False
        if response.is_success:
            return True
        log.warning("retriever notice for %s refused: HTTP %d %s", track_id, response.status_code, response.text[:200])
        return False

    async def forget(self, track_id: str) -> str:
        """DELETE {retriever_url}/items/{id}: "removed", "absent", "in_bundle" (a catalog track), or
        "unreachable" (also when no retriever is configured or it answered an error)."""
        if self._client is None:
            return "unreachable"
        try:
            response = await self._client.delete(f"/items/{track_id}")
        except httpx.HTTPError as exc:
            log.warning("retriever delete of %s failed: %s: %s", track_id, type(exc).__name__, exc)
            return "unreachable"
        if response.status_code == 409:
            return "in_bundle"
        if not response.is_success:
            log.warning("retriever delete of %s refused: HTTP %d", track_id, response.status_code)
            return "unreachable"
        return "removed" if response.json().get("removed") else "absent"

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
