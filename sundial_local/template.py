"""Builds emulated resources from template.yaml and the ASL file, so tests and `make dev` cannot drift from them."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_stepfunctions import SFNClient

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = ROOT / "template.yaml"
RUNNER_ROLE_ARN = "arn:aws:iam::123456789012:role/sundial-runner"
RUNNER = "RunnerStateMachine"
CASCADE = "CascadeStateMachine"
STATE_MACHINES = (RUNNER, CASCADE)


class _CloudFormationLoader(yaml.SafeLoader):
    """Reads CloudFormation's short-form tags (!Ref, !GetAtt, !Sub …) as plain {"Fn": value} data."""


def _construct_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    return {name: value}


_CloudFormationLoader.add_multi_constructor("!", _construct_tag)


@lru_cache(maxsize=1)
def load_template() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(TEMPLATE_PATH.read_text(), Loader=_CloudFormationLoader)
    return loaded


def resource(logical_id: str) -> dict[str, Any]:
    found: dict[str, Any] = load_template()["Resources"][logical_id]
    return found


def table_definition(logical_id: str, table_name: str) -> dict[str, Any]:
    """CreateTable arguments taken from the template's AWS::DynamoDB::Table properties."""
    properties = resource(logical_id)["Properties"]
    definition: dict[str, Any] = {
        "TableName": table_name,
        "AttributeDefinitions": properties["AttributeDefinitions"],
        "KeySchema": properties["KeySchema"],
        "BillingMode": properties["BillingMode"],
    }
    if "GlobalSecondaryIndexes" in properties:
        definition["GlobalSecondaryIndexes"] = properties["GlobalSecondaryIndexes"]
    return definition


def create_tables(client: DynamoDBClient, triggers_table: str, invocations_table: str) -> None:
    for logical_id, name in (("TriggersTable", triggers_table), ("InvocationsTable", invocations_table)):
        client.create_table(**table_definition(logical_id, name))
        ttl = resource(logical_id)["Properties"].get("TimeToLiveSpecification")
        if ttl:
            client.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)


def asl_path(logical_id: str = RUNNER) -> Path:
    """The ASL file the template's state machine is defined by (its DefinitionUri)."""
    return ROOT / resource(logical_id)["Properties"]["DefinitionUri"]


def state_machine_definition(function_arns: dict[str, str], logical_id: str = RUNNER) -> str:
    """The state machine's ASL file with its DefinitionSubstitutions applied, as CloudFormation would."""
    properties = resource(logical_id)["Properties"]
    substitutions = properties["DefinitionSubstitutions"]
    missing = set(substitutions) - set(function_arns)
    if missing:
        raise KeyError(f"no ARN given for substitutions {sorted(missing)}")
    text = asl_path(logical_id).read_text()
    text = re.sub(r"\$\{(\w+)\}", lambda match: function_arns.get(match.group(1), match.group(0)), text)
    json.loads(text)
    return text


def create_state_machine(client: SFNClient, name: str, function_arns: dict[str, str], logical_id: str = RUNNER) -> str:
    created = client.create_state_machine(
        name=name,
        definition=state_machine_definition(function_arns, logical_id),
        roleArn=RUNNER_ROLE_ARN,
        type="STANDARD",
    )
    return created["stateMachineArn"]


def state_machine_function_handlers() -> dict[str, str]:
    """DefinitionSubstitutions key → the handler (`module.function`) of the function it names, for
    every state machine of the template (their keys differ)."""
    handlers: dict[str, str] = {}
    substitutions = {
        key: value
        for logical_id in STATE_MACHINES
        for key, value in resource(logical_id)["Properties"]["DefinitionSubstitutions"].items()
    }
    for key, value in substitutions.items():
        logical_id = (
            value["Fn::GetAtt"].split(".")[0] if isinstance(value["Fn::GetAtt"], str) else value["Fn::GetAtt"][0]
        )
        handlers[key] = resource(logical_id)["Properties"]["Handler"]
    return handlers
