"""local.settings.json, %SETTING% expressions, host.json and storage connections in the dev host."""
from __future__ import annotations

import json

import pytest

from devhost.settings import (
    HostConfig,
    HostConfigError,
    QueueOptions,
    apply_settings,
    load_host_json,
    load_local_settings,
    resolve,
    restore_settings,
    storage_connection,
)


def write(path, doc) -> None:
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)


def test_local_settings_values_and_host_section(tmp_path):
    f = tmp_path / "local.settings.json"
    write(f, {"IsEncrypted": False, "Values": {"A": "1", "N": 5, "B": True, "Z": None},
              "Host": {"LocalHttpPort": 7072}})
    values, host = load_local_settings(f)
    assert values == {"A": "1", "N": "5", "B": "true"}
    assert host == {"LocalHttpPort": 7072}


def test_missing_local_settings_is_empty(tmp_path):
    assert load_local_settings(tmp_path / "nope.json") == ({}, {})


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "cannot read it as JSON"),
    ('{"IsEncrypted": true, "Values": {}}', "IsEncrypted"),
    ('{"Values": []}', "'Values' must be an object"),
])
def test_bad_local_settings(tmp_path, content, fragment):
    f = tmp_path / "local.settings.json"
    write(f, content)
    with pytest.raises(HostConfigError, match=fragment):
        load_local_settings(f)


def test_environment_beats_local_settings_and_overrides_beat_both():
    env = {"FROM_ENV": "env", "BOTH": "env"}
    previous = apply_settings({"BOTH": "file", "ONLY_FILE": "file", "O": "file"}, {"O": "override"}, env)
    assert env == {"FROM_ENV": "env", "BOTH": "env", "ONLY_FILE": "file", "O": "override"}
    restore_settings(previous, env)
    assert env == {"FROM_ENV": "env", "BOTH": "env"}


def test_override_of_an_existing_variable_is_restored():
    env = {"X": "original"}
    previous = apply_settings({}, {"X": "new"}, env)
    assert env["X"] == "new"
    restore_settings(previous, env)
    assert env == {"X": "original"}


def test_resolve_binding_expressions():
    env = {"CATALOG_QUEUE": "catalog-wal", "S": "0 */1 * * * *"}
    assert resolve("%CATALOG_QUEUE%", env) == "catalog-wal"
    assert resolve("%CATALOG_QUEUE%-poison", env) == "catalog-wal-poison"
    assert resolve("%S%", env) == "0 */1 * * * *"
    assert resolve("plain", env) == "plain"


def test_missing_setting_is_named():
    with pytest.raises(HostConfigError,
                       match=r"function f: '%CATALOG_QUEUE%' does not resolve.*CATALOG_QUEUE is not set"):
        resolve("%CATALOG_QUEUE%", {}, what="function f")


def test_host_json_defaults(tmp_path):
    assert load_host_json(tmp_path / "host.json") == HostConfig()
    q = QueueOptions()
    assert (q.batch_size, q.threshold, q.visibility_timeout, q.max_polling_interval, q.max_dequeue_count,
            q.message_encoding) == (16, 8, 0.0, 60.0, 5, "base64")


def test_host_json_values(tmp_path):
    f = tmp_path / "host.json"
    write(f, {"version": "2.0", "extensions": {
        "http": {"routePrefix": "/v1/"},
        "queues": {"batchSize": 8, "newBatchThreshold": 2, "visibilityTimeout": "00:00:30",
                   "maxPollingInterval": "00:00:02", "maxDequeueCount": 3, "messageEncoding": "None"}}})
    cfg = load_host_json(f)
    assert cfg.route_prefix == "v1"
    assert cfg.queues == QueueOptions(8, 2, 30.0, 2.0, 3, "none")
    assert cfg.queues.threshold == 2


def test_host_json_max_polling_interval_in_milliseconds(tmp_path):
    f = tmp_path / "host.json"
    write(f, {"extensions": {"queues": {"maxPollingInterval": 2000}}})
    assert load_host_json(f).queues.max_polling_interval == 2.0


def test_empty_route_prefix(tmp_path):
    f = tmp_path / "host.json"
    write(f, {"extensions": {"http": {"routePrefix": ""}}})
    assert load_host_json(f).route_prefix == ""


@pytest.mark.parametrize("queues, fragment", [
    ({"batchSize": 0}, "batchSize must be 1-32"),
    ({"batchSize": 33}, "batchSize must be 1-32"),
    ({"batchSize": "many"}, "batchSize must be an integer"),
    ({"maxDequeueCount": 0}, "maxDequeueCount must be >= 1"),
    ({"visibilityTimeout": "soon"}, "visibilityTimeout"),
    ({"maxPollingInterval": "00:00:00.010"}, "at least 00:00:00.100"),
    ({"messageEncoding": "utf8"}, "base64 or none"),
])
def test_bad_host_json(tmp_path, queues, fragment):
    f = tmp_path / "host.json"
    write(f, {"extensions": {"queues": queues}})
    with pytest.raises(HostConfigError, match=fragment):
        load_host_json(f)


def test_connection_string_setting():
    c = storage_connection("MyStorage", {"MyStorage": "UseDevelopmentStorage=true"})
    assert c.setting == "MyStorage" and c.connection_string == "UseDevelopmentStorage=true"
    client = c.queue_client("q")
    assert client.url.startswith("http://127.0.0.1:10001/devstoreaccount1/q")


def test_default_connection_is_azure_webjobs_storage():
    c = storage_connection(None, {"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert c.setting == "AzureWebJobsStorage"


def test_connection_name_may_be_an_expression_or_use_the_legacy_prefix():
    env = {"CONN": "Other", "AzureWebJobsOther": "UseDevelopmentStorage=true"}
    assert storage_connection("%CONN%", env).connection_string == "UseDevelopmentStorage=true"


def test_identity_based_connection():
    c = storage_connection("AzureWebJobsStorage", {
        "AzureWebJobsStorage__queueServiceUri": "https://acct.queue.example/",
        "AzureWebJobsStorage__credential": "managedidentity",
        "AzureWebJobsStorage__clientId": "abc"})
    assert c.connection_string is None
    assert (c.queue_service_url, c.client_id, c.use_managed_identity) == ("https://acct.queue.example/", "abc", True)


@pytest.mark.parametrize("env, fragment", [
    ({}, "connection setting AzureWebJobsStorage is not set"),
    ({"AzureWebJobsStorage": ""}, "connection setting AzureWebJobsStorage is empty"),
])
def test_missing_connection_is_named(env, fragment):
    with pytest.raises(HostConfigError, match=fragment):
        storage_connection(None, env)
