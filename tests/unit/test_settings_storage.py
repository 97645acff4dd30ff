"""Where the catalog's storage comes from: connection string or identity-based settings (docs/architecture.md §11)."""
import pytest

from catalog.errors import SettingsError
from catalog.settings import CATALOG_STORAGE, IDENTITY_SUFFIXES, STORAGE_SETTING, Settings, parse_storage

SCHEMA = {"CATALOG_INDEX_KEYS": "sku,category", "CATALOG_ROW_KEY": "name"}
TABLE_URI = "https://stexample.table.core.windows.net"
QUEUE_URI = "https://stexample.queue.core.windows.net"
BLOB_URI = "https://stexample.blob.core.windows.net"
CLIENT_ID = "00000000-0000-0000-0000-000000000001"


def identity(prefix: str = STORAGE_SETTING, **overrides: str) -> dict[str, str]:
    """The identity form as infra/app/function.bicep sets it on the function app."""
    values = {"tableServiceUri": TABLE_URI, "queueServiceUri": QUEUE_URI, "blobServiceUri": BLOB_URI,
              "credential": "managedidentity", "clientId": CLIENT_ID, **overrides}
    return {f"{prefix}__{k}": v for k, v in values.items() if v is not None}


def test_connection_string_form():
    config = parse_storage({STORAGE_SETTING: "UseDevelopmentStorage=true"}, STORAGE_SETTING)
    assert config.connection_string == "UseDevelopmentStorage=true"
    assert not config.uses_identity
    assert config.setting == STORAGE_SETTING


def test_connection_string_wins_over_identity_parts_of_the_same_setting():
    env = {STORAGE_SETTING: "UseDevelopmentStorage=true", **identity()}
    assert parse_storage(env, STORAGE_SETTING).connection_string == "UseDevelopmentStorage=true"


def test_identity_form_as_deployed():
    config = parse_storage(identity(), STORAGE_SETTING)
    assert config.uses_identity and config.connection_string is None
    assert (config.table_uri, config.queue_uri, config.blob_uri) == (TABLE_URI, QUEUE_URI, BLOB_URI)
    assert (config.credential, config.client_id) == ("managedidentity", CLIENT_ID)


def test_identity_form_accepts_any_case_of_managedidentity():
    config = parse_storage(identity(credential="ManagedIdentity"), STORAGE_SETTING)
    assert config.credential == "managedidentity"


def test_identity_form_without_credential_leaves_the_choice_to_the_adapter():
    # No __credential: a developer's own Entra login (DefaultAzureCredential), e.g. against the
    # deployed account with the roles infra grants to principalId.
    config = parse_storage(identity(credential=None, clientId=None), STORAGE_SETTING)
    assert config.uses_identity and config.credential is None and config.client_id is None


def test_identity_suffixes_are_the_ones_the_functions_host_reads():
    assert set(IDENTITY_SUFFIXES) == {"tableServiceUri", "queueServiceUri", "blobServiceUri", "credential",
                                      "clientId"}


def test_account_name_form_derives_the_service_uris():
    config = parse_storage({f"{STORAGE_SETTING}__accountName": "stexample"}, STORAGE_SETTING)
    assert (config.table_uri, config.queue_uri, config.blob_uri) == (TABLE_URI, QUEUE_URI, BLOB_URI)
    assert config.uses_identity and config.credential is None


def test_explicit_uris_win_over_the_account_name():
    env = {f"{STORAGE_SETTING}__accountName": "other",
           f"{STORAGE_SETTING}__tableServiceUri": TABLE_URI}
    config = parse_storage(env, STORAGE_SETTING)
    assert config.table_uri == TABLE_URI
    assert config.queue_uri == "https://other.queue.core.windows.net"


def test_unset_setting_is_none():
    assert parse_storage({}, STORAGE_SETTING) is None
    assert parse_storage({STORAGE_SETTING: "  ", f"{STORAGE_SETTING}__clientId": ""}, STORAGE_SETTING) is None


def test_catalog_storage_takes_precedence_over_azure_web_jobs_storage():
    other = "https://cat.table.core.windows.net"
    env = {**SCHEMA, STORAGE_SETTING: "UseDevelopmentStorage=true", CATALOG_STORAGE: f"TableEndpoint={other}"}
    storage = Settings.from_env(env).storage
    assert (storage.setting, storage.connection_string) == (CATALOG_STORAGE, f"TableEndpoint={other}")
    env = {**SCHEMA, **identity(STORAGE_SETTING), **identity(CATALOG_STORAGE, tableServiceUri=other)}
    storage = Settings.from_env(env).storage
    assert (storage.setting, storage.table_uri) == (CATALOG_STORAGE, other)


def test_catalog_storage_identity_form_wins_over_a_host_connection_string():
    env = {**SCHEMA, STORAGE_SETTING: "UseDevelopmentStorage=true", **identity(CATALOG_STORAGE)}
    storage = Settings.from_env(env).storage
    assert storage.setting == CATALOG_STORAGE and storage.uses_identity


def test_empty_catalog_storage_falls_back_to_azure_web_jobs_storage():
    # local.settings.json.example lists CATALOG_STORAGE with an empty value.
    env = {**SCHEMA, CATALOG_STORAGE: "", **identity()}
    storage = Settings.from_env(env).storage
    assert storage.setting == STORAGE_SETTING and storage.table_uri == TABLE_URI


def test_neither_setting_names_azure_web_jobs_storage_and_the_alternative():
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(SCHEMA)
    assert raised.value.setting == STORAGE_SETTING
    assert CATALOG_STORAGE in str(raised.value)


@pytest.mark.parametrize("missing", ["tableServiceUri", "queueServiceUri"])
@pytest.mark.parametrize("prefix", [STORAGE_SETTING, CATALOG_STORAGE])
def test_missing_required_uri_names_the_setting(prefix, missing):
    env = {**SCHEMA, **identity(prefix, **{missing: None})}
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env)
    assert raised.value.setting == f"{prefix}__{missing}"


def test_blob_uri_is_optional_for_the_catalog():
    config = parse_storage(identity(blobServiceUri=None), STORAGE_SETTING)
    assert config.blob_uri is None and config.table_uri == TABLE_URI


def test_uri_that_is_not_http_names_the_setting():
    with pytest.raises(SettingsError) as raised:
        parse_storage(identity(queueServiceUri="stexample.queue.core.windows.net"), STORAGE_SETTING)
    assert raised.value.setting == f"{STORAGE_SETTING}__queueServiceUri"


def test_unsupported_credential_names_the_setting():
    with pytest.raises(SettingsError) as raised:
        parse_storage(identity(credential="clientsecret"), STORAGE_SETTING)
    assert raised.value.setting == f"{STORAGE_SETTING}__credential"


def test_repr_of_identity_form_names_the_endpoints_and_identity():
    text = repr(parse_storage(identity(), STORAGE_SETTING))
    assert TABLE_URI in text and CLIENT_ID in text and "managedidentity" in text
