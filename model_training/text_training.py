"""Train a text classifier on the user's own data; the service serves it from raw strings.

The data: a CSV with a text column (``--text-column``; the label is ``--label-column``,
default the last column), or a folder holding one sub-folder of ``.txt`` files per
class (the layout of Keras's ``text_dataset_from_directory``).

The recipe is a classic strong model for short texts, written as a Keras model that
takes strings: a ``TextVectorization`` of character 2-, 3- and 4-grams weighted by
TF-IDF (adapted on the training texts; robust to spelling, inflection and the
punctuation that Keras's standardization strips, such as a link's), each row scaled to
unit length (as scikit-learn's ``TfidfVectorizer`` does), and
one ``Dense`` layer of logits, then the softmax. That last layer is a logistic
regression, so it is solved, not trained by epochs: scikit-learn's
``LogisticRegression`` (``C = 1``) on Keras's own features of all training texts, its
coefficients written into the layer (as the linear table model is,
``table_model.fit_linear``). Its calibration temperature is fitted on out-of-fold
logits (3-fold cross-validation on the training texts). It is written like any version
(the string layer to ``text.json``, the rest to ``model.tflite``: ``model_training.text``)
with its test metrics and scikit-learn's own TF-IDF + logistic regression on the same
split as the baseline.

Its out-of-distribution reference is measured, as an image model's, on the features
entering the logits: tens of thousands of sparse TF-IDF weights, too many for a
covariance, so on their ``COMPONENTS`` leading components (a truncated SVD fitted on the
training texts), which ``model.tflite`` outputs after the logits. Texts unlike the
training texts (another language, random characters, nothing but unseen n-grams) fall
far from every class there. The report (``model_training.report``) shows the metrics,
the baseline, calibration, the OOD signal on held-out and random-character texts, and
the most confident mistakes.
"""

from __future__ import annotations

import csv
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from model_training.data import DataError, default_test_size

if TYPE_CHECKING:
    from model_training.pipeline import TrainingJob, Written

TEXT_SUFFIX = ".txt"
#: The vocabulary: the most frequent character n-grams of these lengths (after Keras's
#: standardization: lowercase, no punctuation), spaces included, as a bag weighted by TF-IDF.
MAX_TOKENS = 20_000
CHARACTER_NGRAMS = (2, 3, 4)
#: The baseline's words and bigrams.
NGRAMS = 2
#: The solver's iteration limit, and the folds the calibration's logits come from.
MAX_ITER = 1000
FOLDS = 3
#: The OOD reference's space: this many leading components of the TF-IDF features.
COMPONENTS = 64
#: Random-character texts the OOD signal is checked on (``noise_texts``).
NOISE_TEXTS = 200


@dataclass(frozen=True)
class TextData:
    """Texts, their integer labels and the labels' names."""

    texts: npt.NDArray[np.object_]
    y: npt.NDArray[np.int64]
    class_names: tuple[str, ...]
    source: dict[str, Any]


def is_text_folder(root: Path) -> bool:
    """True for a folder whose class sub-folders hold ``.txt`` files and nothing else
    (hidden files aside); anything else is read as a folder of images, which says what
    it cannot read."""
    if not root.is_dir():
        return False
    files = [
        path
        for child in root.iterdir()
        if child.is_dir() and not child.name.startswith(".")
        for path in child.iterdir()
        if path.is_file() and not path.name.startswith(".")
    ]
    return bool(files) and all(path.suffix == TEXT_SUFFIX for path in files)


def _labelled(texts: list[str], labels: list[str], source: dict[str, Any]) -> TextData:
    names = sorted(set(labels))
    if len(names) < 2:
        raise DataError(f"expected at least 2 classes, received {names} in {source['path']}")
    index = {name: i for i, name in enumerate(names)}
    array = np.empty(len(texts), dtype=object)
    array[:] = texts
    y = np.array([index[label] for label in labels], dtype=np.int64)
    return TextData(array, y, tuple(names), source)


def load_text_folder(root: Path) -> TextData:
    """One class per sub-folder (sorted by name), one UTF-8 ``.txt`` file per sample."""
    texts: list[str] = []
    labels: list[str] = []
    for folder in sorted(child for child in root.iterdir() if child.is_dir()):
        for path in sorted(folder.glob(f"*{TEXT_SUFFIX}")):
            try:
                texts.append(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                raise DataError(f"cannot read {path} as UTF-8 text: {exc}") from exc
            labels.append(folder.name)
    return _labelled(texts, labels, {"kind": "text_folder", "path": str(root)})


def load_text_csv(path: Path, text_column: str, label_column: str | None) -> TextData:
    """The text and label columns of a CSV (the label: the last column unless named)."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path} as a UTF-8 CSV: {exc}") from exc
    label = label_column or (header[-1] if header else "")
    for wanted, what in ((text_column, "--text-column"), (label, "--label-column")):
        if wanted not in header:
            raise DataError(f"expected a column {wanted!r} ({what}) in {path}, received {header}")
    if label == text_column:
        raise DataError(f"expected the label column to differ from the text column {label!r}")
    missing = [i for i, row in enumerate(rows) if not (row.get(label) or "").strip()]
    if missing:
        raise DataError(
            f"expected a label in every row of {path}, received none in row {missing[0] + 2}"
        )
    texts = [row.get(text_column) or "" for row in rows]
    source = {"kind": "text_csv", "path": str(path), "text_column": text_column, "label": label}
    return _labelled(texts, [row[label] for row in rows], source)


def _split(data: TextData, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and test row numbers, stratified by class, in random order."""
    from sklearn.model_selection import train_test_split  # type: ignore[import-untyped]

    rows = np.arange(len(data.y))
    train, test = train_test_split(rows, test_size=test_size, random_state=seed, stratify=data.y)
    return np.asarray(train), np.asarray(test)


def text_model(texts: npt.NDArray[np.object_], num_classes: int) -> Any:
    """TF-IDF of character n-grams (adapted on ``texts``), unit length, logits, softmax;
    the logits layer not fitted yet (``fit_logits``)."""
    import keras

    from model_training.model import LOGITS_LAYER

    vectorize = keras.layers.TextVectorization(
        max_tokens=MAX_TOKENS,
        split="character",
        ngrams=CHARACTER_NGRAMS,
        output_mode="tf_idf",
        name="tf_idf",
    )
    vectorize.adapt(np.asarray(texts, dtype=object).reshape(-1, 1))
    width = int(vectorize.vocabulary_size())
    inputs = keras.Input((1,), dtype="string", name="text")
    # Keras's symbolic shape of a tf_idf output is (None, 1, V); the real one (batch, V).
    x = keras.layers.Reshape((width,), name="weights")(vectorize(inputs))
    # Unit length as keras.layers.UnitNormalization computes it, x / sqrt(max(|x|^2, 1e-12)),
    # written out: LiteRT's own L2 normalization gives NaN for an all-zero row (a text with
    # no n-gram in the vocabulary, an empty one), where this gives zeros, as Keras does.
    squares = keras.ops.sum(keras.ops.square(x), axis=-1, keepdims=True)
    x = x * keras.ops.rsqrt(keras.ops.maximum(squares, 1e-12))
    logits = keras.layers.Dense(num_classes, name=LOGITS_LAYER)(x)
    return keras.Model(inputs, keras.layers.Softmax(name="probabilities")(logits))


def features(model: Any, texts: npt.NDArray[np.object_], batch: int = 1024) -> Any:
    """What enters ``model``'s logits layer for ``texts``, as a sparse matrix (rows of
    TF-IDF weights of unit length: mostly zeros, tens of thousands wide)."""
    import keras
    import scipy.sparse  # type: ignore[import-untyped]
    import tensorflow as tf

    from model_training.model import LOGITS_LAYER

    before = keras.Model(model.inputs, model.get_layer(LOGITS_LAYER).input)  # unit length
    parts = [
        scipy.sparse.csr_matrix(
            np.asarray(before(tf.constant([[str(t)] for t in texts[i : i + batch]])))
        )
        for i in range(0, len(texts), batch)
    ]
    return scipy.sparse.vstack(parts).tocsr()


def _regression() -> Any:
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    return LogisticRegression(max_iter=MAX_ITER)


def _as_logits(coef: np.ndarray, intercept: np.ndarray, classes: int) -> tuple[Any, Any]:
    """A fitted regression's kernel (V, K) and bias (K,): a two-class one has one weight
    vector w (the log-odds), which gives the logits -w/2 and w/2."""
    if classes == 2:
        coef = np.stack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    return coef.T.astype(np.float32), intercept.astype(np.float32)


def fit_logits(model: Any, x: Any, y: npt.NDArray[np.int64], classes: int) -> int:
    """Solve the logits layer: logistic regression on the features ``x``; its iterations."""
    import warnings

    from model_training.model import LOGITS_LAYER

    regression = _regression()
    with warnings.catch_warnings():  # MAX_ITER iterations, recorded, say it did not converge
        warnings.simplefilter("ignore")
        regression.fit(x, y)
    kernel, bias = _as_logits(regression.coef_, regression.intercept_, classes)
    model.get_layer(LOGITS_LAYER).set_weights([kernel, bias])
    return int(np.max(regression.n_iter_))


def out_of_fold_logits(x: Any, y: npt.NDArray[np.int64], classes: int, seed: int) -> np.ndarray:
    """Each training text's logits from a regression fitted on the other folds."""
    import warnings

    from sklearn.model_selection import StratifiedKFold

    logits = np.zeros((len(y), classes))
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
    for fit_rows, held in folds.split(np.zeros(len(y)), y):
        regression = _regression()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            regression.fit(x[fit_rows], y[fit_rows])
        kernel, bias = _as_logits(regression.coef_, regression.intercept_, classes)
        logits[held] = x[held] @ kernel.astype(np.float64) + bias
    return logits


def components(x: Any, seed: int) -> npt.NDArray[np.float32]:
    """The projection (W, D) of the W TF-IDF weights onto their D leading components:
    scikit-learn's ``TruncatedSVD`` of the training features ``x`` (sparse, unit rows)."""
    from sklearn.decomposition import TruncatedSVD  # type: ignore[import-untyped]

    count = max(1, min(COMPONENTS, x.shape[1] - 1, x.shape[0] - 1))
    svd = TruncatedSVD(count, random_state=seed).fit(x)
    return np.ascontiguousarray(svd.components_.T, dtype=np.float32)


def noise_texts(lengths: npt.NDArray[np.int64], seed: int) -> npt.NDArray[np.object_]:
    """``NOISE_TEXTS`` strings of random letters, digits and spaces, as long as training
    texts drawn at random: what the OOD signal should flag."""
    rng = np.random.default_rng(seed)
    alphabet = np.array(list(string.ascii_letters + string.digits + " "))
    sizes = rng.choice(np.maximum(lengths, 1), size=NOISE_TEXTS)
    texts = np.empty(NOISE_TEXTS, dtype=object)
    texts[:] = ["".join(rng.choice(alphabet, size=int(n))) for n in sizes]
    return texts


def text_training_data(
    model: Any,
    data: TextData,
    train: np.ndarray,
    x: tuple[Any, Any],
    seed: int,
) -> tuple[dict[str, Any], npt.NDArray[np.float32]]:
    """The OOD reference on the features' leading components (``components``), how it
    flags the held-out and random-character texts, and the projection."""
    from model_training.ood import FEATURE_QUANTILE, fit_reference, flagged

    projection = components(x[0], seed)
    wide = projection.astype(np.float64)
    lengths = np.array([len(t) for t in data.texts[train]], dtype=np.int64)
    noise = features(model, noise_texts(lengths, seed)) @ wide
    statistics = fit_reference(x[0] @ wide, data.y[train], list(data.class_names), FEATURE_QUANTILE)
    detector = statistics["ood"]
    detector.update(
        space="features",
        features={
            "entering": "logits",
            "dim": int(projection.shape[1]),
            "of": int(projection.shape[0]),
            "projection": "the leading components of the training texts' TF-IDF features "
            "(TruncatedSVD)",
        },
        fitted_on="train",
        test_flagged=float(flagged(x[1] @ wide, detector).mean()),
        noise_flagged=float(flagged(noise, detector).mean()),
        noise={
            "samples": NOISE_TEXTS,
            "what": "random-character texts",
            "distribution": "letters, digits and spaces drawn uniformly, as long as training texts",
        },
    )
    summary = {"n": statistics["n"], "class_counts": statistics["class_counts"], "ood": detector}
    return summary, projection


def tf_idf_baseline(
    train_texts: npt.NDArray[np.object_],
    y_train: npt.NDArray[np.int64],
    test_texts: npt.NDArray[np.object_],
    y_test: npt.NDArray[np.int64],
) -> dict[str, Any]:
    """scikit-learn's TF-IDF of words and bigrams + logistic regression, on the same split."""
    import sklearn  # type: ignore[import-untyped]
    from sklearn.feature_extraction.text import TfidfVectorizer  # type: ignore[import-untyped]
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline  # type: ignore[import-untyped]

    start = time.perf_counter()
    pipeline = make_pipeline(
        TfidfVectorizer(ngram_range=(1, NGRAMS), max_features=MAX_TOKENS),
        LogisticRegression(max_iter=MAX_ITER),
    )
    pipeline.fit(list(train_texts), y_train)
    probabilities = pipeline.predict_proba(list(test_texts))
    chosen = pipeline.classes_[probabilities.argmax(axis=1)]
    full = np.full((len(y_test), int(y_train.max()) + 1), 1e-15)
    full[:, pipeline.classes_] = np.clip(probabilities, 1e-15, 1.0)
    return {
        "name": "TF-IDF (words and bigrams) + logistic regression",
        "method": f"make_pipeline(TfidfVectorizer(ngram_range=(1, {NGRAMS}), max_features="
        f"{MAX_TOKENS}), LogisticRegression(max_iter={MAX_ITER})), "
        f"scikit-learn {sklearn.__version__}",
        "fitted_on": "train",
        "train_samples": len(y_train),
        "test_accuracy": float(np.mean(chosen == y_test)),
        "test_loss": float(-np.mean(np.log(full[np.arange(len(y_test)), y_test]))),
        "test_samples": len(y_test),
        "seconds": round(time.perf_counter() - start, 3),
    }


def train_text_version(job: TrainingJob, data: TextData) -> Written:
    """Fit the recipe on ``data`` and write it as a new version of ``job.name``."""
    from model_training.calibration import calibrate
    from model_training.model import seed_everything
    from model_training.monitoring import reference
    from model_training.pipeline import write_text_version

    n, k = len(data.y), len(data.class_names)
    test_size = job.test_size or default_test_size(n, k)
    train, test = _split(data, test_size, job.seed)
    seed_everything(job.seed)
    start = time.perf_counter()
    model = text_model(data.texts[train], k)
    x_train, x_test = features(model, data.texts[train]), features(model, data.texts[test])
    iterations = fit_logits(model, x_train, data.y[train], k)
    kernel, bias = (np.asarray(w, dtype=np.float64) for w in model.get_layer("logits").weights)
    test_logits = x_test @ kernel + bias
    z = test_logits - test_logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    y_train, y_test = data.y[train], data.y[test]
    held_logits = out_of_fold_logits(x_train, y_train, k, job.seed)
    calibration = calibrate(held_logits, y_train, test_logits, y_test)
    calibration["fitted_on"] = "out_of_fold"
    training_data, projection = text_training_data(model, data, train, (x_train, x_test), job.seed)
    metadata: dict[str, Any] = {
        "metrics": {
            "test_loss": float(-log_p[np.arange(len(test)), y_test].mean()),
            "test_accuracy": float(np.mean(log_p.argmax(axis=1) == y_test)),
            "test_samples": len(test),
            "baseline": tf_idf_baseline(data.texts[train], y_train, data.texts[test], y_test),
        },
        "calibration": calibration,
        "training": {
            "recipe": f"TextVectorization(max_tokens={MAX_TOKENS}, split='character', "
            f"ngrams={CHARACTER_NGRAMS}, output_mode='tf_idf') -> UnitNormalization -> "
            "Dense(classes) solved as "
            f"LogisticRegression(max_iter={MAX_ITER}) -> softmax",
            "architecture": "linear",
            "optimizer": "scikit-learn's LogisticRegression with lbfgs",
            "seed": job.seed,
            "test_size": test_size,
            "train_samples": len(train),
            "validation_samples": 0,
            "solver_iterations": iterations,
            "seconds": round(time.perf_counter() - start, 3),
            "data": data.source,
        },
        "training_data": {**training_data, "rows": n},
        "monitoring": reference(
            x_train @ kernel + bias,
            y_train,
            k,
            calibration["temperature"],
            ood=training_data["ood"],
            ood_inputs=x_train @ projection.astype(np.float64),
        ),
    }
    report = None
    if job.report:
        from model_training.report import ReportData

        wide = projection.astype(np.float64)
        report = ReportData(
            name=job.name,
            metadata=metadata,  # completed by write_text_version
            history={},
            x_train=np.asarray(x_train @ wide, dtype=np.float32),
            y_train=y_train,
            validation_logits=held_logits,
            y_val=y_train,
            x_test=np.asarray(x_test @ wide, dtype=np.float32),
            y_test=y_test,
            test_logits=test_logits,
            test_texts=tuple(str(t) for t in data.texts[test]),
        )
    return write_text_version(
        job.repository, job.name, model, list(data.class_names), metadata, report, projection
    )
