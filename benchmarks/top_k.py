"""Top k against the whole distribution, in turns, on a 1,000-class model: the answer time.

    python benchmarks/top_k.py                  # 7 rounds of 4 s, at 1 and at 16 connections
    python benchmarks/top_k.py --quick          # 2 rounds of 2 s: the form of the output
    python benchmarks/top_k.py --rows 64 --k 5 --rounds 11

A table classifier of 1,000 classes (``workloads/thousand_classes_model.py``) is exported
with the project's command and served by one service (pinned to one core, the load
generator on the other), started as users start it. The same batch of ``--rows``
instances is sent four ways: the whole distributions and ``"top_k": k``, each in the rows
and in the columnar format. Before the turns, one request of each is checked over HTTP:
a 200, and each instance's top k the head of its whole distribution (same classes, same
probabilities, most probable first, equal ones by class index). Then the four take turns
(``harness/turns.py``), at one connection (the answer time: the p50 latency of one
request at a time) and at 16 (the throughput). Prints a markdown table per connection
count and the paired ratios of top k to the whole distribution in the same format.
Exits with 1 on any error answer (a check that fails, or a contender dropped from the
turns).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
from harness import loadgen, machine, plan, report, turns
from harness.plan import ROOT, Load, ServerSpec, Workload
from run import check_answer, say

MODEL = "thousand"
WORKLOADS = ROOT / "benchmarks" / "workloads"
PATH = f"/models/{MODEL}/predict"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python benchmarks/top_k.py", description=(__doc__ or "").split("\n\n", 1)[0]
    )
    p.add_argument("--rows", type=int, default=64, help="instances per request (default 64)")
    p.add_argument("--k", type=int, default=5, help="top_k (default 5)")
    p.add_argument("--rounds", type=int, default=7, help="turns each (default 7)")
    p.add_argument("--duration", type=int, default=4, help="seconds per turn (default 4)")
    p.add_argument("--quick", action="store_true", help="2 rounds of 2 s")
    return p.parse_args(argv)


def build_model(workdir: Path) -> Path:
    """The 1,000-class model, written as .keras and exported; its version's directory."""
    log, keras_file = workdir / "model.log", workdir / f"{MODEL}.keras"
    script = str(WORKLOADS / "thousand_classes_model.py")
    plan.run_logged([sys.executable, script, str(keras_file)], log, "writing the model")
    export = [sys.executable, "-m", "model_training", "export", str(keras_file), "--name", MODEL]
    repository = workdir / "models"
    plan.run_logged([*export, "--model-repository", str(repository), "--quiet"], log, "export")
    return plan.newest_version(repository, "the export")


def write_bodies(version_dir: Path, workdir: Path, rows: int, k: int) -> dict[str, Path]:
    """One body file per contender, all with the same instances."""
    width = int(json.loads((version_dir / "metadata.json").read_text())["input_dim"])
    x = np.round(np.random.default_rng(0).normal(size=(rows, width)), 4).tolist()
    forms: dict[str, dict[str, object]] = {
        "whole, rows": {},
        f"top_k={k}, rows": {"top_k": k},
        "whole, columnar": {"format": "columnar"},
        f"top_k={k}, columnar": {"top_k": k, "format": "columnar"},
    }
    bodies = {}
    for i, (label, fields) in enumerate(forms.items()):
        bodies[label] = workdir / f"body-{i}.json"
        bodies[label].write_bytes(orjson.dumps({"instances": x, **fields}))
    return bodies


def heads(distributions: list[list[float]], k: int) -> tuple[list[list[int]], list[list[float]]]:
    """Each instance's k most probable classes and their probabilities, read from its whole
    distribution: most probable first, equal ones by class index."""
    indices = [sorted(range(len(p)), key=lambda j: (-p[j], j))[:k] for p in distributions]
    values = [[p[j] for j in best] for p, best in zip(distributions, indices, strict=True)]
    return indices, values


def top_parts(answer: dict[str, Any], fmt: str) -> tuple[list[list[int]], list[list[float]]]:
    """The (indices, probabilities) of a top-k answer in either format."""
    if fmt == "columnar":
        return answer["top_k"]["indices"], answer["top_k"]["probabilities"]
    rows = answer["predictions"]
    return [p["top_k"]["indices"] for p in rows], [p["top_k"]["probabilities"] for p in rows]


def check_answers(
    spec: ServerSpec, bodies: dict[str, Path], k: int, workdir: Path
) -> tuple[list[str], list[str]]:
    """One request of each form: a table of the answers' sizes, and the problems found
    (empty: none): an answer other than 200, or a top k that is not the whole answer's head."""
    sizes, problems, answers = ["| body | answer bytes |", "|---|---|"], [], {}
    server = spec.start(workdir / "check.log", None)
    try:
        for label, body in bodies.items():
            answer = httpx.post(server.url + PATH, content=body.read_bytes(), timeout=60)
            if answer.status_code != 200:
                problems.append(f"{label}: answered {answer.status_code}: {answer.text[:200]}")
                continue
            answers[label] = answer.json()
            sizes.append(f"| {label} | {len(answer.content):,} |")
    finally:
        server.stop()
    for fmt in ("rows", "columnar"):
        whole, top = answers.get(f"whole, {fmt}"), answers.get(f"top_k={k}, {fmt}")
        if whole is None or top is None:
            continue
        distributions = (
            [p["probabilities"] for p in whole["predictions"]]
            if fmt == "rows"
            else whole["probabilities"]
        )
        if top_parts(top, fmt) != heads(distributions, k):
            problems.append(f"top_k={k}, {fmt}: not the head of the whole answer")
    return sizes, problems


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison; returns the exit status: 1 on any error answer."""
    args = parse_args(argv)
    rounds, duration = (2, 2) if args.quick else (args.rounds, args.duration)
    with tempfile.TemporaryDirectory(prefix="softmax-top-k-") as tmp:
        workdir = Path(tmp)
        setup: list[str] = []
        generator = loadgen.choose("auto", workdir, setup)
        say("writing and exporting the 1,000-class model")
        version_dir = build_model(workdir)
        bodies = write_bodies(version_dir, workdir, args.rows, args.k)
        workload = Workload("top-k", f"{args.rows} rows, 1,000 classes", args.rows)
        loads = [Load(workload, PATH, body, (1, 16)) for body in bodies.values()]
        spec = ServerSpec(
            plan.SERVICE,
            "service",
            "LiteRT, 1 worker, defaults",
            plan.service(version_dir.parents[1]),
            loads,
            ready_timeout_s=plan.NO_TENSORFLOW_READY_TIMEOUT_S,
        )
        pinning = machine.plan_pinning()
        machine.pin(0, pinning.loadgen)  # the script stays off the server's core
        sizes, problems = check_answers(spec, bodies, args.k, workdir)
        for problem in problems:
            say(f"FAILED: {problem}")
        if problems:
            return 1
        contenders = [
            turns.Contender(label, spec, load) for label, load in zip(bodies, loads, strict=True)
        ]
        measured = {
            connections: turns.take_turns(
                contenders,
                rounds=rounds,
                duration_s=duration,
                connections=connections,
                generator=generator,
                pinning=pinning,
                workdir=workdir,
                say=say,
                check=check_answer,
            )
            for connections in (1, 16)
        }
    print("\n".join(sizes))
    failed = False
    for connections, taken in measured.items():
        print(f"\n## {connections} connection{'s' if connections > 1 else ''}\n")
        print("\n".join(report.turns_section(taken)))
        for fmt in ("rows", "columnar"):
            top, whole = f"top_k={args.k}, {fmt}", f"whole, {fmt}"
            p50 = taken.paired(top, whole, "p50_ms")
            rate = taken.paired(top, whole)
            print(
                f"\n{top} over {whole}: p50 {report.fmt(p50, 'ratio')}, "
                f"req/s {report.fmt(rate, 'ratio')} ({taken.describe(top, whole)})"
            )
        for label, reason in taken.dropped.items():
            say(
                f"FAILED: {label} was dropped from the turns at {connections} connections: {reason}"
            )
            failed = True
    print(f"\n{generator.name}, {pinning.describe()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
