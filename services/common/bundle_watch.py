"""Bundle watcher: a sidecar that keeps one service on the bundle `artifacts/CURRENT` names.

    python -m services.common.bundle_watch --port 8000 [--interval 5]

Every interval it reads CURRENT from ENCORE_ARTIFACTS_DIR (a volume shared by every pod, written only by the
bootstrap and retrain jobs) and the bundle its service serves (GET /readyz, which every service answers with
`bundle_id`, ready or not). When they differ it POSTs /admin/reload with that bundle id and ENCORE_API_KEY;
the service verifies the bundle and swaps it in, or refuses it and keeps serving the old one. A refused id is
not asked for again until CURRENT moves on; an unreachable service (still starting) is simply tried again.
Standard library only: it runs beside the service in the same image, with a few MiB of memory.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import urllib.error
import urllib.request
from pathlib import Path

from encore.artifacts import BundleError, current_bundle_path
from encore.settings import ServiceSettings
from services.common.auth import API_KEY_HEADER

log = logging.getLogger("encore.bundle_watch")


def served_bundle(base_url: str, timeout_s: float = 5.0) -> str | None:
    """The bundle id the service reports on /readyz (200 or 503); raises OSError when it does not answer."""
    try:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=timeout_s) as response:
            body = json.load(response)
    except urllib.error.HTTPError as error:  # 503 not_ready: the details sit inside the error body
        body = json.load(error).get("detail", {})
    return body.get("bundle_id")


def request_reload(base_url: str, bundle_id: str, api_key: str, timeout_s: float = 600.0) -> tuple[int, dict]:
    """POST /admin/reload for `bundle_id`; (status, body). Raises OSError when the service does not answer."""
    request = urllib.request.Request(
        f"{base_url}/admin/reload",
        data=json.dumps({"bundle_id": bundle_id}).encode(),
        headers={"Content-Type": "application/json", API_KEY_HEADER: api_key},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


class Watcher:
    """One check per `step()`; `refused` remembers the last bundle id the service turned down."""

    def __init__(self, artifacts_dir: Path, base_url: str, api_key: str) -> None:
        self.artifacts_dir = artifacts_dir
        self.base_url = base_url
        self.api_key = api_key
        self.refused: str | None = None

    def step(self) -> str:
        """What happened: 'no-current', 'unreachable', 'in-step', 'reloaded', 'refused' or 'skipped'."""
        try:
            wanted = current_bundle_path(self.artifacts_dir).name
        except BundleError:
            return "no-current"  # bootstrap has not finished yet
        try:
            if served_bundle(self.base_url) == wanted:
                return "in-step"
            if wanted == self.refused:
                return "skipped"
            status, body = request_reload(self.base_url, wanted, self.api_key)
        except (OSError, ValueError) as error:  # connection refused, timeout, a body that is not JSON
            log.info("service not reachable yet: %s", error)
            return "unreachable"
        if status == 200:
            log.info("reloaded bundle %s (was %s)", wanted, body.get("previous_bundle_id"))
            self.refused = None
            return "reloaded"
        if 400 <= status < 500:
            self.refused = wanted
            log.error("service refused bundle %s (%d): %s", wanted, status, body.get("detail"))
            return "refused"
        log.warning("reload of %s answered %d; trying again", wanted, status)
        return "unreachable"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="the service's port on this pod")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between checks (default 5)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = ServiceSettings()
    watcher = Watcher(settings.artifacts_dir, f"http://{args.host}:{args.port}", settings.api_key.get_secret_value())
    while True:
        watcher.step()
        time.sleep(args.interval)


if __name__ == "__main__":
    raise SystemExit(main())
