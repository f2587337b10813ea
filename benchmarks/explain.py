"""Shapley explanations over HTTP: time per explanation and model rows per explanation.

    python benchmarks/explain.py            # 200 one-instance explanations per model
    python benchmarks/explain.py --quick    # 20: the form of the output

Trains, with the project's own command, the 4-blob model (2 features) and tables of 8
and 12 features (``SERVICE_EXPLAIN_MAX_FEATURES``' default: 4096 coalitions, exact) and
of 30 features (KernelSHAP, ``SERVICE_EXPLAIN_SAMPLES``' default of 2048 coalitions)
from synthetic CSVs, and the trainer's CNN on synthetic 96x96 RGB images (occlusion,
``SERVICE_EXPLAIN_PATCH``' default of 8: 144 patches); serves them with one service
started as users start it (pinned to one core where the machine has two), and sends
one-instance ``/models/{name}/explain`` requests one at a time (the image as a base64
PNG). Every answer is checked first: a 200 whose attributions add up to ``probability -
expected_value`` within 1e-9, or whose heat map has the image's size. Prints a markdown
table: the input, the method, its variants (coalitions, or the image and its occluded
copies), model rows per explanation (variants x background points for tables), the
largest standard error of the first answer's attributions (0 when exact, n/a for
images), the p50 and p99 time of one request, and explanations per second. Exits with 1
on any error answer.
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from harness import machine, plan
from harness.plan import ROOT
from harness.processes import ServerProcess, free_port

#: Synthetic tables: name -> features (above 12, explained by KernelSHAP).
TABLES = {"table8": 8, "table12": 12, "table30": 30}
#: The synthetic image model: name, side in pixels.
IMAGE, SIDE = "image96", 96


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python benchmarks/explain.py", description=(__doc__ or "").split("\n\n", 1)[0]
    )
    p.add_argument("--requests", type=int, default=200, help="explanations per model")
    p.add_argument("--quick", action="store_true", help="20 explanations, 3 epochs")
    return p.parse_args(argv)


def write_table(path: Path, features: int, rows: int = 600) -> None:
    """A CSV of ``features`` numeric columns and a label depending on several of them."""
    rng = np.random.default_rng(features)
    x = rng.normal(size=(rows, features))
    y = (x[:, 0] + x[:, 1] * x[:, 2] - 0.5 * x[:, -1] > 0).astype(int)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*(f"f{j}" for j in range(features)), "label"])
        writer.writerows([[*map(float, row), f"c{c}"] for row, c in zip(x, y, strict=True)])


def png(pixels: np.ndarray) -> bytes:
    """A PNG file of ``pixels`` (height x width x 3, uint8)."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def image(rng: np.random.Generator, label: int) -> np.ndarray:
    """A noisy 96x96 RGB image, its left (label 0) or right (1) half the brighter."""
    pixels = rng.integers(0, 128, size=(SIDE, SIDE, 3))
    half = slice(0, SIDE // 2) if label == 0 else slice(SIDE // 2, SIDE)
    pixels[:, half] += 100
    return pixels.astype(np.uint8)


def write_images(folder: Path, per_class: int = 20) -> None:
    """A folder of one sub-folder of PNGs per class, as the trainer reads images."""
    rng = np.random.default_rng(0)
    for label in (0, 1):
        (folder / f"c{label}").mkdir(parents=True)
        for i in range(per_class):
            (folder / f"c{label}" / f"{i}.png").write_bytes(png(image(rng, label)))


def train_all(repository: Path, workdir: Path, quick: bool) -> dict[str, int]:
    """Every model, by name, with its number of features (of pixels, for the image)."""
    log = workdir / "training.log"
    plan.train(repository, quick, log)
    argv = [sys.executable, "-m", "model_training", "--model-repository", str(repository)]
    for name, features in TABLES.items():
        data = workdir / f"{name}.csv"
        write_table(data, features)
        table = [*argv, "--name", name, "--data", str(data), "--quiet", "--no-report"]
        plan.run_logged([*table, "--epochs", "3" if quick else "20"], log, f"training {name}")
    write_images(workdir / "images")
    images = [*argv, "--name", IMAGE, "--data", str(workdir / "images"), "--quiet"]
    images += ["--no-report", "--image-size", str(SIDE), str(SIDE), "--epochs", "1"]
    plan.run_logged(images, log, f"training {IMAGE}")
    return {"blobs": 2, **TABLES, IMAGE: SIDE * SIDE}


def check(answer: httpx.Response, name: str) -> dict[str, Any]:
    """The answer, if it is a 200 whose attributions add up; else ``SystemExit(1)``."""
    if answer.status_code != 200:
        sys.exit(f"{name}: {answer.status_code} {answer.text[:300]}")
    body: dict[str, Any] = answer.json()
    for explained in body["explanations"][0]["classes"]:
        if "heatmap" in explained:
            if np.shape(explained["heatmap"]) != (SIDE, SIDE):
                sys.exit(f"{name}: a heat map of shape {np.shape(explained['heatmap'])}")
            continue
        total = sum(explained["attributions"])
        if abs(total - (explained["probability"] - explained["expected_value"])) > 1e-9:
            sys.exit(f"{name}: attributions that do not add up: {explained}")
    return body


def measure(url: str, name: str, features: int, requests: int) -> list[str]:
    """One row of the table: ``requests`` one-instance explanations, one at a time."""
    rng = np.random.default_rng(0)
    if name == IMAGE:
        files = [base64.b64encode(png(image(rng, i % 2))).decode() for i in range(8)]
        bodies: list[dict[str, Any]] = [{"instances": [{"b64": f}]} for f in files]
    else:
        bodies = [{"instances": [rng.normal(size=features).round(3).tolist()]} for _ in range(8)]
    times = []
    with httpx.Client(base_url=url, timeout=60) as client:
        path = f"/models/{name}/explain"
        first = check(client.post(path, json=bodies[0]), name)
        settings = first["settings"]
        classes = first["explanations"][0]["classes"]
        errors = [e for c in classes for e in c.get("standard_errors", [0])]
        for i in range(requests):
            started = time.perf_counter()
            answer = client.post(path, json=bodies[i % len(bodies)])
            times.append(time.perf_counter() - started)
            if answer.status_code != 200:
                check(answer, name)
    p50 = statistics.median(times) * 1000
    p99 = float(np.quantile(times, 0.99)) * 1000
    variants = settings.get("coalitions", settings.get("patches", 0) + 1)
    return [
        name,
        f"{SIDE}x{SIDE}x3 image" if name == IMAGE else f"{features} features",
        first["method"],
        str(variants),
        str(settings["model_rows_per_instance"]),
        "n/a" if name == IMAGE else f"{max(errors):.4f}",
        f"{p50:.2f}",
        f"{p99:.2f}",
        f"{1000 / p50:.0f}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Train, serve, measure, print."""
    args = parse_args(argv)
    requests = 20 if args.quick else args.requests
    with tempfile.TemporaryDirectory(prefix="explain-bench-") as scratch:
        workdir = Path(scratch)
        repository = workdir / "models"
        models = train_all(repository, workdir, args.quick)
        port = free_port()
        argv_ = [arg.replace("{port}", str(port)) for arg in plan.service(repository)]
        server = ServerProcess.start(
            argv_,
            port=port,
            env=plan.server_env({"SERVICE_DEFAULT_MODEL": "blobs"}),
            cwd=ROOT,
            log=workdir / "server.log",
            cpus=machine.plan_pinning().server,
            ready_path="/health/ready",
            ready_timeout=120,
        )
        try:
            rows = [measure(server.url, name, n, requests) for name, n in models.items()]
        finally:
            server.stop()
    header = ["model", "input", "method", "variants", "model rows", "max s.e."]
    header += ["p50 ms", "p99 ms", "per s"]
    print(f"| {' | '.join(header)} |")
    print(f"|{'---|' * len(header)}")
    for row in rows:
        print(f"| {' | '.join(row)} |")
    print(f"\n{requests} one-instance explanations per model, one request at a time.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
