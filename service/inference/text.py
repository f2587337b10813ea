"""Keras's string preprocessing layers, reproduced without TensorFlow: strings in, numpy out.

LiteRT cannot run string ops, so a model that takes raw text is served in two parts:
its ``TextVectorization`` (or a ``StringLookup`` on a string input) runs here, the
rest of the network in LiteRT. The layer travels as a description (``describe`` reads
it from the dict the exporter wrote, ``TextVectorizationSpec.to_dict`` writes it
back); ``vectorizer`` compiles one into a function with exactly the Keras layer's
output: the same numbers, dtype and shape (``tests/inference/test_text.py`` runs both
on the same strings, generated ones included).

What the TensorFlow ops underneath do, and so what is done here (Keras 3.15, TF 2.21):

- ``lower``: ``tf.strings.lower`` without an encoding lowercases ASCII only:
  ``"ÉÀ İ Σ"`` stays as it is, ``"ABC"`` becomes ``"abc"``.
- ``strip_punctuation``: RE2 removes the 32 ASCII punctuation characters
  (``!"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~``; the pattern's ``,-\\.`` is a range that takes in
  ``-``); typographic quotes, dashes, ``¿``, ``«`` and the like stay.
- ``whitespace`` split: ``tf.strings.split`` breaks on ASCII whitespace only (space,
  ``\\t \\n \\v \\f \\r``) and drops empty pieces; NBSP, ``\\u2003``, ``\\u3000``,
  ``\\x1c``-``\\x1f`` and ``\\x85`` are part of a token (``str.split()`` would break there).
- ``character`` split: one token per Unicode code point (a combining accent is its own
  token, an emoji with a ZWJ several).
- ``ngrams``: for each width in the given order, every run of that many tokens joined by
  one space; a row shorter than the width gives none of that width (no padding).
- Lookup: a token's index in the vocabulary (``get_vocabulary()``: the mask ``""`` first
  in ``int`` mode, then the OOV entries, then the tokens); the mask token gives 0 in
  ``int`` mode and is dropped by the other modes; an unseen token gives the OOV index,
  or with several OOV indices ``farmhash.Fingerprint64(utf8) % num_oov_indices`` after
  the mask (``tf.strings.to_hash_bucket_fast``).
- Output: ``int`` is int64, padded with 0 or cut to ``output_sequence_length`` (when
  ``None``, padded to the longest row of the batch); ``one_hot``, ``multi_hot`` and
  ``count`` are int64 too (eager Keras returns the bincount's dtype, not floatx);
  ``tf_idf`` is float32: the count times the float32 IDF weight, one rounding, bit for
  bit what TensorFlow computes. The width is ``max_tokens`` with ``pad_to_max_tokens``,
  else the vocabulary size.

A ``TextVectorization`` instance is one string; it is computed as Keras computes a
``(batch, 1)`` string input (``keras.Input((1,), dtype="string")``). A ``StringLookup``
instance is a fixed number of strings (``(batch, k)``; ``(batch,)`` for ``int`` and
``one_hot``). Strings that are not valid Unicode (lone surrogates) are refused, as
TensorFlow refuses to encode them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from service.errors import InvalidInput

#: What Keras's ``strip_punctuation`` removes: ASCII punctuation, as its RE2 class spells it.
PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
#: What ``tf.strings.split`` breaks on (``absl::ascii_isspace``).
WHITESPACE = " \t\n\v\f\r"

OutputMode = Literal["int", "one_hot", "multi_hot", "count", "tf_idf"]
Standardize = Literal["lower_and_strip_punctuation", "lower", "strip_punctuation"]
Split = Literal["whitespace", "character"]

_LOWER = {ord(c): ord(c.lower()) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}
_STRIP: dict[int, int | None] = dict.fromkeys(map(ord, PUNCTUATION))
_TO_SPACE = {ord(c): ord(" ") for c in WHITESPACE}
#: Keras's default OOV token, and TextVectorization's.
OOV = "[UNK]"
_MASK_DROPPED = -1  # a mask token in the counting modes: counted nowhere


class UnservableText(InvalidInput):
    """A string the layer cannot take: not valid Unicode, or unseen with no OOV index."""


# --- the description ----------------------------------------------------------------------


class _Lookup(BaseModel):
    """What every string lookup has: the vocabulary and how indices become the output."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    vocabulary: tuple[str, ...] = Field(min_length=1)
    """``layer.get_vocabulary()``: special entries first, a token's position is its index."""
    vocabulary_size: int
    """``layer.vocabulary_size()``: ``len(vocabulary)``, recorded to be checked."""
    max_tokens: int | None = Field(default=None, gt=1)
    """The layer's cap on the vocabulary; with ``pad_to_max_tokens``, the output's width."""
    pad_to_max_tokens: bool = False
    """Counting modes: the output is ``max_tokens`` wide instead of ``vocabulary_size``."""
    idf_weights: tuple[float, ...] | None = None
    """``tf_idf`` only: the layer's float32 weights, one per output column (the layer's
    saved ``idf_weights`` variable, padding included)."""

    def _mask_oov(self) -> tuple[str | None, str, int]:
        raise NotImplementedError

    @property
    def _mode(self) -> OutputMode:
        raise NotImplementedError

    @property
    def depth(self) -> int:
        """The width of a counting mode's output."""
        if self.pad_to_max_tokens and self.max_tokens is not None:
            return self.max_tokens
        return self.vocabulary_size

    @property
    def token_start(self) -> int:
        """The index of the first real token (after the mask and OOV entries)."""
        mask, _, oov = self._mask_oov()
        return (1 if mask is not None and self._mode == "int" else 0) + oov

    def _check_lookup(self) -> None:
        mask, oov_token, oov = self._mask_oov()
        mode = self._mode
        start = self.token_start
        specials = [mask] * (start - oov) + [oov_token] * oov
        tokens = self.vocabulary[start:]
        if list(self.vocabulary[:start]) != specials:
            raise ValueError(
                f"expected the vocabulary to start with {specials}, "
                f"received {list(self.vocabulary[:start])}"
            )
        if len(set(tokens)) != len(tokens) or mask in tokens or oov_token in tokens:
            raise ValueError(
                "expected a vocabulary of distinct tokens without the mask or OOV token "
                "after its special entries"
            )
        if self.vocabulary_size != len(self.vocabulary):
            raise ValueError(
                f"expected vocabulary_size {len(self.vocabulary)} (the vocabulary's length), "
                f"received {self.vocabulary_size}"
            )
        if self.pad_to_max_tokens and self.max_tokens is None:
            raise ValueError("expected max_tokens with pad_to_max_tokens")
        if self.max_tokens is not None and self.vocabulary_size > self.max_tokens:
            raise ValueError(
                f"expected at most max_tokens={self.max_tokens} entries, "
                f"received {self.vocabulary_size}"
            )
        if (mode == "tf_idf") != (self.idf_weights is not None):
            raise ValueError("expected idf_weights exactly when output_mode is 'tf_idf'")
        if self.idf_weights is not None:
            if len(self.idf_weights) != self.depth:
                raise ValueError(
                    f"expected {self.depth} idf_weights (the output's width), "
                    f"received {len(self.idf_weights)}"
                )
            weights = np.asarray(self.idf_weights, dtype=np.float64)
            if not np.array_equal(weights.astype(np.float32), weights):
                raise ValueError("expected idf_weights that are float32 values")

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready description; ``describe`` reads it back."""
        return self.model_dump(mode="json")


class StringLookupSpec(_Lookup):
    """A ``keras.layers.StringLookup`` (``invert=False``) on a string input."""

    layer: Literal["StringLookup"] = "StringLookup"
    mask_token: str | None = None
    """A token that maps to 0 in ``int`` mode and to nothing otherwise; ``None``: none."""
    oov_token: str = OOV
    """What ``get_vocabulary()`` shows at the OOV indices."""
    num_oov_indices: int = Field(default=1, ge=0)
    """How many OOV indices; 0: an unseen token is refused, >1: hashed into them."""
    output_mode: OutputMode = "int"

    def _mask_oov(self) -> tuple[str | None, str, int]:
        return self.mask_token, self.oov_token, self.num_oov_indices

    @property
    def _mode(self) -> OutputMode:
        return self.output_mode

    @model_validator(mode="after")
    def _consistent(self) -> StringLookupSpec:
        self._check_lookup()
        return self


class TextVectorizationSpec(_Lookup):
    """A ``keras.layers.TextVectorization`` with built-in standardize and split."""

    layer: Literal["TextVectorization"] = "TextVectorization"
    standardize: Standardize | None = "lower_and_strip_punctuation"
    split: Split | None = "whitespace"
    ngrams: tuple[Annotated[int, Field(ge=1)], ...] | None = None
    """The n-gram widths, in order (an ``ngrams=3`` layer has ``(1, 2, 3)``)."""
    output_mode: Literal["int", "multi_hot", "count", "tf_idf"] = "int"
    output_sequence_length: int | None = Field(default=None, ge=0)
    """``int`` mode: every row padded with 0 or cut to this; ``None``: to the batch's longest."""

    def _mask_oov(self) -> tuple[str | None, str, int]:
        return "", OOV, 1

    @property
    def _mode(self) -> OutputMode:
        return self.output_mode

    @model_validator(mode="after")
    def _consistent(self) -> TextVectorizationSpec:
        if self.output_mode != "int" and self.output_sequence_length is not None:
            raise ValueError(
                "expected output_sequence_length only with output_mode 'int', "
                f"received {self.output_sequence_length} with {self.output_mode!r}"
            )
        if self.ngrams is not None and not self.ngrams:
            raise ValueError("expected at least one n-gram width, received ngrams=()")
        self._check_lookup()
        return self


PreprocessingSpec = Annotated[
    TextVectorizationSpec | StringLookupSpec, Field(discriminator="layer")
]
_SPEC: TypeAdapter[TextVectorizationSpec | StringLookupSpec] = TypeAdapter(PreprocessingSpec)


def describe(data: Mapping[str, Any]) -> TextVectorizationSpec | StringLookupSpec:
    """The description the exporter wrote (``{"layer": "TextVectorization", ...}``), checked."""
    return _SPEC.validate_python(data)


# --- the computation ----------------------------------------------------------------------


#: A batch of instances (strings) in, what the Keras layer outputs for them out.
Vectorizer = Callable[[Sequence[Any]], npt.NDArray[Any]]


@dataclass(frozen=True)
class Texts:
    """Instances as strings, for a model that takes raw text."""

    strings: Sequence[Any]

    def __len__(self) -> int:
        return len(self.strings)


def vectorizer(spec: TextVectorizationSpec | StringLookupSpec) -> Vectorizer:
    """A function from a batch of instances to what the Keras layer outputs for them."""
    return _TextVectorizer(spec) if isinstance(spec, TextVectorizationSpec) else _Lookuper(spec)


class _Indexer:
    """Token -> index as the layer's lookup table gives it (mask and OOV included)."""

    def __init__(self, spec: _Lookup) -> None:
        self.mask, _, self.num_oov = spec._mask_oov()
        start = spec.token_start
        self.oov_start = start - self.num_oov
        self.int_mode = spec._mode == "int"
        self.index = {token: i for i, token in enumerate(spec.vocabulary[start:], start)}

    def __call__(self, token: str) -> int:
        found = self.index.get(token)
        if found is not None:
            return found
        if token == self.mask:
            return 0 if self.int_mode else _MASK_DROPPED
        if self.num_oov == 1:
            return self.oov_start
        if self.num_oov == 0:
            raise UnservableText(
                f"expected a value from the model's vocabulary (it has no index for unseen "
                f"values), received {token[:100]!r}"
            )
        return self.oov_start + fingerprint64(_utf8(token)) % self.num_oov


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UnservableText(
            f"expected text that is valid Unicode, received a lone surrogate "
            f"{text[exc.start : exc.end]!r} at character {exc.start}"
        ) from None


def _bincount(rows: Sequence[Sequence[int]], depth: int, binary: bool) -> npt.NDArray[np.int64]:
    out = np.zeros((len(rows), depth), dtype=np.int64)
    for r, row in enumerate(rows):
        for index in row:
            if 0 <= index < depth:  # tf.math.bincount drops what is outside [0, depth)
                out[r, index] = 1 if binary else out[r, index] + 1
    return out


def _encode(spec: _Lookup, rows: Sequence[Sequence[int]], mode: OutputMode) -> npt.NDArray[Any]:
    counts = _bincount(rows, spec.depth, binary=mode == "multi_hot")
    if mode != "tf_idf":
        return counts
    assert spec.idf_weights is not None
    return counts.astype(np.float32) * np.asarray(spec.idf_weights, dtype=np.float32)


class _TextVectorizer:
    """``TextVectorization.call`` on a ``(batch, 1)`` string tensor."""

    def __init__(self, spec: TextVectorizationSpec) -> None:
        self.spec = spec
        table: dict[int, int | None] = {}
        if spec.standardize in ("lower", "lower_and_strip_punctuation"):
            table.update(_LOWER)
        if spec.standardize in ("strip_punctuation", "lower_and_strip_punctuation"):
            table.update(_STRIP)
        self.table = table
        self.index = _Indexer(spec)

    def pieces(self, text: str) -> list[str]:
        """The string standardized and split: the tokens its n-grams are made of."""
        _utf8(text)
        text = text.translate(self.table)
        if self.spec.split == "whitespace":
            return [piece for piece in text.translate(_TO_SPACE).split(" ") if piece]
        if self.spec.split == "character":
            return list(text)
        return [text]

    def tokens(self, text: str) -> list[str]:
        """The tokens (n-grams included) the layer looks up for one string."""
        pieces = self.pieces(text)
        if self.spec.ngrams is None:
            return pieces
        return [
            " ".join(pieces[i : i + width])
            for width in self.spec.ngrams
            for i in range(len(pieces) - width + 1)
        ]

    def __call__(self, texts: Sequence[Any]) -> npt.NDArray[Any]:
        for text in texts:
            if not isinstance(text, str):
                raise UnservableText(f"expected a string, received {type(text).__name__}")
        rows = [[self.index(token) for token in self.tokens(text)] for text in texts]
        spec = self.spec
        if spec.output_mode != "int":
            return _encode(spec, rows, spec.output_mode)
        length = spec.output_sequence_length
        if length is None:
            length = max((len(row) for row in rows), default=0)
        out = np.zeros((len(rows), length), dtype=np.int64)
        for r, row in enumerate(rows):
            kept = row[:length]
            out[r, : len(kept)] = kept
        return out


@dataclass(frozen=True)
class TokenSplit:
    """How a ``TextVectorization`` cuts a string into tokens, and how tokens make a string
    it cuts into the same tokens again (to leave one out: ``service.inference.leave_one_out``)."""

    pieces: Callable[[str], list[str]]
    """The string standardized and split (before n-grams), as the layer does it."""
    separator: str
    """What joins tokens back into a string: a space for ``whitespace``; nothing for
    ``character`` (or no split). Standardizing is idempotent, so the join splits into the
    same tokens."""

    def join(self, tokens: Sequence[str]) -> str:
        """The string of these tokens, as the layer would cut it."""
        return self.separator.join(tokens)


def token_split(vectorize: Vectorizer) -> TokenSplit | None:
    """How ``vectorize`` cuts a string into tokens; None for a ``StringLookup`` (whose
    instance is one value, not a text of tokens)."""
    if not isinstance(vectorize, _TextVectorizer):
        return None
    separator = " " if vectorize.spec.split == "whitespace" else ""
    return TokenSplit(vectorize.pieces, separator)


class _Lookuper:
    """``StringLookup.call`` on a ``(batch, k)`` (or, for int and one_hot, ``(batch,)``)
    string tensor."""

    def __init__(self, spec: StringLookupSpec) -> None:
        self.spec = spec
        self.index = _Indexer(spec)

    def __call__(self, values: Sequence[Any]) -> npt.NDArray[Any]:
        try:
            array = np.asarray(values, dtype=object)
        except ValueError:
            raise UnservableText("expected instances of the same number of strings") from None
        mode = self.spec.output_mode
        if (array.ndim == 1 and mode in ("multi_hot", "count", "tf_idf")) or array.ndim > 2:
            # Keras would count a (batch,) input as one sample: ask for (batch, 1) instead.
            raise UnservableText(
                f"expected instances of shape (k,) of strings for {mode!r} output, "
                f"received an array of {array.ndim - 1} dimensions per instance"
            )
        for value in array.flat:
            if not isinstance(value, str):
                raise UnservableText(f"expected strings, received {type(value).__name__}")
        flat = [self.index(_checked(value)) for value in array.flat]
        ids: npt.NDArray[np.int64] = np.array(flat, dtype=np.int64).reshape(array.shape)
        if mode == "int":
            return ids
        if mode == "one_hot":
            if ids.ndim == 2 and ids.shape[1] == 1:
                ids = ids.reshape(ids.shape[0])
            hot: npt.NDArray[np.int64] = (ids[..., None] == np.arange(self.spec.depth)).astype(
                np.int64
            )
            return hot
        rows = [flat[r * array.shape[1] : (r + 1) * array.shape[1]] for r in range(len(array))]
        return _encode(self.spec, rows, mode)


def _checked(value: str) -> str:
    _utf8(value)
    return value


# --- farmhash Fingerprint64 (farmhashna::Hash64), as tf.strings.to_hash_bucket_fast uses ---

_M = (1 << 64) - 1
_K0 = 0xC3A5C85C97CB3127
_K1 = 0xB492B66FBE98F273
_K2 = 0x9AE16A3B2F90404F


def _f64(s: bytes, i: int) -> int:
    return int.from_bytes(s[i : i + 8], "little")


def _f32(s: bytes, i: int) -> int:
    return int.from_bytes(s[i : i + 4], "little")


def _rot(v: int, shift: int) -> int:
    return v if shift == 0 else ((v >> shift) | (v << (64 - shift))) & _M


def _shift_mix(v: int) -> int:
    return v ^ (v >> 47)


def _len16(u: int, v: int, mul: int) -> int:
    a = ((u ^ v) * mul) & _M
    a ^= a >> 47
    b = ((v ^ a) * mul) & _M
    b ^= b >> 47
    return (b * mul) & _M


def _len0to16(s: bytes) -> int:
    n = len(s)
    if n >= 8:
        mul = _K2 + n * 2
        a = (_f64(s, 0) + _K2) & _M
        b = _f64(s, n - 8)
        c = (_rot(b, 37) * mul + a) & _M
        d = ((_rot(a, 25) + b) * mul) & _M
        return _len16(c, d, mul)
    if n >= 4:
        mul = _K2 + n * 2
        return _len16(n + (_f32(s, 0) << 3), _f32(s, n - 4), mul)
    if n > 0:
        y = (s[0] + (s[n >> 1] << 8)) & 0xFFFFFFFF
        z = (n + (s[n - 1] << 2)) & 0xFFFFFFFF
        return (_shift_mix(((y * _K2) ^ (z * _K0)) & _M) * _K2) & _M
    return _K2


def _len17to32(s: bytes) -> int:
    n = len(s)
    mul = _K2 + n * 2
    a = (_f64(s, 0) * _K1) & _M
    b = _f64(s, 8)
    c = (_f64(s, n - 8) * mul) & _M
    d = (_f64(s, n - 16) * _K2) & _M
    return _len16(
        (_rot((a + b) & _M, 43) + _rot(c, 30) + d) & _M,
        (a + _rot((b + _K2) & _M, 18) + c) & _M,
        mul,
    )


def _len33to64(s: bytes) -> int:
    n = len(s)
    mul = _K2 + n * 2
    a = (_f64(s, 0) * _K2) & _M
    b = _f64(s, 8)
    c = (_f64(s, n - 8) * mul) & _M
    d = (_f64(s, n - 16) * _K2) & _M
    y = (_rot((a + b) & _M, 43) + _rot(c, 30) + d) & _M
    z = _len16(y, (a + _rot((b + _K2) & _M, 18) + c) & _M, mul)
    e = (_f64(s, 16) * mul) & _M
    f = _f64(s, 24)
    g = ((y + _f64(s, n - 32)) * mul) & _M
    h = ((z + _f64(s, n - 24)) * mul) & _M
    return _len16(
        (_rot((e + f) & _M, 43) + _rot(g, 30) + h) & _M,
        (e + _rot((f + a) & _M, 18) + g) & _M,
        mul,
    )


def _weak32(s: bytes, i: int, a: int, b: int) -> tuple[int, int]:
    w, x, y, z = _f64(s, i), _f64(s, i + 8), _f64(s, i + 16), _f64(s, i + 24)
    a = (a + w) & _M
    b = _rot((b + a + z) & _M, 21)
    c = a
    a = (a + x + y) & _M
    b = (b + _rot(a, 44)) & _M
    return (a + z) & _M, (b + c) & _M


def fingerprint64(s: bytes) -> int:
    """farmhash's ``Fingerprint64`` of ``s`` (TensorFlow's ``Fingerprint64``)."""
    n = len(s)
    if n <= 16:
        return _len0to16(s)
    if n <= 32:
        return _len17to32(s)
    if n <= 64:
        return _len33to64(s)
    seed = 81
    x = seed
    y = (seed * _K1 + 113) & _M
    z = (_shift_mix((y * _K2 + 113) & _M) * _K2) & _M
    v = (0, 0)
    w = (0, 0)
    x = (x * _K2 + _f64(s, 0)) & _M
    end = ((n - 1) // 64) * 64
    last64 = end + ((n - 1) & 63) - 63
    i = 0
    while True:
        x = (_rot((x + y + v[0] + _f64(s, i + 8)) & _M, 37) * _K1) & _M
        y = (_rot((y + v[1] + _f64(s, i + 48)) & _M, 42) * _K1) & _M
        x ^= w[1]
        y = (y + v[0] + _f64(s, i + 40)) & _M
        z = (_rot((z + w[0]) & _M, 33) * _K1) & _M
        v = _weak32(s, i, (v[1] * _K1) & _M, (x + w[0]) & _M)
        w = _weak32(s, i + 32, (z + w[1]) & _M, (y + _f64(s, i + 16)) & _M)
        z, x = x, z
        i += 64
        if i == end:
            break
    mul = _K1 + ((z & 0xFF) << 1)
    i = last64
    w0 = (w[0] + ((n - 1) & 63)) & _M
    v0 = (v[0] + w0) & _M
    w0 = (w0 + v0) & _M
    w = (w0, w[1])
    v = (v0, v[1])
    x = (_rot((x + y + v[0] + _f64(s, i + 8)) & _M, 37) * mul) & _M
    y = (_rot((y + v[1] + _f64(s, i + 48)) & _M, 42) * mul) & _M
    x ^= (w[1] * 9) & _M
    y = (y + v[0] * 9 + _f64(s, i + 40)) & _M
    z = (_rot((z + w[0]) & _M, 33) * mul) & _M
    v = _weak32(s, i, (v[1] * mul) & _M, (x + w[0]) & _M)
    w = _weak32(s, i + 32, (z + w[1]) & _M, (y + _f64(s, i + 16)) & _M)
    z, x = x, z
    return _len16(
        (_len16(v[0], w[0], mul) + _shift_mix(y) * _K0 + z) & _M,
        (_len16(v[1], w[1], mul) + x) & _M,
        mul,
    )
