"""The bare-ASGI floors: a raw ASGI callable, no framework, orjson.

- ``POST /predict`` reads the body and returns a fixed, predict-shaped answer: the
  most an ASGI server can do per request on this machine (the throughput floor).
- ``POST /predict/pipeline`` does the real work and nothing else: orjson parse ->
  ``np.asarray`` float32 -> LiteRT (one thread, input resized only when the batch size
  changes) -> float64 stable softmax with the version's calibration temperature ->
  entropy and out-of-distribution distance (the fields the service returns with every
  prediction) -> orjson dump of the service's columnar answer. It is the floor for
  large requests (``{"instances": [...], "format": "columnar"}``): the same answer, with
  no validation, no framework and nothing else. For an image model the instances are
  nested arrays of its full (height, width, channels) shape.
- ``POST /predict/image`` (image models) is the same for image files sent as
  ``{"instances": [{"b64": ...}]}``: base64 -> Pillow decode -> the model's channels,
  size (bilinear) and pixel range -> LiteRT -> the same scores -> orjson.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from _common import FIXED_BODY, READY_BODY, parse_args, read_metadata, serve

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json")]


class Pipeline:
    """The service's columnar ``/predict`` reduced to its essentials."""

    def __init__(self, version_dir: Path) -> None:
        from ai_edge_litert.interpreter import Interpreter

        metadata = read_metadata(version_dir)
        self.head = {"model": metadata["name"], "version": str(metadata["version"])}
        self.labels = np.asarray(metadata["class_names"])
        self.input_dim = int(metadata["input_dim"])
        spec = metadata.get("input") or {}
        self.shape: list[int] = [int(d) for d in spec.get("shape", [self.input_dim])]
        self.pixel_range = tuple(spec.get("pixel_range") or (0.0, 255.0))
        self.interpreter = Interpreter(model_path=str(version_dir / "model.tflite"), num_threads=1)
        self.input = int(self.interpreter.get_input_details()[0]["index"])
        self.output = int(self.interpreter.get_output_details()[0]["index"])
        self.rows = -1
        calibration = metadata.get("calibration") or {}
        self.temperature = float(calibration.get("temperature", 1.0))
        ood = (metadata.get("training_data") or {}).get("ood") or {}
        self.ood: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], float] | None = None
        # Measured on the inputs, or on the features model.tflite outputs after the logits.
        self.ood_on_features = bool(ood) and ood.get("space", "input") == "features"
        if ood:
            means = np.asarray(ood["class_means"], dtype=np.float64)
            precision = np.asarray(ood["precision"], dtype=np.float64)
            self.precision = precision
            mp = means @ precision
            self.ood = (2.0 * mp, np.einsum("kd,kd->k", mp, means), float(ood["threshold"]))

    def logits(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """One interpreter call; the input is resized only when the batch size changes."""
        if features.shape[0] != self.rows:
            self.interpreter.resize_tensor_input(self.input, list(features.shape))
            self.interpreter.allocate_tensors()
            self.rows = features.shape[0]
        self.interpreter.set_tensor(self.input, features)
        self.interpreter.invoke()
        result: npt.NDArray[np.float32] = self.interpreter.get_tensor(self.output)
        return result

    def __call__(self, body: bytes) -> bytes:
        """The columnar answer for a ``{"instances": [...]}`` body."""
        instances = orjson.loads(body)["instances"]
        if self.ood is not None and not self.ood_on_features:
            x = np.asarray(instances, dtype=np.float64)  # the OOD distance needs float64 inputs
            return self.answer(x, x.astype(np.float32))
        x32 = np.asarray(instances, dtype=np.float32)
        return self.answer(x32, x32)

    def image(self, body: bytes) -> bytes:
        """The columnar answer for a ``{"instances": [{"b64": ...}, ...]}`` body."""
        from PIL import Image

        height, width, channels = self.shape
        mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
        low, high = self.pixel_range
        files = [base64.b64decode(item["b64"]) for item in orjson.loads(body)["instances"]]
        x = np.empty((len(files), height, width, channels), dtype=np.float32)
        for i, data in enumerate(files):
            picture: Image.Image = Image.open(io.BytesIO(data))
            if picture.mode != mode:
                picture = picture.convert(mode)
            if picture.size != (width, height):
                picture = picture.resize((width, height), Image.Resampling.BILINEAR)
            x[i] = np.asarray(picture, dtype=np.float32).reshape(height, width, channels)
        if (low, high) != (0.0, 255.0):
            x = x * np.float32((high - low) / 255.0) + np.float32(low)
        return self.answer(x, x)

    def answer(self, x: npt.NDArray[Any], x32: npt.NDArray[np.float32]) -> bytes:
        """Scores for the model's input batch ``x32`` (``x``: the inputs in float64 for the
        OOD distance on the inputs) as the service's columnar answer."""
        outputs = self.logits(x32)
        classes = len(self.labels)
        z = outputs[:, :classes].astype(np.float64)
        if self.ood_on_features:
            x = outputs[:, classes:].astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        z /= self.temperature
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        argmax = z.argmax(axis=1)
        entropy = -np.einsum("nk,nk->n", z, np.log(np.where(z > 0, z, 1.0)))
        answer: dict[str, Any] = {
            **self.head,
            "probabilities": z,
            "argmax": argmax,
            "labels": self.labels[argmax].tolist(),
            "entropy": entropy,
            "ood": None,
            "ood_distance": None,
        }
        if self.ood is not None:
            mp2, mpm, threshold = self.ood
            xpx = np.einsum("nd,de,ne->n", x, self.precision, x)
            distance = np.sqrt(np.maximum((xpx[:, None] - x @ mp2.T + mpm).min(axis=1), 0.0))
            answer["ood"] = distance > threshold
            answer["ood_distance"] = distance
        return orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)


async def read_body(receive: Receive) -> bytes:
    """The whole request body."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def respond(send: Send, status: int, body: bytes) -> None:
    """A complete JSON response."""
    await send({"type": "http.response.start", "status": status, "headers": JSON_HEADERS})
    await send({"type": "http.response.body", "body": body})


def make_app(version_dir: Path) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The ASGI callable."""
    pipeline = Pipeline(version_dir)
    pipeline(orjson.dumps({"instances": [np.zeros(pipeline.shape).tolist()]}))  # warm up

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()  # lifespan.startup
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            await send({"type": "lifespan.shutdown.complete"})
            return
        path = scope["path"]
        if path == "/predict":
            await read_body(receive)
            await respond(send, 200, FIXED_BODY)
        elif path == "/predict/pipeline":
            await respond(send, 200, pipeline(await read_body(receive)))
        elif path == "/predict/image":
            await respond(send, 200, pipeline.image(await read_body(receive)))
        elif path == "/health/ready":
            await respond(send, 200, READY_BODY)
        else:
            await respond(send, 404, b'{"error":"not found"}')

    return app


if __name__ == "__main__":
    args = parse_args(__doc__ or "")
    serve(make_app(args.version_dir), args.port)
