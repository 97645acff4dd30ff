"""Settings parsed once, errors naming the setting; the schema as a value."""
import pytest

from catalog.errors import SettingsError
from catalog.settings import Schema, Settings

BASE = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "CATALOG_INDEX_KEYS": "sku, category",
        "CATALOG_ROW_KEY": "name"}


def test_defaults_follow_the_design():
    s = Settings.from_env(BASE)
    assert (s.table, s.wal_table, s.queue, s.poison_queue) == ("catalog", "catalogwal", "catalog-wal",
                                                                "catalog-wal-poison")
    assert s.schema == Schema(("sku", "category"), "name", False)
    assert s.sweep_schedule == "0 */1 * * * *"


def test_derived_names_follow_the_table():
    s = Settings.from_env({**BASE, "CATALOG_TABLE": "Products"})
    assert (s.wal_table, s.queue) == ("Productswal", "products-wal")


@pytest.mark.parametrize("name,value,match", [
    ("CATALOG_TABLE", "bad_name", "CATALOG_TABLE"),
    ("CATALOG_TABLE", "1abc", "CATALOG_TABLE"),
    ("CATALOG_WAL_TABLE", "x", "CATALOG_WAL_TABLE"),
    ("CATALOG_QUEUE", "Upper", "CATALOG_QUEUE"),
    ("CATALOG_QUEUE", "a--b", "CATALOG_QUEUE"),
    ("CATALOG_CASE_SENSITIVE", "maybe", "CATALOG_CASE_SENSITIVE"),
    ("CATALOG_SWEEP_SCHEDULE", "*/5 * * * *", "CATALOG_SWEEP_SCHEDULE"),
    ("CATALOG_INDEX_KEYS", " , ", "CATALOG_INDEX_KEYS"),
    ("CATALOG_INDEX_KEYS", "a,a", "CATALOG_INDEX_KEYS"),
    ("CATALOG_ROW_KEY", "", "CATALOG_ROW_KEY"),
])
def test_invalid_settings_name_the_setting(name, value, match):
    with pytest.raises(SettingsError, match=match):
        Settings.from_env({**BASE, name: value})


def test_missing_schema_names_the_setting():
    env = dict(BASE)
    del env["CATALOG_ROW_KEY"]
    with pytest.raises(SettingsError, match="CATALOG_ROW_KEY"):
        Settings.from_env(env)


def test_seed_names_work_for_the_library_and_arguments_win():
    env = {"AZURE_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true", "TABLE_CATALOG_NAME": "seedtable",
           "TABLE_CATALOG_INDEX_KEYS": "a,b", "TABLE_CATALOG_ROW_KEY": "r"}
    s = Settings.for_library(env)
    assert (s.table, s.wal_table, s.schema.index_keys, s.schema.row_key) == ("seedtable", "seedtablewal",
                                                                             ("a", "b"), "r")
    s = Settings.for_library(env, table_name="other", index_keys=["c"], row_key="q")
    assert (s.table, s.schema.index_keys, s.schema.row_key) == ("other", ("c",), "q")


def test_settings_are_hashable_values():
    assert hash(Settings.from_env(BASE)) == hash(Settings.from_env(dict(BASE)))


def test_storage_repr_never_shows_a_key():
    s = Settings.from_env({**BASE, "AzureWebJobsStorage": "AccountName=a;AccountKey=c2VjcmV0"})
    assert "c2VjcmV0" not in repr(s)


@pytest.mark.parametrize("value, expected", [(None, 32), ("", 32), ("1", 1), (" 256 ", 256)])
def test_apply_concurrency_setting(value, expected):
    env = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "CATALOG_INDEX_KEYS": "a", "CATALOG_ROW_KEY": "r"}
    if value is not None:
        env["CATALOG_APPLY_CONCURRENCY"] = value
    assert Settings.from_env(env).apply_concurrency == expected


@pytest.mark.parametrize("value", ["0", "257", "-1", "eight", "1_0", "\u0668"])
def test_a_bad_apply_concurrency_is_named(value):
    env = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "CATALOG_INDEX_KEYS": "a", "CATALOG_ROW_KEY": "r",
           "CATALOG_APPLY_CONCURRENCY": value}
    with pytest.raises(SettingsError, match="CATALOG_APPLY_CONCURRENCY"):
        Settings.from_env(env)
