"""Whole numbers written in text from files and users: what ``int()`` reads, never an error."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from geoseg.core.text import as_whole, clipped, terminal_safe, whole_number


@given(st.text(max_size=25))
def test_a_whole_number_is_read_only_from_ascii_digits_and_never_raises(text):
    found = whole_number(text)
    plain = text.isascii() and text.isdigit() and len(text) <= 18
    assert found == (int(text) if plain else None)


@given(st.integers(0, 10**18 - 1))
def test_every_number_of_up_to_18_digits_reads_back(n):
    assert whole_number(str(n)) == n and whole_number(f"{n:018d}") == n


def test_digits_int_cannot_read_are_none():
    assert [whole_number(t) for t in ("²", "1²", "٣", "1" * 5000, "", "-1", " 1")] == [None] * 7


@given(st.text(alphabet="ab ", max_size=60), st.integers(8, 40))
def test_clipped_text_ends_at_a_word_and_says_so(text, width):
    """A run's error in the record was cut mid-word ("chunks already w")."""
    out = clipped(text, width)
    assert len(out) <= width
    if len(text) <= width:
        assert out == text
        return
    assert out.endswith(" ...")
    kept = out[:-4]
    assert text.startswith(kept)
    assert " " not in text[: width - 4] or text[len(kept)] == " "  # cut where a word ended


@given(st.integers(-(2**70), 2**70))
def test_as_whole_takes_python_and_numpy_integers(n):
    assert as_whole(n) == n
    if -(2**63) <= n < 2**63:
        assert as_whole(np.int64(n)) == n and type(as_whole(np.int64(n))) is int


def test_as_whole_refuses_bools_floats_text_and_arrays():
    received = [True, False, np.True_, 1.0, np.float32(2), "3", b"3", None, [1], np.array([1]),
                2 + 0j]
    assert [as_whole(v) for v in received] == [None] * len(received)


@given(st.text())
def test_terminal_safe_text_holds_no_control_character_and_one_line_text_no_line_break(text):
    assert all(c.isprintable() or c in "\n\t" or ord(c) > 0x9F for c in terminal_safe(text))
    one = terminal_safe(text, one_line=True)
    assert "\n" not in one and "\t" not in one and "\x1b" not in one
    assert terminal_safe(text) == text or not text.isprintable()
