"""The local stack's own settings, read from the environment (the functions' settings are sundial.settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sundial_local.template import ROOT

ACCOUNT = "123456789012"
REGION = "us-east-1"
# Public on purpose: it only guards a server bound to 127.0.0.1, and `make token` must work out of the box.
DEV_JWT_SECRET = "sundial-local-development-secret-not-for-production"
DEV_AGENT_TOKEN = "sundial-local-agent-token"


class LocalConfig(BaseSettings):
    """Every knob `make dev` reads; see the README's local stack section. A port of 0 means any free port."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    port: int = Field(3000, ge=0, le=65535, alias="PORT")
    tick_seconds: float = Field(10.0, gt=0, le=3600, alias="TICK_SECONDS")
    jwt_secret: SecretStr = Field(SecretStr(DEV_JWT_SECRET), min_length=1, alias="SUNDIAL_LOCAL_JWT_SECRET")
    agent_run_url: str | None = Field(None, alias="AGENT_RUN_URL")
    agent_run_token: SecretStr = Field(SecretStr(DEV_AGENT_TOKEN), min_length=1, alias="AGENT_RUN_TOKEN")
    state_dir: Path = Field(ROOT / ".sundial-local", alias="SUNDIAL_STATE_DIR")
    moto_port: int = Field(0, ge=0, le=65535, alias="MOTO_PORT")
    demo_agent_port: int = Field(0, ge=0, le=65535, alias="DEMO_AGENT_PORT")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", alias="SUNDIAL_LOCAL_LOG_LEVEL")

    @field_validator("agent_run_url")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @property
    def uses_dev_secret(self) -> bool:
        return self.jwt_secret.get_secret_value() == DEV_JWT_SECRET

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"
