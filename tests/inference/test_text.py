"""service.inference.text against Keras: the same strings give the same array, bit for bit.

Every test builds a real ``TextVectorization`` or ``StringLookup`` (adapted, or given a
vocabulary), describes it with ``model_training.text``, sends the description through
JSON as the version's files would, and compares what the service's reproduction and the
Keras layer output for the same batch of strings: same dtype, same shape, same bytes
(``tf_idf`` included: one float32 multiply, correctly rounded on both sides). Layers are
called eagerly on a whole batch at a time; nothing is trained.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_training.text import TextLayerError, describe_text_layer
from service.inference.text import (
    PUNCTUATION,
    StringLookupSpec,
    TextVectorizationSpec,
    UnservableText,
    describe,
    fingerprint64,
    vectorizer,
)

#: Strings that have tripped reimplementations: Unicode case, space, punctuation, marks.
TRICKY = [
    "",
    " ",
    "   \t\n ",
    "Hello, World!",
    "HELLO world hello",
    "don't stop-believing... (really)",
    "Café naïve ÉCOLE Straße STRASSE ß ẞ",
    "İstanbul ISTANBUL \u0131i I\u0131",
    "ΣΊΣΥΦΟΣ σίσυφος Σ ς",
    "東京 タワー 東京タワー",
    "emoji 😀 👍🏽 👨‍👩‍👧 🇫🇷",
    "e\u0301 e\u0301e combining\u0301",
    "a\u00a0b\u2003c\u3000d",
    "x\x1cy\x1dz\x1ew\x1fv\x85u",
    "tab\there\vvert\fform\rcarriage\nline",
    "“quotes” \u2018single\u2019 «guillemets» ¿qué? ¡sí! \u2013 — … • ·",
    "#hash @at $dollar %pct ^caret &amp *star _under `tick` |pipe| ~tilde",
    "[UNK] [unk] <pad> ''",
    "nul\x00inside \x7f del",
    "\ufeffbom \u200bzero\u200dwidth \u2028line\u2029para",
    "\U0010ffff \U0001d11e \ufffd",
    "the the the the the film film great",
    "unseenword anotherunseen",
]

CORPUS = [
    "The film was great, truly great!",
    "A terrible film; the worst.",
    "Café naïve Straße İstanbul",
    "ΣΊΣΥΦΟΣ σίσυφος 東京 😀",
    "don't stop-believing",
    "hello world hello there",
    "a\u00a0b x\x1cy e\u0301",
    "#hash @at [UNK] <pad>",
]

KNOWN_WORDS = sorted(
    {w for line in CORPUS for w in line.split()}
    | {"the", "film", "great", "hello", "world", "terrible", "worst"}
)


# --- helpers ------------------------------------------------------------------------------


def _tensor(batch: Sequence[Any]) -> tf.Tensor:
    """A string tensor of the batch: (n, 1) for strings, (n, k) for lists of strings."""
    rows = [[value] if isinstance(value, str) else list(value) for value in batch]
    width = len(rows[0]) if rows else 1
    return tf.constant(rows, dtype=tf.string, shape=(len(rows), width))


def keras_output(layer: keras.layers.Layer, batch: Sequence[Any]) -> np.ndarray:
    """The Keras layer's eager output for the batch."""
    return np.asarray(layer(_tensor(batch)))


def served(layer: keras.layers.Layer) -> Callable[[Sequence[Any]], np.ndarray]:
    """The service's version of the layer, from its description sent through JSON."""
    wire = json.loads(json.dumps(describe_text_layer(layer)))
    spec = describe(wire)
    assert describe(json.loads(json.dumps(spec.to_dict()))) == spec
    return vectorizer(spec)


def assert_same(expected: np.ndarray, actual: np.ndarray, batch: Sequence[Any]) -> None:
    """Same dtype, shape and bytes; on a difference, the first row that differs."""
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if actual.tobytes() != expected.tobytes():
        row = next(i for i in range(len(batch)) if actual[i].tobytes() != expected[i].tobytes())
        raise AssertionError(
            f"row {row} {batch[row]!r}: keras {expected[row].tolist()} "
            f"served {actual[row].tolist()}"
        )


def check(layer: keras.layers.Layer, batch: Sequence[Any]) -> None:
    """The service's version of ``layer`` gives exactly the Keras output for ``batch``."""
    assert_same(keras_output(layer, batch), served(layer)(batch), batch)


def text_layer(**kwargs: Any) -> keras.layers.TextVectorization:
    """A TextVectorization adapted on CORPUS, unless it is given a vocabulary."""
    layer = keras.layers.TextVectorization(**kwargs)
    if "vocabulary" not in kwargs:
        layer.adapt(CORPUS)
    return layer


# --- (a) examples, configuration by configuration ------------------------------------------


@pytest.mark.parametrize(
    "standardize", [None, "lower_and_strip_punctuation", "lower", "strip_punctuation"]
)
@pytest.mark.parametrize("split", [None, "whitespace", "character"])
@pytest.mark.parametrize("output_sequence_length", [None, 1, 7])
def test_standardize_and_split(
    standardize: str | None, split: str | None, output_sequence_length: int | None
) -> None:
    layer = text_layer(
        standardize=standardize, split=split, output_sequence_length=output_sequence_length
    )
    check(layer, TRICKY)


@pytest.mark.parametrize("ngrams", [2, 3, (2,), (1, 3), (3, 1), (2, 2)])
@pytest.mark.parametrize("split", [None, "whitespace", "character"])
@pytest.mark.parametrize("output_mode", ["int", "count"])
def test_ngrams(ngrams: int | tuple[int, ...], split: str | None, output_mode: str) -> None:
    layer = text_layer(ngrams=ngrams, split=split, output_mode=output_mode)
    if split is None and 1 not in layer._ngrams:
        # One token per string has no n-grams of 2 or more: adapt learned nothing.
        with pytest.raises(TextLayerError, match="expected a vocabulary"):
            describe_text_layer(layer)
        return
    check(layer, [*TRICKY, "a", "a b", "a b c", "great film", "the film was great"])


@pytest.mark.parametrize("output_mode", ["multi_hot", "count", "tf_idf"])
@pytest.mark.parametrize(
    ("max_tokens", "pad_to_max_tokens"), [(None, False), (6, False), (60, True)]
)
def test_counting_modes(output_mode: str, max_tokens: int | None, pad_to_max_tokens: bool) -> None:
    layer = text_layer(
        output_mode=output_mode, max_tokens=max_tokens, pad_to_max_tokens=pad_to_max_tokens
    )
    check(layer, [*TRICKY, *CORPUS])


@pytest.mark.parametrize("pad_to_max_tokens", [False, True])
def test_tf_idf_with_given_weights(pad_to_max_tokens: bool) -> None:
    """A vocabulary and weights given by hand: Keras pads the OOV weight with their mean."""
    layer = text_layer(
        output_mode="tf_idf",
        vocabulary=["great", "film", "the", "café"],
        idf_weights=[0.1, 1 / 3, 2.7182817, 1e-7],
        max_tokens=9,
        pad_to_max_tokens=pad_to_max_tokens,
    )
    check(layer, ["the great great film", "Café CAFÉ café", "unseen unseen", ""])


def test_given_vocabulary_and_max_tokens() -> None:
    layer = text_layer(vocabulary=["", "[UNK]", "b", "a"], max_tokens=5, output_sequence_length=3)
    check(layer, ["a b c d", "B A", "[UNK]", ""])


def test_adapt_cap_and_ties() -> None:
    """max_tokens keeps the most frequent tokens, ties broken by the token (high to low)."""
    layer = text_layer(max_tokens=5)
    assert layer.get_vocabulary()[:2] == ["", "[UNK]"]
    check(layer, TRICKY)


def test_inside_a_functional_model() -> None:
    """The layer as the guides use it, behind ``keras.Input((1,), dtype="string")``."""
    vectorize = text_layer(output_sequence_length=6)
    inputs = keras.Input((1,), dtype="string")
    model = keras.Model(inputs, vectorize(inputs))
    assert_same(np.asarray(model(_tensor(TRICKY))), served(vectorize)(TRICKY), TRICKY)


def test_empty_batch_and_all_empty_rows() -> None:
    layer = text_layer()
    check(layer, [])
    check(layer, ["", " ", "!!! ..."])  # pads to the longest row: (3, 0)
    check(text_layer(output_mode="count"), [])


def test_very_long_strings() -> None:
    words = " ".join([*KNOWN_WORDS, "unseen"]) + " "
    long_text = [words * 400, "x" * 100_000, "é" * 50_000 + " the", ""]
    check(text_layer(output_sequence_length=50), long_text)
    check(text_layer(), long_text)
    check(text_layer(output_mode="tf_idf", ngrams=2), long_text)


def test_all_code_point_blocks() -> None:
    """One string per 256-code-point block of the BMP and the astral planes' samples."""
    blocks = [
        "".join(chr(c) for c in range(start, start + 256) if not 0xD800 <= c < 0xE000)
        for start in range(0, 0x10000, 256)
    ]
    blocks += ["".join(chr(c) for c in range(p, p + 256)) for p in range(0x10000, 0x110000, 0x8000)]
    spaced = [" ".join(block) for block in blocks]
    for kwargs in (
        {"split": "character", "standardize": "lower_and_strip_punctuation"},
        {"split": "whitespace", "standardize": "lower", "output_mode": "count"},
    ):
        check(text_layer(**kwargs), blocks + spaced)


def test_lone_surrogates_are_refused_as_tensorflow_refuses_them() -> None:
    layer = text_layer()
    with pytest.raises(ValueError, match="converting unicode string"):
        keras_output(layer, ["bad \ud800 text"])
    with pytest.raises(UnservableText, match="lone surrogate"):
        served(layer)(["bad \ud800 text"])


# --- StringLookup ---------------------------------------------------------------------------

LOOKUP_VALUES = ["Lyon", "Paris", "", "[UNK]", "lyon", "Zürich", "東京", "unseen", "[MASK]"]


def lookup_layer(**kwargs: Any) -> keras.layers.StringLookup:
    """A StringLookup adapted on a few cities, unless it is given a vocabulary."""
    layer = keras.layers.StringLookup(**kwargs)
    if "vocabulary" not in kwargs:
        layer.adapt(np.array(["Lyon", "Paris", "Paris", "Zürich", "東京", "Lyon", "Paris"]))
    return layer


@pytest.mark.parametrize("mask_token", [None, "", "[MASK]"])
@pytest.mark.parametrize("num_oov_indices", [1, 2, 3, 7])
@pytest.mark.parametrize("output_mode", ["int", "one_hot", "multi_hot", "count", "tf_idf"])
def test_string_lookup(mask_token: str | None, num_oov_indices: int, output_mode: str) -> None:
    layer = lookup_layer(
        mask_token=mask_token, num_oov_indices=num_oov_indices, output_mode=output_mode
    )
    column = [[value] for value in LOOKUP_VALUES]
    check(layer, column)
    if output_mode != "one_hot":
        check(layer, [LOOKUP_VALUES[i : i + 3] for i in range(len(LOOKUP_VALUES) - 2)])


@pytest.mark.parametrize("output_mode", ["int", "one_hot"])
def test_string_lookup_on_scalars(output_mode: str) -> None:
    layer = lookup_layer(output_mode=output_mode, num_oov_indices=2)
    expected = np.asarray(layer(tf.constant(LOOKUP_VALUES)))
    assert_same(expected, served(layer)(LOOKUP_VALUES), LOOKUP_VALUES)


def test_string_lookup_pad_to_max_tokens_and_given_vocabulary() -> None:
    layer = lookup_layer(
        vocabulary=["a", "b", "c"], max_tokens=10, pad_to_max_tokens=True, output_mode="count"
    )
    check(layer, [["a", "a", "z"], ["c", "", "b"]])
    layer = lookup_layer(
        vocabulary=["a", "b"], idf_weights=[0.5, 0.25], output_mode="tf_idf", num_oov_indices=2
    )
    check(layer, [["a", "a", "z"], ["q", "", "b"]])


def test_no_oov_index_refuses_unseen_values_as_keras_does() -> None:
    layer = lookup_layer(num_oov_indices=0)
    check(layer, [["Lyon"], ["東京"]])
    with pytest.raises(tf.errors.InvalidArgumentError):
        keras_output(layer, [["Lyon"], ["Marseille"]])
    with pytest.raises(UnservableText, match="vocabulary"):
        served(layer)([["Lyon"], ["Marseille"]])


def test_fingerprint64_is_tensorflows() -> None:
    """farmhash Fingerprint64 at every length class (0-16, 17-32, 33-64, the 64-byte loop)."""
    rng = np.random.default_rng(25)
    data = [rng.bytes(n) for n in [*range(200), 255, 256, 257, 1000, 4096]]
    buckets = 2**62 + 12345
    expected = tf.strings.to_hash_bucket_fast(data, buckets).numpy()
    assert [fingerprint64(d) % buckets for d in data] == expected.tolist()


# --- refusals -------------------------------------------------------------------------------


def _custom_standardize(text: tf.Tensor) -> tf.Tensor:
    return tf.strings.lower(text)


def _custom_split(text: tf.Tensor) -> tf.Tensor:
    return tf.strings.split(text, sep=",")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: text_layer(standardize=_custom_standardize),
            "cannot serve TextVectorization 'tv' without TensorFlow: expected standardize None, "
            "'lower_and_strip_punctuation', 'lower' or 'strip_punctuation' (a custom callable "
            "runs TensorFlow ops). Received: standardize=<function _custom_standardize>",
        ),
        (
            lambda: text_layer(split=_custom_split),
            "cannot serve TextVectorization 'tv' without TensorFlow: expected split None, "
            "'whitespace' or 'character' (a custom callable runs TensorFlow ops). "
            "Received: split=<function _custom_split>",
        ),
        (
            lambda: text_layer(ragged=True),
            "cannot serve TextVectorization 'tv' without TensorFlow: expected ragged=False "
            "(a dense output). Received: ragged=True",
        ),
        (
            lambda: text_layer(output_mode="multi_hot", sparse=True),
            "cannot serve TextVectorization 'tv' without TensorFlow: expected sparse=False "
            "(a dense output). Received: sparse=True",
        ),
        (
            lambda: text_layer(output_mode="one_hot"),
            "cannot serve TextVectorization 'tv' without TensorFlow: expected output_mode "
            "'int', 'multi_hot', 'count' or 'tf_idf'. Received: output_mode='one_hot'",
        ),
        (
            lambda: keras.layers.TextVectorization(name="tv"),
            "cannot serve TextVectorization 'tv' without TensorFlow: expected a vocabulary: "
            "adapt the layer or pass vocabulary=.... Received: vocabulary=None",
        ),
        (
            lambda: lookup_layer(vocabulary=["a"], invert=True),
            "cannot serve StringLookup 'tv' without TensorFlow: expected invert=False "
            "(strings in, indices out). Received: invert=True",
        ),
        (
            lambda: lookup_layer(num_oov_indices=2, salt=7),
            "cannot serve StringLookup 'tv' without TensorFlow: expected salt=None (a salted "
            "OOV hash is SipHash, which is not reproduced). Received: salt='[7, 7]'",
        ),
        (
            lambda: lookup_layer(vocabulary=["a"], encoding="latin-1"),
            "cannot serve StringLookup 'tv' without TensorFlow: expected encoding='utf-8'. "
            "Received: encoding='latin-1'",
        ),
        (
            lambda: keras.layers.IntegerLookup(vocabulary=[1, 2]),
            "cannot serve layer 'tv' without TensorFlow: expected a TextVectorization or "
            "StringLookup layer. Received: IntegerLookup",
        ),
    ],
)
def test_refusals(make: Callable[[], keras.layers.Layer], message: str) -> None:
    layer = make()
    layer.name = "tv"
    with pytest.raises(TextLayerError) as refused:
        describe_text_layer(layer)
    assert isinstance(refused.value, ValueError)
    assert str(refused.value) == message
    assert "\n" not in str(refused.value)


def test_descriptions_are_checked() -> None:
    spec = describe_text_layer(text_layer(output_mode="tf_idf"))
    describe(spec)
    for broken in (
        {**spec, "vocabulary_size": spec["vocabulary_size"] + 1},
        {**spec, "idf_weights": [0.1] * spec["vocabulary_size"]},  # not float32 values
        {**spec, "idf_weights": None},
        {**spec, "vocabulary": ["", "[UNK]", *spec["vocabulary"][1:]]},
        {**spec, "output_sequence_length": 4},
        {**spec, "standardize": "lower_and_strip_accents"},
        {**spec, "layer": "IntegerLookup"},
        {**spec, "unknown": 1},
    ):
        with pytest.raises(ValueError, match="validation error"):
            describe(broken)
    lookup = StringLookupSpec(vocabulary=("[UNK]", "a"), vocabulary_size=2)
    assert describe(lookup.to_dict()) == lookup
    assert isinstance(describe(spec), TextVectorizationSpec)


# --- (b) generated text ---------------------------------------------------------------------

#: Letters and marks that matter to case, splitting and punctuation, beside any code point.
SPECIAL = (
    string.ascii_letters
    + PUNCTUATION
    + " \t\n\v\f\r\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2003\u200b\u2028\u2029\u202f\u3000\ufeff"
    + "ÉéÀàßẞİ\u0131Σ\u03c3ςÆæŒœ东京日本😀👍🏽\u0301\u0308\u200d\ufe0f"
    + "“”\u2018\u2019«»¿¡\u2013—…•·\x00\x7f"
)
ANY_TEXT = st.text(
    st.characters(codec="utf-8") | st.sampled_from(SPECIAL), max_size=60
)  # utf-8: no lone surrogates
UNSEEN = ["zzz", "Filmz", "grëat", "ΣΣ", "日本", "[unk]", "UNSEEN", "x"]
WORD = st.sampled_from(KNOWN_WORDS + [w.upper() for w in KNOWN_WORDS] + UNSEEN) | st.text(
    st.sampled_from(string.ascii_letters + "éΣ東'-"), min_size=1, max_size=8
)
SEPARATOR = st.sampled_from([" ", "  ", "\t", "\n", ", ", ". ", "!", "-", "\xa0", "\u3000", ""])
SENTENCE = st.lists(st.tuples(WORD, SEPARATOR), max_size=14).map(
    lambda parts: "".join(w + s for w, s in parts)
)
BATCH = st.lists(ANY_TEXT | SENTENCE, min_size=32, max_size=96)
#: A layer call costs more than its batch's size: many strings per example, and at least
#: 100 examples per test (more under a profile that asks for more, e.g. "stress").
GENERATED = settings(
    max_examples=max(100, settings.default.max_examples if settings.default else 0),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Configurations the generated batches run through, adapted once per module.
CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "default": {},
    "lower-ngrams-length": {"standardize": "lower", "ngrams": 2, "output_sequence_length": 9},
    "punct-chars-multi_hot": {
        "standardize": "strip_punctuation",
        "split": "character",
        "output_mode": "multi_hot",
        "max_tokens": 40,
    },
    "raw-13grams-count": {
        "standardize": None,
        "ngrams": (1, 3),
        "output_mode": "count",
        "max_tokens": 50,
        "pad_to_max_tokens": True,
    },
    "tf_idf-bigrams": {"output_mode": "tf_idf", "ngrams": (2, 1)},
    "no-split-lower": {"split": None, "standardize": "lower"},
}
LOOKUPS: dict[str, dict[str, Any]] = {
    "lookup-int-oov3-mask": {"num_oov_indices": 3, "mask_token": ""},
    "lookup-tf_idf-oov2": {"num_oov_indices": 2, "output_mode": "tf_idf"},
}

#: Strings checked by the generated tests, and string-by-layer comparisons.
TALLY = {"strings": 0, "comparisons": 0}


@pytest.fixture(scope="module")
def layers(
    request: pytest.FixtureRequest,
) -> Iterator[dict[str, tuple[keras.layers.Layer, Callable[..., np.ndarray]]]]:
    """Each configuration's adapted layer and its served version (built once); at the end,
    how many generated strings were compared (shown in the test run's output)."""
    corpus = [*CORPUS, *TRICKY, " ".join(KNOWN_WORDS)]
    built: dict[str, tuple[keras.layers.Layer, Callable[..., np.ndarray]]] = {}
    for name, kwargs in CONFIGURATIONS.items():
        layer = keras.layers.TextVectorization(**kwargs)
        layer.adapt(corpus)
        built[name] = (layer, served(layer))
    for name, kwargs in LOOKUPS.items():
        layer = keras.layers.StringLookup(**kwargs)
        layer.adapt(np.array(corpus + KNOWN_WORDS))
        built[name] = (layer, served(layer))
    yield built
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is not None and TALLY["strings"]:
        with capture.global_and_fixture_disabled():
            print(
                f"\ntext exactness: {TALLY['strings']} generated strings, "
                f"{TALLY['comparisons']} string-by-layer comparisons with Keras"
            )


def _check_generated(
    layers: dict[str, tuple[keras.layers.Layer, Callable[..., np.ndarray]]], batch: list[str]
) -> None:
    for name, (layer, serve) in layers.items():
        values: list[Any] = batch
        if name.startswith("lookup"):
            # A lookup takes the strings whole (two per instance), where TextVectorization
            # splits them: what both see is the generated text.
            values = [[text, batch[(i + 1) % len(batch)]] for i, text in enumerate(batch)]
        assert_same(keras_output(layer, values), serve(values), values)
    TALLY["strings"] += len(batch)
    TALLY["comparisons"] += len(batch) * len(layers)


@GENERATED
@given(batch=BATCH)
def test_generated_text_matches_keras(
    layers: dict[str, tuple[keras.layers.Layer, Callable[..., np.ndarray]]], batch: list[str]
) -> None:
    _check_generated(layers, batch)


@GENERATED
@given(batch=st.lists(SENTENCE, min_size=32, max_size=96))
def test_generated_sentences_match_keras(
    layers: dict[str, tuple[keras.layers.Layer, Callable[..., np.ndarray]]], batch: list[str]
) -> None:
    _check_generated(layers, batch)
