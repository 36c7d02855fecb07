"""template.yaml: lints clean, transforms offline with the SAM translator, and declares what the code
relies on: the tables and indexes, the JWT authorizer, least-privilege IAM, the layer and Python 3.11."""

from __future__ import annotations

import ast
import copy
import json
import re
import tomllib
from typing import Any

import api_handler
import pytest
from cfnlint.api import lint_file
from pynamodb.indexes import Index
from pynamodb.models import Model
from sundial.settings import Settings
from sundial.store.records import DUE_INDEX_ATTRIBUTES, InvocationRecord, OpenRegisterRecord, TriggerRecord

from sundial_local import gateway
from sundial_local.template import load_template, resource
from tests.api_support import DAILY, WarmAws
from tests.conftest import BASE, START, ApiClient, token_claims
from tests.template_support import (
    ROOT,
    TEMPLATE_PATH,
    as_list,
    granted,
    packaged_template,
    recorded_aws_calls,
    statements,
    transform_template,
)

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

PYTHON = "python3.11"
# What SAM attaches to every function role: CloudWatch Logs, and X-Ray for `Tracing: Active` (X-Ray has
# no resource-level permissions, so that AWS managed policy is `Resource: *` by necessity).
SAM_MANAGED_POLICIES = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
}


@pytest.fixture(scope="module")
def transformed() -> dict[str, Any]:
    return transform_template()


def resources_of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: value for name, value in template["Resources"].items() if value["Type"] == kind}


def test_cfn_lint_reports_nothing() -> None:
    matches = lint_file(TEMPLATE_PATH)
    assert [str(match) for match in matches] == []


def test_sam_translator_transforms_it_offline(transformed: dict[str, Any]) -> None:
    kinds = {value["Type"] for value in transformed["Resources"].values()}
    assert "Transform" not in transformed
    assert {
        "AWS::Lambda::Function",
        "AWS::Lambda::LayerVersion",
        "AWS::IAM::Role",
        "AWS::ApiGatewayV2::Api",
        "AWS::DynamoDB::Table",
        "AWS::StepFunctions::StateMachine",
        "AWS::Events::Rule",
    } <= kinds
    assert not {kind for kind in kinds if kind.startswith("AWS::Serverless::")}


# --- tables --------------------------------------------------------------------------------------


def _key_schema(hash_key: str, range_key: str | None = None) -> list[dict[str, str]]:
    schema = [{"AttributeName": hash_key, "KeyType": "HASH"}]
    return schema + ([{"AttributeName": range_key, "KeyType": "RANGE"}] if range_key else [])


def _index_definition(index: Index[Any]) -> dict[str, Any]:
    """The GSI definition a pynamodb index implies, in CloudFormation's shape."""
    keys = {attribute.attr_name: attribute for attribute in index.Meta.attributes.values()}
    hash_key = next(name for name, attribute in keys.items() if attribute.is_hash_key)
    range_key = next((name for name, attribute in keys.items() if attribute.is_range_key), None)
    projection: dict[str, Any] = {"ProjectionType": index.Meta.projection.projection_type}
    if index.Meta.projection.non_key_attributes:
        projection["NonKeyAttributes"] = list(index.Meta.projection.non_key_attributes)
    return {"IndexName": index.Meta.index_name, "KeySchema": _key_schema(hash_key, range_key), "Projection": projection}


def _attribute_types(model: type[Model]) -> dict[str, str]:
    return {attribute.attr_name: attribute.attr_type for attribute in model.get_attributes().values()}


@pytest.mark.parametrize(
    ("logical_id", "model", "sharing"),
    [
        ("TriggersTable", TriggerRecord, ()),
        ("InvocationsTable", InvocationRecord, (OpenRegisterRecord,)),  # the registers live beside the runs
    ],
)
def test_tables_match_the_storage_models(logical_id: str, model: type[Model], sharing: tuple[type[Model], ...]) -> None:
    properties = resource(logical_id)["Properties"]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert properties["SSESpecification"] == {"SSEEnabled": True}
    assert "ProvisionedThroughput" not in properties
    assert model._hash_keyname is not None
    assert properties["KeySchema"] == _key_schema(model._hash_keyname, model._range_keyname)
    indexes = [_index_definition(index) for each in (model, *sharing) for index in each._indexes.values()]
    assert sorted(properties.get("GlobalSecondaryIndexes", []), key=lambda item: item["IndexName"]) == sorted(
        indexes, key=lambda item: item["IndexName"]
    )
    for index in properties.get("GlobalSecondaryIndexes", []):
        assert "ProvisionedThroughput" not in index
    types = {name: kind for each in (model, *sharing) for name, kind in _attribute_types(each).items()}
    assert {item["AttributeName"]: item["AttributeType"] for item in properties["AttributeDefinitions"]} == {
        name: types[name]
        for name in {key["AttributeName"] for key in properties["KeySchema"]}
        | {key["AttributeName"] for index in indexes for key in index["KeySchema"]}
    }


def test_due_index_is_sparse_sharded_and_projects_what_the_dispatcher_reads() -> None:
    (due,) = [
        index
        for index in resource("TriggersTable")["Properties"]["GlobalSecondaryIndexes"]
        if index["IndexName"] == "due"
    ]
    assert due["KeySchema"] == _key_schema("due_shard", "due_at")
    assert due["Projection"] == {"ProjectionType": "INCLUDE", "NonKeyAttributes": DUE_INDEX_ATTRIBUTES}
    types = _attribute_types(TriggerRecord)
    assert (types["due_shard"], types["due_at"]) == ("N", "S")
    # Sparse: the key attributes are optional on the item, so rows without them are not indexed.
    assert TriggerRecord.due_shard.null
    assert TriggerRecord.due_at.null
    shard_count = load_template()["Parameters"]["DueShardCount"]
    assert (shard_count["Type"], shard_count["MinValue"]) == ("Number", 1)
    assert load_template()["Globals"]["Function"]["Environment"]["Variables"]["DUE_SHARD_COUNT"] == {
        "Ref": "DueShardCount"
    }


def test_invocations_expire_through_ttl() -> None:
    properties = resource("InvocationsTable")["Properties"]
    assert properties["TimeToLiveSpecification"] == {
        "AttributeName": InvocationRecord.expires_at.attr_name,
        "Enabled": True,
    }
    assert "TimeToLiveSpecification" not in resource("TriggersTable")["Properties"]
    variables = load_template()["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["INVOCATION_RETENTION_DAYS"] == {"Ref": "InvocationRetentionDays"}
    assert load_template()["Parameters"]["InvocationRetentionDays"]["Default"] == 90


def test_transformed_tables_are_unchanged(transformed: dict[str, Any]) -> None:
    for logical_id in ("TriggersTable", "InvocationsTable"):
        assert (
            transformed["Resources"][logical_id]["Properties"]
            == packaged_template()["Resources"][logical_id]["Properties"]
        )


# --- HTTP API ------------------------------------------------------------------------------------


def test_http_api_uses_a_jwt_authorizer_with_issuer_and_audience_parameters(transformed: dict[str, Any]) -> None:
    parameters = load_template()["Parameters"]
    for name in ("JwtIssuer", "JwtAudience"):
        assert parameters[name]["Type"] == "String"
        assert "Default" not in parameters[name], f"{name} must be given at deploy time"
    (api,) = resources_of_type(transformed, "AWS::ApiGatewayV2::Api").values()
    body = api["Properties"]["Body"]
    scheme = body["components"]["securitySchemes"]["JwtAuthorizer"]["x-amazon-apigateway-authorizer"]
    assert scheme == {
        "type": "jwt",
        "identitySource": "$request.header.Authorization",
        "jwtConfiguration": {"issuer": {"Ref": "JwtIssuer"}, "audience": [{"Ref": "JwtAudience"}]},
    }
    security = {
        (path, method): operation.get("security")
        for path, item in body["paths"].items()
        for method, operation in item.items()
    }
    assert security == {
        ("/{proxy+}", "x-amazon-apigateway-any-method"): [{"JwtAuthorizer": []}],
        ("/openapi.json", "get"): [{"NONE": []}],
        ("/docs", "get"): [{"NONE": []}],
        ("/console", "get"): [{"NONE": []}],
        ("/console/{asset}", "get"): [{"NONE": []}],
    }
    assert {f"GET {path}" for path, method in security if security[(path, method)] == [{"NONE": []}]} == set(
        gateway.PUBLIC_ROUTE_KEYS
    ), "the local gateway opens exactly the routes the template opens"
    for item in body["paths"].values():
        for operation in item.values():
            assert operation["x-amazon-apigateway-integration"]["uri"]["Fn::Sub"].endswith(
                "${ApiFunction.Arn}/invocations"
            )
            assert operation["x-amazon-apigateway-integration"]["payloadFormatVersion"] == "2.0"


def test_api_function_is_wired_to_its_handler_and_settings() -> None:
    properties = resource("ApiFunction")["Properties"]
    module, function = properties["Handler"].split(".")
    assert (ROOT / properties["CodeUri"] / f"{module}.py").exists()
    assert callable(getattr(api_handler, function))
    variables = properties["Environment"]["Variables"]
    assert variables["TENANT_CLAIM"] == {"Ref": "TenantClaim"}
    assert variables["ROLES_CLAIM"] == {"Ref": "RolesClaim"}
    assert variables["STATE_MACHINE_ARN"] == {"Ref": "RunnerStateMachine"}
    parameters = load_template()["Parameters"]
    assert parameters["TenantClaim"]["Default"] == Settings().tenant_claim
    assert parameters["RolesClaim"]["Default"] == Settings().roles_claim


def test_api_routes_are_throttled_by_parameters(transformed: dict[str, Any]) -> None:
    """Every authenticated route by ApiBurstLimit/ApiRateLimit; each public one by its own, lower, pair."""
    parameters = load_template()["Parameters"]
    assert parameters["PublicRateLimit"]["Default"] < parameters["ApiRateLimit"]["Default"]
    (stage,) = resources_of_type(transformed, "AWS::ApiGatewayV2::Stage").values()
    settings = stage["Properties"]
    assert settings["DefaultRouteSettings"] == {
        "ThrottlingBurstLimit": {"Ref": "ApiBurstLimit"},
        "ThrottlingRateLimit": {"Ref": "ApiRateLimit"},
    }
    public = {"ThrottlingBurstLimit": {"Ref": "PublicBurstLimit"}, "ThrottlingRateLimit": {"Ref": "PublicRateLimit"}}
    assert settings["RouteSettings"] == dict.fromkeys(gateway.PUBLIC_ROUTE_KEYS, public)


def test_access_logs_record_every_request_without_any_header(transformed: dict[str, Any]) -> None:
    (stage,) = resources_of_type(transformed, "AWS::ApiGatewayV2::Stage").values()
    logging = stage["Properties"]["AccessLogSettings"]
    assert logging["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogs", "Arn"]}
    fields = json.loads(logging["Format"])
    assert {"requestId", "routeKey", "status", "sub"} <= set(fields)
    variables = re.findall(r"\$context\.[\w.]+", logging["Format"])
    assert variables
    assert not [name for name in variables if "header" in name.lower() or "authorization" in name.lower()]
    assert resource("ApiAccessLogs")["Properties"]["RetentionInDays"] == {"Ref": "AccessLogRetentionDays"}


def test_the_sweep_runs_on_its_schedule_parameter() -> None:
    properties = resource("RunnerSweepFunction")["Properties"]
    assert properties["Handler"] == "runner_handler.sweep_handler"
    assert properties["Events"]["Sweep"] == {"Type": "Schedule", "Properties": {"Schedule": {"Ref": "SweepSchedule"}}}
    schedule = load_template()["Parameters"]["SweepSchedule"]
    assert re.fullmatch(schedule["AllowedPattern"], schedule["Default"])
    assert not re.fullmatch(schedule["AllowedPattern"], "cron(0 * * * ? *)")


def test_every_handler_exists() -> None:
    for logical_id, definition in load_template()["Resources"].items():
        if definition["Type"] != "AWS::Serverless::Function":
            continue
        properties = definition["Properties"]
        module, function = properties["Handler"].split(".")
        source = ROOT / properties["CodeUri"] / f"{module}.py"
        assert source.exists(), logical_id
        defined = {node.name for node in ast.parse(source.read_text()).body if isinstance(node, ast.FunctionDef)}
        assert function in defined, f"{logical_id}: {properties['Handler']} is not defined"


def test_every_environment_variable_is_a_setting() -> None:
    """A variable the code never reads is a typo or dead configuration."""
    settings = {field.alias for field in Settings.model_fields.values()}
    template = load_template()
    names = set(template["Globals"]["Function"]["Environment"]["Variables"])
    for definition in resources_of_type(template, "AWS::Serverless::Function").values():
        names |= set(definition["Properties"].get("Environment", {}).get("Variables", {}))
    assert {name for name in names if not name.startswith("POWERTOOLS_")} <= settings


# --- IAM -----------------------------------------------------------------------------------------


def _wildcard_is_scoped(resource_value: Any, resources: set[str]) -> bool:
    """A `*` is allowed only as a suffix after the name of one of this template's resources, e.g. the
    executions of our state machine (`...:execution:${Name}:*`), whose names are not known in advance."""
    if not isinstance(resource_value, dict) or "Fn::Sub" not in resource_value:
        return "*" not in str(resource_value)
    text, variables = (
        (resource_value["Fn::Sub"], {}) if isinstance(resource_value["Fn::Sub"], str) else resource_value["Fn::Sub"]
    )
    if "*" not in text:
        return True
    match = re.search(r"\$\{(\w+)\}:?\*$", text)
    if match is None or text.count("*") != 1:
        return False
    bound = variables.get(match.group(1), {})
    target = bound.get("Ref") or (bound.get("Fn::GetAtt") or [None])[0]
    return target in resources


def test_no_role_grants_wildcards(transformed: dict[str, Any]) -> None:
    logical_ids = set(transformed["Resources"])
    roles = resources_of_type(transformed, "AWS::IAM::Role")
    assert roles
    for name, role in roles.items():
        assert set(role["Properties"].get("ManagedPolicyArns", [])) <= SAM_MANAGED_POLICIES, name
        for statement in statements(role):
            assert statement["Effect"] == "Allow", (name, statement)
            assert "NotAction" not in statement
            assert "NotResource" not in statement
            for action in as_list(statement["Action"]):
                assert "*" not in action, (name, action)
            for resource_value in as_list(statement["Resource"]):
                assert resource_value != "*", (name, statement)
                assert _wildcard_is_scoped(resource_value, logical_ids), (name, resource_value)


def _exercise_every_route(api: ApiClient) -> None:
    """One of every kind of request the API function serves, including the paths that write."""
    ok = [
        api.request("POST", "/schedule-preview", {"cronExpression": "0 9 * * *"}),
        api.request("POST", BASE, {"id": "t1", **DAILY}),
        api.request("POST", BASE, {"id": "soon", "name": "Soon", "runAt": "2026-11-26T15:01:00Z"}),
        api.request("GET", BASE),
        api.request("GET", BASE.rsplit("/agents/", 1)[0] + "/scheduled-triggers"),
        api.request("GET", f"{BASE}/upcoming-runs"),
        api.request("GET", f"{BASE}/t1"),
        api.request("PATCH", f"{BASE}/t1", {"cronExpression": "0 10 * * *"}),
        api.request("POST", f"{BASE}/t1/run", headers={"Idempotency-Key": "k1"}),
        api.request("POST", f"{BASE}/t1/run", headers={"Idempotency-Key": "k1"}),
    ]
    run = api.request("POST", f"{BASE}/t1/run")
    invocation = f"{BASE}/t1/invocations/{run.body['invocationId']}"
    ok += [
        run,
        api.request("GET", f"{BASE}/t1/invocations"),
        api.request("GET", "/tenants/acme/projects/website/invocations", query={"status": "pending"}),
        api.request("GET", invocation),
        api.request("POST", f"{invocation}/cancel"),
        api.request("POST", f"{invocation}/rerun"),
        api.request("DELETE", f"{BASE}/t1"),
    ]
    admin = token_claims("carol", "[admin]")
    cascade = api.request("DELETE", BASE.rsplit("/agents/", 1)[0] + "/scheduled-triggers", claims=admin)
    ok += [cascade, api.request("GET", f"/tenants/acme/cascades/{cascade.body['cascadeId']}", claims=admin)]
    assert [response.status for response in ok if response.status >= 300] == []


def test_api_function_is_granted_exactly_what_its_code_uses(
    transformed: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every AWS call the API makes is recorded while every route runs, then compared with the role."""
    with WarmAws.start() as warm:
        stack = warm.fresh_stack()
        monkeypatch.setattr(api_handler, "deps", lambda: stack.deps)
        tables = {stack.settings.triggers_table: "TriggersTable", stack.settings.invocations_table: "InvocationsTable"}
        recording = recorded_aws_calls(
            tables, stack.settings.state_machine_arn, stack.settings.cascade_state_machine_arn
        )
        stack.clock.set(START)
        with recording as calls:
            _exercise_every_route(ApiClient())

    # The token is read only to tell the agent of a cancel (AgentCancelUrl), which the tests run without.
    allowed = granted(transformed, "ApiFunctionRole") - {("secretsmanager:GetSecretValue", "AgentRunTokenSecretArn")}
    assert calls - allowed == set(), "the API calls AWS without permission"
    assert allowed - calls == set(), "the API function is granted more than it uses"


# --- runtime and layer ---------------------------------------------------------------------------


def test_python_311_everywhere(transformed: dict[str, Any]) -> None:
    template = load_template()
    assert template["Globals"]["Function"]["Runtime"] == PYTHON
    for definition in resources_of_type(template, "AWS::Serverless::Function").values():
        assert definition["Properties"].get("Runtime", PYTHON) == PYTHON
    for function in resources_of_type(transformed, "AWS::Lambda::Function").values():
        assert function["Properties"]["Runtime"] == PYTHON
    (layer,) = resources_of_type(template, "AWS::Serverless::LayerVersion").values()
    assert layer["Properties"]["CompatibleRuntimes"] == [PYTHON]
    assert layer["Metadata"]["BuildMethod"] == PYTHON
    for built in resources_of_type(transformed, "AWS::Lambda::LayerVersion").values():
        assert built["Properties"]["CompatibleRuntimes"] == [PYTHON]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11,<3.12"
    assert tomllib.loads((ROOT / "uv.lock").read_text())["requires-python"] == "==3.11.*"


def test_every_function_uses_the_shared_layer(transformed: dict[str, Any]) -> None:
    (layer_id,) = resources_of_type(transformed, "AWS::Lambda::LayerVersion")
    layer = resources_of_type(load_template(), "AWS::Serverless::LayerVersion")
    (source,) = layer.values()
    assert (ROOT / source["Properties"]["ContentUri"] / "sundial" / "__init__.py").exists()
    for name, function in resources_of_type(transformed, "AWS::Lambda::Function").items():
        assert function["Properties"]["Layers"] == [{"Ref": layer_id}], name


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _locked_runtime_closure() -> dict[str, str]:
    """name → version of every package the project's runtime dependencies pull in, per uv.lock."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    packages = {_normalized(package["name"]): package for package in lock["package"]}
    (project,) = [package for package in lock["package"] if package["source"].get("virtual") == "."]
    closure: dict[str, str] = {}
    pending = copy.deepcopy(project["dependencies"])
    while pending:
        dependency = pending.pop()
        package = packages[_normalized(dependency["name"])]
        for extra in dependency.get("extra", []):
            pending += package.get("optional-dependencies", {}).get(extra, [])
        if _normalized(package["name"]) not in closure:
            closure[_normalized(package["name"])] = package["version"]
            pending += package.get("dependencies", [])
    return closure


def test_layer_requirements_are_the_locked_runtime_dependencies() -> None:
    """requirements.txt is `uv export --frozen --no-dev --no-hashes --no-header --no-annotate --no-emit-project`."""
    lines = [line.split(";")[0].strip() for line in (ROOT / "layers/sundial/requirements.txt").read_text().splitlines()]
    pinned = dict(line.split("==", 1) for line in lines if line and not line.startswith("#"))
    assert {_normalized(name): version for name, version in pinned.items()} == _locked_runtime_closure()
    assert "moto" not in {_normalized(name) for name in pinned}
