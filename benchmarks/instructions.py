"""The image body forms' cost per request in instructions, counted by callgrind: the same every run.

    python benchmarks/instructions.py                  # MobileNetV2, 200 requests per form
    python benchmarks/instructions.py --requests 50 --image-model VERSION_DIR

The body forms (``{"b64"}`` in JSON, the JPEG itself as an ``image/jpeg`` body, the
Open Inference Protocol's BYTES input with the binary extension) differ in cost by a
few per cent, less than req/s drifts on a shared machine even in turns (``forms.py``).
Callgrind counts the instructions a process executes, whatever its neighbours do: two
runs agree to about 0.1 %. Here the service's own application (``create_app``,
started with its lifespan, the settings and bodies of ``run.py --model mobilenet``)
runs under ``valgrind --tool=callgrind`` and is given each form's requests one at a
time (``harness/asgi_driver.py``): the gateway, the route, the data plane (batcher and
worker thread) and LiteRT's inference, all of it counted, every thread. Left out:
uvicorn's HTTP parsing (the same code for each form, differing only by the bodies'
length, which is shorter than ``{"b64"}``'s for the other two) and the kernel's side of
the socket. Instructions are not time (a cache miss costs more than an add), but for
the same code on the same data they are the steadiest measure of work there is here.

Prints a markdown table: each form's instructions per request and its ratio to
``{"b64"}``'s (below 1: fewer). valgrind is installed from Debian when missing (as
``wrk`` is for ``run.py``). About 5 minutes for 200 requests per form.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from forms import body_forms
from harness import image_plan, loadgen, machine, plan
from harness.report import table_lines
from run import say

DRIVER = Path(__file__).with_name("harness") / "asgi_driver.py"
#: The line of a callgrind dump with its total count of each event (``Ir`` first).
TOTALS = re.compile(r"^totals:\s+(\d+)", re.MULTILINE)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python benchmarks/instructions.py",
        description=(__doc__ or "").split("\n\n", 1)[0],
    )
    p.add_argument("--requests", type=int, default=200, help="requests per form (default 200)")
    p.add_argument("--warmup", type=int, default=20, help="requests per form first (default 20)")
    p.add_argument(
        "--image-model",
        type=Path,
        metavar="VERSION_DIR",
        help="an exported image model version to use instead of building MobileNetV2",
    )
    args = p.parse_args(argv)
    if args.requests < 1 or args.warmup < 1:
        p.error("--requests and --warmup must be at least 1")
    return args


def dumped_counts(out: Path) -> list[int]:
    """Instructions in each of callgrind's dumps ``out.1``, ``out.2``, ..., in order."""
    dumps = sorted(out.parent.glob(f"{out.name}.*"), key=lambda p: int(p.suffix[1:]))
    counts = []
    for dump in dumps:
        found = TOTALS.search(dump.read_text(errors="replace"))
        if found is None:
            raise RuntimeError(f"no totals line in callgrind's dump {dump}")
        counts.append(int(found.group(1)))
    return counts


def count(version_dir: Path, workdir: Path, requests: int, warmup: int) -> dict[str, float]:
    """Each body form's instructions per request."""
    setup: list[str] = []
    valgrind = shutil.which("valgrind") or loadgen.install("valgrind", setup)
    if valgrind is None:
        raise SystemExit("valgrind is needed: " + "; ".join(setup))
    bodies = image_plan.write_bodies(version_dir, workdir)
    forms = body_forms(version_dir, bodies)
    service = forms[0].spec
    plan_file = workdir / "driver-plan.json"
    plan_file.write_text(
        json.dumps(
            {
                "repository": str(version_dir.parents[1]),
                "env": service.env,
                "requests": requests,
                "warmup": warmup,
                "forms": [
                    {
                        "label": form.label,
                        "path": form.load.path,
                        "body": str(form.load.body),
                        "headers": form.load.headers or loadgen.JSON,
                    }
                    for form in forms
                ],
            }
        )
    )
    out = workdir / "callgrind.out"
    argv = [
        valgrind,
        "--tool=callgrind",
        "--instr-atstart=no",
        "--fair-sched=yes",  # the worker thread gets its turns promptly
        f"--callgrind-out-file={out}",
        sys.executable,
        str(DRIVER),
        str(plan_file),
    ]
    labels = ", ".join(form.label for form in forms)
    say(f"counting {requests} requests per form under callgrind ({labels})")
    log = workdir / "valgrind.log"
    with log.open("wb") as sink:
        result = subprocess.run(
            argv,
            env=plan.server_env({"ASGI_DRIVER_CALLGRIND": "1"}),
            stdout=subprocess.PIPE,
            stderr=sink,
            timeout=3600,
            check=False,
        )
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"the driver failed under valgrind ({result.returncode}):\n{tail}")
    counts = dumped_counts(out)
    if len(counts) < len(forms):
        raise SystemExit(f"expected {len(forms)} callgrind dumps, found {len(counts)}")
    return {form.label: n / requests for form, n in zip(forms, counts, strict=False)}


def table(per_request: dict[str, float]) -> list[str]:
    """The markdown table: instructions per request, and the ratio to the first form's.

    Three decimals: the forms differ by a few per cent, and the counts repeat to 0.1 %.
    """
    reference = next(iter(per_request.values()))
    body = [
        [label, f"{n:,.0f}", f"{n - reference:+,.0f}", f"{n / reference:.3f}x"]
        for label, n in per_request.items()
    ]
    header = ("form", "instructions per request", "difference", "ratio to {b64}")
    return table_lines(header, body)


def main(argv: Sequence[str] | None = None) -> int:
    """Count, and print the table; returns the exit status."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="softmax-instructions-") as tmp:
        workdir = Path(tmp)
        version_dir = args.image_model
        if version_dir is None:
            say("writing and exporting the MobileNetV2 model")
            version_dir = image_plan.build_model(workdir / "models", workdir / "model.log")
        per_request = count(version_dir.resolve(), workdir, args.requests, args.warmup)
    print(f"### Instructions per request, {args.requests} requests per form, one at a time\n")
    print("\n".join(table(per_request)))
    print(f"\ncallgrind, {machine.cpu_model()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
