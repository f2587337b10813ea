"""One image, three ways to send it, in turns against one running service.

    python benchmarks/forms.py                   # 7 rounds of 4 s at 16 connections
    python benchmarks/forms.py --rounds 11 --duration 6

``run.py --model mobilenet`` measures each body form once, one after the other, and then
the same turns as this script (``harness/turns.py``) for its targets; this script runs
just the turns, without the rest of the suite. On a shared machine the noise drifts
between single points by more than the forms differ. Here one
service (pinned to one core, the load generator on the other) serves the MobileNetV2
workload while the forms take turns, ``rounds`` times: ``{"b64"}`` in JSON, the JPEG
itself as the body (``Content-Type: image/jpeg``) and the Open Inference Protocol's
BYTES input with the binary extension. Prints a markdown table: each form's median
req/s, the median of its per-round ratios to b64 (paired: the turns of one round are
seconds apart, so they share the machine's state), their range, and the server's CPU
time per request (its process tree's, from ``/proc``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from harness import image_plan, loadgen, machine, report, turns
from harness.plan import SERVICE
from run import check_answer, say


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python benchmarks/forms.py", description=(__doc__ or "").split("\n\n", 1)[0]
    )
    p.add_argument("--rounds", type=int, default=7, help="turns each (default 7)")
    p.add_argument("--duration", type=int, default=4, help="seconds per turn (default 4)")
    p.add_argument("--connections", type=int, default=16, help="default 16")
    return p.parse_args(argv)


def body_forms(version_dir: Path, bodies: image_plan.ImageBodies) -> list[turns.Contender]:
    """The service with the image in each body form, ``{"b64"}`` first (as ``run.py`` has them)."""
    specs = image_plan.build_plan(version_dir, bodies, quick=True)
    service = next(spec for spec in specs if spec.key == SERVICE)
    loads = {load.workload.key: load for load in service.loads}
    return [
        turns.Contender(turn.label, service, loads[turn.workload])
        for turn in report.SUITES["mobilenet"].turns
        # the body forms; run.py also turns the other servers, and {b64} at 64 connections
        if turn.key == SERVICE and turn.connections == 16
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison; returns the exit status: 1 when a form was dropped from the turns
    (an error answer, or the service did not start)."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="softmax-forms-") as tmp:
        workdir = Path(tmp)
        setup: list[str] = []
        generator = loadgen.choose("auto", workdir, setup)
        say("writing and exporting the MobileNetV2 model")
        version_dir = image_plan.build_model(workdir / "models", workdir / "model.log")
        bodies = image_plan.write_bodies(version_dir, workdir)
        contenders = body_forms(version_dir, bodies)
        pinning = machine.plan_pinning()
        machine.pin(0, pinning.loadgen)  # the script stays off the server's core
        measured = turns.take_turns(
            contenders,
            rounds=args.rounds,
            duration_s=args.duration,
            connections=args.connections,
            generator=generator,
            pinning=pinning,
            workdir=workdir,
            say=say,
            check=check_answer,
        )
    print("\n".join(report.turns_section(measured)))
    print(f"\n{generator.name}, {pinning.describe()}")
    if measured.dropped:  # error answers, or a service that did not start: no full comparison
        for label, reason in measured.dropped.items():
            say(f"FAILED: {label} was dropped from the turns: {reason}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
