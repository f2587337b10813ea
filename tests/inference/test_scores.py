"""service.inference.scores: scalar and vector paths give bit-identical, correct numbers.

The scalar path (Python floats) serves a few rows, the vector path (numpy) any batch;
a row's probabilities, class, entropy and OOD distance must not depend on which one
ran, i.e. on the batch it came in. Checked bit for bit on random inputs, and both
against a float64 reference computed the textbook way.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from service.inference import scores
from service.inference.ood import OODDetector
from service.inference.scores import SCALAR_ROWS, NotFinite, Scorer, Scores, _exp, _log


def _bits(values: object) -> bytes:
    return np.asarray(values, dtype=np.float64).tobytes()


def _detector(rng: np.random.Generator, k: int, d: int) -> OODDetector:
    a = rng.normal(size=(d, d))
    precision = a @ a.T + 0.1 * np.eye(d)
    return OODDetector(rng.normal(scale=10.0, size=(k, d)), precision, threshold=3.0)


@st.composite
def batches(draw: st.DrawFn) -> tuple[Scorer, np.ndarray, np.ndarray, float]:
    """A small model's scorer, float32 logits (n, K), float64 inputs (n, D), a temperature."""
    k = draw(st.integers(2, 8))
    d = draw(st.integers(1, 5))
    n = draw(st.integers(1, 12))
    scale = float(np.float32(draw(st.sampled_from([1.0, 30.0, 1e4, 3e38]))))
    logits = draw(
        hnp.arrays(
            np.float32,
            (n, k),
            elements=st.floats(-scale, scale, width=32, allow_nan=False, allow_infinity=False),
        )
    )
    x = draw(hnp.arrays(np.float64, (n, d), elements=st.floats(-1e6, 1e6, allow_nan=False)))
    temperature = draw(st.sampled_from([1.0, 0.483, 2.5]) | st.floats(1e-3, 1e3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    detector = draw(st.sampled_from([True, False]))
    scorer = Scorer(k, d, _detector(rng, k, d) if detector else None)
    return scorer, logits, x, temperature


def _row(scores: Scores, i: int) -> tuple[bytes, int, bytes, bytes | None]:
    distance = scores.ood_distance
    return (
        _bits(scores.probabilities[i]),
        int(scores.argmax[i]),
        _bits(scores.entropy[i]),
        None if distance is None else _bits(distance[i]),
    )


@settings(max_examples=300, deadline=None)
@given(batches())
def test_a_rows_scores_do_not_depend_on_its_batch(
    case: tuple[Scorer, np.ndarray, np.ndarray, float],
) -> None:
    scorer, logits, x, temperature = case
    together = scorer(logits, x, temperature)
    for i in range(len(logits)):
        alone = scorer(logits[i : i + 1], x[i : i + 1], temperature)
        assert _row(alone, 0) == _row(together, i)


@settings(max_examples=300, deadline=None)
@given(batches())
def test_the_scalar_and_vector_paths_agree_bit_for_bit(
    case: tuple[Scorer, np.ndarray, np.ndarray, float],
) -> None:
    scorer, logits, x, temperature = case
    scalar = scorer._scalar(logits, x, temperature)
    vector = scorer._vector(logits, x, temperature)
    for i in range(len(logits)):
        assert _row(scalar, i) == _row(vector, i)


def _reference(
    logits: np.ndarray, x: np.ndarray, temperature: float, detector: OODDetector | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Textbook float64: softmax by the log-sum-exp identity, entropy from log p, and the
    Mahalanobis distance from the precision matrix itself."""
    z = logits.astype(np.float64) / temperature
    log_p = z - z.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    p = np.exp(log_p)
    entropy = -(p * np.where(p > 0, log_p, 0.0)).sum(axis=1)
    if detector is None:
        return p, entropy, None
    diff = x[:, None, :] - detector.means[None, :, :]
    squared = np.einsum("nkd,de,nke->nk", diff, detector.precision, diff)
    return p, entropy, np.sqrt(squared.min(axis=1))


@settings(max_examples=200, deadline=None)
@given(batches())
def test_scores_match_a_float64_reference(
    case: tuple[Scorer, np.ndarray, np.ndarray, float],
) -> None:
    scorer, logits, x, temperature = case
    scores = scorer(logits, x, temperature)
    p, entropy, distance = _reference(logits, x, temperature, scorer.detector)
    np.testing.assert_allclose(scores.probabilities, p, rtol=1e-9, atol=1e-300)
    assert np.allclose(scores.probabilities.sum(axis=1), 1.0, rtol=0, atol=1e-14)
    assert (scores.argmax == scores.probabilities.argmax(axis=1)).all()
    np.testing.assert_allclose(scores.entropy, entropy, rtol=1e-9, atol=1e-13)
    assert (scores.entropy >= 0).all()
    if distance is None:
        assert scores.ood_distance is None
    else:
        assert scores.ood_distance is not None
        np.testing.assert_allclose(scores.ood_distance, distance, rtol=1e-7, atol=1e-6)


def test_larger_models_take_the_general_path_and_match_the_reference() -> None:
    rng = np.random.default_rng(3)
    scorer = Scorer(50, 12, _detector(rng, 50, 12))
    assert not scorer.small
    logits = rng.normal(scale=5.0, size=(7, 50)).astype(np.float32)
    x = rng.normal(scale=10.0, size=(7, 12))
    scores = scorer(logits, x, 0.7)
    p, entropy, distance = _reference(logits, x, 0.7, scorer.detector)
    np.testing.assert_allclose(scores.probabilities, p, rtol=1e-12)
    np.testing.assert_allclose(scores.entropy, entropy, rtol=1e-10)
    assert scores.ood_distance is not None
    assert distance is not None
    np.testing.assert_allclose(scores.ood_distance, distance, rtol=1e-9)
    for i in range(len(logits)):  # the general path is batch-independent too
        assert _row(scorer(logits[i : i + 1], x[i : i + 1], 0.7), 0) == _row(scores, i)


def test_a_certain_row_has_entropy_zero_not_minus_zero() -> None:
    scorer = Scorer(3, 1, None)
    for rows in (1, SCALAR_ROWS + 1):  # the scalar and the vector path
        logits = np.tile(np.array([[0.0, 1e30, 0.0]], dtype=np.float32), (rows, 1))
        entropy = scorer(logits, np.zeros((rows, 1)), 1.0).entropy
        assert entropy.tolist() == [0.0] * rows
        assert not np.signbit(entropy).any()


@pytest.mark.parametrize("rows", [1, SCALAR_ROWS + 3])
@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_logits_that_are_not_finite_name_their_row(rows: int, bad: float) -> None:
    scorer = Scorer(4, 2, None)
    logits = np.zeros((rows, 4), dtype=np.float32)
    logits[rows - 1, 2] = bad
    with pytest.raises(NotFinite) as raised:
        scorer(logits, np.zeros((rows, 2)), 1.0)
    assert raised.value.row == rows - 1


def test_list_and_array_forms_hold_the_same_numbers() -> None:
    rng = np.random.default_rng(5)
    scorer = Scorer(4, 2, _detector(rng, 4, 2))
    logits = rng.normal(size=(3, 4)).astype(np.float32)
    x = rng.normal(size=(3, 2))
    from_lists = scorer._scalar(logits, x, 1.0)  # lists first, arrays made on demand
    from_arrays = scorer._vector(logits, x, 1.0)  # arrays first, lists made on demand
    assert from_lists.lists() == from_arrays.lists()
    for name in ("probabilities", "argmax", "entropy", "ood_distance"):
        assert np.array_equal(getattr(from_lists, name), getattr(from_arrays, name))
    assert from_lists.probabilities.flags.c_contiguous  # orjson serializes only these
    assert len(from_lists) == len(from_arrays) == 3


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-745.0, 0.0), min_size=1, max_size=64),
    st.lists(st.floats(1e-300, 1.0), min_size=1, max_size=64),
)
def test_the_scalar_paths_exp_and_log_are_numpys(exps: list[float], logs: list[float]) -> None:
    assert _exp(exps) == np.exp(np.array(exps)).tolist()
    assert _log(logs) == np.log(np.array(logs)).tolist()


def test_the_vector_distance_in_chunks_is_the_same_bit_for_bit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(9)
    scorer = Scorer(5, 3, _detector(rng, 5, 3))
    logits = rng.normal(size=(23, 5)).astype(np.float32)
    x = rng.normal(scale=20.0, size=(23, 3))
    whole = scorer(logits, x, 1.0).ood_distance
    monkeypatch.setattr(scores, "DISTANCE_CHUNK", 5)  # 5 + 5 + 5 + 5 + 3 rows
    chunked = scorer(logits, x, 1.0).ood_distance
    assert whole is not None
    assert chunked is not None
    assert whole.tobytes() == chunked.tobytes()
