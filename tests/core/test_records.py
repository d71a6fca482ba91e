"""Records are strict JSON: NaN and infinities, however deep, are stored as null."""

from __future__ import annotations

import json
import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from geoseg.core.records import finite_or_null

LEAVES = st.one_of(st.floats(), st.integers(), st.text(max_size=3), st.none(), st.booleans(),
                   st.floats().map(np.float64))
VALUES = st.recursive(LEAVES, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.tuples(inner, inner),
    st.dictionaries(st.text(max_size=3), inner, max_size=3)), max_leaves=12)


def _same_but_finite(before, after) -> bool:
    """``after`` is ``before`` with every non-finite float as None, tuples as lists."""
    if isinstance(before, float):
        return after is None if not math.isfinite(before) else after == before
    if isinstance(before, dict):
        return after.keys() == before.keys() and all(_same_but_finite(before[k], after[k])
                                                      for k in before)
    if isinstance(before, list | tuple):
        return isinstance(after, list) and len(after) == len(before) and all(
            _same_but_finite(b, a) for b, a in zip(before, after))
    return after is before


@given(VALUES)
def test_every_non_finite_float_becomes_null_and_nothing_else_changes(value):
    kept = finite_or_null(value)
    json.dumps(kept, allow_nan=False)  # strict JSON: raises on any NaN or infinity left
    assert _same_but_finite(value, kept)


def test_a_never_improved_best_score_is_stored_as_null():
    meta = {"best_val_miou": -math.inf, "history": [{"loss": math.nan, "miou": 0.5}]}
    assert json.loads(json.dumps(finite_or_null(meta), allow_nan=False)) == {
        "best_val_miou": None, "history": [{"loss": None, "miou": 0.5}]}
