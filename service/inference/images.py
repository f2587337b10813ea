"""Image files in, the model's pixels out: PNG/JPEG decoding for image models.

Each file is opened with Pillow, which reads only its header first: the declared
width x height is checked against the limit before a single pixel is decoded, so a
decompression bomb (a small file declaring billions of pixels) costs microseconds and
no memory. Then the pixels are decoded, converted to the model's channels (1: gray
``L``, 3: ``RGB``, 4: ``RGBA``), resized to its height x width with Pillow's bilinear
filter when they differ, and mapped from 0..255 onto the values the model was trained
on (``ImageInput.pixel_range``). Nothing here knows about HTTP: the errors carry their
status (422 for a file that is not a whole PNG or JPEG, 413 for too many pixels).
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from service.errors import InvalidInput, PayloadTooLarge

if TYPE_CHECKING:
    from PIL import Image

#: The formats a client may send (Pillow's names).
FORMATS = ("PNG", "JPEG")
#: Pillow modes for each channel count a model may take.
MODES = {1: "L", 3: "RGB", 4: "RGBA"}


class ImageInput(Protocol):
    """What decoding reads of a model's input (the artifact's ``InputSpec`` is one)."""

    @property
    def kind(self) -> str:
        """``"image"`` for a model that takes images."""

    @property
    def shape(self) -> Sequence[int]:
        """Height, width, channels."""

    @property
    def pixel_range(self) -> tuple[float, float] | None:
        """The values 0 and 255 map onto (``None``: 0..255 as they are)."""


@functools.cache
def pillow() -> ModuleType:
    """``PIL.Image``, imported on first use: a service with no image model never needs it.

    Pillow's own decompression-bomb check warns (an exception where warnings are errors)
    or refuses as it opens a file; ``decode`` checks the service's tighter limit from the
    same header instead, before decoding, so Pillow's is off in the serving process.
    """
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    return Image


@dataclass(frozen=True)
class EncodedImages:
    """Image files sent as instances: each file's bytes, and where it was in the request
    (``instances[0]``, ``the request body``), for error messages."""

    files: Sequence[bytes]
    where: Sequence[str]

    def __len__(self) -> int:
        return len(self.files)

    @property
    def total_bytes(self) -> int:
        """The size of all files together."""
        return sum(len(f) for f in self.files)


def from_base64(text: str, where: str) -> bytes:
    """Standard base64 (RFC 4648, padding optional) to bytes; 422 saying where if it is not."""
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        shown = text[:20] + ("..." if len(text) > 20 else "")
        raise InvalidInput(
            f"expected standard base64 of a PNG or JPEG file in {where}, received {shown!r}, "
            "which is not base64"
        ) from None


def _describe(data: bytes) -> str:
    """What a file that is not an image looks like, for an error message."""
    if not data:
        return "an empty file"
    return f"{len(data)} bytes starting {data[:8]!r}"


def decode(data: bytes, spec: ImageInput, max_pixels: int, where: str) -> npt.NDArray[np.float32]:
    """One PNG or JPEG file as the model's (height, width, channels) float32 pixels."""
    pil = pillow()
    try:
        image = pil.open(io.BytesIO(data), formats=FORMATS)
    except pil.UnidentifiedImageError:
        raise InvalidInput(
            f"expected a PNG or JPEG file in {where}, received {_describe(data)}"
        ) from None
    except Exception as exc:  # a hostile header can make a parser fail in many ways
        raise InvalidInput(
            f"expected a complete PNG or JPEG file in {where}, received {_describe(data)} "
            f"whose header cannot be read ({exc})"
        ) from None
    width, height = image.size
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"expected an image of at most {max_pixels} pixels (SERVICE_MAX_IMAGE_PIXELS) in "
            f"{where}, received a {width}x{height} {image.format} ({width * height} pixels)"
        )
    try:
        image.load()
        pixels = _pixels(image, spec)
    except Exception as exc:  # truncated or corrupt data, whichever way the decoder says so
        raise InvalidInput(
            f"expected a complete {image.format} file in {where}, received one that cannot be "
            f"decoded ({exc})"
        ) from None
    return pixels


def _pixels(image: Image.Image, spec: ImageInput) -> npt.NDArray[np.float32]:
    """The decoded image in the model's channels, size and pixel range."""
    height, width, channels = spec.shape
    if image.mode.startswith("I;16") or image.mode == "I":
        # 16-bit gray: Pillow's convert would clip at 255; scale to 8 bits instead.
        wide = np.asarray(image, dtype=np.float64) / 257.0
        image = pillow().fromarray(np.clip(np.rint(wide), 0, 255).astype(np.uint8), "L")
    if image.mode != MODES[channels]:
        image = image.convert(MODES[channels])
    if image.size != (width, height):
        image = image.resize((width, height), pillow().Resampling.BILINEAR)
    x = np.asarray(image, dtype=np.float32).reshape(height, width, channels)
    low, high = spec.pixel_range or (0.0, 255.0)
    if (low, high) != (0.0, 255.0):
        x = (x / np.float32(255.0) * np.float32(high - low) + np.float32(low)).astype(np.float32)
    return x


def decode_all(images: EncodedImages, spec: ImageInput, max_pixels: int) -> npt.NDArray[np.float32]:
    """Every file as the model's pixels: a C-contiguous (n, height, width, channels) batch."""
    if spec.kind != "image":
        kind = spec.kind.replace("_", " ")
        raise InvalidInput(
            f"expected instances of shape {spec.shape} (this model takes {kind}, not image "
            f"files), received an image file in {images.where[0]}"
        )
    batch = np.empty((len(images), *spec.shape), dtype=np.float32)
    for i, (data, where) in enumerate(zip(images.files, images.where, strict=True)):
        batch[i] = decode(data, spec, max_pixels, where)
    return batch
