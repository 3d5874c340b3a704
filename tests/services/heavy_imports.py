"""Which heavy packages a service imports while it starts and serves: run its app in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from tests.conftest import REPO_ROOT

HEAVY = ("feast", "torch")

RUNNER = """
import json, sys
from fastapi.testclient import TestClient
from services.__SERVICE__.main import create_app

statuses = []
with TestClient(create_app()) as client:
    for method, path, kwargs in json.loads(sys.argv[1]):
        if "files" in kwargs:  # {field: [file name, path on disk]}
            kwargs["files"] = {k: (name, open(p, "rb").read()) for k, (name, p) in kwargs["files"].items()}
        response = client.request(method, path, **kwargs)
        statuses.append(response.status_code)
print(json.dumps({"statuses": statuses, "loaded": [m for m in __HEAVY__ if m in sys.modules]}))
"""


def serve_and_list_imports(service: str, env: dict[str, str], calls: list[tuple[str, str, dict]]) -> dict:
    """Start `service`'s app (lifespan included) with `env`, make `calls`; returns statuses and heavy imports."""
    code = textwrap.dedent(RUNNER.replace("__SERVICE__", service).replace("__HEAVY__", repr(HEAVY)))
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(calls)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
