"""Key encoding: injective, always a valid table key, order-keeping on ordinary strings."""
import string

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from catalog.errors import ValidationError
from catalog.keys import (
    MAX_KEY_UTF16,
    SEP,
    decode_part,
    encode_part,
    fingerprint,
    is_valid_table_key,
    partition_key,
    record_keys,
    row_key,
    row_range,
)
from catalog.settings import Schema

ORDINARY = st.text(alphabet=string.ascii_letters + string.digits + "-_.: ", max_size=30)
ANY_TEXT = st.text(alphabet=st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF), max_size=40)


@given(ANY_TEXT, ANY_TEXT)
@example("a", "a ")
@example("~", "~7e")
@example("\ud800", "~ud800")
def test_encoding_is_injective(a, b):
    assert (encode_part(a) == encode_part(b)) == (a == b)


@given(ANY_TEXT)
def test_encoding_round_trips_and_is_a_valid_key_without_separator(text):
    encoded = encode_part(text)
    assert decode_part(encoded) == text
    assert SEP not in encoded
    if encoded:
        assert is_valid_table_key(encoded) or len(encoded) > MAX_KEY_UTF16


@given(ORDINARY, ORDINARY)
def test_order_of_ordinary_strings_is_kept(a, b):
    assert (a < b) == (encode_part(a) < encode_part(b))


@given(ORDINARY, ORDINARY, st.text(alphabet="0123456789abcdef", min_size=24, max_size=24))
def test_row_keys_keep_order_and_range_bounds_are_exact(lo, value, fp):
    rk = row_key(value, fp)
    low, high = row_range(lo, lo, case_sensitive=True)
    assert (low <= rk < high) == (value == lo)
    low, _ = row_range(lo, None, case_sensitive=True)
    assert (rk >= low) == (value >= lo)
    _, high = row_range(None, lo, case_sensitive=True)
    assert (rk < high) == (value <= lo)


@pytest.mark.parametrize("value", ["a/b", "a\\b", "a#b", "a?b", "O'Brien", "tab\there", "nl\n", "\x7f\x9f",
                                   "%2F", "héllo wörld", "日本語", "🙂", "", " ", "\ufeff"])
def test_forbidden_characters_never_reach_a_key(value):
    pk = partition_key("field", value)
    assert is_valid_table_key(pk)
    assert not any(c in pk for c in "/\\#?'%")


def test_fingerprint_has_at_least_64_bits_and_separates_identities():
    a, b = fingerprint(("x", "1", "2")), fingerprint(("x", "12", ""))
    assert len(a) * 4 >= 64 and a != b


def test_case_insensitive_by_default_and_sensitive_as_an_option():
    insensitive = Schema(("sku",), "name")
    sensitive = Schema(("sku",), "name", case_sensitive=True)
    k1 = record_keys(insensitive, {"sku": "ABC", "name": "N"})
    k2 = record_keys(insensitive, {"sku": "abc", "name": "n"})
    assert k1 == k2
    assert record_keys(sensitive, {"sku": "ABC", "name": "N"}) != record_keys(sensitive, {"sku": "abc", "name": "n"})


def test_numbers_and_booleans_index_as_their_json_text():
    schema = Schema(("id",), "flag")
    assert record_keys(schema, {"id": 5, "flag": True}).texts == {"id": "5", "flag": "true"}


@pytest.mark.parametrize("bad", [None, [1], {"a": 1}])
def test_structured_key_values_are_refused(bad):
    with pytest.raises(ValidationError, match="key field"):
        record_keys(Schema(("sku",), "name"), {"sku": bad, "name": "n"})


def test_missing_key_field_is_refused():
    with pytest.raises(ValidationError, match="missing required field 'sku'"):
        record_keys(Schema(("sku",), "name"), {"name": "n"})


def test_too_long_value_is_refused_and_the_limit_is_exact():
    schema = Schema(("sku",), "name")
    budget = MAX_KEY_UTF16 - len(encode_part("sku") + SEP)
    record_keys(schema, {"sku": "a" * budget, "name": "n"})
    with pytest.raises(ValidationError, match="too long"):
        record_keys(schema, {"sku": "a" * (budget + 1), "name": "n"})
    with pytest.raises(ValidationError, match="too long"):
        record_keys(schema, {"sku": "s", "name": "/" * 200})  # 600 characters once escaped
