"""template.yaml as CloudFormation sees it after `sam package` and the SAM transform, offline."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import botocore.client
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

from tests.conftest import TEST_RUN_EVENTS_BUS

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = ROOT / "template.yaml"
PARAMETERS = {
    "JwtIssuer": "https://auth.example.com/",
    "JwtAudience": "sundial",
    "AgentRunUrl": "https://agents.example.com/run",
    "AgentRunTokenSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:agent-token",
}
LOCAL_ARTIFACT_PROPERTIES = ("CodeUri", "ContentUri", "DefinitionUri")
# How policy resources and recorded calls name the run-events bus (a parameter, not a resource).
RUN_EVENTS_BUS = "RunEventsBus"


class ManagedPolicyLoaderStub:
    """The translator asks IAM for AWS managed policy ARNs only for policies named by bare name;
    offline there is no IAM, and this template names none, so the map is empty."""

    def load(self) -> dict[str, str]:
        return {}


def packaged_template() -> dict[str, Any]:
    """template.yaml as `sam package` leaves it: local artifact paths (which must exist) become S3 URIs."""
    template: dict[str, Any] = yaml_parse(TEMPLATE_PATH.read_text())
    for logical_id, definition in template["Resources"].items():
        properties = definition.get("Properties", {})
        for name in LOCAL_ARTIFACT_PROPERTIES:
            if isinstance(properties.get(name), str):
                assert (ROOT / properties[name]).exists(), f"{logical_id}.{name} {properties[name]} is missing"
                properties[name] = f"s3://sundial-artifacts/{properties[name]}"
    return template


def transform_template() -> dict[str, Any]:
    """The CloudFormation template SAM would deploy, with sample parameter values."""
    result: dict[str, Any] = transform(packaged_template(), dict(PARAMETERS), ManagedPolicyLoaderStub())
    return result


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(role: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for policy in role["Properties"].get("Policies", []):
        yield from policy["PolicyDocument"]["Statement"]


def granted_resource(value: Any) -> str:
    """A policy resource as `Logical`, `Logical/index/name`, `Logical:execution` or `RunEventsBus`."""
    if "Fn::GetAtt" in value and value["Fn::GetAtt"][1] == "Arn":
        return str(value["Fn::GetAtt"][0])
    if "Ref" in value:
        return str(value["Ref"])
    sub = value.get("Fn::Sub")
    if isinstance(sub, str):
        match = re.fullmatch(r"\$\{(\w+)\.Arn\}(/index/\w+)", sub)
        if match:
            return match.group(1) + match.group(2)
        if sub.endswith(":event-bus/${RunEventsBusName}"):
            return RUN_EVENTS_BUS
    elif isinstance(sub, list) and sub[0].endswith(":execution:${Name}:*"):
        return f"{sub[1]['Name']['Fn::GetAtt'][0]}:execution"
    raise AssertionError(f"unrecognised policy resource {value}")


def granted(transformed: dict[str, Any], role: str) -> set[tuple[str, str]]:
    return {
        (action, granted_resource(resource_value))
        for statement in statements(transformed["Resources"][role])
        for action in as_list(statement["Action"])
        for resource_value in as_list(statement["Resource"])
    }


@contextmanager
def recorded_aws_calls(
    tables: dict[str, str], state_machine_arn: str, cascade_state_machine_arn: str = ""
) -> Iterator[set[tuple[str, str]]]:
    """Every AWS call made inside, as `(service:Operation, Logical[/index/name|:execution])` like `granted`.

    `tables` maps table names to the template's logical ids. Patched below the SDK's stubs, so moto
    still answers and nothing is left out.
    """
    machines = {state_machine_arn: "RunnerStateMachine"}
    if cascade_state_machine_arn:
        machines[cascade_state_machine_arn] = "CascadeStateMachine"
    calls: set[tuple[str, str]] = set()
    make_api_call = botocore.client.BaseClient._make_api_call  # type: ignore[attr-defined]  # private, unstubbed

    def recording(client: Any, operation: str, params: dict[str, Any]) -> Any:
        service = client.meta.service_model.service_name
        if service == "dynamodb" and "RequestItems" in params:  # BatchGetItem, BatchWriteItem
            calls.update((f"dynamodb:{operation}", tables[table]) for table in params["RequestItems"])
        elif service == "dynamodb":
            index = f"/index/{params['IndexName']}" if "IndexName" in params else ""
            calls.add((f"dynamodb:{operation}", tables[params["TableName"]] + index))
        elif service == "stepfunctions":
            target = params.get("stateMachineArn") or params["executionArn"]
            execution = target.replace(":execution:", ":stateMachine:").rsplit(":", 1)[0]
            machine = machines.get(target) or machines[execution]
            suffix = ":execution" if target not in machines else ""
            calls.add((f"states:{operation}", f"{machine}{suffix}"))
        elif service == "events":
            assert all(entry["EventBusName"] == TEST_RUN_EVENTS_BUS for entry in params["Entries"]), params
            calls.add((f"events:{operation}", RUN_EVENTS_BUS))
        else:
            calls.add((f"{service}:{operation}", "?"))
        return make_api_call(client, operation, params)

    with mock.patch.object(botocore.client.BaseClient, "_make_api_call", recording):
        yield calls
