"""JSON from files geoseg did not write: its nesting measured before it is decoded, against the
depth of what Python's own decoder builds from it."""

from __future__ import annotations

import inspect
import json
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geoseg.core import jsontext
from geoseg.errors import NestingError

TRICKY_TEXT = st.text(alphabet=st.sampled_from('[]{}"\\/ab\n\té€\U0001f600丢小山∀'), max_size=12)
VALUES = st.recursive(st.none() | st.booleans() | st.integers() | TRICKY_TEXT,
                      lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(TRICKY_TEXT, inner, max_size=3), max_leaves=30)


def depth(value) -> int:
    """How deeply a decoded value nests lists and dicts."""
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


ENCODINGS = (None, "utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32",
             "utf-32-le", "utf-32-be")  # None: a str; the others: bytes json.loads reads


@given(VALUES, st.sampled_from([None, 0, 2]), st.booleans(), st.sampled_from(ENCODINGS))
def test_levels_are_those_of_the_decoded_value_whatever_its_strings_hold(value, indent, ascii_,
                                                                          encoding):
    """In UTF-16 and UTF-32 a character's bytes may hold a quote's or a bracket's (丢 is
    U+4E22, 小 U+5C0F): bytes are measured as the decoder reads them."""
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_)
    data = text if encoding is None else text.encode(encoding)

    assert jsontext.levels(data) == depth(value)
    assert jsontext.loads(data) == value


@pytest.mark.parametrize("levels", [1, 256])
def test_a_document_up_to_the_limit_is_decoded(levels):
    assert depth(jsontext.loads("[" * levels + "]" * levels)) == levels


@pytest.mark.parametrize("document", ["[" * 257 + "]" * 257, b"{\"a\": " * 300 + b"1" + b"}" * 300,
                                      "[" * 10**6])
def test_deeper_nesting_is_refused_with_the_depth_before_any_decoding(document, monkeypatch):
    def decoder_called(*_):
        raise AssertionError("the decoder ran")

    monkeypatch.setattr(jsontext.json, "loads", decoder_called)
    with pytest.raises(NestingError, match=r"nests arrays or objects \d+ levels deep; expected at "
                                           "most 256") as refused:
        jsontext.loads(document)
    assert isinstance(refused.value, ValueError)  # a plain ``except ValueError`` still takes it


def test_a_hostile_document_is_refused_far_from_the_recursion_limit():
    """Near the limit a RecursionError would hit whatever the garbage collector runs too; the
    measure needs no stack, and a refused document never reaches the decoder."""
    headroom = len(inspect.stack(0)) + 50
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(headroom)
    try:
        with pytest.raises(NestingError):
            jsontext.loads("[" * 200_000 + "]" * 200_000)
    finally:
        sys.setrecursionlimit(limit)


@pytest.mark.parametrize(("document", "levels"), [
    ('"' + '\\"' * 200_000, 0),  # a string never closed, every quote in it escaped
    ('"\\' * 200_000, 0),
    ('[["a\\', 2),  # cut inside an escape
    ('[{"a": "]]]"', 2),  # cut after a string holding closing brackets
])
def test_a_truncated_document_is_measured_as_far_as_it_goes(document, levels):
    assert jsontext.levels(document) == levels


def test_a_utf16_document_deeper_than_its_bytes_look_is_refused():
    deep = '["丢", ' + "[" * 100_000 + "]" * 100_000 + "]"
    with pytest.raises(NestingError, match="100001 levels deep"):
        jsontext.loads(deep.encode("utf-16-le"))


@pytest.mark.parametrize("value", [3_000_000_000, 10**15, None, ["a"]])
def test_what_is_not_text_is_a_type_error_as_for_json_loads(value):
    with pytest.raises(TypeError, match="must be str, bytes or bytearray"):
        jsontext.loads(value)
