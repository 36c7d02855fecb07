"""template.yaml as CloudFormation sees it after `sam package` and the SAM transform, offline."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = ROOT / "template.yaml"
PARAMETERS = {
    "JwtIssuer": "https://auth.example.com/",
    "JwtAudience": "sundial",
    "AgentRunUrl": "https://agents.example.com/run",
    "AgentRunTokenSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:agent-token",
}
LOCAL_ARTIFACT_PROPERTIES = ("CodeUri", "ContentUri", "DefinitionUri")


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
    """A policy resource as `Logical`, `Logical/index/name` or `Logical:execution`."""
    if "Fn::GetAtt" in value and value["Fn::GetAtt"][1] == "Arn":
        return str(value["Fn::GetAtt"][0])
    if "Ref" in value:
        return str(value["Ref"])
    sub = value.get("Fn::Sub")
    if isinstance(sub, str):
        match = re.fullmatch(r"\$\{(\w+)\.Arn\}(/index/\w+)", sub)
        if match:
            return match.group(1) + match.group(2)
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
