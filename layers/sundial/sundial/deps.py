"""What a service is given: settings, a clock, the tables bound to them and lazily created AWS clients."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any, cast

from botocore.config import Config
from botocore.session import Session, get_session

from sundial.adapters.agent_http import AgentClient, token_source
from sundial.adapters.run_events import RunEvents
from sundial.settings import Settings
from sundial.store.records import bind_tables

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_stepfunctions import SFNClient

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


# One HTTP attempt per call, with short timeouts: Sundial's own Backoff retries Step Functions
# throttling inside a budget that must count every attempt (SPEC §5, dispatcher limits), which
# the SDK's hidden retries (3 per call in standard mode) and its 60 s read timeout would break.
SFN_CLIENT_CONFIG = Config(retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=3, read_timeout=10)


@cache
def aws_session() -> Session:
    """One botocore session per process, as boto3's default session would be; the local stack hooks its events."""
    return get_session()


def aws_client(service_name: str, config: Config | None = None) -> Any:
    """A botocore client: boto3 would add only its resources and s3transfer, a fifth of a handler's import."""
    return aws_session().create_client(service_name, config=config)


def _default_sfn_client() -> SFNClient:
    return cast("SFNClient", aws_client("stepfunctions", SFN_CLIENT_CONFIG))


# The token is read inside runner steps and API requests: a slow Secrets Manager must not hold them.
SECRETS_CLIENT_CONFIG = Config(retries={"total_max_attempts": 3, "mode": "standard"}, connect_timeout=3, read_timeout=5)


def _default_secrets_client() -> SecretsManagerClient:
    return cast("SecretsManagerClient", aws_client("secretsmanager", SECRETS_CLIENT_CONFIG))


def _default_events_client() -> Any:
    return aws_client("events")


@dataclass
class Deps:
    """Built once per cold start by each handler; tests build their own with moto clients and a fixed clock."""

    settings: Settings
    clock: Clock = utc_now
    sfn_factory: Callable[[], SFNClient] = field(default=_default_sfn_client)
    secrets_factory: Callable[[], SecretsManagerClient] = field(default=_default_secrets_client)
    events_factory: Callable[[], Any] = field(default=_default_events_client)
    # When this process last made sure the due-shard marker covers its shard count (monotonic seconds).
    shard_count_announced_at: float | None = None

    def __post_init__(self) -> None:
        bind_tables(self.settings)

    @cached_property
    def sfn(self) -> SFNClient:
        return self.sfn_factory()

    @cached_property
    def secrets(self) -> SecretsManagerClient:
        return self.secrets_factory()

    @cached_property
    def run_events(self) -> RunEvents:
        """Where the end of each run is announced (the bus in settings, or the log)."""
        return RunEvents(self.settings.run_events_bus, lambda: self._events_client)

    @cached_property
    def _events_client(self) -> Any:
        return self.events_factory()

    def now(self) -> datetime:
        """The clock's time, truncated to the second like every stored instant."""
        return self.clock().astimezone(UTC).replace(microsecond=0)

    @cached_property
    def agent_canceller(self) -> AgentClient | None:
        """Where a cancelled run's agent is told (`AGENT_CANCEL_URL`); None when it is not to be told."""
        if not self.settings.agent_cancel_url:
            return None
        return AgentClient(self.settings.agent_cancel_url, token_source(self.settings, lambda: self.secrets))

    def agent_client(self) -> AgentClient:
        """The agent client configured from settings (`AGENT_RUN_URL` and the token)."""
        if not self.settings.agent_run_url:
            raise ValueError("AGENT_RUN_URL is not set")
        return AgentClient(self.settings.agent_run_url, token_source(self.settings, lambda: self.secrets))
