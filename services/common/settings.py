"""Settings base: every value from an ENCORE_* environment variable (pydantic-settings)."""

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ENCORE_", extra="ignore")

    artifacts_dir: Path = PROJECT_ROOT / "artifacts"  # holds <bundle-id>/ folders and CURRENT
    api_key: str = ""  # required by write/admin endpoints; empty means those endpoints refuse everything
    log_level: str = "info"
