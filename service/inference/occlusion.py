"""Occlusion heat maps of an image model's class probabilities (Zeiler and Fergus 2014).

The image (height, width, channels) is cut into square patches of ``size`` pixels (the
last row and column of patches smaller where the size does not divide the image), and
each patch in turn is replaced by a baseline value (``Patches``, ``occluded``). A
patch's attribution to class k is how much the class's probability falls when it is
hidden::

    drop_p = p_k(x) - p_k(x with patch p set to the baseline)

and every pixel of the heat map (the image's height x width) takes its patch's drop:
positive where the region supports the class, negative where it speaks against it.
The image and its P occluded variants are scored in one batch (``occluded``: row 0 the
image itself), so an explanation is one model call of P + 1 rows.

Numpy in, numpy out: whatever scores the rows is the caller's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

#: The method, as answers name it.
METHOD = "occlusion"

Float64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Patches:
    """The square patches tiling an image."""

    masks: npt.NDArray[np.bool_]
    """(P, height, width) True on the pixels of patch p; each pixel in exactly one patch."""
    size: int
    """The patches' side in pixels (the last row and column smaller where it does not divide)."""


@lru_cache(maxsize=16)
def patches(height: int, width: int, size: int) -> Patches:
    """The patches of ``size`` pixels tiling a ``height`` x ``width`` image, row by row."""
    if size < 1 or height < 1 or width < 1:
        raise ValueError(
            f"expected a patch size and image sides of at least 1, received size={size} "
            f"for {height}x{width}"
        )
    rows, columns = -(-height // size), -(-width // size)
    tile = (np.arange(height)[:, None] // size) * columns + np.arange(width)[None, :] // size
    masks = tile[None, :, :] == np.arange(rows * columns)[:, None, None]
    masks.setflags(write=False)
    return Patches(masks, size)


def occluded(
    image: npt.ArrayLike,
    baseline: float,
    tiles: Patches,
    dtype: npt.DTypeLike = np.float64,
) -> npt.NDArray[np.generic]:
    """(1 + P, height, width, channels) the image, then each variant with one patch set to
    ``baseline`` (in the model's pixel units), in ``dtype`` (the model's, to hold no
    float64 copy of many images)."""
    x = np.asarray(image, dtype=dtype)
    if x.ndim == 2:
        x = x[:, :, None]
    rows = np.empty((1 + len(tiles.masks), *x.shape), dtype=dtype)
    rows[:] = x
    rows[1:][tiles.masks] = baseline
    return rows


@dataclass(frozen=True)
class HeatMaps:
    """One image's occlusion heat maps, for every class."""

    prediction: Float64
    """(K,) the image's probabilities."""
    drops: Float64
    """(P, K) each patch's drop: p(x) - p(x with the patch hidden)."""
    maps: Float64
    """(height, width, K) each pixel its patch's drop."""


def heat_maps(probabilities: npt.ArrayLike, tiles: Patches) -> HeatMaps:
    """The heat maps from the model's (1 + P, K) probabilities of ``occluded``'s rows."""
    p = np.asarray(probabilities, dtype=np.float64)
    drops = p[0][None, :] - p[1:]
    maps = np.einsum("phw,pk->hwk", tiles.masks.astype(np.float64), drops)
    return HeatMaps(p[0], drops, maps)


def occlusion(
    model: Callable[[npt.NDArray[np.generic]], npt.ArrayLike],
    images: npt.ArrayLike,
    baseline: float,
    size: int,
) -> list[HeatMaps]:
    """Each image of ``images`` (N, height, width[, channels]) explained by occluding
    patches of ``size`` pixels with ``baseline``: ``model`` maps (rows, height, width,
    channels) to (rows, K), called once per image."""
    x = np.asarray(images, dtype=np.float64)
    tiles = patches(x.shape[1], x.shape[2], size)
    outputs = []
    for image in x:
        scored = np.asarray(model(occluded(image, baseline, tiles)), dtype=np.float64)
        outputs.append(heat_maps(scored.reshape(len(scored), -1), tiles))
    return outputs
