"""The LiteRT export's self-check (``model_training.export``): round-off passes, faults do not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from model_training import export
from model_training.cli import main as train_main
from model_training.export import ExportError, logits_model, to_tflite

FEATURES = 30


def wide_unscaled_inputs(n: int = 64) -> np.ndarray:
    """Rows like the breast-cancer table's: 30 features from about 0.01 up to a few thousand."""
    scale = np.geomspace(0.01, 3000.0, FEATURES)
    return (np.random.default_rng(0).uniform(0.5, 1.5, size=(n, FEATURES)) * scale).astype(
        np.float32
    )


def balanced_large_logit_classifier() -> keras.Model:
    """Two classes whose logits are about 1,000 each but differ by O(1): probabilities near 0.5.

    The most sensitive case there is: float32 round-off of a logit of 1,000 (a few
    times 6e-5) moves such probabilities by about 1e-4.
    """
    inputs = keras.Input(shape=(FEATURES,))
    dense = keras.layers.Dense(2, activation="softmax")
    model = keras.Model(inputs, dense(inputs))
    rng = np.random.default_rng(1)
    x = wide_unscaled_inputs()
    weights = rng.uniform(0.5, 1.5, FEATURES) / x.mean(axis=0) * 1000 / FEATURES
    tilt = rng.normal(size=FEATURES) / x.mean(axis=0) / FEATURES
    kernel = np.column_stack([weights, weights + tilt]).astype(np.float32)
    dense.set_weights([kernel, np.zeros(2, np.float32)])
    return model


class RoundOffInterpreter(export.Interpreter):  # type: ignore[misc]
    """LiteRT whose logits are off by 4 float32 ulps of the largest one, up or down.

    That is what another, equally valid summation order gives (LiteRT against Keras on
    the breast-cancer table: up to about 3 ulps).
    """

    def get_tensor(self, index: int, *args: Any) -> np.ndarray:
        logits = np.asarray(super().get_tensor(index, *args), dtype=np.float32)
        ulp = np.spacing(np.abs(logits).max())
        signs = np.random.default_rng(2).choice([-4.0, 4.0], size=logits.shape)
        return (logits + signs * ulp).astype(np.float32)


def test_float32_round_off_of_large_logits_is_not_an_export_fault(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = balanced_large_logit_classifier()
    probe = wide_unscaled_inputs()
    logits = np.asarray(logits_model(model)(probe), dtype=np.float64)
    assert 500 < np.abs(logits).max() < 5000
    probabilities = np.asarray(model(probe), dtype=np.float64)
    assert 0.05 < probabilities.min() < probabilities.max() < 0.95  # nowhere saturated

    monkeypatch.setattr(export, "Interpreter", RoundOffInterpreter)
    content = to_tflite(model, probe)  # passes the check

    # ... although the probabilities differ by more than 1e-5: an absolute check alone
    # would refuse a correct export.
    interpreter = RoundOffInterpreter(model_content=content)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(inp["index"], list(probe.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], probe)
    interpreter.invoke()
    served_logits = interpreter.get_tensor(out["index"]).astype(np.float64)
    served = np.exp(served_logits - served_logits.max(axis=1, keepdims=True))
    served /= served.sum(axis=1, keepdims=True)
    assert np.abs(served - probabilities).max() > 1e-5


def test_an_export_with_slightly_different_weights_fails_the_check() -> None:
    model = balanced_large_logit_classifier()
    probe = wide_unscaled_inputs()
    head = logits_model(model)
    wrong = keras.models.clone_model(head)
    wrong.set_weights([w * np.float32(1 + 1e-4) for w in head.get_weights()])
    with pytest.raises(ExportError, match="the LiteRT conversion changed the network"):
        export.check_export(model, head, export.convert(wrong), probe)
    export.check_export(model, head, export.convert(head), probe)  # the faithful export passes


def test_a_model_with_more_than_a_softmax_after_its_logits_fails_the_check() -> None:
    inputs = keras.Input(shape=(FEATURES,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    logits = keras.layers.Dense(3, name="logits")(hidden)
    # Something after the softmax, which the export, cut at the named logits, would drop.
    scaled = keras.layers.Rescaling(0.5)(keras.layers.Softmax()(logits))
    model = keras.Model(inputs, scaled)
    probe = np.random.default_rng(0).normal(size=(64, FEATURES)).astype(np.float32)
    with pytest.raises(ExportError, match="the only thing after the logits"):
        to_tflite(model, probe)


def export_main(model_file: Path, repository: Path) -> int:
    return train_main(
        ["export", str(model_file), "--name", "theirs", "--model-repository", str(repository)]
    )


def assert_refused_saying_what_to_do(err: str, repository: Path) -> None:
    assert err.startswith("error: cannot export ")
    assert err.count("\n") == 1, err  # one line
    assert "safe_mode=False" not in err  # export offers no such thing
    assert "enable_unsafe_deserialization" not in err
    assert "built-in Keras layers" in err
    assert "save" in err
    assert not repository.exists() or not any(repository.rglob("*.keras"))


def test_a_lambda_layer_is_refused_with_what_to_do_instead(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = keras.Input(shape=(2,))
    inner = keras.Sequential([keras.layers.Lambda(lambda t: t * 2.0, name="double")])
    hidden = keras.layers.Lambda(lambda t: t - 1.0, name="shift")(inner(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(hidden))
    model.save(tmp_path / "lambda.keras")

    assert export_main(tmp_path / "lambda.keras", tmp_path / "repo") == 1
    err = capsys.readouterr().err
    assert_refused_saying_what_to_do(err, tmp_path / "repo")
    assert "Lambda layer(s) 'double', 'shift'" in err  # found in nested models too
    assert "Rescaling" in err


def test_any_other_refusal_under_safe_mode_keeps_the_reason_not_the_advice_to_turn_it_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    keras.Sequential([keras.Input(shape=(2,)), keras.layers.Dense(2)]).save(tmp_path / "m.keras")
    refusal = (  # Keras's own words, from its StringLookup / TextVectorization
        "Requested the loading of a vocabulary file outside of the model archive. This carries "
        "a potential risk of loading arbitrary and sensitive files and thus it is disallowed by "
        "default. If you trust the source of the artifact, you can override this error by "
        "passing `safe_mode=False` to the loading function, or calling "
        "`keras.config.enable_unsafe_deserialization(). Vocabulary file: '/etc/words'"
    )

    def refuse(*args: object, **kwargs: object) -> keras.Model:
        raise ValueError(refusal)

    monkeypatch.setattr(keras.saving, "load_model", refuse)
    assert export_main(tmp_path / "m.keras", tmp_path / "repo") == 1
    err = capsys.readouterr().err
    assert_refused_saying_what_to_do(err, tmp_path / "repo")
    assert "vocabulary file outside of the model archive" in err
    assert "Vocabulary file: '/etc/words'" in err
