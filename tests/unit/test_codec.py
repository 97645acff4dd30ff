"""Record codec: exact round trip of any JSON object; Azure's entity size rules."""
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from catalog import codec
from catalog.errors import RecordTooLargeError, ValidationError

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), JSON))
def test_any_json_object_round_trips_through_chunks(record):
    props = codec.chunk_properties(codec.dumps(record))
    assert codec.decode_payload(props) == record


def test_big_ints_floats_unicode_and_reserved_names_round_trip_exactly():
    record = {"PartitionKey": "p", "RowKey": 1, "Timestamp": None, "etag": [1], "operation": "delete",
              "big": 2 ** 200, "neg": -(10 ** 40), "f": 0.1, "tiny": 5e-324, "u": "日本 🙂 \u0000",
              "nested": {"a": [1, {"b": None}]}}
    back = codec.decode_payload(codec.chunk_properties(codec.dumps(record)))
    assert back == record and json.dumps(back) == json.dumps(record)


@pytest.mark.parametrize("record, field", [
    ({"a": "\ud800"}, "a"), ({"a": {"b": ["ok", "x\udfff"]}}, "a"), ({"k\udc00": 1}, "k\udc00"),
    ({"a": float("inf")}, "a"), ({"a": {"b": -float("inf")}}, "a"), ({"a": {"b": {1, 2}}}, "a"),
])
def test_a_new_record_never_holds_what_json_or_utf8_cannot_carry(record, field):
    with pytest.raises(ValidationError) as e:
        codec.dumps(record)
    assert e.value.field == field and e.value.status == 400
    str(e.value).encode("ascii")  # the message escapes what it quotes


def test_nesting_is_bounded_for_records_and_bodies():
    deepest = {"a": 1}
    for _ in range(codec.MAX_DEPTH - 1):
        deepest = {"a": deepest}
    assert codec.nesting_depth(codec.dumps(deepest)) == codec.MAX_DEPTH
    with pytest.raises(ValidationError, match="nests more than"):
        codec.dumps({"a": deepest})
    body = b"[" * 100_000 + b"]" * 100_000  # far past the interpreter's recursion limit
    with pytest.raises(ValidationError, match="levels deep"):
        codec.parse_json(body)
    assert codec.nesting_depth(b'["[[[", {"a": "]]\\"}]') == 2  # brackets in strings do not count


def test_parse_json_is_strict_about_encoding_keys_and_constants():
    for body, reason in [(b'{"a": 1, "a": 2}', "more than once"), (b"\xff{}", "UTF-8"),
                         (b'{"a": Infinity}', "not valid JSON"), ('{"a": "é"}'.encode("utf-16"), "UTF-8")]:
        with pytest.raises(ValidationError, match=reason):
            codec.parse_json(body)


def test_a_record_stored_before_lone_surrogates_were_refused_still_reads_and_encodes():
    legacy = codec.dumps_stored({"a": "\ud800"})
    assert codec.loads(legacy) == {"a": "\ud800"}
    assert json.loads(codec.response_bytes({"items": [codec.loads(legacy)]})) == {"items": [{"a": "\ud800"}]}
    assert codec.response_bytes({"a": "é"}) == '{"a": "é"}'.encode()  # ordinary text stays as it is


def test_large_payload_spans_chunks_of_at_most_64_kib():
    data = codec.dumps({"blob": "x" * 200_000})
    props = codec.chunk_properties(data)
    assert props["n"] == 4 and all(len(props[f"d{i}"]) <= codec.MAX_BINARY_PROPERTY for i in range(4))
    assert codec.join_chunks(props) == data


def test_nan_is_refused_both_in_bodies_and_records():
    with pytest.raises(ValidationError):
        codec.parse_json('{"a": NaN}')
    with pytest.raises(ValidationError):
        codec.dumps({"a": float("nan")})
    with pytest.raises(ValidationError):
        codec.dumps({"a": object()})


def test_entity_size_follows_azures_formula():
    entity = {"PartitionKey": "ab", "RowKey": "c", "s": "xy", "x": True, "n": 1, "d0": b"1234"}
    expected = 4 + 2 * 3 + (8 + 2 + 4 + 4) + (8 + 2 + 1) + (8 + 2 + 8) + (8 + 4 + 4 + 4)
    assert codec.entity_size(entity) == expected


def test_entity_over_one_mib_is_refused_with_413_class():
    props = codec.chunk_properties(b"x" * (codec.MAX_ENTITY_BYTES))
    with pytest.raises(RecordTooLargeError) as e:
        codec.check_entity_size({"PartitionKey": "p", "RowKey": "r", **props})
    assert e.value.status == 413
