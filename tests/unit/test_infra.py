"""The deployment in infra/ and azure.yaml: Bicep that parses, passes checkov, sets exactly the settings
the code reads, grants the app's identity exactly its data roles, and holds no key anywhere."""
from __future__ import annotations

import functools
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from pycep import BicepParser

from catalog.settings import (
    APP_SETTINGS,
    CATALOG_STORAGE,
    DEFAULT_SWEEP_SCHEDULE,
    DEFAULT_TABLE,
    IDENTITY_SUFFIXES,
    STORAGE_SETTING,
    Settings,
)

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

# An empty or unparsed scan also reports zero failures; this many passes proves checkov read the
# storage account and the function app (20 with checkov 3.3.30).
MIN_PASSED_CHECKS = 15
# Every skip is annotated with its reason next to the resource (`// checkov:skip=ID: reason`). A
# new skip must be added here too, so it gets a reviewer's eye.
EXPECTED_SKIPS = {"CKV_AZURE_35", "CKV_AZURE_59", "CKV_AZURE_225", "CKV_AZURE_222", "CKV_AZURE_17",
                  "CKV_AZURE_212", "CKV_AZURE_213"}

# Azure built-in role definition ids (learn.microsoft.com, "Azure built-in roles").
STORAGE_BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
STORAGE_QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
STORAGE_TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
STORAGE_DATA_ROLES = {STORAGE_BLOB_DATA_OWNER, STORAGE_QUEUE_DATA_CONTRIBUTOR, STORAGE_TABLE_DATA_CONTRIBUTOR}

# Settings the code reads that infra deliberately does not set, and why.
NOT_SET_BY_INFRA = {
    STORAGE_SETTING: "the connection-string form; in Azure the host and the catalog use the identity form "
                     "AzureWebJobsStorage__*, and the account has shared-key access disabled",
    CATALOG_STORAGE: "optional separate storage for the catalog; infra deploys one account for the host and "
                     "the catalog, and unset means the catalog uses AzureWebJobsStorage",
}
# Settings the code reads that local.settings.json.example deliberately does not set, and why.
NOT_SET_LOCALLY = {f"{STORAGE_SETTING}__{suffix}": "Azurite uses the connection-string form "
                   "AzureWebJobsStorage=UseDevelopmentStorage=true" for suffix in IDENTITY_SUFFIXES}
# Settings for the Functions platform rather than the catalog code.
HOST_SETTINGS_IN_INFRA = {
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "where telemetry goes (no key: local auth is disabled)",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "telemetry is sent with the app's Entra ID identity",
}
HOST_SETTINGS_LOCALLY = {
    "FUNCTIONS_WORKER_RUNTIME": "Core Tools needs it; Flex Consumption takes functionAppConfig.runtime instead",
    "AzureWebJobsFeatureFlags": "worker indexing for the Python v2 model under older Core Tools",
}
# App settings the Flex Consumption plan rejects or ignores (its runtime, scale and deployment
# live in functionAppConfig), plus the keyed storage connection string.
NOT_ON_FLEX = {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE",
               "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "WEBSITE_CONTENTSHARE", "WEBSITE_NODE_DEFAULT_VERSION",
               STORAGE_SETTING}

KEY_PATTERNS = ("AccountKey=", "listKeys(", "SharedAccessSignature", "sig=", "listAccountSas(", "listServiceSas(")


@functools.cache
def bicep(relative: str) -> dict:
    return BicepParser().parse(file_path=INFRA / relative)


def resource(relative: str, name: str) -> dict:
    """A resource's config, with an `if (...)` condition unwrapped into `__condition__`."""
    config = bicep(relative)["resources"][name]["config"]
    if "condition" in config and "config" in config:
        return {**config["config"], "__condition__": config["condition"]}
    return config


def accessor(node) -> list[str]:
    """`a.b.c` as ["a", "b", "c"]; a plain identifier as [name]."""
    if isinstance(node, str):
        return [node]
    operands = node["operator"]["operands"]
    assert node["operator"]["type"] == "property_accessor", node
    return accessor(operands["operand_1"]) + accessor(operands["operand_2"])


def app_settings() -> dict[str, object]:
    entries = resource("app/function.bicep", "site")["properties"]["siteConfig"]["appSettings"]
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), f"duplicate app settings: {names}"
    return {e["name"]: e["value"] for e in entries}


def local_settings() -> dict[str, str]:
    return json.loads((ROOT / "local.settings.json.example").read_text())["Values"]


def azd_parameters() -> dict[str, str]:
    return {k: v["value"] for k, v in json.loads((INFRA / "main.parameters.json").read_text())["parameters"].items()}


def azd_placeholder(value: str) -> tuple[str, str | None]:
    """`${NAME}` or `${NAME=default}` -> (NAME, default)."""
    match = re.fullmatch(r"\$\{(\w+)(?:=(.*))?\}", value)
    assert match, f"not an azd placeholder: {value!r}"
    return match.group(1), match.group(2)


# --- Bicep parses ------------------------------------------------------------------------------------

def test_infra_has_the_main_template_and_its_modules():
    names = {p.relative_to(INFRA).as_posix() for p in BICEP_FILES}
    assert {"main.bicep", "app/storage.bicep", "app/function.bicep", "app/rbac.bicep",
            "app/monitoring.bicep"} <= names
    modules = {m["detail"]["path"] for m in bicep("main.bicep")["modules"].values()}
    assert modules == names - {"main.bicep"}, "every module file is used by main.bicep"


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_bicep_file_parses(path):
    parsed = BicepParser().parse(file_path=path)
    assert parsed.get("resources") or parsed.get("modules")


@pytest.mark.parametrize("breakage", [
    ("resource appIdentity", "resourc appIdentity"),
    ("module rbac 'app/rbac.bicep' = {", "module rbac 'app/rbac.bicep' ="),
    ("'st${resourceToken}'", "'st${resourceToken}"),
])
def test_a_syntax_error_fails_the_parse(tmp_path, breakage):
    # The parse above must be able to fail: checkov alone would exit 0 on this file.
    old, new = breakage
    source = (INFRA / "main.bicep").read_text()
    assert old in source
    broken = tmp_path / "main.bicep"
    broken.write_text(source.replace(old, new, 1))
    with pytest.raises(Exception):  # noqa: B017 - pycep raises lark's errors, which it does not export
        BicepParser().parse(file_path=broken)


# --- checkov -----------------------------------------------------------------------------------------

@functools.cache
def checkov_report() -> dict:
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV.relative_to(ROOT)} is missing: run scripts/bootstrap --checkov")
    run = subprocess.run([str(CHECKOV), "-d", str(INFRA), "--framework", "bicep", "--skip-download", "-o", "json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode in (0, 1), run.stderr[-2000:]
    report = json.loads(run.stdout)
    if isinstance(report, list):  # one report per framework when several ran
        report = next(r for r in report if r["check_type"] == "bicep")
    assert report["check_type"] == "bicep"
    return report


def test_checkov_finds_no_failed_check_and_no_parsing_error():
    report = checkov_report()
    failed = [f"{c['check_id']} {c['resource']} {c['file_path']}" for c in report["results"]["failed_checks"]]
    assert failed == []
    assert report["results"]["parsing_errors"] == []
    assert report["summary"]["failed"] == 0


def test_checkov_really_scanned_the_templates():
    report = checkov_report()
    passed = report["results"]["passed_checks"]
    assert len(passed) >= MIN_PASSED_CHECKS, report["summary"]
    scanned = {c["file_path"].lstrip("/") for c in passed}
    assert {"app/storage.bicep", "app/function.bicep"} <= scanned


def test_every_skipped_check_is_expected_and_says_why():
    skipped = checkov_report()["results"]["skipped_checks"]
    assert {c["check_id"] for c in skipped} == EXPECTED_SKIPS
    for check in skipped:
        reason = (check["check_result"].get("suppress_comment") or "").strip()
        assert len(reason) > 20 and reason != "No comment provided", check["check_id"]


# --- app settings: the same names in the code, local.settings.json.example and infra ------------------

def code_settings() -> set[str]:
    return set(APP_SETTINGS) | {f"{STORAGE_SETTING}__{suffix}" for suffix in IDENTITY_SUFFIXES}


def test_documented_exceptions_are_settings_the_code_reads():
    assert set(NOT_SET_BY_INFRA) <= code_settings()
    assert set(NOT_SET_LOCALLY) <= code_settings()
    assert not (set(HOST_SETTINGS_IN_INFRA) | set(HOST_SETTINGS_LOCALLY)) & code_settings()


def test_infra_sets_every_setting_the_code_reads_except_the_documented_ones():
    infra = set(app_settings()) - set(HOST_SETTINGS_IN_INFRA)
    assert infra == code_settings() - set(NOT_SET_BY_INFRA)


def test_local_example_sets_every_setting_the_code_reads_except_the_documented_ones():
    local = set(local_settings()) - set(HOST_SETTINGS_LOCALLY)
    assert local == code_settings() - set(NOT_SET_LOCALLY)


def test_infra_sets_no_setting_flex_consumption_rejects():
    assert not set(app_settings()) & NOT_ON_FLEX


def test_identity_based_host_storage_settings():
    settings = app_settings()
    assert settings[f"{STORAGE_SETTING}__credential"] == "managedidentity"
    assert settings[f"{STORAGE_SETTING}__clientId"] == "identityClientId"
    for suffix in ("blobServiceUri", "queueServiceUri", "tableServiceUri"):
        assert settings[f"{STORAGE_SETTING}__{suffix}"] == suffix  # the module parameter of that name
        assert accessor(bicep("main.bicep")["modules"]["functionApp"]["config"]["params"][suffix]) == [
            "storage", "outputs", suffix]


def infra_catalog_values() -> dict[str, str]:
    """The CATALOG_* values an `azd up` with an empty environment deploys, followed from the app
    setting through main.bicep's module parameters to main.parameters.json or the parameter default."""
    main = bicep("main.bicep")
    module_params = main["modules"]["functionApp"]["config"]["params"]
    azd = azd_parameters()
    values: dict[str, str] = {}

    def main_param(name: str) -> str:
        if name in azd:
            _, default = azd_placeholder(azd[name])
            assert default is not None, f"{name} has no default in main.parameters.json"
            return default
        default = main["parameters"][name]["default"]
        assert isinstance(default, (str, bool, int)), f"{name}: cannot evaluate {default!r}"
        return interpolate(str(default).lower() if isinstance(default, bool) else str(default))

    def interpolate(text: str) -> str:
        def one(match):
            inner = match.group(1)
            lower = re.fullmatch(r"toLower\((\w+)\)", inner)
            return main_param(lower.group(1)).lower() if lower else main_param(inner)
        return re.sub(r"\$\{([^}]+)\}", one, text)

    for name, value in app_settings().items():
        if not name.startswith("CATALOG_"):
            continue
        if isinstance(value, dict):  # `flag ? 'true' : 'false'` for the boolean
            operands = value["operator"]["operands"]
            assert value["operator"]["type"] == "conditional"
            assert (operands["true_value"], operands["false_value"]) == ("true", "false")
            value = operands["condition"]
        assert accessor(module_params[value]) == [value], f"{name}: main.bicep passes {value} through"
        values[name] = main_param(value)
    return values


def test_infra_defaults_are_settings_the_code_accepts_and_match_the_local_example():
    values = infra_catalog_values()
    env = {**values, f"{STORAGE_SETTING}__tableServiceUri": "https://st.table.core.windows.net",
           f"{STORAGE_SETTING}__queueServiceUri": "https://st.queue.core.windows.net",
           f"{STORAGE_SETTING}__credential": "managedidentity"}
    settings = Settings.from_env(env)
    assert settings.table == DEFAULT_TABLE and settings.sweep_schedule == DEFAULT_SWEEP_SCHEDULE
    assert (settings.wal_table, settings.queue) == (f"{DEFAULT_TABLE}wal", f"{DEFAULT_TABLE.lower()}-wal")
    assert settings.schema.case_sensitive is False
    local = {k: v for k, v in local_settings().items() if k.startswith("CATALOG_") and k != CATALOG_STORAGE}
    assert values == local


def test_tables_and_queues_are_the_ones_the_app_is_configured_with():
    params = bicep("main.bicep")["modules"]["storage"]["config"]["params"]
    assert (params["indexTableName"], params["walTableName"], params["queueName"]) == (
        "catalogTable", "catalogWalTable", "catalogQueue")
    tables = {resource("app/storage.bicep", n)["name"] for n in ("indexTable", "walTable")}
    queues = {resource("app/storage.bicep", n)["name"] for n in ("walQueue", "poisonQueue")}
    assert tables == {"indexTableName", "walTableName"}
    assert queues == {"queueName", "${queueName}-poison"}  # the host's poison queue name


# --- identity and roles --------------------------------------------------------------------------------

def test_app_runs_as_the_user_assigned_identity_for_storage_and_deployment():
    main = bicep("main.bicep")
    assert main["resources"]["appIdentity"]["type"] == "Microsoft.ManagedIdentity/userAssignedIdentities"
    function = main["modules"]["functionApp"]["config"]["params"]
    assert accessor(function["identityId"]) == ["appIdentity", "id"]
    assert accessor(function["identityClientId"]) == ["appIdentity", "properties", "clientId"]
    site = resource("app/function.bicep", "site")
    assert site["identity"]["type"] == "UserAssigned"
    assert list(site["identity"]["userAssignedIdentities"]) == ["'${identityId}'"]
    storage = site["properties"]["functionAppConfig"]["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {"type": "UserAssignedIdentity",
                                         "userAssignedIdentityResourceId": "identityId"}
    telemetry = app_settings()["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]
    assert telemetry == "ClientId=${identityClientId};Authorization=AAD"


def role_assignments() -> list[dict]:
    """Each role assignment in rbac.bicep as {scope type, role id, principal, principal type, conditional}."""
    rbac = bicep("app/rbac.bicep")
    found = []
    for name, res in rbac["resources"].items():
        if res["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        config = resource("app/rbac.bicep", name)
        role = config["properties"]["roleDefinitionId"]["function"]
        assert role["type"] == "subscription_resource_id"
        assert role["parameters"]["resource_type"] == "Microsoft.Authorization/roleDefinitions"
        found.append({
            "scope": rbac["resources"][config["scope"]]["type"],
            "role": rbac["variables"][role["parameters"]["resource_name_1"]]["value"],
            "principal": config["properties"]["principalId"],
            "principal_type": config["properties"]["principalType"],
            "conditional": "__condition__" in config,
        })
    return found


def test_app_identity_has_exactly_its_data_roles():
    main = bicep("main.bicep")
    rbac = main["modules"]["rbac"]["config"]["params"]
    assert accessor(rbac["appPrincipalId"]) == ["appIdentity", "properties", "principalId"]
    assert accessor(rbac["storageAccountName"]) == ["storage", "outputs", "name"]
    assert main["modules"]["storage"]["detail"]["path"] == "app/storage.bicep"
    app = [a for a in role_assignments() if a["principal"] == "appPrincipalId"]
    assert all(a["principal_type"] == "ServicePrincipal" and not a["conditional"] for a in app)
    assert sorted((a["scope"], a["role"]) for a in app) == sorted([
        ("Microsoft.Storage/storageAccounts", STORAGE_TABLE_DATA_CONTRIBUTOR),
        ("Microsoft.Storage/storageAccounts", STORAGE_QUEUE_DATA_CONTRIBUTOR),
        ("Microsoft.Storage/storageAccounts", STORAGE_BLOB_DATA_OWNER),
        ("Microsoft.Insights/components", MONITORING_METRICS_PUBLISHER),
    ])


def test_deploying_principal_optionally_gets_the_storage_data_roles():
    rbac = bicep("main.bicep")["modules"]["rbac"]["config"]["params"]
    assert rbac["deployerPrincipalId"] == "principalId"
    assert azd_placeholder(azd_parameters()["principalId"]) == ("AZURE_PRINCIPAL_ID", None)
    deployer = [a for a in role_assignments() if a["principal"] == "deployerPrincipalId"]
    assert all(a["conditional"] and a["scope"] == "Microsoft.Storage/storageAccounts" for a in deployer)
    assert sorted(a["role"] for a in deployer) == sorted(STORAGE_DATA_ROLES)
    assert len(role_assignments()) == 7


# --- storage, hosting, monitoring ----------------------------------------------------------------------

def test_storage_account_is_keyless_and_https_only():
    props = resource("app/storage.bicep", "storage")["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["allowBlobPublicAccess"] is False
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert resource("app/storage.bicep", "deploymentContainer")["properties"]["publicAccess"] == "None"


def test_flex_consumption_python_app():
    plan = resource("app/function.bicep", "plan")
    assert plan["sku"] == {"tier": "FlexConsumption", "name": "FC1"} and plan["properties"]["reserved"] is True
    site = resource("app/function.bicep", "site")
    assert site["kind"] == "functionapp,linux" and site["properties"]["httpsOnly"] is True
    config = site["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "pythonVersion"}
    assert config["scaleAndConcurrency"] == {"instanceMemoryMB": "instanceMemoryMB",
                                             "maximumInstanceCount": "maximumInstanceCount"}
    main = bicep("main.bicep")["parameters"]
    assert main["pythonVersion"]["default"] == "3.11"
    assert {"instanceMemoryMB", "maximumInstanceCount"} <= set(main)


def test_application_insights_takes_entra_id_ingestion_only():
    assert resource("app/monitoring.bicep", "applicationInsights")["properties"]["DisableLocalAuth"] is True
    workspace = resource("app/monitoring.bicep", "logAnalytics")["properties"]
    assert workspace["features"]["disableLocalAuth"] is True


def test_azd_deploys_the_repo_root_as_a_python_function_app_tagged_with_its_service_name():
    azure = yaml.safe_load((ROOT / "azure.yaml").read_text())
    assert list(azure["services"]) == ["api"]
    assert azure["services"]["api"] == {"project": ".", "language": "python", "host": "function"}
    main = bicep("main.bicep")
    assert main["variables"]["serviceName"]["value"] == "api"
    assert main["modules"]["functionApp"]["config"]["params"]["serviceName"] == "serviceName"
    tags = resource("app/function.bicep", "site")["tags"]["function"]
    assert tags["type"] == "union" and tags["parameters"]["arg_2"] == {"'azd-service-name'": "serviceName"}


def test_azd_parameters_match_the_template():
    main = bicep("main.bicep")["parameters"]
    azd = azd_parameters()
    assert set(azd) <= set(main)
    required = {name for name, p in main.items() if "default" not in p}
    assert required <= set(azd), "azd would prompt for these"
    assert azd_placeholder(azd["environmentName"]) == ("AZURE_ENV_NAME", None)
    assert azd_placeholder(azd["location"]) == ("AZURE_LOCATION", None)
    for name, value in azd.items():  # every default azd falls back to is one the template allows
        _, default = azd_placeholder(value)
        allowed = next((d["argument"] for d in main[name]["decorators"] if d["type"] == "allowed"), None)
        if default is not None and allowed is not None:
            assert default in [str(a) for a in allowed], name


def test_outputs_give_azd_what_it_needs_and_no_secret():
    outputs = bicep("main.bicep")["outputs"]
    assert {"AZURE_LOCATION", "AZURE_TENANT_ID", "AZURE_FUNCTION_NAME", "SERVICE_API_NAME", "SERVICE_API_URI",
            "AZURE_STORAGE_ACCOUNT_NAME"} <= set(outputs)
    for path in BICEP_FILES:
        for name, output in (bicep(path.relative_to(INFRA).as_posix()).get("outputs") or {}).items():
            text = json.dumps(output).lower()
            assert not any(word in text for word in ("connectionstring", "listkeys", "list_keys", "secret",
                                                     "password", "accountkey", "instrumentationkey")), (path, name)


def test_no_key_sas_or_keyed_connection_string_in_infra_or_azure_yaml():
    files = [p for p in INFRA.rglob("*") if p.is_file()] + [ROOT / "azure.yaml"]
    found = [(p.relative_to(ROOT).as_posix(), pattern) for p in files for pattern in KEY_PATTERNS
             if pattern.lower() in p.read_text().lower()]
    assert found == []


def test_readme_deploy_section_names_every_parameter():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Deploy to Azure"):]
    section = section[:section.index("\n## ", 5)]
    params = re.findall(r"^param\s+(\w+)", (ROOT / "infra" / "main.bicep").read_text(), flags=re.M)
    assert params, "main.bicep declares no parameter?"
    missing = [p for p in params if f"`{p}`" not in section]
    assert missing == [], f"README 'Deploy to Azure' does not describe: {missing}"
