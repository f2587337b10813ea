"""Where the time of one image request goes, measured in-process with the service's own code.

    python benchmarks/breakdown.py [--image-model VERSION_DIR] [--repeat N] [--cpu N]

Builds and exports the image workload's MobileNetV2 as ``run.py --model mobilenet`` does
(or takes an exported version), loads it with the service's loader
(``service.repository.registry.load_version``), and times each step a ``/predict``
request for one 96x96 JPEG goes through, calling the very functions the service
calls: the body parsed and validated (``service.http.bodies.parse``), base64 decoded
(``core_instances``), the JPEG decoded (``service.inference.images.decode``: Pillow,
then channels, size and pixel range), inference (the LiteRT runtime's ``logits``),
the float64 scores (the version's ``Scorer``) and the JSON answer (the native row
format, rendered by the service's ``JSONResponse``). Then the same for the other ways
in (nested arrays, a 224x224 JPEG that must be resized) and the data plane as a whole
(``DataPlane.predict``: its thread hand-offs and batcher included), with batching on
and off. Prints one markdown table: median and minimum per call, in microseconds.
Everything outside it (HTTP parsing, routing, middleware, the event loop's socket
work) is the rest of a request's cost: compare with ``run.py``'s 1-connection p50.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson
from harness import image_plan


@dataclass(frozen=True)
class Step:
    """One measured step."""

    group: str
    name: str
    code: str  # what is called
    times_us: list[float]

    @property
    def median(self) -> float:
        """Median per call, in microseconds."""
        return statistics.median(self.times_us)

    @property
    def mean(self) -> float:
        """Mean per call, in microseconds: what throughput pays (garbage collection included)."""
        return statistics.fmean(self.times_us)

    @property
    def best(self) -> float:
        """Fastest call, in microseconds."""
        return min(self.times_us)


def timed(call: Callable[[], object], repeat: int) -> list[float]:
    """Microseconds of each of ``repeat`` calls, after a few untimed ones."""
    for _ in range(min(5, repeat)):
        call()
    times = []
    for _ in range(repeat):
        started = time.perf_counter_ns()
        call()
        times.append((time.perf_counter_ns() - started) / 1e3)
    return times


def timed_async(call: Callable[[], Awaitable[object]], repeat: int) -> list[float]:
    """``timed`` for a coroutine function, each call awaited in one running event loop."""

    async def run() -> list[float]:
        for _ in range(min(5, repeat)):
            await call()
        times = []
        for _ in range(repeat):
            started = time.perf_counter_ns()
            await call()
            times.append((time.perf_counter_ns() - started) / 1e3)
        return times

    return asyncio.run(run())


def without_gc(measure: Callable[[], list[float]]) -> list[float]:
    """``measure()`` with Python's cyclic garbage collector off."""
    gc.disable()
    try:
        return measure()
    finally:
        gc.enable()


def jpeg_of_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The same picture as a JPEG of another size (quality 90)."""
    from PIL import Image

    picture = Image.open(io.BytesIO(jpeg)).resize((width, height), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def measure(version_dir: Path, repeat: int) -> tuple[list[Step], dict[str, str]]:
    """Every step, and what was measured (sizes, versions) for the table's header."""
    import PIL
    from PIL import Image

    from service.app import batching_policy
    from service.dataplane import DataPlane, ScoredBatch
    from service.http.bodies import parse
    from service.http.responses import JSONResponse
    from service.inference import images
    from service.inference.inputs import features
    from service.protocols.native import _predict_body  # the native row answer, as served
    from service.protocols.schemas import PredictRequest
    from service.repository.registry import load_version
    from service.settings import Settings

    name, version = version_dir.parent.name, int(version_dir.name)
    settings = Settings()
    served = {
        mode: load_version(
            version_dir,
            name,
            version,
            batching_policy(settings.model_copy(update={"batching": mode})),
        )
        for mode in ("off", "on")
    }
    loaded = served["off"]
    spec = loaded.metadata.input_spec
    height, width, channels = spec.shape
    max_pixels = settings.max_image_pixels
    temperature = loaded.metadata.temperature
    runtime = loaded.runtime

    jpeg = image_plan.sample_jpeg(height, width, channels)
    text = base64.b64encode(jpeg).decode()
    body = orjson.dumps({"instances": [{"b64": text}]})
    large = jpeg_of_size(jpeg, 224, 224)
    pixels = images.decode(jpeg, spec, max_pixels, "instances[0]")
    x1 = pixels[None]
    x16 = np.repeat(x1, 16, axis=0)
    nested = orjson.dumps({"instances": [image_plan.pixels_of(jpeg, spec_json(spec)).tolist()]})
    nested_instances = parse(PredictRequest, nested).instances
    outputs = runtime.logits(x1)
    logits, inputs = loaded.split(outputs, x1.reshape(1, -1))
    scored = ScoredBatch(loaded, logits, loaded.scorer(logits, inputs, temperature))
    decoded = Image.open(io.BytesIO(jpeg))
    decoded.load()
    decoded_large = Image.open(io.BytesIO(large)).convert("RGB")
    decoded_large.load()
    encoded = images.EncodedImages([jpeg], ["instances[0]"])

    def pillow_decode(data: bytes) -> Callable[[], object]:
        def call() -> object:
            picture = Image.open(io.BytesIO(data), formats=images.FORMATS)
            picture.load()
            return picture

        return call

    def plane_for(mode: str) -> Callable[[], Awaitable[object]]:
        plane = DataPlane(cast(Any, None), max_image_pixels=max_pixels)  # ``served`` is given

        async def call() -> object:
            return await plane.predict(encoded, served=served[mode])

        return call

    fast, slow = repeat, max(20, repeat // 4)
    b64_path = "one 96x96 JPEG as {b64}"
    steps = [
        Step(
            b64_path,
            "parse + validate the JSON body",
            "http.bodies.parse(PredictRequest)",
            timed(lambda: parse(PredictRequest, body), fast),
        ),
        Step(
            b64_path,
            "base64 -> bytes",
            "inference.images.from_base64",
            timed(lambda: images.from_base64(text, "instances[0]"), fast),
        ),
        Step(
            b64_path,
            "decode JPEG -> model pixels (all of it)",
            "inference.images.decode",
            timed(lambda: images.decode(jpeg, spec, max_pixels, "instances[0]"), fast),
        ),
        Step(
            b64_path,
            "  of which Pillow: header + JPEG decode",
            "Image.open + load",
            timed(pillow_decode(jpeg), fast),
        ),
        Step(
            b64_path,
            "  of which channels + pixel range -> float32",
            "inference.images._pixels",
            timed(lambda: images._pixels(decoded, spec), fast),
        ),
        Step(
            b64_path,
            "inference, 1 image",
            "LiteRTRuntime.logits (1, 96, 96, 3)",
            timed(lambda: runtime.logits(x1), slow),
        ),
        Step(
            b64_path,
            "scores: float64 softmax, argmax, entropy",
            "LoadedVersion.scorer",
            timed(lambda: loaded.scorer(logits, inputs, temperature), fast),
        ),
        Step(
            b64_path,
            "answer: row format -> JSON bytes",
            "native._predict_body + JSONResponse",
            timed(lambda: JSONResponse(_predict_body(scored, "rows")).body, fast),
        ),
    ]
    other = "other ways in, and batches"
    steps += [
        Step(
            other,
            "a 224x224 JPEG: decode + bilinear resize to 96x96",
            "inference.images.decode",
            timed(lambda: images.decode(large, spec, max_pixels, "instances[0]"), fast),
        ),
        Step(
            other,
            "  of which the resize alone",
            "Image.resize(BILINEAR)",
            timed(lambda: decoded_large.resize((width, height), Image.Resampling.BILINEAR), fast),
        ),
        Step(
            other,
            "inference, per image in a batch of 16",
            "LiteRTRuntime.logits (16, 96, 96, 3)",
            [t / 16 for t in timed(lambda: runtime.logits(x16), slow)],
        ),
        Step(
            other,
            "nested arrays: parse + validate the JSON body (27,648 numbers)",
            "http.bodies.parse(PredictRequest)",
            timed(lambda: parse(PredictRequest, nested), slow),
        ),
        Step(
            other,
            "nested arrays: parse + validate, garbage collector off",
            "the same, between gc.disable() and gc.enable()",
            without_gc(lambda: timed(lambda: parse(PredictRequest, nested), slow)),
        ),
        Step(
            other,
            "nested arrays: check + convert to the float32 batch",
            "inference.inputs.features",
            timed(lambda: features(nested_instances, spec.shape), slow),
        ),
        Step(
            other,
            "nested arrays, bare: orjson.loads + np.asarray(float32)",
            "(the bare ASGI floor)",
            timed(lambda: np.asarray(orjson.loads(nested)["instances"], dtype=np.float32), slow),
        ),
    ]
    whole = "the data plane as a whole (one request at a time)"
    steps += [
        Step(
            whole,
            f"DataPlane.predict, batching {mode}",
            "decode + inference + scores",
            timed_async(plane_for(mode), slow),
        )
        for mode in ("off", "on")
    ]
    about = {
        "model": f"{name} version {version}: input {list(spec.shape)}, "
        f"{len(loaded.metadata.class_names)} classes, runtime {loaded.runtime_name}",
        "image": f"{len(jpeg)}-byte JPEG 96x96 (quality 90), {len(body)}-byte {{b64}} body; "
        f"224x224: {len(large)} bytes; nested-array body: {len(nested)} bytes",
        "libraries": f"Pillow {PIL.__version__}, numpy {np.__version__}, "
        f"orjson {orjson.__version__}",
        "repeats": f"{fast} calls per step ({slow} for inference, nested arrays and the data "
        "plane), after 5 untimed",
    }
    return steps, about


def spec_json(spec: Any) -> dict[str, Any]:
    """The ``InputSpec`` as its metadata's ``input`` description."""
    return {"shape": list(spec.shape), "pixel_range": list(spec.pixel_range or (0.0, 255.0))}


def table(steps: Sequence[Step], about: dict[str, str], cpu: str) -> str:
    """The markdown report."""
    main = [s for s in steps if s.group == steps[0].group and not s.name.startswith("  ")]
    total = sum(s.mean for s in main)
    lines = [
        "## Where the time of one image request goes (in-process, microseconds per call)",
        "",
        *(f"- {k}: {v}" for k, v in about.items()),
        f"- cpu: {cpu}",
        "",
        "| path | step | code | mean us | median us | min us | share |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in steps:
        share = f"{s.mean / total:.0%}" if s in main else ""
        lines.append(
            f"| {s.group} | {s.name} | `{s.code}` | {s.mean:.1f} | {s.median:.1f} | "
            f"{s.best:.1f} | {share} |"
        )
    lines += [
        "",
        f"Sum of the {{b64}} steps (means): {total:.0f} us per request, before HTTP, routing and "
        "the event loop; the share column is of that sum. The mean is what throughput pays: "
        "it includes the garbage collector's pauses, which land on a few calls only (the "
        "median misses them).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        prog="python benchmarks/breakdown.py", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument(
        "--image-model",
        type=Path,
        metavar="VERSION_DIR",
        help="an exported image model version to measure instead of building MobileNetV2",
    )
    parser.add_argument("--repeat", type=int, default=400, help="calls per step (default 400)")
    parser.add_argument("--cpu", type=int, help="pin this process to one CPU")
    args = parser.parse_args(argv)
    cpu = "not pinned"
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
        cpu = f"pinned to CPU {args.cpu}"
    with tempfile.TemporaryDirectory(prefix="softmax-breakdown-") as tmp:
        version_dir = args.image_model
        if version_dir is None:
            print("breakdown: building and exporting MobileNetV2", file=sys.stderr, flush=True)
            version_dir = image_plan.build_model(Path(tmp) / "models", Path(tmp) / "build.log")
        steps, about = measure(version_dir.resolve(), args.repeat)
    sys.stdout.write(table(steps, about, cpu))
    return 0


if __name__ == "__main__":
    sys.exit(main())
