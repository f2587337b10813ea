"""One image, three ways to send it, in turns against one running service.

    python benchmarks/forms.py                   # 5 rounds of 4 s at 16 connections
    python benchmarks/forms.py --rounds 9 --duration 6

``run.py --model mobilenet`` measures each body form once, one after the other; on a
shared machine the noise drifts between them by more than the forms differ. Here one
service (pinned to one core, the load generator on the other) serves the MobileNetV2
workload while the forms take turns, ``rounds`` times: ``{"b64"}`` in JSON, the JPEG
itself as the body (``Content-Type: image/jpeg``) and the Open Inference Protocol's
BYTES input with the binary extension. Prints each round's req/s, the medians, each
form's median over b64's, the median of its per-round ratios to b64 (paired: the turns
of one round are seconds apart, so they share the machine's state), and the server's
CPU time per request (its process tree's, from ``/proc``). CPU per request separates
"the server got less of its core" (req/s drops, CPU per request does not) from "the core
itself ran slower" (shared caches and memory: both move).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from harness import image_plan, loadgen, machine, plan
from harness.processes import ServerProcess
from run import check_answer, free_port, say, wait_idle


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python benchmarks/forms.py", description=(__doc__ or "").split("\n\n", 1)[0]
    )
    p.add_argument("--rounds", type=int, default=5, help="turns each (default 5)")
    p.add_argument("--duration", type=int, default=4, help="seconds per turn (default 4)")
    p.add_argument("--connections", type=int, default=16, help="default 16")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison; returns the exit status."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="softmax-forms-") as tmp:
        workdir = Path(tmp)
        setup: list[str] = []
        generator = loadgen.choose("auto", workdir, setup)
        say("writing and exporting the MobileNetV2 model")
        version_dir = image_plan.build_model(workdir / "models", workdir / "model.log")
        bodies = image_plan.write_bodies(version_dir, workdir)
        name = version_dir.parent.name
        forms: dict[str, tuple[str, Path, dict[str, str]]] = {
            "b64": ("/predict", bodies.b64, {"Content-Type": "application/json"}),
            "raw": ("/predict", bodies.jpeg, {"Content-Type": "image/jpeg"}),
            "v2-binary": (
                f"/v2/models/{name}/infer",
                bodies.v2_binary,
                {
                    "Content-Type": "application/octet-stream",
                    "Inference-Header-Content-Length": str(bodies.v2_header_length),
                },
            ),
        }
        pinning = machine.plan_pinning()
        machine.pin(0, pinning.loadgen)  # the script stays off the server's core
        port = free_port()
        argv = [arg.replace("{port}", str(port)) for arg in plan.service(workdir / "models")]
        server = ServerProcess.start(
            argv,
            port=port,
            env=plan.server_env(),
            cwd=plan.ROOT,
            log=workdir / "service.log",
            cpus=pinning.server,
            ready_path="/health/ready",
            ready_timeout=60.0,
        )
        rates: dict[str, list[float]] = {form: [] for form in forms}
        cpu: dict[str, list[float]] = {form: [] for form in forms}  # µs per request
        try:
            for form, (path, body, headers) in forms.items():  # each answers, and is warm
                problem = check_answer(server.url + path, body, headers)
                if problem is not None:
                    raise SystemExit(f"{form}: {problem}")
                generator.run(
                    server.url + path, body, args.connections, 1, pinning.loadgen, headers
                )
            for round_ in range(1, args.rounds + 1):
                for form, (path, body, headers) in forms.items():
                    url = server.url + path
                    wait_idle(url, body, headers)
                    before = server.cpu_seconds()
                    result = generator.run(
                        url, body, args.connections, args.duration, pinning.loadgen, headers
                    )
                    used = server.cpu_seconds() - before
                    if result.errors:
                        raise SystemExit(f"{form}: {result.errors} errors")
                    rates[form].append(result.requests_per_s)
                    cpu[form].append(used / max(result.requests, 1) * 1e6)
                    say(
                        f"round {round_}: {form:10} {result.requests_per_s:8.1f} req/s, "
                        f"{cpu[form][-1]:7.1f} µs CPU per request"
                    )
        finally:
            server.stop()
    b64 = statistics.median(rates["b64"])
    b64_cpu = statistics.median(cpu["b64"])
    for form, values in rates.items():
        ratios = [v / b for v, b in zip(values, rates["b64"], strict=True)]
        used = statistics.median(cpu[form])
        print(
            f"{form:10} median {statistics.median(values):8.1f} req/s  "
            f"/ b64: {statistics.median(values) / b64:.3f} "
            f"(paired: median {statistics.median(ratios):.3f}, "
            f"{min(ratios):.3f}..{max(ratios):.3f})  {[round(v) for v in values]}; "
            f"CPU per request {used:.0f} µs, b64 / {form}: {b64_cpu / used:.3f}"
        )
    print(
        f"{args.rounds} rounds x {args.duration} s per form, {args.connections} connections, "
        f"{generator.name}, {pinning.describe()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
