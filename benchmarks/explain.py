"""Exact Shapley explanations over HTTP: time per explanation and model rows per explanation.

    python benchmarks/explain.py            # 200 one-instance explanations per model
    python benchmarks/explain.py --quick    # 20: the form of the output

Trains, with the project's own command, the 4-blob model (2 features) and tables of 8
and 12 features (``SERVICE_EXPLAIN_MAX_FEATURES``' default: 4096 coalitions) from
synthetic CSVs, serves them with one service started as users start it (pinned to one
core where the machine has two), and sends one-instance ``/models/{name}/explain``
requests one at a time. Every answer is checked first: a 200 whose attributions add up
to ``probability - expected_value`` within 1e-9. Prints a markdown table: features,
coalitions, model rows per explanation (2^features x background points), the p50 and
p99 time of one request, and explanations per second. Exits with 1 on any error answer.
"""

from __future__ import annotations

import argparse
import csv
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

#: Synthetic tables: name -> features.
TABLES = {"table8": 8, "table12": 12}


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


def train_all(repository: Path, workdir: Path, quick: bool) -> dict[str, int]:
    """Every model, by name, with its number of features."""
    log = workdir / "training.log"
    plan.train(repository, quick, log)
    for name, features in TABLES.items():
        data = workdir / f"{name}.csv"
        write_table(data, features)
        argv = [sys.executable, "-m", "model_training", "--model-repository", str(repository)]
        argv += ["--name", name, "--data", str(data), "--quiet", "--no-report"]
        plan.run_logged([*argv, "--epochs", "3" if quick else "20"], log, f"training {name}")
    return {"blobs": 2, **TABLES}


def check(answer: httpx.Response, name: str) -> dict[str, Any]:
    """The answer, if it is a 200 whose attributions add up; else ``SystemExit(1)``."""
    if answer.status_code != 200:
        sys.exit(f"{name}: {answer.status_code} {answer.text[:300]}")
    body: dict[str, Any] = answer.json()
    for explained in body["explanations"][0]["classes"]:
        total = sum(explained["attributions"])
        if abs(total - (explained["probability"] - explained["expected_value"])) > 1e-9:
            sys.exit(f"{name}: attributions that do not add up: {explained}")
    return body


def measure(url: str, name: str, features: int, requests: int) -> list[str]:
    """One row of the table: ``requests`` one-instance explanations, one at a time."""
    rng = np.random.default_rng(0)
    bodies = [{"instances": [rng.normal(size=features).round(3).tolist()]} for _ in range(8)]
    times = []
    with httpx.Client(base_url=url, timeout=60) as client:
        path = f"/models/{name}/explain"
        settings = check(client.post(path, json=bodies[0]), name)["settings"]
        for i in range(requests):
            started = time.perf_counter()
            answer = client.post(path, json=bodies[i % len(bodies)])
            times.append(time.perf_counter() - started)
            if answer.status_code != 200:
                check(answer, name)
    p50 = statistics.median(times) * 1000
    p99 = float(np.quantile(times, 0.99)) * 1000
    return [
        name,
        str(features),
        str(settings["coalitions"]),
        str(settings["model_rows_per_instance"]),
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
    header = ["model", "features", "coalitions", "model rows", "p50 ms", "p99 ms", "per s"]
    print(f"| {' | '.join(header)} |")
    print(f"|{'---|' * len(header)}")
    for row in rows:
        print(f"| {' | '.join(row)} |")
    print(f"\n{requests} one-instance explanations per model, one request at a time.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
