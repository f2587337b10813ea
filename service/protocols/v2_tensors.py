"""Open Inference Protocol tensors: JSON data, the binary tensor data extension, classification.

Binary tensor data (Triton's and KServe's extension): the body is the JSON header,
``Inference-Header-Content-Length`` bytes long, followed by the raw tensors in the
order of the header's inputs (outputs, in a response) that carry a
``binary_data_size`` parameter; little-endian, row-major, no padding. A ``BYTES``
element is a 4-byte little-endian length and then its bytes.

Classification (Triton's extension): instead of an output's values, the top ``k``
classes of each row as ``"<value>:<index>:<label>"`` strings, the value printed as
C++'s ``std::to_string`` does (``%f``), best first.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from service.errors import BadRequest, InvalidInput
from service.inference.images import EncodedImages, from_base64
from service.inference.scores import top_k
from service.inference.text import Texts

#: Datatypes an input may have (integers: token ids and other integer inputs).
DTYPES: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
}
#: The datatype of the outputs for each input datatype: FP64 in, FP64 out (bit-identical
#: to /predict); otherwise FP32, the protocol's and tritonclient's default.
OUTPUT_DTYPES: dict[str, np.dtype[Any]] = {"FP64": np.dtype("<f8")}


def accepted_datatypes(model_dtype: str, token_ids: bool) -> tuple[str, ...]:
    """The datatypes an input tensor may have for a model: float models take FP32 or
    FP64, integer models INT32 or INT64, and float models of token ids either."""
    if model_dtype != "float32":
        return ("INT32", "INT64")
    return ("FP32", "FP64", "INT32", "INT64") if token_ids else ("FP32", "FP64")


#: The protocol's name for each model input dtype (metadata.json's ``input.dtype``).
MODEL_DATATYPES = {"float32": "FP32", "int32": "INT32", "int64": "INT64"}


def split_body(raw: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """The JSON header and the binary tail of a request body."""
    if header_length is None:
        return raw, memoryview(b"")
    text = header_length.strip()
    if not text.isdigit():
        raise BadRequest(
            "expected Inference-Header-Content-Length to be the JSON header's length in "
            f"bytes, received {header_length[:40]!r}"
        )
    size = int(text)
    if size > len(raw):
        raise BadRequest(
            f"expected Inference-Header-Content-Length of at most the body's {len(raw)} bytes, "
            f"received {size}"
        )
    return raw[:size], memoryview(raw)[size:]


class BinaryTail:
    """Hands out the binary tail of a body tensor by tensor, and checks nothing is left over."""

    def __init__(self, tail: memoryview) -> None:
        self._tail = tail
        self._offset = 0

    def take(self, size: int, what: str) -> memoryview:
        """The next ``size`` bytes, for ``what``."""
        end = self._offset + size
        if end > len(self._tail):
            raise BadRequest(
                f"expected {size} bytes of binary data for {what} after the JSON header, "
                f"received {len(self._tail) - self._offset}"
            )
        chunk = self._tail[self._offset : end]
        self._offset = end
        return chunk

    def finish(self) -> None:
        """Refuse bytes that no tensor claimed (a wrong size somewhere)."""
        if self._offset != len(self._tail):
            raise BadRequest(
                f"expected {self._offset} bytes of binary tensor data after the JSON header "
                f"(the sum of the inputs' binary_data_size), received {len(self._tail)}"
            )


def decode_input(
    name: str,
    datatype: str,
    shape: Sequence[int],
    data: Sequence[Any] | None,
    binary_data_size: int | None,
    tail: BinaryTail,
    accepted: Sequence[str] = ("FP32", "FP64"),
) -> npt.NDArray[Any]:
    """One input tensor as an array of ``shape``, from its JSON data or the binary tail."""
    dtype = DTYPES.get(datatype)
    if dtype is None or datatype not in accepted:
        raise InvalidInput(
            f"expected input {name!r} of datatype {' or '.join(accepted)}, "
            f"received {datatype[:20]!r}"
        )
    count = math.prod(shape)
    if binary_data_size is not None:
        if data is not None:
            raise InvalidInput(
                f"expected input {name!r} as either 'data' or binary data "
                "(binary_data_size), received both"
            )
        if binary_data_size != count * dtype.itemsize:
            raise InvalidInput(
                f"expected binary_data_size {count * dtype.itemsize} for input {name!r} "
                f"({datatype}, shape {list(shape)}), received {binary_data_size}"
            )
        raw = tail.take(binary_data_size, f"input {name!r}")
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    if data is None:
        raise InvalidInput(
            f"expected input {name!r} to carry 'data' or a binary_data_size parameter, "
            "received neither"
        )
    try:
        # float64 keeps every JSON number exact; the data plane rounds to the model's float32
        # exactly as for /predict, and names any value beyond float32's range.
        values = np.asarray(data, dtype=np.float64)
    except ValueError:
        raise InvalidInput(
            f"expected the data of input {name!r} as rows of equal length, received ragged rows"
        ) from None
    if values.size != count:
        raise InvalidInput(
            f"expected {count} values in input {name!r} (shape {list(shape)}), "
            f"received {values.size}"
        )
    return values.reshape(shape)


def _elements(
    name: str,
    shape: Sequence[int],
    data: Sequence[Any] | None,
    binary_data_size: int | None,
    tail: BinaryTail,
    what: str,
) -> tuple[list[bytes] | list[str], list[str]]:
    """The elements of a ``BYTES`` input of shape ``[N]`` or ``[N, 1]``, one per instance:
    bytes when length-prefixed in the binary tail, strings when in JSON; and where each is."""
    if len(shape) not in (1, 2) or shape[0] == 0 or shape[1:] not in ([], [1]):
        raise InvalidInput(
            f"expected BYTES input {name!r} of shape [N] or [N, 1] (one {what} per "
            f"instance) with N >= 1, received {list(shape)}"
        )
    count = shape[0]
    places = [f"input {name!r}[{i}]" for i in range(count)]
    if binary_data_size is not None:
        if data is not None:
            raise InvalidInput(
                f"expected input {name!r} as either 'data' or binary data "
                "(binary_data_size), received both"
            )
        raw = tail.take(binary_data_size, f"input {name!r}")
        items, offset = [], 0
        for place in places:
            if offset + 4 > len(raw):
                break
            (length,) = struct.unpack_from("<I", raw, offset)
            items.append(bytes(raw[offset + 4 : offset + 4 + length]))
            offset += 4 + length
            if offset > len(raw):
                raise InvalidInput(
                    f"expected {length} bytes for {place} (its length prefix), received "
                    f"{len(raw) - offset + length}"
                )
        if len(items) != count or offset != len(raw):
            raise InvalidInput(
                f"expected {count} length-prefixed elements in the {binary_data_size} bytes of "
                f"input {name!r}, received {len(items)} and {len(raw) - offset} bytes more"
            )
        return items, places
    if data is None:
        raise InvalidInput(
            f"expected input {name!r} to carry 'data' or a binary_data_size parameter, "
            "received neither"
        )
    flat = [item for row in data for item in (row if isinstance(row, list) else [row])]
    if len(flat) != count or not all(isinstance(item, str) for item in flat):
        raise InvalidInput(
            f"expected {count} strings in BYTES input {name!r}, received {len(flat)} values"
        )
    return flat, places


def decode_files(
    name: str,
    shape: Sequence[int],
    data: Sequence[Any] | None,
    binary_data_size: int | None,
    tail: BinaryTail,
) -> EncodedImages:
    """A ``BYTES`` input of encoded image files, ``[N]`` or ``[N, 1]``: each element a file,
    length-prefixed in the binary tail, or a base64 string in JSON."""
    items, places = _elements(name, shape, data, binary_data_size, tail, "image file")
    if binary_data_size is not None:
        return EncodedImages([bytes(item) for item in items], places)  # type: ignore[arg-type]
    return EncodedImages(
        [from_base64(str(t), w) for t, w in zip(items, places, strict=True)], places
    )


def decode_strings(
    name: str,
    shape: Sequence[int],
    data: Sequence[Any] | None,
    binary_data_size: int | None,
    tail: BinaryTail,
) -> Texts:
    """A ``BYTES`` input of strings for a raw-text model, ``[N]`` or ``[N, 1]``: UTF-8,
    length-prefixed in the binary tail, or JSON strings."""
    items, places = _elements(name, shape, data, binary_data_size, tail, "string")
    if binary_data_size is None:
        return Texts(items)
    strings = []
    for item, place in zip(items, places, strict=True):
        try:
            strings.append(bytes(item).decode("utf-8"))  # type: ignore[arg-type]
        except UnicodeDecodeError as exc:
            raise InvalidInput(
                f"expected UTF-8 text in {place}, received bytes that are not ({exc.reason} "
                f"at byte {exc.start})"
            ) from None
    return Texts(strings)


def classify(
    values: npt.NDArray[np.floating[Any]], k: int, labels: Sequence[str]
) -> npt.NDArray[np.str_]:
    """Each row's top ``k`` classes as ``"<value>:<index>:<label>"``, best first."""
    # Of equal values, the lower index comes first (service.inference.scores.top_k).
    order, top = top_k(values, min(k, values.shape[-1]))
    strings = [
        f"{float(v):f}:{int(i)}:{labels[int(i)]}"
        for v, i in zip(top.ravel(), order.ravel(), strict=True)
    ]
    return np.array(strings, dtype=np.str_).reshape(order.shape)


def to_bytes(values: npt.NDArray[Any]) -> bytes:
    """``values`` in the binary tensor format (row-major; BYTES elements length-prefixed)."""
    if values.dtype.kind == "U":
        encoded = [s.encode() for s in values.ravel().tolist()]
        return b"".join(struct.pack("<I", len(b)) + b for b in encoded)
    return np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).tobytes()


def datatype_of(values: npt.NDArray[Any]) -> str:
    """The protocol datatype of an output array."""
    if values.dtype.kind == "U":
        return "BYTES"
    return "FP64" if values.dtype == np.float64 else "FP32"
