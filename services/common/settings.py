"""Settings base: every value from an ENCORE_* environment variable (pydantic-settings)."""

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ENCORE_", extra="ignore")

    artifacts_dir: Path = PROJECT_ROOT / "artifacts"  # holds <bundle-id>/ folders and CURRENT
    # Required by write/admin endpoints; empty means those endpoints refuse everything. A SecretStr, so a
    # settings object that reaches a log or a traceback shows ********** instead of the key.
    api_key: SecretStr = SecretStr("")
    log_level: str = "info"
    # ONNX Runtime device of every session (encore.onnx_scorer): auto (CUDA when the onnxruntime-gpu build can
    # load it, else CPU), cuda (refuse to start without it) or cpu.
    onnx_device: Literal["auto", "cuda", "cpu"] = "auto"
    # Request hardening (services/common/limits.py): any body but an upload is cut off past this (413).
    max_json_mb: float = Field(1.0, gt=0)
    max_in_flight: int = Field(256, ge=1)  # requests handled at once per process; beyond: 503 + Retry-After
    # Server read limits (services/common/server.py, in every uvicorn worker): headers must arrive within
    # header_timeout_s of a request's first byte, the whole body within body_timeout_s of the headers; an
    # idle keep-alive connection closes after keep_alive_s; connections beyond max_connections are closed.
    header_timeout_s: float = Field(10.0, gt=0)
    body_timeout_s: float = Field(60.0, gt=0)
    keep_alive_s: int = Field(5, ge=1)
    max_connections: int = Field(2048, ge=1)

    @property
    def max_json_bytes(self) -> int:
        return int(self.max_json_mb * 2**20)
