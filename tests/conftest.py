"""Shared fixtures: moto-backed AWS built from template.yaml, an injectable clock, and an API client."""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

import boto3
import pytest
from aws_lambda_powertools.utilities.typing import LambdaContext
from moto import mock_aws
from sundial.deps import Deps
from sundial.settings import Settings

from sundial_local.config import ACCOUNT, REGION
from sundial_local.lambdas import LocalLambdaContext
from sundial_local.stack import MOTO_CONFIG, cascade_function_arns, runner_function_arns
from sundial_local.template import CASCADE, create_state_machine, create_tables

EVENTS = Path(__file__).resolve().parent.parent / "events"
RUNNER_FUNCTION_ARNS = runner_function_arns()
CASCADE_FUNCTION_ARNS = cascade_function_arns()
CASCADE_STATE_MACHINE = "sundial-cascade"
# The bus run events go to in tests: moto's own default bus, which needs no set-up.
TEST_RUN_EVENTS_BUS = "default"
# moto with the local stack's settings, but recording executions instead of running them: the tests
# that use it drive the runner's steps themselves.
MOTO_RECORDING_ONLY: Any = {**MOTO_CONFIG, "stepfunctions": {"execute_state_machine": False}}
START = datetime(2026, 11, 26, 15, 0, 0, tzinfo=UTC)


def pytest_configure(config: pytest.Config) -> None:
    """Fake credentials (never a real account) and UTC, which moto's Wait-until-timestamp assumes."""
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "POWERTOOLS_TRACE_DISABLED": "1",
            "POWERTOOLS_METRICS_NAMESPACE": "Sundial",
            "TZ": "UTC",
        }
    )
    time.tzset()


@dataclass
class FakeClock:
    """A clock tests move by hand."""

    current: datetime = START

    def __call__(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> datetime:
        self.current += timedelta(seconds=seconds)
        return self.current

    def set(self, moment: datetime) -> None:
        self.current = moment


@dataclass
class Stack:
    settings: Settings
    deps: Deps
    clock: FakeClock
    sfn: Any
    dynamodb: Any
    extra: dict[str, Any] = field(default_factory=dict)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws(config=MOTO_CONFIG):
        yield


def make_settings(state_machine_arn: str, **overrides: Any) -> Settings:
    values = {
        "TRIGGERS_TABLE": "test-triggers",
        "INVOCATIONS_TABLE": "test-invocations",
        "AWS_REGION": REGION,
        "STATE_MACHINE_ARN": state_machine_arn,
        "CASCADE_STATE_MACHINE_ARN": f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{CASCADE_STATE_MACHINE}",
        "DUE_SHARD_COUNT": 4,
        "AGENT_RUN_URL": "http://127.0.0.1:9/unused",
        "AGENT_RUN_TOKEN": "test-token",
        "RUN_EVENTS_BUS": TEST_RUN_EVENTS_BUS,
        # One start at a time: moto's in-memory backends are not thread-safe (tests that fan out serialise it).
        "BACKFILL_CONCURRENCY": 1,
    }
    values.update(overrides)
    return Settings.model_validate(values)


def build_stack(clock: FakeClock) -> Stack:
    """Inside moto: tables from template.yaml, the runner state machine from the ASL file, Deps on `clock`."""
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    settings = make_settings("")
    create_tables(dynamodb, settings.triggers_table, settings.invocations_table)
    arn = create_state_machine(sfn, "sundial-runner", RUNNER_FUNCTION_ARNS)
    settings = make_settings(arn)
    create_cascade_state_machine(sfn, settings)
    deps = Deps(settings, clock=clock, sfn_factory=lambda: sfn)
    return Stack(settings, deps, clock, sfn, dynamodb)


@pytest.fixture
def stack(aws: None, clock: FakeClock) -> Stack:
    """Tables from template.yaml, the runner state machine from the ASL file, and Deps on a fake clock."""
    return build_stack(clock)


def create_cascade_state_machine(sfn: Any, settings: Settings) -> None:
    """The cascade state machine from its ASL file, at the ARN the settings name."""
    arn = create_state_machine(sfn, CASCADE_STATE_MACHINE, CASCADE_FUNCTION_ARNS, CASCADE)
    assert arn == settings.cascade_state_machine_arn


@dataclass
class ApiResponse:
    status: int
    body: Any
    headers: dict[str, str]

    @property
    def error(self) -> dict[str, Any]:
        error: dict[str, Any] = self.body["error"]
        return error


def token_claims(sub: str = "alice", roles: str | list[str] = "[editor]", tenant: str = "acme") -> dict[str, Any]:
    """Verified JWT claims as API Gateway's authorizer passes them (roles flattened to "[a b]" by default)."""
    return {"sub": sub, "tenant_id": tenant, "roles": roles}


@dataclass
class ApiClient:
    """Calls the API Lambda with API Gateway HTTP API (v2) events built from events/api_create_trigger.json."""

    claims: dict[str, Any] | None = field(default_factory=token_claims)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw_body: str | None = None,
        query: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        claims: dict[str, Any] | str | None = "default",
    ) -> ApiResponse:
        import api_handler

        event = copy.deepcopy(json.loads((EVENTS / "api_create_trigger.json").read_text()))
        event["rawPath"] = path
        event["requestContext"]["http"]["method"] = method
        event["requestContext"]["http"]["path"] = path
        event["pathParameters"] = {"proxy": path.lstrip("/")}
        event["rawQueryString"] = urlencode(query or {})
        event["queryStringParameters"] = {key: str(value) for key, value in (query or {}).items()} or None
        event["headers"] = {
            "content-type": "application/json",
            **{k.lower(): v for k, v in (headers or {}).items()},
        }
        chosen = self.claims if claims == "default" else claims
        if chosen is None:
            event["requestContext"].pop("authorizer", None)
        else:
            event["requestContext"]["authorizer"] = {"jwt": {"claims": chosen, "scopes": None}}
        if raw_body is not None:
            event["body"] = raw_body
        elif body is not None:
            event["body"] = json.dumps(body)
        else:
            event["body"] = None
        result = api_handler.lambda_handler(event, lambda_context())
        text = result.get("body") or ""
        headers = result.get("headers", {})
        is_json = "json" in headers.get("Content-Type", "application/json")
        return ApiResponse(result["statusCode"], (json.loads(text) if is_json else text) if text else None, headers)


def function_arn_for(function: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function}"


def lambda_context(function: str = "sundial-test") -> LambdaContext:
    """The local stack's Lambda context, which the tests use too: one stand-in for the real one."""
    return cast(LambdaContext, LocalLambdaContext(function, function_arn_for(function), aws_request_id="test-request"))


@pytest.fixture
def api(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> ApiClient:
    import api_handler

    monkeypatch.setattr(api_handler, "deps", lambda: stack.deps)
    return ApiClient()


BASE = "/tenants/acme/projects/website/agents/reporter/scheduled-triggers"
