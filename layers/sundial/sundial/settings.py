"""Settings read from the environment (names as in template.yaml), parsed and validated by pydantic."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Settings(BaseModel):
    """Every knob Sundial reads; defaults are the SPEC's.

    A plain model read from os.environ rather than a pydantic-settings one: that package's sources
    (dotenv, CLI, cloud secrets) cost a tenth of a handler's import and Sundial reads only variables.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    def __init__(self, **values: Any) -> None:
        """The environment's values (named as in template.yaml), overridden by those given."""
        super().__init__(**{**os.environ, **values})

    triggers_table: str = Field("sundial-triggers", alias="TRIGGERS_TABLE")
    invocations_table: str = Field("sundial-invocations", alias="INVOCATIONS_TABLE")
    aws_region: str = Field("us-east-1", alias="AWS_REGION")
    dynamodb_endpoint_url: str | None = Field(None, alias="DYNAMODB_ENDPOINT_URL")
    state_machine_arn: str = Field("", alias="STATE_MACHINE_ARN")
    due_shard_count: int = Field(16, ge=1, le=1000, alias="DUE_SHARD_COUNT")
    lookahead_seconds: int = Field(120, ge=0, le=600, alias="DISPATCH_LOOKAHEAD_SECONDS")
    # Beyond the lookahead, a tick claims up to this far ahead what the start quota needs (domain.lookahead).
    longest_lookahead_seconds: int = Field(600, ge=0, le=600, alias="DISPATCH_LONGEST_LOOKAHEAD_SECONDS")
    # StartExecution's sustained rate in the region (300/s in us-east-1): how fast a herd can be started.
    start_rate_per_second: float = Field(300, gt=0, alias="DISPATCH_START_RATE_PER_SECOND")
    dispatch_concurrency: int = Field(32, ge=1, le=256, alias="DISPATCH_CONCURRENCY")
    dispatch_time_margin_seconds: float = Field(10.0, ge=0, alias="DISPATCH_TIME_MARGIN_SECONDS")
    # A backfill starts its runs this many at a time, so 1,000 fit well inside the API's time limit.
    backfill_concurrency: int = Field(8, ge=1, le=64, alias="BACKFILL_CONCURRENCY")
    # The cascade state machine (its Page Task reads this many index entries at a time).
    cascade_state_machine_arn: str = Field("", alias="CASCADE_STATE_MACHINE_ARN")
    cascade_page_size: int = Field(200, ge=1, le=1000, alias="CASCADE_PAGE_SIZE")
    claim_lease_seconds: int = Field(60, ge=5, le=600, alias="CLAIM_LEASE_SECONDS")
    invocation_retention_days: int = Field(90, ge=1, alias="INVOCATION_RETENTION_DAYS")
    tenant_claim: str = Field("tenant_id", alias="TENANT_CLAIM")
    roles_claim: str = Field("roles", alias="ROLES_CLAIM")
    agent_run_url: str = Field("", alias="AGENT_RUN_URL")
    agent_run_token_secret_arn: str = Field("", alias="AGENT_RUN_TOKEN_SECRET_ARN")
    agent_run_token: str = Field("", alias="AGENT_RUN_TOKEN", repr=False)
    # Told (best effort) when a running invocation is cancelled; empty: the agent is not told.
    agent_cancel_url: str = Field("", alias="AGENT_CANCEL_URL")
    # EventBridge bus that gets "Sundial Invocation Finished" events; empty: they are only logged (local).
    run_events_bus: str = Field("", alias="RUN_EVENTS_BUS")
    # The console's sign-in (SPEC §10): authorization code + PKCE against the JWT issuer when these are
    # set; pasting a token always works.
    console_oidc_authorize_url: str = Field("", alias="CONSOLE_OIDC_AUTHORIZE_URL")
    console_oidc_token_url: str = Field("", alias="CONSOLE_OIDC_TOKEN_URL")
    console_oidc_client_id: str = Field("", alias="CONSOLE_OIDC_CLIENT_ID")
    console_oidc_scope: str = Field("openid", alias="CONSOLE_OIDC_SCOPE")
    # Only the local stack turns this on: its gateway mints development tokens for the console.
    console_dev_sign_in: bool = Field(False, alias="CONSOLE_DEV_SIGN_IN")
    # The console links each invocation to its execution in the AWS console; the local stack has none.
    console_execution_links: bool = Field(True, alias="CONSOLE_EXECUTION_LINKS")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, parsed once on first use (never at import)."""
    return Settings()
