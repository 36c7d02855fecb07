"""The whole system in one process: moto server as AWS (Step Functions really executing the runner's ASL,
its Lambda tasks routed to the runner handlers), the API behind an emulated JWT authorizer, the dispatcher
ticking every TICK_SECONDS, and a demo agent unless AGENT_RUN_URL is set."""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import re
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

import boto3
from boto3.dynamodb.types import TypeDeserializer
from sundial.contracts.execution import ExecutionInput
from sundial.services.cascades import CascadeStep
from sundial.store.records import CASCADE_PREFIX

from sundial_local import state
from sundial_local.config import ACCOUNT, REGION, LocalConfig
from sundial_local.demo_agent import DemoAgent
from sundial_local.gateway import ApiGateway, TokenIssuer
from sundial_local.template import CASCADE, ROOT, RUNNER, create_state_machine, create_tables, resource
from sundial_local.token import issue_token

if TYPE_CHECKING:
    from botocore.session import Session as BotocoreSession
    from moto.core.config import DefaultConfig
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_stepfunctions import SFNClient

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
TRIGGERS_TABLE = "sundial-triggers"
INVOCATIONS_TABLE = "sundial-invocations"
STATE_MACHINE_NAME = "sundial-runner"
CASCADE_STATE_MACHINE_NAME = "sundial-cascade"
MOTO_CONFIG: DefaultConfig = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
DISPATCH_EVENT_PATH = ROOT / "events" / "dispatch_tick.json"
EXECUTION_ENDED_EVENT_PATH = ROOT / "events" / "runner_execution_ended.json"
SHUTDOWN_JOIN_SECONDS = 30.0
Handler = Callable[[dict[str, Any], Any], Any]
READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SWEEP_SECONDS = 60.0
WATCH_SECONDS = 2.0


class StartupError(Exception):
    """The stack cannot start; the message says what to change."""


def function_name(logical_id: str) -> str:
    """`RunnerPrepareFunction` → `sundial-runner-prepare`: the names the local ARNs use."""
    words = re.findall(r"[A-Z][a-z0-9]*", logical_id.removesuffix("Function"))
    return "sundial-" + "-".join(word.lower() for word in words)


def function_arn(logical_id: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function_name(logical_id)}"


def runner_function_arns() -> dict[str, str]:
    return state_machine_function_arns(RUNNER)


def cascade_function_arns() -> dict[str, str]:
    return state_machine_function_arns(CASCADE)


def state_machine_function_arns(logical_id: str) -> dict[str, str]:
    """A state machine's DefinitionSubstitutions, resolved to local Lambda ARNs as CloudFormation would."""
    substitutions = resource(logical_id)["Properties"]["DefinitionSubstitutions"]
    arns: dict[str, str] = {}
    for key, value in substitutions.items():
        target = value["Fn::GetAtt"]
        arns[key] = function_arn(target.split(".")[0] if isinstance(target, str) else target[0])
    return arns


def lambda_context(logical_id: str) -> Any:
    from sundial_local.lambdas import LocalLambdaContext

    return LocalLambdaContext(function_name(logical_id), function_arn(logical_id))


def port_in_use(name: str, port: int) -> StartupError:
    return StartupError(f"port {port} is already in use; set {name}=<another port> (for example {name}={port + 1})")


def _check_free(name: str, port: int) -> None:
    """Fail fast on a taken fixed port (moto's server thread would otherwise die without telling anyone)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise port_in_use(name, port) from None
            raise


def _run_name(run: dict[str, Any]) -> str:
    return f"{run.get('triggerId')} ({run.get('tenantId')})"


def discard_unpublished_metrics() -> None:
    """With metrics disabled, powertools never clears what the handlers add: it would pile up in memory
    and still be printed once a metric reaches 100 values. Called after every function call."""
    from aws_lambda_powertools.metrics.functions import is_metrics_disabled
    from sundial.observability import metrics

    if is_metrics_disabled():
        metrics.clear_metrics()


def describe_start(run: dict[str, Any]) -> str:
    """`dispatched weekday-report (acme) for 2026-11-27T08:00:00Z`, or a run-now / rerun start."""
    kind = run.get("kind", "scheduled")
    if kind == "scheduled":
        return f"dispatched {_run_name(run)} for {run.get('scheduledFor')}"
    label = "run-now" if kind == "manual" else kind
    return f"started {label} of {_run_name(run)}: invocation {run.get('invocationId')}"


def describe_step(step: str, event: dict[str, Any], result: dict[str, Any]) -> tuple[int, str]:
    """A log level and a line for what a runner (or cascade) step decided."""
    if step == "page":
        if result.get("done"):
            return logging.INFO, f"cascade {result.get('cascadeId')}: completed"
        if result.get("waitSeconds"):
            return (
                logging.INFO,
                f"cascade {result.get('cascadeId')}: pass done, reads again in {result['waitSeconds']} s",
            )
        return logging.DEBUG, f"cascade {result.get('cascadeId')}: more pages to go"
    if step == "prepare":
        run = event.get("input") or {}
        return logging.DEBUG, f"run {_run_name(run)} for {run.get('scheduledFor')}: pending"
    prefix = f"run {_run_name(result)} for {result.get('scheduledFor')}"
    outcome, number = result.get("outcome"), result.get("attemptNumber")
    if step == "finalize":
        failure = (event.get("failure") or {}).get("Error", "an error")
        return logging.WARNING, f"{prefix}: a runner step failed ({failure}); recorded as failed"
    if outcome == "retry":
        return logging.INFO, f"{prefix}: attempt {number} failed, retrying in {result.get('retryDelaySeconds')} s"
    if outcome == "waiting":
        return (
            logging.INFO,
            f"{prefix}: waits for the trigger's unfinished run, looks again in {result.get('retryDelaySeconds')} s",
        )
    if outcome in ("completed", "failed") and number != event.get("attemptNumber"):
        verdict = "succeeded, completed" if outcome == "completed" else "failed, run failed"
        return logging.INFO, f"{prefix}: attempt {number} {verdict}"
    return logging.INFO, f"{prefix}: {outcome}"


@contextmanager
def logged_runner_steps(routes: dict[str, str], after: Callable[[], object]) -> Iterator[None]:
    """One readable line per runner step, wrapped around moto's (already routed) Lambda invoke; `after`
    runs once each step's writes are made, before the state machine moves on."""
    from moto.awslambda_simple.models import LambdaSimpleBackend

    steps = {name: spec.rpartition(".")[2].removesuffix("_handler") for name, spec in routes.items()}
    routed = LambdaSimpleBackend.invoke

    def invoke(
        self: LambdaSimpleBackend, name: str, qualifier: Any, body: Any, headers: Any, response_headers: Any
    ) -> Any:
        try:
            result = routed(self, name, qualifier, body, headers, response_headers)
        finally:
            discard_unpublished_metrics()
            after()
        step = steps.get(name.split(":")[6] if name.startswith("arn:") else name)
        if step is not None:
            try:
                event, output = json.loads(body or "{}"), json.loads(result or "{}")
            except ValueError:
                return result
            if response_headers.get("x-amz-function-error"):
                logger.warning(
                    "runner %s step raised %s: %s", step, output.get("errorType"), output.get("errorMessage")
                )
            else:
                logger.log(*describe_step(step, event, output))
        return result

    with mock.patch.object(LambdaSimpleBackend, "invoke", invoke):
        yield


@contextmanager
def precise_timestamp_waits() -> Iterator[None]:
    """Make moto's Wait-until-timestamp end at the timestamp, not up to a second before it.

    moto truncates the time left to whole seconds (4.7 s → 4 s), so a run would start early. This is
    moto's own computation with the rounding turned upwards: the run starts within the second after
    its scheduled instant, as in Step Functions.
    """
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import FailureEventException
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function.timestamp import Timestamp

    def get_wait_seconds(self: Timestamp, env: Any) -> int:
        self.string.eval(env=env)
        text = env.stack.pop()
        timestamp = self._from_timestamp_string(timestamp=text)
        if timestamp is None:
            raise FailureEventException(self._create_failure_event(env, text))
        return math.ceil((timestamp - datetime.now()).total_seconds())

    with mock.patch.object(Timestamp, "_get_wait_seconds", get_wait_seconds):
        yield


def log_executions(session: BotocoreSession) -> None:
    """One readable line per StartExecution any client of `session` makes (dispatcher, API claims, run-now)."""

    def remember(**event: Any) -> None:
        event["context"]["sundial_run"] = event["params"].get("input")

    def report(**event: Any) -> None:
        parsed: dict[str, Any] = event["parsed"]
        try:
            run = json.loads(event["context"].get("sundial_run") or "{}")
        except ValueError:
            return
        if "Error" in parsed:
            logger.debug("%s: %s", describe_start(run), parsed["Error"].get("Code"))
        else:
            logger.info("%s", describe_start(run))

    session.register("provide-client-params.sfn.StartExecution", remember)
    session.register("after-call.sfn.StartExecution", report)


def create_resources(dynamodb: DynamoDBClient, sfn: SFNClient) -> tuple[str, str]:
    """The tables and both state machines, from template.yaml; returns the runner's and the cascade's ARNs."""
    create_tables(dynamodb, TRIGGERS_TABLE, INVOCATIONS_TABLE)
    state_machine_arn = create_state_machine(sfn, STATE_MACHINE_NAME, runner_function_arns())
    return state_machine_arn, create_state_machine(sfn, CASCADE_STATE_MACHINE_NAME, cascade_function_arns(), CASCADE)


def resume_unfinished_runs(dynamodb: DynamoDBClient, sfn: SFNClient, state_machine_arn: str) -> int:
    """Executions do not survive a restart: start each unfinished invocation's execution again, same name.

    The runner's steps are idempotent, so the run carries on where its records say it was: a pending
    run waits for (or, if past, starts at once at) its time; recorded attempts are not made again;
    an attempt cut off mid-call is made again with the same Idempotency-Key.
    """
    deserializer = TypeDeserializer()
    resumed = 0
    pages = dynamodb.get_paginator("scan").paginate(
        TableName=INVOCATIONS_TABLE,
        FilterExpression="#status IN (:pending, :running)",
        ExpressionAttributeNames={"#status": "status"},
        ExpressionAttributeValues={":pending": {"S": "pending"}, ":running": {"S": "running"}},
        ConsistentRead=True,
    )
    for page in pages:
        for raw in page.get("Items", []):
            item = {name: deserializer.deserialize(value) for name, value in raw.items()}
            if item.get("status") not in ("pending", "running") or not item.get("execution_name"):
                continue
            if "incarnation" not in item:  # written before runs were tied to their trigger's incarnation
                continue
            version = item.get("schedule_version")
            run = ExecutionInput(
                tenant_id=item["tenant_id"],
                project_id=item["project_id"],
                agent_id=item["agent_id"],
                trigger_id=item["trigger_id"],
                incarnation=item["incarnation"],
                invocation_id=item["invocation_id"],
                kind=item["kind"],
                scheduled_for=item["scheduled_for"],
                schedule_version=int(version) if version is not None else None,
                idempotency_key=item["idempotency_key"],
                starts_at=item.get("starts_at"),
            )
            try:
                sfn.start_execution(
                    stateMachineArn=state_machine_arn, name=str(item["execution_name"]), input=run.to_json()
                )
            except sfn.exceptions.ExecutionAlreadyExists:
                continue
            logger.info(
                "resumed %s run of %s for %s, cut off by the last shutdown",
                item["status"],
                _run_name(run.model_dump(by_alias=True)),
                run.scheduled_for,
            )
            resumed += 1
    return resumed


def resume_running_cascades(
    dynamodb: DynamoDBClient, sfn: SFNClient, triggers_table: str, cascade_state_machine_arn: str
) -> int:
    """A running cascade's execution does not survive a restart either: start it again, same name.

    Its pages are idempotent and its record says where it was (SPEC §7), so it carries on from there;
    its tombstone was never lifted, so nothing in its scope ran meanwhile.
    """
    resumed = 0
    pages = dynamodb.get_paginator("scan").paginate(
        TableName=triggers_table,
        FilterExpression="begins_with(pk, :cascade) AND #state = :running",
        ExpressionAttributeNames={"#state": "state"},
        ExpressionAttributeValues={":cascade": {"S": CASCADE_PREFIX}, ":running": {"S": "running"}},
        ConsistentRead=True,
    )
    for page in pages:
        for item in page.get("Items", []):
            step = CascadeStep(tenant_id=item["tenant_id"]["S"], cascade_id=item["cascade_id"]["S"])
            try:
                sfn.start_execution(
                    stateMachineArn=cascade_state_machine_arn,
                    name=step.cascade_id,
                    input=json.dumps(step.to_event(), separators=(",", ":")),
                )
            except sfn.exceptions.ExecutionAlreadyExists:
                continue
            logger.info("resumed cascade %s, cut off by the last shutdown", step.cascade_id)
            resumed += 1
    return resumed


class ScheduledLoop:
    """Calls a function every `tick_seconds` with a scheduled event, as an EventBridge schedule does."""

    def __init__(self, logical_id: str, handler: Callable[[dict[str, Any], Any], Any], tick_seconds: float) -> None:
        self._logical_id = logical_id
        self._handler = handler
        self._tick_seconds = tick_seconds
        self._event: dict[str, Any] = json.loads(DISPATCH_EVENT_PATH.read_text())
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=function_name(logical_id), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(SHUTDOWN_JOIN_SECONDS)

    def tick(self) -> None:
        now = datetime.now(UTC)
        event = {**self._event, "id": str(uuid.uuid4()), "time": now.strftime("%Y-%m-%dT%H:%M:%SZ")}
        try:
            self._handler(event, lambda_context(self._logical_id))
        except Exception:
            logger.exception("%s failed", function_name(self._logical_id))
        finally:
            discard_unpublished_metrics()

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stopping.is_set():
            self.tick()
            next_tick = max(next_tick + self._tick_seconds, time.monotonic())
            self._stopping.wait(next_tick - time.monotonic())


class ExecutionWatcher:
    """Sends the watcher the status-change events moto never emits: each runner execution that ended
    FAILED, TIMED_OUT or ABORTED, once, in the shape EventBridge delivers (events/runner_execution_ended.json)."""

    ENDED = ("FAILED", "TIMED_OUT", "ABORTED")

    def __init__(self, sfn: SFNClient, state_machine_arn: str, watcher: Callable[[dict[str, Any], Any], Any]) -> None:
        self._sfn = sfn
        self._state_machine_arn = state_machine_arn
        self._watcher = watcher
        self._sample: dict[str, Any] = json.loads(EXECUTION_ENDED_EVENT_PATH.read_text())
        self._delivered: set[str] = set()

    def __call__(self, _event: dict[str, Any], _context: Any) -> None:
        paginator = self._sfn.get_paginator("list_executions")
        for status in self.ENDED:
            for page in paginator.paginate(stateMachineArn=self._state_machine_arn, statusFilter=status):  # type: ignore[arg-type]
                for execution in page["executions"]:
                    if execution["executionArn"] not in self._delivered:
                        self._deliver(execution["executionArn"], status)

    def _deliver(self, arn: str, status: str) -> None:
        described = self._sfn.describe_execution(executionArn=arn)
        detail = {
            **self._sample["detail"],
            "executionArn": arn,
            "stateMachineArn": self._state_machine_arn,
            "name": described["name"],
            "status": status,
            "input": described.get("input"),
            "error": described.get("error"),
            "cause": described.get("cause"),
        }
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {**self._sample, "id": str(uuid.uuid4()), "time": now, "resources": [arn], "detail": detail}
        self._watcher(event, lambda_context("RunnerWatcherFunction"))
        self._delivered.add(arn)


def set_environment(
    *,
    moto_port: int | None,
    agent_run_url: str,
    agent_run_token: str,
    state_machine_arn: str = "",
    cascade_state_machine_arn: str = "",
    console_dev_sign_in: bool = False,
) -> None:
    """Give the functions their settings and point every AWS client in this process at moto: at the
    server on `moto_port`, or (None) at the in-process mock, which needs no endpoint.

    Fake credentials always win over a real profile, so nothing here can reach an AWS account.
    TZ=UTC because moto's Wait-until-timestamp compares against local time.
    """
    for name in ("AWS_PROFILE", "AGENT_RUN_TOKEN_SECRET_ARN", "AWS_ENDPOINT_URL", "DYNAMODB_ENDPOINT_URL"):
        os.environ.pop(name, None)
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_SESSION_TOKEN": "local",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "TZ": "UTC",
            "TRIGGERS_TABLE": TRIGGERS_TABLE,
            "INVOCATIONS_TABLE": INVOCATIONS_TABLE,
            "STATE_MACHINE_ARN": state_machine_arn,
            "CASCADE_STATE_MACHINE_ARN": cascade_state_machine_arn,
            "AGENT_RUN_URL": agent_run_url,
            "AGENT_RUN_TOKEN": agent_run_token,
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_SERVICE_NAME": "sundial",
            "POWERTOOLS_METRICS_NAMESPACE": "Sundial",
            "CONSOLE_DEV_SIGN_IN": "true" if console_dev_sign_in else "false",
            "CONSOLE_EXECUTION_LINKS": "false",  # local executions are not in any AWS console
        }
    )
    if moto_port is not None:
        endpoint = f"http://{HOST}:{moto_port}"
        os.environ.update(
            {"AWS_ENDPOINT_URL": endpoint, "DYNAMODB_ENDPOINT_URL": endpoint, "MOTO_PORT": str(moto_port)}
        )
        for name in ("NO_PROXY", "no_proxy"):  # never send calls to moto (localhost:MOTO_PORT) to a proxy
            hosts = [host for host in os.environ.get(name, "").split(",") if host]
            os.environ[name] = ",".join([*hosts, *(host for host in (HOST, "localhost") if host not in hosts)])
    # The functions' JSON logs and EMF metrics would drown the readable lines; both can be turned back on.
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    time.tzset()
    from sundial.settings import get_settings

    get_settings.cache_clear()


def configure_moto(moto_port: int) -> None:
    request = urllib.request.Request(
        f"http://{HOST}:{moto_port}/moto-api/config",
        data=json.dumps(MOTO_CONFIG).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


class LocalStack:
    """`start` brings everything up (or raises StartupError); `stop` shuts down in reverse and saves the tables."""

    def __init__(self, config: LocalConfig) -> None:
        self.config = config
        self._exit = ExitStack()
        self._api: Callable[[dict[str, Any], Any], dict[str, Any]] | None = None
        self._gateway: ApiGateway | None = None
        self._persister: state.Persister | None = None

    @property
    def url(self) -> str:
        """The API's address (the bound port, which PORT=0 leaves to the system)."""
        port = self._gateway.port if self._gateway is not None else self.config.port
        return f"http://{HOST}:{port}"

    @property
    def tables(self) -> dict[str, str]:
        return {"triggers": TRIGGERS_TABLE, "invocations": INVOCATIONS_TABLE}

    def start(self) -> None:
        gateway = self._bind_gateway()
        moto_port = self._start_moto()
        agent_url = self._start_agent()
        agent_token = self.config.agent_run_token.get_secret_value()
        set_environment(moto_port=moto_port, agent_run_url=agent_url, agent_run_token=agent_token)
        configure_moto(moto_port)
        session = boto3.Session()
        dynamodb: DynamoDBClient = session.client("dynamodb")
        sfn: SFNClient = session.client("stepfunctions")
        state_machine_arn, cascade_arn = create_resources(dynamodb, sfn)
        set_environment(
            moto_port=moto_port,
            agent_run_url=agent_url,
            agent_run_token=agent_token,
            state_machine_arn=state_machine_arn,
            cascade_state_machine_arn=cascade_arn,
            console_dev_sign_in=self.config.uses_dev_secret,
        )
        self._restore(dynamodb)
        persister = self._persister = state.Persister(dynamodb, self.tables, self.config.state_file)
        persister.save()
        dispatch, sweep, watch = self._load_functions()
        self._exit.callback(self._save)
        persister.start_ticker()
        self._exit.callback(persister.stop_ticker)
        resume_unfinished_runs(dynamodb, sfn, state_machine_arn)
        resume_running_cascades(dynamodb, sfn, TRIGGERS_TABLE, cascade_arn)
        # moto sends no execution-status events: the watcher is fed by polling, as the sweep runs by a timer.
        watcher = ExecutionWatcher(sfn, state_machine_arn, watch)
        for loop in (
            ScheduledLoop("RunnerWatcherFunction", self._saving(watcher), WATCH_SECONDS),
            ScheduledLoop("RunnerSweepFunction", self._saving(sweep), SWEEP_SECONDS),
        ):
            loop.start()
            self._exit.callback(loop.stop)
        dispatcher = ScheduledLoop("DispatchFunction", self._saving(dispatch), self.config.tick_seconds)
        dispatcher.start()
        self._exit.callback(dispatcher.stop)
        threading.Thread(target=gateway.serve_forever, name="api", daemon=True).start()
        self._exit.callback(gateway.stop_serving)

    def stop(self) -> None:
        """Stop taking requests and ticks, save the tables, then stop the emulator and the demo agent."""
        self._exit.close()

    def _bind_gateway(self) -> ApiGateway:
        try:
            secret = self.config.jwt_secret.get_secret_value()
            gateway = ApiGateway(HOST, self.config.port, secret, self._call_api, dev_tokens=self._dev_tokens())
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise port_in_use("PORT", self.config.port) from None
            raise
        self._exit.callback(gateway.close)
        self._gateway = gateway
        return gateway

    def _dev_tokens(self) -> TokenIssuer | None:
        """The console's development sign-in, only while the secret is the public development one: with a
        secret of your own, tokens come from `make token` or your identity provider, never from a page."""
        if not self.config.uses_dev_secret:
            return None
        secret = self.config.jwt_secret.get_secret_value()
        return lambda tenant, sub, roles: issue_token(secret, tenant=tenant, sub=sub, roles=roles)

    def _start_moto(self) -> int:
        from moto.server import ThreadedMotoServer

        if self.config.moto_port:
            _check_free("MOTO_PORT", self.config.moto_port)
        server = ThreadedMotoServer(ip_address=HOST, port=self.config.moto_port, verbose=False)
        server.start()
        self._exit.callback(server.stop)
        return int(server.get_host_and_port()[1])

    def _start_agent(self) -> str:
        if self.config.agent_run_url:
            logger.info("agent runs go to %s", self.config.agent_run_url)
            return self.config.agent_run_url
        try:
            agent = DemoAgent(self.config.demo_agent_port)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise port_in_use("DEMO_AGENT_PORT", self.config.demo_agent_port) from None
            raise
        agent.start()
        self._exit.callback(agent.stop)
        logger.info("agent runs go to the built-in demo agent at %s (set AGENT_RUN_URL to use yours)", agent.url)
        return agent.url

    def _load_functions(self) -> tuple[Handler, Handler, Handler]:
        """Import the handlers only now, with the environment set (settings are read once, on first use);
        route the runner's Lambda tasks to them; return the dispatch, sweep and watcher handlers."""
        from sundial.deps import aws_session

        from sundial_local.lambdas import routed_lambdas

        log_executions(aws_session())
        import api_handler
        import dispatch_handler
        import runner_handler

        self._api = api_handler.lambda_handler
        routes = self._exit.enter_context(routed_lambdas({**runner_function_arns(), **cascade_function_arns()}))
        self._exit.enter_context(logged_runner_steps(routes, after=self._save_quietly))
        self._exit.enter_context(precise_timestamp_waits())
        return dispatch_handler.lambda_handler, runner_handler.sweep_handler, runner_handler.execution_ended_handler

    def _call_api(self, event: dict[str, Any]) -> dict[str, Any]:
        """The API function's answer, given only once what it wrote is on disk (a crash then loses nothing)."""
        assert self._api is not None, "requests are served only once the functions are loaded"
        try:
            response = self._api(event, lambda_context("ApiFunction"))
        finally:
            discard_unpublished_metrics()
        if event.get("requestContext", {}).get("http", {}).get("method") in READ_ONLY_METHODS:
            return response
        if self._persister is not None:
            try:
                self._persister.save()
            except Exception as error:
                logger.exception("could not save the tables to %s", shown(self.config.state_file))
                return unsaved_response(self.config.state_file, error)
        return response

    def _saving(self, handler: Callable[[dict[str, Any], Any], Any]) -> Callable[[dict[str, Any], Any], Any]:
        def handled(event: dict[str, Any], context: Any) -> Any:
            try:
                return handler(event, context)
            finally:
                self._save_quietly()

        return handled

    def _save_quietly(self) -> None:
        """Save after a function's writes; a failure is logged and the next save (within a second) retries."""
        if self._persister is None:
            return
        try:
            self._persister.save()
        except Exception:
            logger.exception("could not save the tables to %s", shown(self.config.state_file))

    def _restore(self, dynamodb: DynamoDBClient) -> None:
        path = self.config.state_file
        try:
            counts = state.restore(dynamodb, self.tables, path)
        except state.StateFileError as error:
            raise StartupError(f"{error}; move it away to start with empty tables") from None
        if counts:
            logger.info(
                "restored %d triggers-table and %d invocations-table item(s) from %s",
                counts.get("triggers", 0),
                counts.get("invocations", 0),
                shown(path),
            )

    def _save(self) -> None:
        """The last save, on a clean stop, with a line saying what is kept."""
        path = self.config.state_file
        assert self._persister is not None
        try:
            counts = self._persister.save() or self._persister.counts()
        except Exception:
            logger.exception("could not save the tables to %s", shown(path))
            return
        logger.info(
            "saved %d triggers-table and %d invocations-table item(s) to %s",
            counts["triggers"],
            counts["invocations"],
            shown(path),
        )


def unsaved_response(path: Path, error: Exception) -> dict[str, Any]:
    """A write the stack made but could not put on disk is not acknowledged: 503, in the API's error shape."""
    message = f"The local stack could not save its state to {shown(path)} ({error}); the change may be lost"
    body = {"error": {"code": "unavailable", "message": message, "details": []}}
    return {"statusCode": 503, "headers": {"Content-Type": "application/json"}, "body": json.dumps(body)}


def shown(path: Path) -> str:
    """A path relative to the working directory when it is inside it (shorter log lines)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
