"""``scores.top_k``: a whole stable sort's first k, without the sort, on both of its paths."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from service.inference.scores import ARGMAX_PASSES, top_k


def reference(values: npt.NDArray[np.floating], k: int) -> npt.NDArray[np.intp]:
    """The stable sort of each whole row, largest first: of equal values, the lower index."""
    return np.argsort(-values, axis=-1, kind="stable")[..., :k]


@st.composite
def scores_and_k(draw: st.DrawFn) -> tuple[npt.NDArray[np.floating], int]:
    """Rows of scores, often with ties (values drawn from a few), and a k of either path."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=40))
    few = draw(st.booleans())
    elements = (
        st.sampled_from([0.0, 0.25, 0.5, 1.0])
        if few
        else st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)
    )
    values = draw(hnp.arrays(dtype, shape, elements=elements))
    k = draw(st.integers(1, shape[-1]))
    return values, k


@given(scores_and_k())
def test_top_k_is_the_stable_sorts_first_k(case: tuple[npt.NDArray[np.floating], int]) -> None:
    values, k = case
    indices, top = top_k(values, k)
    expected = reference(values, k)
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_array_equal(top, np.take_along_axis(values, expected, axis=-1))
    assert top.dtype == values.dtype
    assert indices.shape == top.shape == (*values.shape[:-1], k)


@pytest.mark.parametrize("k", [1, 5, ARGMAX_PASSES, ARGMAX_PASSES + 1, 100, 1000])
def test_a_thousand_classes_with_ties_across_the_cut(k: int) -> None:
    # Classes 700..999 repeat 0..299 exactly: pairs of equal probabilities everywhere,
    # so the cut after the k-th falls inside a pair in many rows.
    rng = np.random.default_rng(1)
    values = rng.random((64, 1000))
    values[:, 700:] = values[:, :300]
    indices, top = top_k(values, k)
    np.testing.assert_array_equal(indices, reference(values, k))
    np.testing.assert_array_equal(top, np.take_along_axis(values, indices, axis=-1))


@pytest.mark.parametrize(
    ("values", "k", "message"),
    [
        (np.zeros((2, 4)), 0, "expected 1 <= k <= 4, received k=0"),
        (np.zeros((2, 4)), 5, "expected 1 <= k <= 4, received k=5"),
        (np.array([[0.5, np.nan]]), 1, "expected finite values"),
        (np.array([[0.5, -np.inf]]), 1, "expected finite values"),
    ],
)
def test_refuses_what_it_cannot_rank(
    values: npt.NDArray[np.floating], k: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        top_k(values, k)
