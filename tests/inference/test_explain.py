"""Exact Shapley values (``service.inference.explain``) against ``shap``'s exact explainer.

The reference is independent: ``shap.explainers.Exact`` with an ``Independent`` masker
computes the same interventional Shapley values its own way (partition trees of the
coalitions, its own model calls). It takes no background weights, so the weighted
background is given to it as its points repeated in proportion to their integer weights,
which is the same distribution. Also checked from first principles: a linear function's
values are ``w_i (x_i - E b_i)``, they add up to ``f(x) - E f(b)``, and a categorical
column's one-hot inputs are one player.
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from service.inference.explain import Background, Players, coalitions, exact, masked_rows

with warnings.catch_warnings():  # shap's import touches matplotlib's deprecated API
    warnings.simplefilter("ignore")
    import shap

Array = npt.NDArray[np.float64]
TOLERANCE = 1e-6


def softmax_model(d: int, classes: int, seed: int) -> Any:
    """A small nonlinear softmax classifier over ``d`` features (interactions included)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(d, classes))
    v = rng.normal(size=(d, classes))
    c = rng.normal(size=classes)

    def model(z: Array) -> Array:
        logits = z @ w + np.tanh(z * np.roll(z, 1, axis=1)) @ v + c
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return np.asarray(e / e.sum(axis=1, keepdims=True))

    return model


def shap_exact(model: Any, x: Array, points: Array, counts: npt.NDArray[np.int_]) -> Any:
    """shap's exact values, its background the points repeated ``counts`` times."""
    data = np.repeat(points, counts, axis=0)
    with warnings.catch_warnings():  # numba's and shap's own deprecation notices
        warnings.simplefilter("ignore")
        explainer = shap.explainers.Exact(model, shap.maskers.Independent(data, len(data)))
        return explainer(x)


@pytest.mark.parametrize(("d", "classes", "points"), [(2, 4, 10), (5, 3, 4), (8, 2, 6)])
def test_the_values_are_shaps_exact_explainers_on_a_weighted_background(
    d: int, classes: int, points: int
) -> None:
    rng = np.random.default_rng(d)
    model = softmax_model(d, classes, seed=d)
    centres = rng.normal(scale=2.0, size=(points, d))
    counts = rng.integers(1, 6, size=points)
    background = Background(centres, counts.astype(float), "test")
    x = rng.normal(scale=2.0, size=(3, d))

    ours = exact(model, x, background)
    reference = shap_exact(model, x, centres, counts)

    values = np.stack([a.values for a in ours])  # (N, d, K), as shap's
    assert reference.values.shape == values.shape
    np.testing.assert_allclose(values, reference.values, rtol=0, atol=TOLERANCE)
    expected = np.stack([a.expected for a in ours])
    np.testing.assert_allclose(expected, reference.base_values, rtol=0, atol=TOLERANCE)
    assert max(float(a.additivity_error.max()) for a in ours) < TOLERANCE


def test_a_linear_functions_values_are_its_coefficients_times_the_distance_from_the_mean() -> None:
    rng = np.random.default_rng(3)
    d = 6
    w = rng.normal(size=(d, 2))
    c = np.array([0.5, -1.0])
    background = Background(rng.normal(size=(7, d)), rng.uniform(0.1, 1, size=7), "test")
    x = rng.normal(size=(4, d))

    ours = exact(lambda z: z @ w + c, x, background)

    for row, attributions in zip(x, ours, strict=True):
        linear = w * (row - background.mean)[:, None]  # (d, K): w_ik (x_i - E b_i)
        np.testing.assert_allclose(attributions.values, linear, rtol=0, atol=1e-12)


def test_the_values_add_up_to_the_prediction_minus_the_expected_value() -> None:
    rng = np.random.default_rng(5)
    d = 12  # the exact limit's default: 4096 coalitions
    model = softmax_model(d, 3, seed=5)
    background = Background(rng.normal(size=(10, d)), rng.uniform(size=10), "test")
    x = rng.normal(size=(2, d))

    for row, attributions in zip(x, exact(model, x, background), strict=True):
        np.testing.assert_allclose(attributions.prediction, model(row[None])[0], atol=1e-15)
        np.testing.assert_allclose(
            attributions.expected, background.weights @ model(background.points), atol=1e-15
        )
        total = attributions.values.sum(axis=0)
        error = np.abs(total - (attributions.prediction - attributions.expected))
        assert error.max() < TOLERANCE
        np.testing.assert_array_equal(error, attributions.additivity_error)


def brute_force(model: Any, x: Array, background: Background, players: Players) -> Array:
    """Shapley's formula, coalition by coalition, each input row scored alone."""
    n = len(players)

    def value(coalition: tuple[int, ...]) -> Array:
        kept = players.members[list(coalition)].any(axis=0)
        rows = np.where(kept, x, background.points)
        return np.asarray(background.weights @ model(rows))

    phi = []
    for i in range(n):
        others = [j for j in range(n) if j != i]
        total = 0.0
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for s in itertools.combinations(others, size):
                total = total + weight * (value((*s, i)) - value(s))
        phi.append(total)
    return np.array(phi)


def test_a_categorical_columns_one_hot_inputs_are_one_player() -> None:
    class Col:
        def __init__(self, name: str, vocabulary: list[str] | None) -> None:
            self.name, self.kind, self.fill = name, "numeric", None
            self.vocabulary = vocabulary

    columns = [Col("age", None), Col("island", ["a", "b", "c"]), Col("mass", None)]
    players = Players.columns(columns)  # type: ignore[arg-type]
    assert players.names == ["age", "island", "mass"]
    assert players.members.sum(axis=1).tolist() == [1, 4, 1]  # 3 categories + unseen

    rng = np.random.default_rng(9)
    model = softmax_model(6, 3, seed=9)
    one_hot = np.eye(4)[rng.integers(0, 4, size=5)]
    points = np.column_stack([rng.normal(size=5), one_hot, rng.normal(size=5)])
    background = Background(points, np.full(5, 0.2), "test")
    x = np.array([1.5, 0, 1, 0, 0, -0.3])

    [ours] = exact(model, x[None], background, players)

    np.testing.assert_allclose(
        ours.values, brute_force(model, x, background, players), rtol=0, atol=1e-12
    )
    assert ours.additivity_error.max() < 1e-12


def test_the_coalitions_are_every_subset_with_shapleys_weights() -> None:
    every = coalitions(3)
    assert every.masks.shape == (8, 3)
    assert not every.masks[0].any()
    assert every.masks[-1].all()
    assert len({tuple(m) for m in every.masks.tolist()}) == 8
    # Player 0, coalition {0}: weight 0! 2! / 3! = 1/3; coalition {} without it: -1/3.
    assert every.matrix[0, 1] == pytest.approx(1 / 3)
    assert every.matrix[0, 0] == pytest.approx(-1 / 3)
    np.testing.assert_allclose(every.matrix.sum(axis=1), 0, atol=1e-15)


def test_masked_rows_take_the_instance_on_the_coalition_and_the_background_elsewhere() -> None:
    background = Background(np.array([[10.0, 20.0], [30.0, 40.0]]), np.ones(2), "test")
    every = coalitions(2)
    rows = masked_rows([1.0, 2.0], background, Players.features(["a", "b"]), every)
    assert rows.tolist() == [
        [10, 20], [30, 40],  # {}
        [1, 20], [1, 40],  # {a}
        [10, 2], [30, 2],  # {b}
        [1, 2], [1, 2],  # {a, b}
    ]  # fmt: skip


def test_a_background_refuses_weights_that_do_not_match_its_points() -> None:
    with pytest.raises(ValueError, match="one weight per background point"):
        Background(np.zeros((3, 2)), np.ones(2), "test")
    with pytest.raises(ValueError, match="non-negative"):
        Background(np.zeros((2, 2)), np.array([1.0, -1.0]), "test")
    with pytest.raises(ValueError, match="players"):
        coalitions(21)
