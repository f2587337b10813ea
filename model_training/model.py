"""The classifier and its training loop (imports TensorFlow/Keras: call only when needed)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from model_training.data import Split, Validation, carve_validation

#: The named layer whose output the LiteRT export serves; softmax follows it.
LOGITS_LAYER = "logits"
INPUT_NAME = "features"


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (recorded in the version's metadata)."""

    seed: int = 42
    epochs: int = 30
    batch_size: int = 5
    learning_rate: float = 1e-3
    validation_split: float = 0.2
    hidden_units: tuple[int, ...] = (12, 8)
    verbose: int | str = "auto"

    def as_metadata(self) -> dict[str, Any]:
        """The configuration as JSON-ready data, without display-only settings."""
        data = asdict(self)
        data.pop("verbose")
        data["hidden_units"] = list(self.hidden_units)
        data.update(
            optimizer="adam",
            loss="categorical_crossentropy",
            hidden_activation="relu",
            kernel_initializer="he_uniform",
        )
        return data


@dataclass(frozen=True)
class TrainResult:
    """The trained model, its held-out metrics, per-epoch history and the validation split used."""

    model: keras.Model
    test_loss: float
    test_accuracy: float
    test_samples: int
    history: dict[str, list[float]]
    validation: Validation


def seed_everything(seed: int) -> None:
    """Same seed, same data order, same initial weights, same updates."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def build_classifier(
    input_dim: int, num_classes: int, hidden_units: tuple[int, ...]
) -> keras.Model:
    """Dense ReLU layers (He-uniform), a named ``logits`` layer, then softmax."""
    inputs = keras.Input(shape=(input_dim,), name=INPUT_NAME)
    x = inputs
    for i, units in enumerate(hidden_units, start=1):
        x = keras.layers.Dense(
            units, activation="relu", kernel_initializer="he_uniform", name=f"hidden_{i}"
        )(x)
    logits = keras.layers.Dense(num_classes, name=LOGITS_LAYER)(x)
    probabilities = keras.layers.Softmax(name="probabilities")(logits)
    return keras.Model(inputs, probabilities, name="softmax_classifier")


def train(data: Split, num_classes: int, config: TrainConfig) -> TrainResult:
    """Fit the classifier with Adam and categorical cross-entropy, then score the test split.

    The validation split is the last ``config.validation_split`` of the training part,
    carved out here (the same samples Keras's ``validation_split`` would take) and kept
    in the result, so the calibration can be fitted on exactly those samples.
    """
    parts = carve_validation(data.x_train, data.y_train, config.validation_split)
    seed_everything(config.seed)
    model = build_classifier(data.x_train.shape[1], num_classes, config.hidden_units)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    y_fit = keras.utils.to_categorical(parts.y_fit, num_classes)
    y_test = keras.utils.to_categorical(data.y_test, num_classes)
    validation_data = (
        (parts.x_val, keras.utils.to_categorical(parts.y_val, num_classes))
        if len(parts.y_val)
        else None
    )
    fitted = model.fit(
        parts.x_fit,
        y_fit,
        epochs=config.epochs,
        batch_size=config.batch_size,
        validation_data=validation_data,
        verbose=config.verbose,
    )
    test_loss, test_accuracy = model.evaluate(data.x_test, y_test, verbose=0)
    history = {key: [float(v) for v in values] for key, values in fitted.history.items()}
    return TrainResult(
        model=model,
        test_loss=float(test_loss),
        test_accuracy=float(test_accuracy),
        test_samples=len(data.y_test),
        history=history,
        validation=parts,
    )


def logits(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """The output of ``model``'s ``logits`` layer (before the softmax) for ``x``, as float64."""
    head = keras.Model(model.inputs[0], model.get_layer(LOGITS_LAYER).output)
    return np.asarray(head(np.asarray(x, dtype=np.float32), training=False), dtype=np.float64)


def probe_inputs(x: np.ndarray, n: int = 64, seed: int = 0) -> np.ndarray:
    """A small batch spread over (and a little beyond) the data, for export self-checks."""
    rng = np.random.default_rng(seed)
    low, high = x.min(axis=0), x.max(axis=0)
    pad = (high - low) * 0.25 + 1.0
    return rng.uniform(low - pad, high + pad, size=(n, x.shape[1])).astype(np.float32)
