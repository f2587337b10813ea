"""TensorFlow SavedModels (what ``model.export()``, ``tf.saved_model.save`` write and TF
Serving serves) exported through their serving signature.

A SavedModel shows no layers, only a signature: a function from named input
tensors to named output tensors. The classifier's head is read from what the
signature's output *is* on probe inputs (``--output`` overrides):

- rows of values in [0, 1] summing to 1: ``probabilities``; their logs are the
  logits (log-probabilities are logits of the same distribution: float32
  round-off of the probabilities, about 1e-7 relative, carries into the served ones);
- one value in [0, 1]: a binary ``sigmoid`` probability p, served as ``[1 - p, p]``
  from the logits ``[log(1 - p), log(p)]``;
- anything else with K >= 2 values: ``logits``, served as they are.

The export is the signature followed by that step, converted to LiteRT and proven
against the signature itself on the probes. A TF Serving model base path (numbered
version directories, each a SavedModel) converts version by version, numbers kept.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from model_training.export import TOLERANCE, ExportError, converter_reason, litert_logits
from model_training.heads import TINY
from model_training.inputs import describe_tensor, guess_kind

SAVED_MODEL_FILE = "saved_model.pb"
DEFAULT_SIGNATURE = "serving_default"
#: Output names that say what a signature with several outputs gives.
LOGIT_KEYS = ("logits",)
PROBABILITY_KEYS = ("probabilities", "probs", "predictions", "scores")
#: Probabilities sum to 1 within this on every probe.
SUM_TOLERANCE = 1e-4


def is_saved_model(path: Path) -> bool:
    """True for a SavedModel directory."""
    return (path / SAVED_MODEL_FILE).is_file()


def base_path_versions(path: Path) -> list[int]:
    """The numbered SavedModel versions of a TF Serving model base path, oldest first
    (empty when ``path`` is not one)."""
    if not path.is_dir() or is_saved_model(path):
        return []
    return sorted(
        int(child.name)
        for child in path.iterdir()
        if child.name.isdigit() and int(child.name) > 0 and is_saved_model(child)
    )


@dataclass(frozen=True)
class SavedModelExport:
    """One SavedModel converted: its LiteRT export and what the metadata says of it."""

    tflite: bytes
    description: dict[str, Any]
    classes: int
    output: str
    how: str
    signature: dict[str, Any]


def _signature(path: Path, name: str) -> tuple[Any, Any]:
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # TensorFlow raises many types for a directory it cannot read
        reason = " ".join(str(exc).split())[:300]
        raise ExportError(f"cannot load it as a SavedModel: {reason}") from exc
    signatures = dict(loaded.signatures)
    if name not in signatures:
        raise ExportError(
            f"expected a signature named {name!r} in the SavedModel, received "
            f"{sorted(signatures) or 'none'}; choose one with --signature"
        )
    return loaded, signatures[name]


def _output_key(outputs: dict[str, Any], path: Path) -> str:
    """The output that holds the classes' scores."""
    scores = {k: v for k, v in outputs.items() if v.dtype.is_floating}
    if len(scores) == 1:
        return next(iter(scores))
    for keys in (LOGIT_KEYS, PROBABILITY_KEYS):
        if found := [k for k in keys if k in scores]:
            return found[0]
    raise ExportError(
        f"expected one float output, or one named {LOGIT_KEYS + PROBABILITY_KEYS}, in the "
        f"SavedModel's signature, received outputs {sorted(outputs)}"
    )


def _read_output(values: np.ndarray, output: str) -> tuple[str, str]:
    """What the signature's output is (see the module docstring) and one line saying so."""
    k = values.shape[1]
    in_unit = bool(np.all(values >= 0) and np.all(values <= 1))
    if output == "auto":
        if k >= 2 and in_unit and np.all(np.abs(values.sum(axis=1) - 1) <= SUM_TOLERANCE):
            output = "probabilities"
        elif k == 1 and in_unit:
            output = "sigmoid"
        elif k >= 2:
            output = "logits"
        else:
            raise ExportError(
                "expected the signature to output K >= 2 scores or one probability, received "
                "one value outside [0, 1]: if it is a binary classifier's logit, export with "
                "--output sigmoid"
            )
    if output == "sigmoid" and k != 1:
        raise ExportError(
            f"the model is multi-label or not binary: --output sigmoid takes one output, the "
            f"signature gives {k}. The service serves one distribution over classes"
        )
    if output in ("probabilities", "logits") and k < 2:
        raise ExportError(
            f"expected K >= 2 {output}, received 1 output: a binary classifier exports with "
            "--output sigmoid"
        )
    override = "override with --output probabilities|logits|sigmoid"
    how = {
        "probabilities": f"took the logs of the signature's {k} probabilities as the logits",
        "logits": f"took the signature's {k} outputs as logits",
        "sigmoid": "binary: served as classes [1 - p, p] from the signature's one output",
    }[output]
    return output, f"{how}; {override}"


def _gives_logit(values: np.ndarray) -> bool:
    return not bool(np.all(values >= 0) and np.all(values <= 1))


def export_saved_model(
    path: Path,
    signature: str = DEFAULT_SIGNATURE,
    output: str = "auto",
    kind: str | None = None,
    pixel_range: tuple[float, float] | None = None,
) -> SavedModelExport:
    """Convert the SavedModel at ``path`` through ``signature`` and prove the export."""
    from model_training.inputs import probe as make_probe

    loaded, function = _signature(path, signature)
    _, named = function.structured_input_signature
    if len(named) != 1:
        raise ExportError(f"expected a signature with one input, received {sorted(named)}")
    ((input_name, spec),) = named.items()
    dims = list(spec.shape[1:])
    dtype = spec.dtype.name
    chosen = kind or guess_kind([d or 0 for d in dims], dtype, None)
    description = describe_tensor(dims, dtype, chosen, pixel_range, None, pixel_range is not None)
    key = _output_key(function.structured_outputs, path)
    probes = make_probe(description)

    def run(x: Any) -> Any:
        scores = function(**{input_name: tf.convert_to_tensor(x, dtype=spec.dtype)})[key]
        width = math.prod(int(d) for d in scores.shape[1:] if d is not None) or -1
        return tf.reshape(tf.cast(scores, tf.float32), [-1, width])  # (batch, K), K static

    values = np.asarray(run(probes), dtype=np.float64)
    read, how = _read_output(values, output)
    logit_in = read == "sigmoid" and _gives_logit(values)

    @tf.function(input_signature=[tf.TensorSpec([None, *dims], spec.dtype, name="features")])  # type: ignore[untyped-decorator]
    def serving(x: Any) -> Any:
        scores = run(x)
        if read == "probabilities":
            return tf.math.log(tf.maximum(scores, TINY))
        if read == "sigmoid" and logit_in:
            return tf.concat([tf.zeros_like(scores), scores], axis=1)
        if read == "sigmoid":
            return tf.concat(
                [
                    tf.math.log(tf.maximum(1.0 - scores, TINY)),
                    tf.math.log(tf.maximum(scores, TINY)),
                ],
                axis=1,
            )
        return scores

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            converter = tf.lite.TFLiteConverter.from_concrete_functions(
                [serving.get_concrete_function()], loaded
            )
            content = bytes(converter.convert())
    except Exception as exc:  # the converter raises its own ConverterError, and others
        raise ExportError(
            "LiteRT cannot convert the signature (built-in TFLite ops only): "
            f"{converter_reason(exc)}"
        ) from exc
    expected = _distribution(values, read, logit_in)
    exported = litert_logits(content, probes)
    z = np.exp(exported - exported.max(axis=1, keepdims=True))
    served = z / z.sum(axis=1, keepdims=True)
    error = float(np.abs(served - expected).max()) if served.shape == expected.shape else np.inf
    if not error <= TOLERANCE:
        raise ExportError(
            "expected the export to give the signature's distribution within "
            f"{TOLERANCE:g}, received a largest difference of {error:.3g} ({how})"
        )
    return SavedModelExport(
        content,
        description,
        int(expected.shape[1]),
        read,
        how,
        {"name": signature, "input": input_name, "output": key},
    )


def _distribution(values: np.ndarray, read: str, logit_in: bool) -> np.ndarray:
    """The distribution the signature's outputs ``values`` stand for, in float64."""
    if read == "logits":
        z = np.exp(values - values.max(axis=1, keepdims=True))
        return np.asarray(z / z.sum(axis=1, keepdims=True))
    if read == "sigmoid":
        p = 0.5 * (1.0 + np.tanh(values / 2.0)) if logit_in else values
        return np.concatenate([1.0 - p, p], axis=1)
    return values
