"""KernelSHAP (``service.inference.kernel_shap``) against exact Shapley values and ``shap``'s
``KernelExplainer``.

The references are independent: ``service.inference.explain.exact`` (itself checked
against ``shap``'s exact explainer) for what the estimate approaches, and
``shap.KernelExplainer`` (its own sampling, its own regression, its background the
weighted points repeated in proportion to their integer weights) for the same estimator
computed elsewhere. Stated tolerances:

- a budget covering every coalition gives the exact values (1e-12) and ``shap``'s (1e-9);
- on 10 features with 512 coalitions, each value within 4 of its standard errors of the
  exact value, and all within 0.02 (probabilities);
- on 14 features with 4096 coalitions, ours and ``shap``'s within 5 x sqrt(2) standard
  errors and 0.01 of each other, ours no further from the exact values than ``shap``'s
  (root mean square, x1.5);
- the stated standard errors are the spread of the estimate over seeds (ratio 0.7 to 1.3);
- the values add up to ``f(x) - E f(b)`` within 1e-12, whatever the sample.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from service.inference.explain import Background, Players, coalition_rows, exact
from service.inference.kernel_shap import estimate, kernel_shap, plan, seed
from tests.inference.test_explain import softmax_model

with warnings.catch_warnings():  # shap's import touches matplotlib's deprecated API
    warnings.simplefilter("ignore")
    import shap

Array = npt.NDArray[np.float64]


def game(d: int, points: int = 6, classes: int = 3) -> tuple[Any, Background, Array, Array]:
    """A nonlinear softmax model over ``d`` features, a weighted background (integer
    weights: its points and their counts) and two instances."""
    rng = np.random.default_rng(d)
    model = softmax_model(d, classes, seed=d)
    centres = rng.normal(size=(points, d))
    counts = rng.integers(1, 4, size=points)
    background = Background(centres, counts.astype(float), "test")
    x = rng.normal(scale=1.5, size=(2, d))
    return model, background, x, counts


def kernel_explainer(model: Any, background: Background, counts: Array, x: Array, n: int) -> Array:
    """``shap.KernelExplainer``'s (N, d, K) values, without L1 selection, seeded."""
    data = np.repeat(background.points, counts, axis=0)
    np.random.seed(0)  # shap samples from numpy's global generator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explainer = shap.KernelExplainer(model, data)
        values = explainer.shap_values(x, nsamples=n, l1_reg=False, silent=True)
    return np.asarray(values)


def test_a_budget_covering_every_coalition_gives_the_exact_values_and_shaps() -> None:
    model, background, x, counts = game(10)
    ours = estimate(model, x, background, samples=2**10 - 2)
    exact_values = exact(model, x, background)
    reference = kernel_explainer(model, background, counts, x, 2**10 - 2)
    for i, (a, e) in enumerate(zip(ours, exact_values, strict=True)):
        np.testing.assert_allclose(a.values, e.values, rtol=0, atol=1e-12)
        np.testing.assert_allclose(a.values, reference[i], rtol=0, atol=1e-9)
        assert a.standard_errors is not None
        assert not a.standard_errors.any()  # nothing was sampled


def test_sampled_values_approach_the_exact_ones_within_their_standard_errors() -> None:
    model, background, x, _ = game(10)
    ours = estimate(model, x, background, samples=512)
    for a, e in zip(ours, exact(model, x, background), strict=True):
        assert a.standard_errors is not None
        error = np.abs(a.values - e.values)
        assert error.max() < 0.02
        assert np.all(error <= 4 * a.standard_errors)
        assert a.additivity_error.max() < 1e-12


def test_the_values_agree_with_shaps_kernel_explainer_on_the_same_sample_budget() -> None:
    d, budget = 14, 4096
    model, background, x, counts = game(d, points=4)
    ours = estimate(model, x, background, samples=budget)
    reference = kernel_explainer(model, background, counts, x, budget)
    truth = exact(model, x, background)
    for i, (a, e) in enumerate(zip(ours, truth, strict=True)):
        assert a.standard_errors is not None
        gap = np.abs(a.values - reference[i])
        assert gap.max() < 0.01
        assert np.all(gap <= 5 * np.sqrt(2) * a.standard_errors)
        ours_rms = np.sqrt(np.mean((a.values - e.values) ** 2))
        shap_rms = np.sqrt(np.mean((reference[i] - e.values) ** 2))
        assert ours_rms < 1.5 * shap_rms


def test_the_standard_errors_are_the_spread_of_the_estimate_over_seeds() -> None:
    model, background, x, _ = game(10)
    players = Players.features([str(j) for j in range(10)])
    values, errors = [], []
    for s in range(100):
        chosen = plan(10, 256, s)
        scored = model(coalition_rows(x[0], background, players, chosen.masks))
        attributions = kernel_shap(scored, background, chosen)
        values.append(attributions.values)
        errors.append(attributions.standard_errors)
    ratio = np.mean(errors, axis=0) / np.std(values, axis=0, ddof=1)
    assert 0.7 < np.median(ratio) < 1.3
    assert ratio.min() > 0.5
    assert ratio.max() < 1.6


def test_a_linear_functions_values_are_exact_from_any_sample() -> None:
    rng = np.random.default_rng(4)
    d = 30
    w = rng.normal(size=(d, 2))
    background = Background(rng.normal(size=(10, d)), rng.uniform(0.1, 1, size=10), "test")
    x = rng.normal(size=(2, d))
    for row, a in zip(x, estimate(lambda z: z @ w, x, background, samples=256), strict=True):
        np.testing.assert_allclose(a.values, w * (row - background.mean)[:, None], atol=1e-9)
        assert a.standard_errors is not None
        assert a.standard_errors.max() < 1e-9


def test_thirty_features_add_up_exactly_and_the_same_row_gets_the_same_answer() -> None:
    model, background, x, _ = game(30, points=10)
    first = estimate(model, x, background)
    again = estimate(model, x[::-1], background)[::-1]
    for a, b in zip(first, again, strict=True):
        assert a.additivity_error.max() < 1e-12
        np.testing.assert_array_equal(a.values, b.values)
        np.testing.assert_array_equal(a.standard_errors, b.standard_errors)
    assert not np.array_equal(first[0].values, first[1].values)
    assert seed(x[0]) == seed(x[0].copy()) != seed(x[1])


def test_the_plan_enumerates_whole_sizes_and_pairs_the_rest() -> None:
    chosen = plan(30, 2048, seed=1)
    assert len(chosen.masks) == 2 + 2048
    assert not chosen.masks[0].any()
    assert chosen.masks[1].all()
    assert chosen.enumerated == 60  # sizes 1 and 29, as shap enumerates them
    assert set(chosen.masks[2:62].sum(axis=1).tolist()) == {1, 29}
    sampled = chosen.masks[62:]
    assert chosen.pairs == len(sampled) // 2 == 994
    np.testing.assert_array_equal(sampled[0::2], ~sampled[1::2])  # each with its complement
    assert set(sampled.sum(axis=1).tolist()) <= set(range(2, 29))
    assert chosen.weights.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.array_equal(plan(30, 2048, seed=1).masks, chosen.masks)


def test_the_plan_refuses_a_game_it_cannot_regress() -> None:
    with pytest.raises(ValueError, match="at least 2 players"):
        plan(1, 100, seed=0)
    with pytest.raises(ValueError, match="at least 2 coalitions"):
        plan(5, 1, seed=0)
