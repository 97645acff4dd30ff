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
