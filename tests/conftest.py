"""Session fixtures: one real Azurite on free ports for the whole run, fresh tables per test."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from devhost.azurite import Azurite

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    """A real Azurite (Table, Queue, Blob). If it cannot start the run fails: nothing is skipped."""
    location = tmp_path_factory.mktemp("azurite")
    az = Azurite(location, log=location / "azurite.log")
    az.start()
    yield az
    az.stop()


@pytest.fixture(scope="session")
def storage_connection(azurite) -> str:
    return azurite.endpoints.connection_string


def unique_name(prefix: str = "t") -> str:
    return prefix + uuid.uuid4().hex[:12]


@pytest.fixture
def table_name() -> str:
    return unique_name("t")


@pytest.fixture(scope="session")
def azure_table_store(storage_connection):
    from azure.data.tables import TableServiceClient

    from catalog.adapters.azure import CLIENT_OPTIONS, AzureTableStore

    return AzureTableStore(TableServiceClient.from_connection_string(storage_connection, **CLIENT_OPTIONS))


@pytest.fixture(params=["memory", "azurite"])
def store(request):
    """Every table store the catalog has: the contract and property suites run on each."""
    if request.param == "memory":
        from catalog.adapters.memory import MemoryTableStore

        return MemoryTableStore()
    return request.getfixturevalue("azure_table_store")


APP_SCHEMA_ENV = {"CATALOG_INDEX_KEYS": "sku,category", "CATALOG_ROW_KEY": "name"}


@pytest.fixture
def app_env(monkeypatch, storage_connection):
    """Settings for function_app.py pointing at fresh tables and queues on the session's Azurite."""
    table = unique_name("t")
    env = {"AzureWebJobsStorage": storage_connection, "CATALOG_TABLE": table, **APP_SCHEMA_ENV,
           "CATALOG_SWEEP_SCHEDULE": "0 */1 * * * *"}
    for name in ("CATALOG_STORAGE", "CATALOG_WAL_TABLE", "CATALOG_QUEUE", "CATALOG_CASE_SENSITIVE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


_functions_cache: dict = {}


@pytest.fixture
def functions(app_env):
    """The user functions function_app.py registers, by name (get_functions() works once per app)."""
    if not _functions_cache:
        # A private copy of the module: the dev host (in other tests) loads and indexes its own,
        # and get_functions() may run only once per app.
        import importlib.util

        spec = importlib.util.spec_from_file_location("function_app_under_test", ROOT / "function_app.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for fn in module.app.get_functions():
            _functions_cache[fn.get_function_name()] = fn
    return _functions_cache
