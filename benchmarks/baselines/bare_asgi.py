"""The bare-ASGI floors: a raw ASGI callable, no framework, orjson.

- ``POST /predict`` reads the body and returns a fixed, predict-shaped answer: the
  most an ASGI server can do per request on this machine (the throughput floor).
- ``POST /predict/pipeline`` does the real work and nothing else: orjson parse ->
  ``np.asarray`` float32 -> LiteRT (one thread, input resized only when the batch size
  changes) -> float64 stable softmax with the version's calibration temperature ->
  entropy and out-of-distribution distance (the fields the service returns with every
  prediction) -> orjson dump of the service's columnar answer. It is the floor for
  large requests (``{"instances": [...], "format": "columnar"}``): the same answer, with
  no validation, no framework and nothing else.
"""

from __future__ import annotations

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
        self.interpreter = Interpreter(model_path=str(version_dir / "model.tflite"), num_threads=1)
        self.input = int(self.interpreter.get_input_details()[0]["index"])
        self.output = int(self.interpreter.get_output_details()[0]["index"])
        self.rows = -1
        calibration = metadata.get("calibration") or {}
        self.temperature = float(calibration.get("temperature", 1.0))
        ood = (metadata.get("training_data") or {}).get("ood")
        self.ood: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], float] | None = None
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
        x = np.asarray(orjson.loads(body)["instances"], dtype=np.float64)
        z = self.logits(x.astype(np.float32)).astype(np.float64)
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
    pipeline(orjson.dumps({"instances": [[0.0] * pipeline.input_dim]}))  # warm up

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
        elif path == "/health/ready":
            await respond(send, 200, READY_BODY)
        else:
            await respond(send, 404, b'{"error":"not found"}')

    return app


if __name__ == "__main__":
    args = parse_args(__doc__ or "")
    serve(make_app(args.version_dir), args.port)
