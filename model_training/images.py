"""Image training data: scikit-learn's 8x8 digits, a folder of PNG/JPEG files per class.

Both give a ``Dataset`` whose ``x`` is ``(n, height, width, channels)`` float32 pixel
values in 0..255 (what an 8-bit image file holds; the network rescales them itself),
with no feature names. Images are read with Pillow, which the service decodes
requests with too. Nothing here imports TensorFlow, so bad data is reported before
the slow import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from model_training.data import DataError, Dataset, Split

#: The size images are resized to when a folder's images do not all have the same size.
DEFAULT_IMAGE_SIZE = (32, 32)
#: Pillow modes of single-channel (grayscale) files; anything else is trained as RGB.
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
FORMATS = frozenset({"PNG", "JPEG"})
#: sklearn's digits hold 0..16 (16 = ink); images here are 0..255.
DIGITS_SCALE = 255.0 / 16.0


def load_digits_dataset() -> Dataset:
    """scikit-learn's bundled 1,797 handwritten digits as 8x8x1 images, 0..255, white ink on black.

    The values are sklearn's 0..16 times 255/16, so a grayscale PNG of a digit drawn
    white on black (as MNIST) maps straight onto what the model was trained on.
    """
    try:
        from sklearn.datasets import load_digits  # type: ignore[import-untyped]
    except ImportError as exc:
        raise DataError(
            "the digits example needs scikit-learn (its 8x8 digits ship inside it): "
            "pip install scikit-learn"
        ) from exc
    digits = load_digits()
    x = (np.asarray(digits.images, dtype=np.float64) * DIGITS_SCALE).astype(np.float32)
    return Dataset(
        x=x[..., np.newaxis],
        y=np.asarray(digits.target, dtype=np.int64),
        feature_names=(),
        class_names=tuple(str(i) for i in range(10)),
        source={
            "kind": "digits",
            "origin": "sklearn.datasets.load_digits",
            "n_samples": len(digits.target),
            "image_size": [8, 8],
            "channels": 1,
            "pixel_scale": "sklearn's 0..16 times 255/16: 0..255, white ink on black",
        },
    )


def _image_files(folder: Path) -> list[Path]:
    """Every non-hidden file under ``folder`` (sub-folders included), sorted."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _open(path: Path) -> Any:
    """The decoded image at ``path``; ``DataError`` if it is not a readable PNG or JPEG."""
    from PIL import Image

    try:
        image = Image.open(path)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"expected PNG or JPEG images only, cannot read {path}: {_reason(exc)}"
        ) from exc
    try:
        if image.format not in FORMATS:
            raise DataError(f"expected PNG or JPEG images only, received {image.format} in {path}")
        image.load()  # decodes now: a truncated file fails here, not later
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        image.close()
        raise DataError(
            f"expected a readable PNG or JPEG image, cannot read {path}: {_reason(exc)}"
        ) from exc
    except DataError:
        image.close()
        raise
    return image


def load_image_folder(root: Path, image_size: tuple[int, int] | None = None) -> Dataset:
    """One sub-folder of PNG/JPEG images per class (Keras's ``image_dataset_from_directory``).

    Class names are the sub-folder names, sorted; files directly in ``root`` and hidden
    files are ignored, like Keras does. ``image_size`` ``(height, width)``: every image is
    resized to it (bilinear); default: the images' own size when they all share one,
    else ``DEFAULT_IMAGE_SIZE``. One channel when every file is grayscale, else RGB
    (an alpha channel is dropped). Raises ``DataError`` for a missing or empty folder,
    a single class, a class without images, and any file that is not a readable PNG
    or JPEG.
    """
    from PIL import Image

    if not root.is_dir():
        raise DataError(f"expected a folder of class sub-folders, received {root}, not a folder")
    classes = sorted(
        child.name for child in root.iterdir() if child.is_dir() and not child.name.startswith(".")
    )
    if not classes:
        raise DataError(
            f"expected one sub-folder of PNG/JPEG images per class in {root}, received no "
            "sub-folders"
        )
    if len(classes) < 2:
        raise DataError(
            f"expected at least two classes (sub-folders) in {root}, received only {classes}"
        )
    images: list[Any] = []
    labels: list[int] = []
    for k, name in enumerate(classes):
        files = _image_files(root / name)
        if not files:
            raise DataError(f"expected PNG or JPEG images in {root / name}, received none")
        for path in files:
            images.append(_open(path))
            labels.append(k)
    channels = 1 if all(image.mode in GRAY_MODES for image in images) else 3
    sizes = {(image.height, image.width) for image in images}
    if image_size is None:
        image_size = next(iter(sizes)) if len(sizes) == 1 else DEFAULT_IMAGE_SIZE
    height, width = image_size
    x = np.empty((len(images), height, width, channels), dtype=np.float32)
    for i, image in enumerate(images):
        converted = image.convert("L" if channels == 1 else "RGB")
        if (converted.height, converted.width) != (height, width):
            converted = converted.resize((width, height), Image.Resampling.BILINEAR)
        x[i] = np.asarray(converted, dtype=np.float32).reshape(height, width, channels)
    return Dataset(
        x=x,
        y=np.asarray(labels, dtype=np.int64),
        feature_names=(),
        class_names=tuple(classes),
        source={
            "kind": "image_folder",
            "path": str(root),
            "images": len(images),
            "image_size": [height, width],
            "channels": channels,
            "sizes_found": len(sizes),
            "class_counts": np.bincount(labels, minlength=len(classes)).tolist(),
        },
    )


def _test_counts(counts: npt.NDArray[np.int64], n_test: int) -> npt.NDArray[np.int64]:
    """How many of each class to hold out: proportional, at least one each, one left to train."""
    share = counts * n_test / counts.sum()
    quota = np.clip(np.floor(share).astype(np.int64), 1, counts - 1)
    for k in np.argsort(-(share - np.floor(share)), kind="stable"):
        if quota.sum() >= n_test:
            break
        if quota[k] < counts[k] - 1:
            quota[k] += 1
    return np.asarray(quota, dtype=np.int64)


def stratified_split(dataset: Dataset, test_size: float, seed: int) -> Split:
    """Hold out ``test_size`` samples (a count, or a fraction below 1), each class in proportion.

    The training part is shuffled, so the validation split carved from its end
    (``carve_validation``) is a random sample of every class too.
    """
    n = len(dataset.y)
    n_test = round(test_size * n) if test_size < 1 else int(test_size)
    counts = np.bincount(dataset.y, minlength=dataset.num_classes)
    if counts.min() < 2:
        few = [dataset.class_names[k] for k in np.flatnonzero(counts < 2)]
        raise DataError(
            "expected at least two images per class (one to train on, one to test), "
            f"received fewer for {few}"
        )
    if not 0 < n_test < n:
        raise DataError(
            f"expected a test size that leaves samples on both sides of the split, "
            f"received test_size={test_size} for {n} samples"
        )
    rng = np.random.default_rng(seed)
    quota = _test_counts(counts, n_test)
    test: list[int] = []
    train: list[int] = []
    for k in range(dataset.num_classes):
        members = rng.permutation(np.flatnonzero(dataset.y == k))
        test.extend(members[: quota[k]])
        train.extend(members[quota[k] :])
    test_index = rng.permutation(np.asarray(test, dtype=np.int64))
    train_index = rng.permutation(np.asarray(train, dtype=np.int64))
    return Split(
        dataset.x[train_index], dataset.y[train_index], dataset.x[test_index], dataset.y[test_index]
    )


def noise_images(shape: tuple[int, ...], n: int, seed: int, high: float = 255.0) -> np.ndarray:
    """``n`` images of uniform noise over the pixel range: what the OOD signal must flag."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, high, size=(n, *shape)).astype(np.float32)
