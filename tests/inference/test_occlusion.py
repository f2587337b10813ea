"""Occlusion heat maps (``service.inference.occlusion``), from first principles.

For a linear function of the pixels, hiding patch p changes the output by exactly
``sum_{q in p} w_q (x_q - baseline)``: the heat map must hold that on each of the patch's
pixels. The patches must tile the image (each pixel in one patch, the last row and
column smaller where the size does not divide), and each image must cost one model call.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from service.inference.occlusion import heat_maps, occluded, occlusion, patches

Array = npt.NDArray[np.float64]


def test_the_patches_tile_the_image_row_by_row() -> None:
    tiles = patches(10, 7, 4)
    assert tiles.masks.shape == (3 * 2, 10, 7)
    np.testing.assert_array_equal(tiles.masks.sum(axis=0), 1)  # each pixel in one patch
    assert tiles.masks.sum(axis=(1, 2)).tolist() == [16, 12, 16, 12, 8, 6]
    assert tiles.masks[1, 0, 4]  # the first row's right patch
    assert tiles.masks[1, 3, 6]
    assert patches(8, 8, 8).masks.shape == (1, 8, 8)
    with pytest.raises(ValueError, match="at least 1"):
        patches(8, 8, 0)


def test_each_variant_hides_one_patch_with_the_baseline() -> None:
    image = np.arange(4 * 4 * 2, dtype=np.float64).reshape(4, 4, 2)
    tiles = patches(4, 4, 2)
    rows = occluded(image, -1.0, tiles)
    assert rows.shape == (5, 4, 4, 2)
    np.testing.assert_array_equal(rows[0], image)
    for p, mask in enumerate(tiles.masks):
        np.testing.assert_array_equal(rows[1 + p][mask], -1.0)  # every channel
        np.testing.assert_array_equal(rows[1 + p][~mask], image[~mask])
    assert occluded(image[:, :, 0], 0.0, tiles, dtype=np.float32).dtype == np.float32


def test_a_linear_functions_heat_map_is_each_patchs_weighted_distance_from_the_baseline() -> None:
    rng = np.random.default_rng(0)
    height, width, channels, classes = 9, 6, 3, 2
    w = rng.normal(size=(height, width, channels, classes))
    images = rng.uniform(0, 255, size=(2, height, width, channels))
    calls = []

    def model(z: npt.NDArray[np.generic]) -> Array:
        calls.append(len(z))
        return np.asarray(np.einsum("nhwc,hwck->nk", np.asarray(z, np.float64), w))

    baseline = 100.0
    answers = occlusion(model, images, baseline, size=4)
    tiles = patches(height, width, 4)
    assert calls == [1 + len(tiles.masks)] * 2  # one call per image, all its variants
    for image, answer in zip(images, answers, strict=True):
        np.testing.assert_allclose(answer.prediction, np.einsum("hwc,hwck->k", image, w))
        contribution = np.einsum("hwc,hwck->hwk", image - baseline, w)
        for p, mask in enumerate(tiles.masks):
            expected = contribution[mask].sum(axis=0)  # (K,)
            np.testing.assert_allclose(answer.drops[p], expected, rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(
                answer.maps[mask], np.broadcast_to(expected, (mask.sum(), 2)), atol=1e-9
            )
        assert answer.maps.shape == (height, width, classes)


def test_heat_maps_read_the_drop_of_each_patch() -> None:
    tiles = patches(2, 2, 1)
    probabilities = np.array([[0.9, 0.1], [0.5, 0.5], [0.9, 0.1], [1.0, 0.0], [0.8, 0.2]])
    maps = heat_maps(probabilities, tiles)
    np.testing.assert_allclose(maps.maps[:, :, 0], [[0.4, 0.0], [-0.1, 0.1]], atol=1e-12)
    np.testing.assert_allclose(maps.maps[:, :, 1], -maps.maps[:, :, 0], atol=1e-12)
