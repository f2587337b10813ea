"""The float64 softmax against a 60-digit reference, and its properties under hypothesis."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.inference.softmax import softmax
from tests.reference import softmax_reference

RTOL = 1e-12

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
any_finite = st.floats(allow_nan=False, allow_infinity=False)
vectors = st.lists(finite, min_size=1, max_size=12)
temperatures = st.floats(min_value=1e-3, max_value=1e3)


def assert_close_relative(actual: np.ndarray, expected: list[float]) -> None:
    for a, e in zip(actual.tolist(), expected, strict=True):
        assert a == pytest.approx(e, rel=RTOL, abs=0.0), (actual, expected)


@pytest.mark.parametrize(
    "logits",
    [[2.0, 4.3, 1.2, -3.1], [13, 31, 5], [0, 100, 0], [1000, 0, -1000], [-745.0, 0.0, 5.0]],
)
def test_softmax_matches_decimal_reference_to_1e12_relative(logits: list[float]) -> None:
    assert_close_relative(softmax(logits), softmax_reference(logits))


def test_softmax_keeps_tiny_probabilities_of_0_100_0() -> None:
    p = softmax([0, 100, 0])
    assert p[0] == p[2] == pytest.approx(math.exp(-100), rel=RTOL)
    assert 3.72e-44 < p[0] < 3.73e-44
    assert p[1] == 1.0


@pytest.mark.parametrize("temperature", [1e-3, 1e-2, 0.5, 1.0, 7.0, 1e2, 1e3])
def test_softmax_temperature_matches_reference(temperature: float) -> None:
    logits = [2.0, 4.3, 1.2, -3.1]
    assert_close_relative(softmax(logits, temperature), softmax_reference(logits, temperature))


@pytest.mark.parametrize("temperature", [1e-3, 1.0, 1e3])
def test_softmax_extreme_logits_never_overflow(temperature: float) -> None:
    for logits in ([1000, 0, -1000], [1.7e308, -1.7e308, 0.0], [-1e308, -1e308]):
        p = softmax(logits, temperature)
        assert np.isfinite(p).all()
        assert p.sum() == pytest.approx(1.0, abs=1e-15)


def test_softmax_of_a_batch_is_row_by_row() -> None:
    batch = [[2.0, 4.3, 1.2, -3.1], [0.0, 100.0, 0.0, 1.0]]
    p = softmax(batch)
    assert p.shape == (2, 4)
    for row, logits in zip(p, batch, strict=True):
        assert_close_relative(row, softmax_reference(logits))


def test_softmax_does_not_modify_its_input() -> None:
    logits = np.array([1.0, 2.0, 3.0])
    softmax(logits, 2.0)
    assert logits.tolist() == [1.0, 2.0, 3.0]


@given(vectors, temperatures)
def test_softmax_sums_to_one_and_lies_in_unit_interval(logits: list[float], t: float) -> None:
    p = softmax(logits, t)
    assert ((p >= 0) & (p <= 1)).all()
    assert p.sum() == pytest.approx(1.0, abs=1e-12)


@given(st.lists(any_finite, min_size=1, max_size=8), st.floats(min_value=1e-300, max_value=1e300))
def test_softmax_is_finite_for_any_finite_logits_and_temperature(
    logits: list[float], t: float
) -> None:
    p = softmax(logits, t)
    assert np.isfinite(p).all()
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    assert p[int(np.argmax(logits))] == p.max()


@given(vectors, st.floats(min_value=-1e3, max_value=1e3))
def test_softmax_is_invariant_to_shifting_all_logits(logits: list[float], shift: float) -> None:
    shifted = [x + shift for x in logits]
    np.testing.assert_allclose(softmax(shifted), softmax(logits), rtol=1e-6, atol=1e-300)


@given(vectors, temperatures)
def test_softmax_is_monotone_in_the_logits(logits: list[float], t: float) -> None:
    p = softmax(logits, t)
    order = np.argsort(logits, kind="stable")
    assert (np.diff(p[order]) >= 0).all()


@given(
    st.lists(st.floats(min_value=-100, max_value=100), min_size=1, max_size=7),
    st.floats(min_value=1e-2, max_value=100),
    st.integers(min_value=0),
)
def test_softmax_tends_to_one_hot_as_temperature_falls(
    others: list[float], gap: float, where: int
) -> None:
    # The winner leads the runner-up by at least ``gap`` (drawn, so never 0 or subnormal):
    # at T = gap / 800 every other logit is >= 800 below it after scaling: exp(-800) is 0.
    logits = list(others)
    winner = where % (len(others) + 1)
    logits.insert(winner, max(others) + gap)
    p = softmax(logits, temperature=gap / 800)
    expected = np.zeros(len(logits))
    expected[winner] = 1.0
    np.testing.assert_array_equal(p, expected)


@pytest.mark.parametrize("temperature", [0.0, -1.0, -0.0, math.inf, -math.inf, math.nan])
def test_softmax_rejects_a_temperature_that_is_not_finite_and_positive(
    temperature: float,
) -> None:
    with pytest.raises(ValueError, match="expected a finite temperature > 0, received"):
        softmax([1.0, 2.0], temperature)


@given(st.lists(st.floats(min_value=-100, max_value=100), min_size=1, max_size=8))
def test_softmax_tends_to_uniform_as_temperature_grows(logits: list[float]) -> None:
    p = softmax(logits, temperature=1e12)
    np.testing.assert_allclose(p, 1 / len(logits), rtol=1e-9)
