"""Session fixtures: one real Azurite on free ports for the whole run, fresh tables per test."""
from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pytest

from devhost.azurite import Azurite


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

    from catalog.azure_store import CLIENT_OPTIONS, AzureTableStore

    return AzureTableStore(TableServiceClient.from_connection_string(storage_connection, **CLIENT_OPTIONS))


@pytest.fixture(params=["memory", "azurite"])
def store(request):
    """Every table store the catalog has: the contract and property suites run on each."""
    if request.param == "memory":
        from catalog.memory_store import MemoryTableStore

        return MemoryTableStore()
    return request.getfixturevalue("azure_table_store")
