"""Leave-one-out occlusion (``service.inference.leave_one_out``) from first principles.

For a function linear in the steps, ``f(x) = sum_t w_t . x_t``, hiding step i (setting
it to the baseline b) drops the output by exactly ``w_i . (x_i - b)``; a step already at
the baseline drops nothing and is not scored. A text's variants are its tokens joined
without each one in turn, and cut by the layer into the same tokens again.
"""

from __future__ import annotations

import numpy as np

from service.inference.leave_one_out import drops, hidden_steps, left_out_texts
from service.inference.text import TextVectorizationSpec, token_split, vectorizer


def test_a_linear_function_of_the_steps_drops_by_each_steps_own_term() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3))
    x[2] = 0.0  # a step at the baseline: nothing to hide
    w = rng.normal(size=(6, 3, 4))  # step, feature, class

    def model(rows: np.ndarray) -> np.ndarray:
        return np.einsum("rtf,tfk->rk", rows, w)

    rows, positions = hidden_steps(x, 0.0, np.float64)
    assert positions.tolist() == [0, 1, 3, 4, 5]
    assert rows.shape == (6, 6, 3)  # the sequence, then 5 variants
    np.testing.assert_array_equal(rows[0], x)
    found = drops(model(rows), len(x), positions)
    assert found.model_rows == 6
    np.testing.assert_allclose(found.prediction, model(x[None])[0], atol=1e-12)
    expected = np.einsum("tf,tfk->tk", x, w)  # w_i . (x_i - 0)
    np.testing.assert_allclose(found.values, expected, atol=1e-12)
    assert np.all(found.values[2] == 0.0)


def test_token_ids_are_hidden_with_the_padding_id_and_padding_is_skipped() -> None:
    ids = np.array([5, 17, 0, 3, 0, 0])
    rows, positions = hidden_steps(ids, 0.0, np.int64)
    assert rows.dtype == np.int64
    assert positions.tolist() == [0, 1, 3]
    assert rows.tolist() == [
        [5, 17, 0, 3, 0, 0],
        [0, 17, 0, 3, 0, 0],
        [5, 0, 0, 3, 0, 0],
        [5, 17, 0, 0, 0, 0],
    ]


def test_a_texts_variants_leave_each_token_out_and_cut_into_the_rest() -> None:
    spec = TextVectorizationSpec(
        vocabulary=("", "[UNK]", "great", "film", "awful"), vocabulary_size=5, ngrams=(1, 2)
    )
    split = token_split(vectorizer(spec))
    assert split is not None
    words = split.pieces("A GREAT, great  film!")
    assert words == ["a", "great", "great", "film"]
    variants = left_out_texts(words, split.join)
    assert variants == ["great great film", "a great film", "a great film", "a great great"]
    for i, variant in enumerate(variants):
        assert split.pieces(variant) == words[:i] + words[i + 1 :]
    by_character = TextVectorizationSpec(
        vocabulary=("", "[UNK]", "a"), vocabulary_size=3, split="character", standardize=None
    )
    characters = token_split(vectorizer(by_character))
    assert characters is not None
    assert left_out_texts(characters.pieces("a b"), characters.join) == [" b", "ab", "a "]
