"""Turn a Keras softmax classifier into the serving export: the network up to its logits, as LiteRT.

The service applies the softmax itself in float64, so the export must end at the
logits. A model built here ends in a softmax after a layer named ``logits``; a model
trained elsewhere (a ``.keras`` or legacy ``.h5`` file) is first read by
``heads.read_head``, which gives a classifier ending in a softmax of its logits
whatever its head (softmax, logits, binary sigmoid). Any single input (a table's
row, an image, a sequence, token ids) is accepted.

An image model trained here measures out-of-distribution distances on its own
features (what enters the ``logits`` layer), so its export outputs them too, after
the logits, in one tensor ``(batch, classes + D)`` (``serving_model``).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import re
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from model_training import tensorflow_logs
from model_training.heads import Head, graph, reference
from model_training.model import LOGITS_LAYER

#: The export must reproduce the Keras model's probabilities to this absolute tolerance,
#: unless float32 round-off of very large logits alone moves them more (``check_export``).
TOLERANCE = 1e-5
#: float32's unit round-off, 2**-24: the largest relative error of one rounding.
UNIT_ROUNDOFF = float(np.finfo(np.float32).eps) / 2
#: How Keras's refusals under safe_mode=True suggest turning it off, which export does not offer.
UNSAFE_ADVICE = ("safe_mode=False", "enable_unsafe_deserialization")
#: Legacy Keras files (HDF5), loaded like ``.keras`` ones.
H5_SUFFIXES = (".h5", ".hdf5")
KERAS_SUFFIXES = (".keras", *H5_SUFFIXES)


class ExportError(ValueError):
    """The model cannot be exported for serving; the message says why."""


def _is_softmax(activation: object) -> bool:
    return getattr(activation, "__name__", "") == "softmax"


def logits_model(model: keras.Model) -> keras.Model:
    """A model sharing ``model``'s weights whose output is the logits before its final softmax.

    ``model`` ends in a softmax (a model trained here, or ``heads.read_head``'s
    classifier); failing that, its layer named ``logits`` gives them.
    """
    inputs, _, outputs, entering = graph(model)
    last = model.layers[-1]
    before_last = entering.get(last.name)
    if isinstance(last, keras.layers.Softmax) or (
        isinstance(last, keras.layers.Activation) and _is_softmax(last.activation)
    ):
        return keras.Model(inputs, before_last)
    if isinstance(last, keras.layers.Dense) and _is_softmax(last.activation):
        linear = keras.layers.Dense(last.units, use_bias=last.use_bias, name=LOGITS_LAYER)
        logits = linear(before_last)
        linear.set_weights(last.get_weights())
        return keras.Model(inputs, logits)
    if LOGITS_LAYER in outputs and len(outputs[LOGITS_LAYER].shape) == 2:
        return keras.Model(inputs, outputs[LOGITS_LAYER])
    raise ExportError(
        "expected a classifier whose last layer applies softmax (a Softmax or "
        "Activation('softmax') layer, or Dense(..., activation='softmax')) or that has a "
        f"layer named {LOGITS_LAYER!r}. Received: layers {[layer.name for layer in model.layers]}"
    )


def features_model(model: keras.Model) -> keras.Model:
    """A model sharing ``model``'s weights whose output is what enters its ``logits`` layer.

    The network's own features, on which the out-of-distribution reference of an
    image model is measured.
    """
    inputs, _, _, entering = graph(model)
    if LOGITS_LAYER not in entering:
        raise ExportError(
            f"expected a layer named {LOGITS_LAYER!r} to read the features from. "
            f"Received: layers {[layer.name for layer in model.layers]}"
        )
    features = entering[LOGITS_LAYER]
    if len(features.shape) != 2:
        raise ExportError(
            f"expected the features entering {LOGITS_LAYER!r} to be flat (batch, D), "
            f"received shape {tuple(features.shape)}"
        )
    return keras.Model(inputs, features)


def serving_model(
    model: keras.Model, with_features: bool = False, projection: np.ndarray | None = None
) -> keras.Model:
    """What ``model.tflite`` computes: the logits, or the logits then the features.

    ``with_features``: one output ``(batch, classes + D)``, the logits first, then the D
    features entering the ``logits`` layer (concatenated inside the graph, so the
    export keeps one input and one output); the service splits it at ``classes``.
    ``projection`` (W, D): the features are those W values times ``projection``, their D
    leading components (a text model's thousands of sparse TF-IDF weights).
    """
    head = logits_model(model)
    if not with_features:
        return head
    features = features_model(model)
    inputs = keras.Input(
        shape=model.inputs[0].shape[1:], dtype=model.inputs[0].dtype, name="features"
    )
    measured = features(inputs)
    if projection is not None:
        project = keras.layers.Dense(projection.shape[1], use_bias=False, name="components")
        measured = project(measured)
        project.set_weights([projection.astype(np.float32)])
    both = keras.layers.Concatenate(axis=-1, name="logits_and_features")([head(inputs), measured])
    return keras.Model(inputs, both)


def _softmax64(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(z / z.sum(axis=1, keepdims=True))


def summation_length(model: keras.Model) -> int:
    """How many float32 roundings can pile up in one logit of ``model``.

    The fan-in (+1 for the bias) of every layer with a kernel (Dense, convolutions),
    1 for every other layer, nested models included.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += summation_length(layer)
        elif not isinstance(layer, keras.layers.InputLayer):
            kernel = getattr(layer, "kernel", None)
            total += 1 + (int(np.prod(kernel.shape[:-1])) if kernel is not None else 0)
    return max(total, 1)


def logit_tolerance(logits: np.ndarray, summation: int) -> float:
    """The largest difference float32 round-off alone makes between two implementations' logits.

    Each is within ``summation`` unit round-offs of the logits' scale (the classic
    bound for sums of that length, whatever their order), hence twice that apart. The
    scale is the largest |logit| in the batch (at least 1): round-off grows with the
    magnitudes summed, and a wide, unscaled table gives logits in the thousands. The
    differences seen are far smaller (on the breast-cancer table, LiteRT against Keras:
    up to 7 unit round-offs of the largest logit, against this bound's 106); a
    conversion fault, such as weights off by 1e-4, is far larger.
    """
    scale = max(float(np.abs(logits).max(initial=0.0)), 1.0)
    return 2.0 * summation * UNIT_ROUNDOFF * scale


def _has_recurrent_layer(model: keras.Model) -> bool:
    return any(
        isinstance(layer, keras.layers.RNN | keras.layers.Bidirectional)
        or (isinstance(layer, keras.Model) and _has_recurrent_layer(layer))
        for layer in model.layers
    )


def _set_unroll(config: Any) -> Any:
    """``config`` with every ``unroll`` setting (nested layers' too) turned on."""
    if isinstance(config, dict):
        return {k: True if k == "unroll" else _set_unroll(v) for k, v in config.items()}
    if isinstance(config, list):
        return [_set_unroll(v) for v in config]
    return config


def unrolled(model: keras.Model) -> keras.Model:
    """``model`` with its recurrent layers unrolled, same weights.

    LiteRT cannot convert a recurrent loop over a batch of unknown size (its tensor
    lists need static shapes); unrolled over the fixed number of steps, it converts
    to plain ops. The result computes the same function (``check_export`` proves it).
    """

    def clone(layer: Any) -> Any:
        if isinstance(layer, keras.layers.RNN | keras.layers.Bidirectional):
            return layer.__class__.from_config(_set_unroll(layer.get_config()))
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    copy.set_weights(model.get_weights())
    return copy


def converter_reason(exc: Exception) -> str:
    """The LiteRT converter's first complaint in ``exc`` (it buries it in a long trace)."""
    lines = [line.strip() for line in str(exc).splitlines() if "error" in line.lower()]
    return (lines or [str(exc).strip() or type(exc).__name__])[0][:300]


def any_length(model: keras.Model) -> bool:
    """True when ``model`` takes sequences of any number of steps (its first axis unknown)."""
    shape = model.inputs[0].shape
    return len(shape) >= 2 and shape[1] is None


def _one_row(model: keras.Model) -> keras.Model:
    """``model`` taking one instance of any length: LiteRT converts a recurrent loop over
    unknown steps only when everything else in its shapes is static, the batch included."""
    tensor = model.inputs[0]
    inputs = keras.Input(batch_shape=(1, *tensor.shape[1:]), dtype=tensor.dtype, name="features")
    return keras.Model(inputs, model(inputs))


def convert(head: keras.Model) -> bytes:
    """The LiteRT flatbuffer of ``head`` (a model ending at the logits).

    Recurrent layers over a fixed number of steps are unrolled first (``unrolled``); a
    model taking sequences of any length is converted for one instance at a time
    (``_one_row``: the service runs each at its own length). A model LiteRT still
    cannot convert raises ``ExportError`` with the converter's first complaint.
    """
    if len(head.inputs) > 1:
        return _convert_named(head)
    if any_length(head):
        source = _one_row(head)
    else:
        source = unrolled(head) if _has_recurrent_layer(head) else head
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its SavedModel trace
            return bytes(tf.lite.TFLiteConverter.from_keras_model(source).convert())
    except Exception as exc:  # the converter raises its own ConverterError, and others
        raise ExportError(
            f"LiteRT cannot convert this model (built-in TFLite ops only): {converter_reason(exc)}"
            f". Received: layers {[layer.name for layer in head.layers]}"
        ) from exc


def _convert_named(head: keras.Model) -> bytes:
    """The LiteRT flatbuffer of a model of several inputs (a dict keyed by name), whose
    signature names each input: through a SavedModel, as the converter's Keras path
    takes one input only."""
    import tempfile

    specs = {
        str(name): tf.TensorSpec([None, *tensor.shape[1:]], tensor.dtype, name=str(name))
        for name, tensor in head.input.items()
    }
    archive = keras.export.ExportArchive()
    archive.track(head)
    archive.add_endpoint(
        "serving_default", lambda inputs: head(inputs, training=False), input_signature=[specs]
    )
    try:
        with tempfile.TemporaryDirectory() as directory, contextlib.redirect_stdout(io.StringIO()):
            archive.write_out(directory, verbose=False)
            return bytes(tf.lite.TFLiteConverter.from_saved_model(directory).convert())
    except Exception as exc:  # the converter raises its own ConverterError, and others
        raise ExportError(
            f"LiteRT cannot convert this model (built-in TFLite ops only): {converter_reason(exc)}"
            f". Received: layers {[layer.name for layer in head.layers]}"
        ) from exc


def _litert_named(content: bytes, x: dict[str, np.ndarray]) -> np.ndarray:
    """Run an export of several inputs on ``x`` (arrays by input name), each input set
    by its name in the signature, as the service does."""
    with tensorflow_logs.filtered():
        interpreter = Interpreter(model_content=content, num_threads=1)
        details = interpreter.get_signature_runner().get_input_details()
        for name, values in x.items():
            interpreter.resize_tensor_input(details[name]["index"], list(values.shape))
        interpreter.allocate_tensors()
        for name, values in x.items():
            interpreter.set_tensor(details[name]["index"], values.astype(details[name]["dtype"]))
        interpreter.invoke()
        (out,) = interpreter.get_output_details()
        return np.asarray(interpreter.get_tensor(out["index"]), dtype=np.float64)


def litert_logits(content: bytes, x: Any) -> np.ndarray:
    """Run the export on ``x`` in the interpreter the service uses (one row at a time
    for an export that takes one instance, as the service runs it)."""
    if isinstance(x, dict):
        return _litert_named(content, x)
    with tensorflow_logs.filtered():  # allocating applies XNNPACK, which says so on stderr
        interpreter = Interpreter(model_content=content, num_threads=1)
        (inp,) = interpreter.get_input_details()
        (out,) = interpreter.get_output_details()
        one_row = int(inp["shape_signature"][0]) == 1
        rows = [x[i : i + 1] for i in range(len(x))] if one_row else [x]
        results = []
        for batch in rows:
            interpreter.resize_tensor_input(inp["index"], list(batch.shape))
            interpreter.allocate_tensors()
            interpreter.set_tensor(inp["index"], batch.astype(inp["dtype"]))
            interpreter.invoke()
            results.append(np.asarray(interpreter.get_tensor(out["index"]), dtype=np.float64))
    return np.concatenate(results)


def check_export(model: keras.Model, head: keras.Model, content: bytes, probe: Any) -> None:
    """Prove that serving ``content`` gives ``model``'s probabilities; raise ``ExportError`` if not.

    ``head`` is what was converted: the logits, possibly followed by the features
    (``serving_model``). Two checks on ``probe``, each failing only for a real fault,
    not for float32 round-off:

    1. the export's outputs (logits, and features if any) equal ``head``'s within
       ``logit_tolerance``: otherwise the conversion changed the network;
    2. softmax(export logits) equals the model's probabilities within ``TOLERANCE`` (the
       contract's 1e-5), or, where the logits are so large that their float32 round-off
       moves the probabilities more, within what the differences seen in check 1 can
       move them (at most half the largest one) plus the float32 softmax's own
       round-off: otherwise something other than the softmax follows the logits.
    """
    exported = litert_logits(content, probe)
    expected = np.asarray(head(probe, training=False), dtype=np.float64)
    probabilities = np.asarray(model(probe, training=False), dtype=np.float64)
    classes = probabilities.shape[1]
    if exported.shape != expected.shape or expected.shape[1] < classes:
        raise ExportError(
            f"expected the export to give {expected.shape[1]} outputs ({classes} classes), "
            f"received {exported.shape[1]}"
        )
    summation = summation_length(head)
    logit_tol = logit_tolerance(expected, summation)
    logit_error = float(np.abs(exported - expected).max())
    if not logit_error <= logit_tol:
        raise ExportError(
            f"expected the exported logits within {logit_tol:.3g} of the Keras model's (float32 "
            f"round-off over {summation} summed terms, logits up to "
            f"{np.abs(expected).max():.3g}), received a largest difference of "
            f"{logit_error:.3g}: the LiteRT conversion changed the network"
        )
    softmax_roundoff = (probabilities.shape[1] + 4) * UNIT_ROUNDOFF
    probability_tol = max(TOLERANCE, logit_error / 2 + softmax_roundoff)
    error = float(np.abs(_softmax64(exported[:, :classes]) - probabilities).max())
    if not error <= probability_tol:
        raise ExportError(
            f"expected softmax(exported logits) within {probability_tol:.3g} of the Keras "
            f"model's probabilities, received a largest difference of {error:.3g}; is the "
            "last layer's softmax the only thing after the logits?"
        )


def check_head(model: keras.Model, head: Head, probe: Any) -> None:
    """Prove that ``head.classifier`` gives the distribution the user's ``model`` gives
    (as its head reads: softmax of logits, ``[1 - p, p]``, or the probabilities), within
    ``TOLERANCE`` on ``probe``; raise ``ExportError`` if not."""
    expected = reference(model, head, probe)
    served = np.asarray(head.classifier(probe, training=False), dtype=np.float64)
    error = float(np.abs(served - expected).max()) if served.shape == expected.shape else np.inf
    if not error <= TOLERANCE:
        raise ExportError(
            f"expected the classifier read from the model ({head.how}) to give the model's "
            f"distribution within {TOLERANCE:g}, received a largest difference of {error:.3g} "
            f"(shapes {served.shape} and {expected.shape}); say what the model outputs with "
            "--output probabilities|logits|sigmoid"
        )


def to_tflite(
    model: keras.Model,
    probe: Any,
    with_features: bool = False,
    projection: np.ndarray | None = None,
) -> bytes:
    """Convert the logits part of ``model`` to LiteRT and prove it gives the model's probabilities.

    ``with_features``: the export outputs the features entering the ``logits`` layer
    after the logits (``serving_model``, which ``projection`` may reduce). The proof
    (``check_export``) runs the export in the same interpreter the service uses, on ``probe``.
    """
    if len(model.inputs) != 1 and (with_features or not isinstance(model.input, dict)):
        raise ExportError(
            "expected a model with one input, or several as a dict by name. "
            f"Received: inputs {[tuple(t.shape) for t in model.inputs]}"
        )
    head = serving_model(model, with_features, projection)
    content = convert(head)
    check_export(model, head, content, probe)
    if any_length(head):  # the probe's length, and others: one step, and five times as many
        for steps in (1, probe.shape[1] * 5):
            check_export(
                model, head, content, np.resize(probe, (len(probe), steps, *probe.shape[2:]))
            )
    return content


def _model_config(path: Path) -> Any:
    """The model's config as saved (``config.json`` in a ``.keras`` archive, the
    ``model_config`` attribute of a legacy HDF5 file), read without loading anything."""
    if path.suffix in H5_SUFFIXES:
        import h5py

        with h5py.File(path, "r") as handle:
            raw = handle.attrs.get("model_config")
        return json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("config.json"))


def lambda_layers(path: Path) -> list[str]:
    """The names of the ``Lambda`` layers in a ``.keras`` or ``.h5`` file (nested models included).

    Read from the saved config without loading anything; an unreadable file gives
    ``[]`` and ``load_model`` says what is wrong with it.
    """
    try:
        config = _model_config(path)
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile):
        return []
    names: list[str] = []
    pending: list[Any] = [config]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if node.get("class_name") == "Lambda":
                inner = node.get("config")
                names.append(str(inner.get("name")) if isinstance(inner, dict) else "?")
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return sorted(names)


def import_modules(modules: Sequence[str]) -> None:
    """Import the user's modules that register the model's custom classes (``--import``).

    The working directory is searched first, as ``python -m`` does, so that a console
    script finds the user's package too.
    """
    if modules and str(Path.cwd()) not in sys.path and "" not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # a user's module can raise anything while importing
            raise ExportError(
                f"cannot import {module!r} (given by --import): {type(exc).__name__}: {exc}"
            ) from exc


def _without_unsafe_advice(reason: str) -> str | None:
    """Keras's refusal without its advice to turn safe mode off (None if it gives none)."""
    sentences = re.split(r"(?<=\.)\s+", reason)
    kept = [s for s in sentences if not any(advice in s for advice in UNSAFE_ADVICE)]
    if len(kept) == len(sentences):
        return None
    return " ".join(kept) or "Keras refuses to load it with safe_mode=True."


def load_keras(path: Path, imports: Sequence[str] = ()) -> keras.Model:
    """Load a user's ``.keras`` (or legacy ``.h5``) file the safe way (no arbitrary code,
    no optimizer state), after importing the modules that define its custom classes.

    Python code stored in the file (a ``Lambda`` layer's function, any lambda) is
    never run: Keras refuses it under ``safe_mode=True`` and suggests
    ``safe_mode=False``, which this command does not offer (nor does the service),
    so the message says what to change in the model instead. A custom class that is
    not registered is named, with the flag that imports it.
    """
    if path.suffix not in KERAS_SUFFIXES:
        raise ExportError(
            "expected a Keras '.keras' file, a legacy '.h5' file or a TensorFlow SavedModel "
            f"directory. Received: filepath={path}"
        )
    import_modules(imports)
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types; all mean "not loadable".
        reason = " ".join(str(exc).split())
        if names := lambda_layers(path):
            raise ExportError(
                f"cannot export {path}: its Lambda layer(s) {', '.join(map(repr, names))} hold "
                "Python code, which export does not run (it loads models with safe_mode=True, "
                "as the service does). Rebuild the model with built-in Keras layers in place of "
                "each Lambda (e.g. Rescaling for x * a + b, Activation for a function of each "
                "value), copy the other layers' weights over with set_weights, save it and "
                f"export that file. Received: filepath={path}"
            ) from exc
        if missing := re.search(r"Could not locate (class|function) '([^']+)'", reason):
            kind, name = missing.groups()
            raise ExportError(
                f"cannot export {path}: it needs the custom {kind} {name!r}, which is not "
                "registered: pass --import with the module that defines it (decorated with "
                "@keras.saving.register_keras_serializable), e.g. --import mypackage.layers"
                + (f"; imported: {', '.join(imports)}" if imports else "")
            ) from exc
        if (kept := _without_unsafe_advice(reason)) is not None:
            raise ExportError(
                f"cannot export {path}: {kept} Export loads models with safe_mode=True only, as "
                "the service does: change the model so that it loads that way (built-in Keras "
                "layers, no Python code, nothing outside the file), save it and export that "
                f"file. Received: filepath={path}"
            ) from exc
        raise ExportError(f"cannot load {path} with safe_mode=True: {reason}") from exc
