"""A/B: the service at two git revisions under the same load, alternated.

    python benchmarks/ab.py HEAD~1 HEAD            # 3 rounds of 4 s at 16 connections
    python benchmarks/ab.py main my-branch --rounds 5 --workload 10k --connections 1
    python benchmarks/ab.py floor HEAD --rounds 7  # the FastAPI floor against the service
    python benchmarks/ab.py HEAD HEAD --env-b SERVICE_BATCHING=on   # one setting against another

Each revision is exported with ``git archive`` into a temporary directory and served
from there exactly as ``run.py`` serves the service (``python -m service``, this
checkout's Python environment), pinned to one core with the load generator on the
other. The two take turns, ``rounds`` times: on a shared machine the noise drifts, and
alternating spreads it over both. Prints each round's req/s and the server's CPU time per
request (its process tree's, from ``/proc``), the medians, B / A for both, and the median
of the per-round B / A (paired: a round's two turns are seconds apart).
``floor`` instead of a revision is ``baselines/fastapi_floor.py`` (1-row workload only):
the headline ratio of ``run.py``, measured in turns rather than once each. ``--env-a`` and
``--env-b`` give one side's server extra environment (``SERVICE_*`` settings), so two
settings of the same revision can take turns too. A measured turn with any error answer
(anything but a 200, or a socket error) stops the comparison with exit status 1.
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

from harness import loadgen, machine, plan
from harness.processes import ServerProcess, free_port
from run import say, wait_idle


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python benchmarks/ab.py", description=(__doc__ or "").split("\n\n", 1)[0]
    )
    p.add_argument("a", help="git revision A (the reference), or floor: the FastAPI floor")
    p.add_argument("b", help="git revision B, or floor")
    p.add_argument("--rounds", type=int, default=3, help="turns each (default 3)")
    p.add_argument("--duration", type=int, default=4, help="seconds per turn (default 4)")
    p.add_argument("--connections", type=int, default=16, help="default 16")
    p.add_argument("--workload", choices=["1row", "10k"], default="1row", help="default 1row")
    p.add_argument("--quick", action="store_true", help="train the model for 3 epochs only")
    for side in ("a", "b"):
        p.add_argument(
            f"--env-{side}",
            action="append",
            default=[],
            type=setting,
            metavar="KEY=VALUE",
            help=f"environment for {side.upper()}'s server (repeatable)",
        )
    return p.parse_args(argv)


def setting(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` from the command line."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, received {text!r}")
    return key, value


def export(revision: str, directory: Path) -> Path:
    """The tree of ``revision`` in ``directory`` (raises if git does not know it)."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision],
        cwd=plan.ROOT,
        capture_output=True,
        check=True,
    ).stdout
    directory.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(directory, filter="data")
    return directory


FLOOR = "floor"


def label(args: argparse.Namespace, name: str) -> str:
    """Side ``name``'s revision and extra environment, as the output shows it."""
    side = name.lower()
    return " ".join([getattr(args, side), *(f"{k}={v}" for k, v in getattr(args, f"env_{side}"))])


def turn(
    tree: Path | None,
    version_dir: Path,
    body: Path,
    generator: loadgen.LoadGenerator,
    pinning: machine.Pinning,
    args: argparse.Namespace,
    log: Path,
    extra: dict[str, str],
) -> tuple[float, float]:
    """Start the service from ``tree`` (the FastAPI floor when ``None``), warm it up,
    measure once, stop it: req/s and µs of server CPU per request."""
    port = free_port()
    if tree is None:
        command = plan.baseline("fastapi_floor", version_dir)
    else:
        command = plan.service(version_dir.parent.parent)
    argv = [arg.replace("{port}", str(port)) for arg in command]
    server = ServerProcess.start(
        argv,
        port=port,
        env=plan.server_env(extra, pythonpath=tree) if tree else plan.server_env(extra),
        cwd=tree or plan.ROOT,
        log=log,
        cpus=pinning.server,
        ready_path="/health/ready",
        ready_timeout=60.0,
    )
    try:
        url = server.url + "/predict"
        generator.run(url, body, args.connections, 1, pinning.loadgen)  # warm-up
        wait_idle(url, body)
        before = server.cpu_seconds()
        result = generator.run(url, body, args.connections, args.duration, pinning.loadgen)
        used = server.cpu_seconds() - before
        if result.errors:
            raise SystemExit(f"{tree or FLOOR}: {result.errors} errors; its log: {log}")
        return result.requests_per_s, used / max(result.requests, 1) * 1e6
    finally:
        server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison; returns the exit status."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="softmax-ab-") as tmp:
        workdir = Path(tmp)
        setup: list[str] = []
        generator = loadgen.choose("auto", workdir, setup)
        if FLOOR in (args.a, args.b) and args.workload != "1row":
            raise SystemExit("the FastAPI floor answers the 1-row workload only")
        trees = {
            name: None if rev == FLOOR else export(rev, workdir / name)
            for name, rev in (("A", args.a), ("B", args.b))
        }
        say("training the model into a temporary repository")
        version_dir = plan.train(workdir / "models", args.quick, workdir / "train.log")
        bodies = plan.write_bodies(version_dir, workdir)
        body = bodies.one_row if args.workload == "1row" else bodies.bulk
        pinning = machine.plan_pinning()
        machine.pin(0, pinning.loadgen)  # the script stays off the servers' core
        rates: dict[str, list[float]] = {"A": [], "B": []}
        cpu: dict[str, list[float]] = {"A": [], "B": []}
        for round_ in range(1, args.rounds + 1):
            for name, tree in trees.items():
                log = workdir / f"{name}-{round_}.log"
                extra = dict(getattr(args, f"env_{name.lower()}"))
                rate, used = turn(tree, version_dir, body, generator, pinning, args, log, extra)
                rates[name].append(rate)
                cpu[name].append(used)
                say(
                    f"round {round_}: {name} ({label(args, name)}) {rate:9.1f} req/s, "
                    f"{used:7.1f} µs CPU per request"
                )
    a, b = statistics.median(rates["A"]), statistics.median(rates["B"])
    a_cpu, b_cpu = statistics.median(cpu["A"]), statistics.median(cpu["B"])
    print(
        f"A {label(args, 'A')}: median {a:.1f} req/s, {a_cpu:.1f} µs CPU per request  "
        f"{[round(r, 1) for r in rates['A']]}"
    )
    print(
        f"B {label(args, 'B')}: median {b:.1f} req/s, {b_cpu:.1f} µs CPU per request  "
        f"{[round(r, 1) for r in rates['B']]}"
    )
    print(
        f"B / A = {b / a:.3f} in req/s, {a_cpu / b_cpu:.3f} in CPU per request, "
        f"{statistics.median(x / y for x, y in zip(rates['B'], rates['A'], strict=True)):.3f} "
        "paired  "
        f"({args.workload}, {args.connections} connections, "
        f"{args.rounds} x {args.duration} s each, {generator.name}, {pinning.describe()})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
