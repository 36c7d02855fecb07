"""The alarms and the dashboard in template.yaml watch metrics that exist.

Sundial's own metrics are read from the EMF documents the functions print while they really run
(the API, a dispatcher tick, every runner step, the watcher and the sweep); AWS's are checked to
name a resource of this stack under the dimension AWS publishes them with.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import dispatch_handler
import pytest
import runner_handler
from botocore.exceptions import ClientError
from sundial.adapters.agent_http import AgentClient
from sundial.domain import naming
from sundial.services.dispatcher import Dispatcher

from sundial_local.invoke import adopt_sample_incarnation
from sundial_local.template import load_template
from tests.conftest import BASE, EVENTS, ApiClient, Stack, lambda_context
from tests.runner_support import TEST_TOKEN, AgentServer, Reply

SCHEDULED_FOR = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
# What AWS publishes each namespace's alarmed metrics under, and the resource type that dimension names.
AWS_METRICS = {
    "AWS/Lambda": ({"Errors", "Throttles"}, "FunctionName", "AWS::Serverless::Function"),
    "AWS/DynamoDB": ({"ReadThrottleEvents", "WriteThrottleEvents"}, "TableName", "AWS::DynamoDB::Table"),
    "AWS/States": ({"ExecutionThrottled"}, "StateMachineArn", "AWS::Serverless::StateMachine"),
    "AWS/SQS": ({"ApproximateNumberOfMessagesVisible"}, "QueueName", "AWS::SQS::Queue"),
}
Metric = tuple[str, str, tuple[tuple[str, Any], ...]]


def event(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return loaded


def resources() -> dict[str, Any]:
    found: dict[str, Any] = load_template()["Resources"]
    return found


def alarms() -> dict[str, dict[str, Any]]:
    return {name: body["Properties"] for name, body in resources().items() if body["Type"] == "AWS::CloudWatch::Alarm"}


def _metric(namespace: str, name: str, dimensions: list[dict[str, Any]]) -> Metric:
    return namespace, name, tuple(sorted((item["Name"], json.dumps(item["Value"])) for item in dimensions))


def watched(alarm: dict[str, Any]) -> list[Metric]:
    """Every metric an alarm reads: its own, or each MetricStat of its metric-math expression."""
    if "MetricName" in alarm:
        return [_metric(alarm["Namespace"], alarm["MetricName"], alarm.get("Dimensions", []))]
    stats = [query["MetricStat"]["Metric"] for query in alarm["Metrics"] if "MetricStat" in query]
    return [_metric(stat["Namespace"], stat["MetricName"], stat.get("Dimensions", [])) for stat in stats]


def emitted(output: str) -> set[Metric]:
    """(namespace, name, dimensions) of every metric in the EMF documents printed."""
    found: set[Metric] = set()
    for line in output.splitlines():
        if not line.startswith("{"):
            continue
        document = json.loads(line)
        for directive in document.get("_aws", {}).get("CloudWatchMetrics", []):
            for dimension_set in directive["Dimensions"]:
                dimensions = [{"Name": name, "Value": document[name]} for name in dimension_set]
                for metric in directive["Metrics"]:
                    found.add(_metric(directive["Namespace"], metric["Name"], dimensions))
    return found


@pytest.fixture
def agent(stack: Stack, api: ApiClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[AgentServer]:
    body = json.loads(event("api_create_trigger.json")["body"])
    assert api.request("POST", BASE, body).status == 201
    adopt_sample_incarnation(stack.dynamodb, stack.settings.triggers_table)
    stack.clock.set(SCHEDULED_FOR)
    monkeypatch.setattr(runner_handler, "deps", lambda: stack.deps)
    monkeypatch.setattr(dispatch_handler, "dispatcher", lambda: Dispatcher(stack.deps))
    with AgentServer() as server:
        client = AgentClient(server.url, lambda: TEST_TOKEN)
        monkeypatch.setattr(runner_handler, "agent", lambda: client)
        yield server


def run_everything(agent: AgentServer, api: ApiClient, stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each function once on a path that emits its metrics: a completed run, a failed one, a broken one."""
    assert api.request("GET", BASE).status == 200
    assert api.request("GET", f"{BASE}/missing").status == 404

    def refused(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "ValidationException", "Message": "refused"}}, "StartExecution")

    with monkeypatch.context() as patched:
        patched.setattr(stack.deps.sfn, "start_execution", refused)
        assert api.request("POST", f"{BASE}/weekday-report/run").status == 503
    prepare = event("runner_prepare.json")
    state = runner_handler.prepare_handler(prepare, lambda_context("sundial-runner-prepare"))
    assert runner_handler.attempt_handler(state, lambda_context("sundial-runner-attempt"))["outcome"] == "completed"

    failing = json.loads(json.dumps(prepare))
    key = f"{failing['input']['idempotencyKey']}-again"
    failing["input"].update(idempotencyKey=key, invocationId=naming.invocation_id_for(key, SCHEDULED_FOR))
    agent.script.append(Reply(status=400, body={"error": "refused"}))
    state = runner_handler.prepare_handler(failing, lambda_context("sundial-runner-prepare"))
    assert runner_handler.attempt_handler(state, lambda_context("sundial-runner-attempt"))["outcome"] == "failed"

    runner_handler.finalize_handler(event("runner_finalize.json"), lambda_context("sundial-runner-finalize"))
    runner_handler.execution_ended_handler(
        event("runner_execution_ended.json"), lambda_context("sundial-runner-watcher")
    )
    runner_handler.sweep_handler(event("dispatch_tick.json"), lambda_context("sundial-runner-sweep"))
    dispatch_handler.lambda_handler(event("dispatch_tick.json"), lambda_context("sundial-dispatch"))


def test_every_alarm_on_sundial_metrics_watches_one_the_code_emits(
    agent: AgentServer,
    api: ApiClient,
    stack: Stack,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    capsys.readouterr()
    run_everything(agent, api, stack, monkeypatch)
    seen = emitted(capsys.readouterr().out)
    ours = {metric for alarm in alarms().values() for metric in watched(alarm) if metric[0] == "Sundial"}
    assert len(ours) >= 10
    missing = ours - seen
    assert missing == set(), f"alarms watch metrics the code never emits: {sorted(missing)}"


def test_the_emf_reader_tells_an_unknown_metric_from_an_emitted_one(
    agent: AgentServer,
    api: ApiClient,
    stack: Stack,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    capsys.readouterr()
    run_everything(agent, api, stack, monkeypatch)
    seen = emitted(capsys.readouterr().out)
    assert _metric("Sundial", "RunsCompleted", [{"Name": "service", "Value": "sundial"}]) in seen
    assert _metric("Sundial", "RunsComplete", [{"Name": "service", "Value": "sundial"}]) not in seen
    assert _metric("Sundial", "RunsCompleted", [{"Name": "service", "Value": "other"}]) not in seen


def test_every_alarm_on_aws_metrics_names_a_resource_of_this_stack() -> None:
    stack = resources()
    checked = 0
    for name, alarm in alarms().items():
        for namespace, metric, dimensions in watched(alarm):
            if namespace == "Sundial":
                continue
            names, dimension, resource_type = AWS_METRICS[namespace]
            assert metric in names, (name, metric)
            [(dimension_name, value)] = dimensions
            assert dimension_name == dimension, name
            named = json.loads(value)  # {"Ref": X}, or {"Fn::GetAtt": "X.QueueName"} for a queue
            target = named["Ref"] if "Ref" in named else named["Fn::GetAtt"].split(".")[0]
            assert stack[target]["Type"] == resource_type, (name, target)
            checked += 1
    functions = {name for name, body in stack.items() if body["Type"] == "AWS::Serverless::Function"}
    errors = {
        json.loads(dict(dimensions)["FunctionName"])["Ref"]
        for namespace, metric, dimensions in watched(alarms()["LambdaErrorsAlarm"])
    }
    assert errors == functions, "every function's errors are alarmed"
    assert checked >= 2 * len(functions)


def test_every_alarm_notifies_the_topic_parameter_and_links_its_runbook_entry() -> None:
    template = load_template()
    assert template["Parameters"]["AlarmTopicArn"]["Default"] == ""
    runbook = (EVENTS.parent / "docs" / "operations.md").read_text()
    for name, alarm in alarms().items():
        notify = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
        assert alarm["AlarmActions"] == alarm["OKActions"] == notify, name
        assert f"docs/operations.md#{name.lower()}" in alarm["AlarmDescription"], name
        assert re.search(rf"^### {name}$", runbook, re.MULTILINE), f"docs/operations.md has no entry for {name}"


def test_the_dashboard_charts_every_alarmed_sundial_metric() -> None:
    body = resources()["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    widgets = json.loads(re.sub(r"\$\{[^}]+\}", "x", body))["widgets"]
    charted = {
        (line[0], line[1]) for widget in widgets for line in widget["properties"]["metrics"] if line[0] == "Sundial"
    }
    alarmed = {(namespace, name) for alarm in alarms().values() for namespace, name, _ in watched(alarm)}
    assert {item for item in alarmed if item[0] == "Sundial"} <= charted
