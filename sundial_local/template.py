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
ASL_PATH = ROOT / "statemachine" / "runner.asl.json"
RUNNER_ROLE_ARN = "arn:aws:iam::123456789012:role/sundial-runner"


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


def state_machine_definition(function_arns: dict[str, str]) -> str:
    """The ASL file with the template's DefinitionSubstitutions applied, as CloudFormation would."""
    substitutions = resource("RunnerStateMachine")["Properties"]["DefinitionSubstitutions"]
    missing = set(substitutions) - set(function_arns)
    if missing:
        raise KeyError(f"no ARN given for substitutions {sorted(missing)}")
    text = ASL_PATH.read_text()
    text = re.sub(r"\$\{(\w+)\}", lambda match: function_arns.get(match.group(1), match.group(0)), text)
    json.loads(text)
    return text


def create_state_machine(client: SFNClient, name: str, function_arns: dict[str, str]) -> str:
    created = client.create_state_machine(
        name=name,
        definition=state_machine_definition(function_arns),
        roleArn=RUNNER_ROLE_ARN,
        type="STANDARD",
    )
    return created["stateMachineArn"]


def runner_function_handlers() -> dict[str, str]:
    """DefinitionSubstitutions key → the runner function's handler (`module.function`)."""
    substitutions = resource("RunnerStateMachine")["Properties"]["DefinitionSubstitutions"]
    handlers: dict[str, str] = {}
    for key, value in substitutions.items():
        logical_id = (
            value["Fn::GetAtt"].split(".")[0] if isinstance(value["Fn::GetAtt"], str) else value["Fn::GetAtt"][0]
        )
        handlers[key] = resource(logical_id)["Properties"]["Handler"]
    return handlers
