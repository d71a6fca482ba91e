"""Ceiling division, the one helper every block count uses."""

from __future__ import annotations

import math
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from geoseg.tiling.plan import ceil_div, round_up


@given(st.integers(0, 10**15), st.integers(1, 10**6))
def test_ceil_div_is_exact_for_large_integers(n, d):
    assert ceil_div(n, d) == math.ceil(Fraction(n, d))
    assert ceil_div(n, d) * d >= n > (ceil_div(n, d) - 1) * d or n == 0
    assert round_up(n, d) == ceil_div(n, d) * d


def test_ceil_div_counts_partial_blocks():
    assert [ceil_div(n, 4) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]
