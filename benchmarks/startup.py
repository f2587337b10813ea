"""Start to ready: the service against the FastAPI floor, in turns, and where the time goes.

    python benchmarks/startup.py                 # 11 starts each, in turns
    python benchmarks/startup.py --runs 21 --out benchmarks/results/startup

Time to ready is measured from the outside, as ``run.py`` does: from spawning the
process to the first 200 on ``/health/ready`` (polled every 10 ms), for the default
model (the 4 blobs, trained here with the project's CLI). The service and the FastAPI
fixed-answer floor (``baselines/fastapi_floor.py``: FastAPI and uvicorn imported, one
route, nothing loaded) start in turns, the order alternating, so that both see the
same machine; each is pinned to the same core. The service is measured as installed:
its bytecode compiled (what ``pip install`` and ``make install`` do; a source checkout
run with ``PYTHONDONTWRITEBYTECODE=1`` compiles every module at every start instead).

Then one more start of the service under ``python -X importtime`` gives the breakdown:
the interpreter, each top-level import (cumulative, as the service's modules pull them
in) and the rest (the application, its lifespan, loading and warming the model, the
first answer). Prints a markdown table; ``--out`` also writes it with a JSON copy.
"""

from __future__ import annotations

import argparse
import compileall
import json
import re
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness import machine, plan
from harness.processes import ServerFailed

#: One line of ``-X importtime``: self and cumulative microseconds, indented name.
IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)")


@dataclass
class Starts:
    """Each contender's times to ready, in seconds, start by start."""

    labels: list[str]
    ready_s: dict[str, list[float]] = field(default_factory=dict)

    def median(self, label: str) -> float:
        """``label``'s median time to ready."""
        return statistics.median(self.ready_s[label])

    def paired(self, label: str, over: str) -> float:
        """The median of ``label``'s per-round times over ``over``'s (below 1: sooner)."""
        pairs = zip(self.ready_s[label], self.ready_s[over], strict=True)
        return statistics.median(mine / theirs for mine, theirs in pairs)


@dataclass(frozen=True)
class Breakdown:
    """Where one start's time went: milliseconds per phase, biggest imports first."""

    ready_ms: float
    imports_ms: float
    by_package: list[tuple[str, float]]
    service_modules: list[tuple[str, float]]  # the service's own modules, self time


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python benchmarks/startup.py", description=(__doc__ or "").split("\n\n", 1)[0]
    )
    p.add_argument("--runs", type=int, default=11, help="starts of each server (default 11)")
    p.add_argument("--out", type=Path, help="also write startup.md and startup.json here")
    p.add_argument(
        "--checkout",
        type=Path,
        default=plan.ROOT,
        help="the service of another checkout (e.g. a git worktree of an older commit)",
    )
    return p.parse_args(argv)


def contenders(repository: Path, version_dir: Path, checkout: Path) -> dict[str, plan.ServerSpec]:
    """The service (of ``checkout``) as users start it, and the FastAPI floor."""
    return {
        "service": plan.ServerSpec(
            "service",
            "softmax-serving",
            "defaults",
            plan.service(repository),
            loads=[],
            pythonpath=checkout,
            cwd=checkout,
        ),
        "FastAPI floor": plan.ServerSpec(
            plan.FASTAPI,
            "FastAPI floor",
            "fixed answer",
            plan.baseline("fastapi_floor", version_dir),
            loads=[],
        ),
    }


def take_starts(
    specs: dict[str, plan.ServerSpec], runs: int, workdir: Path, cpus: frozenset[int] | None
) -> Starts:
    """``runs`` starts of each spec, alternating which goes first."""
    labels = list(specs)
    starts = Starts(labels, {label: [] for label in labels})
    for run in range(runs):
        order = labels if run % 2 == 0 else labels[::-1]
        for label in order:
            server = specs[label].start(workdir / f"{specs[label].key}.log", cpus)
            server.stop()
            starts.ready_s[label].append(server.ready_s)
            print(
                f"startup: run {run + 1}: {label:14} ready in {server.ready_s * 1e3:6.0f} ms",
                file=sys.stderr,
                flush=True,
            )
    return starts


def parse_importtime(text: str) -> tuple[float, list[tuple[str, float]], list[tuple[str, float]]]:
    """Total import ms, ms per top-level package, and the service modules' own ms.

    Each module's self time (its own body, not the imports it makes) is summed under its
    top-level package, so the packages add up to the whole import time: ``fastapi``
    is what FastAPI's modules run, ``service`` what the service's own run.
    """
    by_package: Counter[str] = Counter()
    own: dict[str, float] = {}
    for line in text.splitlines():
        found = IMPORT_LINE.match(line)
        if found is None:
            continue
        self_ms, name = int(found.group(1)) / 1e3, found.group(4)
        by_package[name.split(".")[0]] += self_ms
        if name.startswith("service"):
            own[name] = self_ms
    total = sum(by_package.values())
    return total, by_package.most_common(), sorted(own.items(), key=lambda kv: -kv[1])


def breakdown(spec: plan.ServerSpec, workdir: Path, cpus: frozenset[int] | None) -> Breakdown:
    """One start of ``spec`` with ``-X importtime``."""
    timed = plan.ServerSpec(
        spec.key,
        spec.server,
        spec.config,
        [spec.argv[0], "-X", "importtime", *spec.argv[1:]],
        loads=[],
        pythonpath=spec.pythonpath,
        cwd=spec.cwd,
    )
    log = workdir / "importtime.log"
    server = timed.start(log, cpus)
    server.stop()
    total, packages, own = parse_importtime(log.read_text(errors="replace"))
    return Breakdown(server.ready_s * 1e3, total, packages, own)


def markdown(starts: Starts, parts: Breakdown) -> str:
    """The report."""
    service, floor = starts.labels
    lines = [
        "## Start to ready (default model)",
        "",
        "| server | starts | min ms | median ms | max ms |",
        "|---|---|---|---|---|",
    ]
    for label in starts.labels:
        times = [t * 1e3 for t in starts.ready_s[label]]
        lines.append(
            f"| {label} | {len(times)} | {min(times):.0f} | {statistics.median(times):.0f} "
            f"| {max(times):.0f} |"
        )
    lines += [
        "",
        f"Service / FastAPI floor, median of the paired starts: "
        f"**{starts.paired(service, floor):.2f}x** (below 1: the service is ready sooner).",
        "",
        f"## Where a start goes (one start under `-X importtime`: ready in "
        f"{parts.ready_ms:.0f} ms)",
        "",
        "| phase | ms |",
        "|---|---|",
        f"| imports, all | {parts.imports_ms:.0f} |",
    ]
    shown = [(name, ms) for name, ms in parts.by_package if ms >= 2]
    lines += [f"| &nbsp;&nbsp;{name} | {ms:.1f} |" for name, ms in shown]
    others = parts.imports_ms - sum(ms for _, ms in shown)
    lines.append(f"| &nbsp;&nbsp;everything else imported | {others:.1f} |")
    rest = parts.ready_ms - parts.imports_ms
    lines += [
        f"| interpreter, app, lifespan, model load and warm-up, first answer | {rest:.0f} |",
        "",
        "The service's own modules, self time (what their bodies run: classes, routes):",
        "",
        "| module | ms |",
        "|---|---|",
        *[f"| {name} | {ms:.1f} |" for name, ms in parts.service_modules if ms >= 0.5],
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Measure; returns the exit status (1 when a server did not start)."""
    args = parse_args(argv)
    checkout = args.checkout.resolve()
    compileall.compile_dir(checkout / "service", quiet=1)  # as installed
    cpus = machine.plan_pinning().server
    with tempfile.TemporaryDirectory(prefix="softmax-startup-") as tmp:
        workdir = Path(tmp)
        repository = workdir / "models"
        version_dir = plan.train(repository, True, workdir / "train.log")
        specs = contenders(repository, version_dir, checkout)
        try:
            starts = take_starts(specs, args.runs, workdir, cpus)
            parts = breakdown(specs["service"], workdir, cpus)
        except ServerFailed as exc:
            print(f"startup: a server did not start: {exc}", file=sys.stderr)
            return 1
    text = markdown(starts, parts)
    sys.stdout.write(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "startup.md").write_text(text)
        data = {
            "ready_s": starts.ready_s,
            "paired_service_over_floor": starts.paired(*starts.labels),
            "breakdown_ms": {
                "ready": parts.ready_ms,
                "imports": parts.imports_ms,
                "by_package": dict(parts.by_package),
                "service_modules": dict(parts.service_modules),
            },
        }
        (args.out / "startup.json").write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
