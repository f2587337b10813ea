"""Benchmark the service against its floors, the naive server and (optionally) peer servers.

    python benchmarks/run.py [--model blobs|mobilenet] [--quick] [--peers] [--out DIR]

``--model blobs`` (the default) is the tabular 2-12-8-4 network; ``--model mobilenet``
an image CNN (MobileNetV2, 96x96x3) sent one JPEG per request (``harness/image_plan.py``).
Trains or builds its own model into a temporary directory (never touches ./models), starts
each server pinned to its own core, times it to ready, warms it up, puts bounded
load on it at 1, 16 and 64 connections with wrk (installed from the distribution
when missing; a clearly labelled Python load generator otherwise), and prints one
markdown table: req/s, p50, p99, errors, RSS, time to ready, and ratios to the
baselines of the same run, followed by the issue's targets (a slow number is a MISS
and nothing more). Any error answer (anything but a 200, or a socket error) in any
point or turn fails the run: the report says so first and the exit status is 1.
Writes ``results.md``, ``results.json`` and ``throughput.png`` into ``--out``.
``--quick`` takes about a minute (two for mobilenet); the full run about six (plus peer
installs).
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType

import httpx
from harness import image_plan, loadgen, machine, plan, report, turns
from harness.peers import image_peer_specs, peer_specs
from harness.processes import ServerFailed, ServerProcess

DEFAULT_OUT = plan.ROOT / "benchmarks" / "results"
#: Warm-up load: enough to exercise batching, without leaving slow servers a long backlog.
WARMUP_CONNECTIONS = 16
IDLE_TIMEOUT_S = 60.0
#: Seconds per turn at most: short turns keep a round's contenders close in time.
TURN_S = 4


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python benchmarks/run.py",
        description=(__doc__ or "").split("\n\n", 1)[0],
    )
    p.add_argument(
        "--model",
        choices=["blobs", "mobilenet"],
        default="blobs",
        help="blobs: the tabular model (default); mobilenet: an image CNN, one JPEG per request",
    )
    p.add_argument(
        "--image-model",
        type=Path,
        metavar="VERSION_DIR",
        help="with --model mobilenet: an exported image model version (models/NAME/VERSION, "
        "model.keras + model.tflite + metadata.json) to use instead of building MobileNetV2",
    )
    p.add_argument("--quick", action="store_true", help="about a minute: 1 s points, fewer servers")
    p.add_argument(
        "--peers", action="store_true", help="also MLServer, LitServe, BentoML (own venvs)"
    )
    p.add_argument(
        "--out",
        type=Path,
        help="default: benchmarks/results (blobs), benchmarks/results/mobilenet (mobilenet)",
    )
    p.add_argument(
        "--loadgen",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="auto: wrk (installed if missing), else the Python fallback",
    )
    p.add_argument("--duration", type=int, help="seconds per point (default 8, quick 1)")
    p.add_argument("--warmup", type=int, help="warm-up seconds per server and workload (2/1)")
    p.add_argument("--no-pin", action="store_true", help="do not pin servers/load to cores")
    p.add_argument(
        "--rounds",
        type=int,
        help="rounds of the ratios measured in turns, at 16 connections, up to 4 s per turn "
        "(default 7, quick 2; 0: none)",
    )
    return p.parse_args(argv)


@dataclass(frozen=True)
class Bench:
    """What every measurement needs."""

    generator: loadgen.LoadGenerator
    pinning: machine.Pinning
    duration_s: int
    warmup_s: int
    workdir: Path


def say(message: str) -> None:
    """Progress, on stderr (stdout is the table)."""
    print(f"benchmark: {message}", file=sys.stderr, flush=True)


def check_answer(
    url: str, body: Path, headers: dict[str, str] | None = None, timeout: float = 60.0
) -> str | None:
    """One request: None if it is answered 200, else what went wrong.

    A 503 (overloaded) is retried until ``timeout``: a server that queues work may still
    be computing the previous run's backlog, with every slot taken.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = httpx.post(
                url,
                content=body.read_bytes(),
                headers=headers or loadgen.JSON,
                timeout=timeout,
            )
        except httpx.HTTPError as exc:
            return f"POST {url} failed: {exc!r}"
        if answer.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if answer.status_code != 200:
        return f"POST {url} answered {answer.status_code}: {answer.text[:200]}"
    return None


def wait_idle(url: str, body: Path, headers: dict[str, str] | None = None) -> None:
    """Wait for the answer to one request: slow servers still work off the last run's backlog.

    A load generator stops at its deadline with requests in flight; a server that
    queues work (a thread pool running ``model.predict``) keeps computing them, and
    the next measurement would start behind that queue.
    """
    check_answer(url, body, headers, timeout=IDLE_TIMEOUT_S)


def measure_load(
    server: ServerProcess, spec: plan.ServerSpec, load: plan.Load, bench: Bench
) -> list[report.Row]:
    """Warm up, then one bounded run per connection count; one row each."""
    template = report.Row(spec.key, spec.server, load.config or spec.config)
    url = server.url + load.path
    problem = check_answer(url, load.body, load.headers)
    if problem is not None:  # an error answer (or none at all): counts as one
        return [replace(template, unavailable=problem, errors=1)]
    cpus = bench.pinning.all if spec.all_cores else bench.pinning.loadgen
    rows = []
    try:
        warmup = min(max(load.connections), WARMUP_CONNECTIONS)
        bench.generator.run(url, load.body, warmup, bench.warmup_s, cpus, load.headers)
        for connections in load.connections:
            wait_idle(url, load.body, load.headers)
            cpu_before, wall_before = server.cpu_seconds(), time.monotonic()
            result = bench.generator.run(
                url, load.body, connections, bench.duration_s, cpus, load.headers
            )
            cores = (server.cpu_seconds() - cpu_before) / (time.monotonic() - wall_before)
            rss, worker_rss = server.rss_mb(), server.largest_child_rss_mb()
            rows.append(
                replace(
                    template,
                    workload=load.workload.key,
                    workload_label=load.workload.label,
                    rows=load.workload.rows,
                    connections=connections,
                    requests_per_s=result.requests_per_s,
                    rows_per_s=result.requests_per_s * load.workload.rows,
                    p50_ms=result.p50_ms,
                    p99_ms=result.p99_ms,
                    errors=result.errors,
                    rss_mb=rss,
                    rss_per_worker_mb=rss if spec.workers == 1 else worker_rss,
                    ready_s=server.ready_s,
                    server_cores=cores,
                )
            )
            say(
                f"{spec.key:28} {load.workload.label:22} c={connections:<3} "
                f"{result.requests_per_s:9.1f} req/s  p50 {result.p50_ms:8.3f} ms  "
                f"p99 {result.p99_ms:8.3f} ms  errors {result.errors}  RSS {rss:.0f} MB"
            )
    except loadgen.LoadError as exc:
        rows.append(replace(template, unavailable=f"load generator failed: {exc}"))
    return rows


def measure(spec: plan.ServerSpec, bench: Bench) -> list[report.Row]:
    """Start one server, measure each of its loads, stop it."""
    if spec.unavailable is not None:
        return [report.Row(spec.key, spec.server, spec.config, unavailable=spec.unavailable)]
    say(f"starting {spec.key}")
    try:
        server = spec.start(
            bench.workdir / f"{spec.key}.log",
            bench.pinning.all if spec.all_cores else bench.pinning.server,
        )
    except ServerFailed as exc:
        say(f"{spec.key} did not start: {exc}\n{exc.log}")
        return [report.Row(spec.key, spec.server, spec.config, unavailable=f"did not start: {exc}")]
    try:
        say(f"{spec.key} ready in {server.ready_s:.2f} s")
        return [row for load in spec.loads for row in measure_load(server, spec, load, bench)]
    finally:
        server.stop()


def service_knows_batching() -> bool:
    """Whether this checkout's service has the SERVICE_BATCHING setting."""
    probe = "from service.settings import Settings; print('batching' in Settings.model_fields)"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=plan.ROOT,
        env=plan.server_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.stdout.strip() == "True"


def notes(bench: Bench, quick: bool, rows: Sequence[report.Row], model: str) -> list[str]:
    """What a reader needs to interpret the table."""
    found = [
        "req/s and latency come from the load generator; errors = answers other than 200 "
        "(counted by wrk's Lua script: wrk's own count misses a 201 or a 302) + socket errors "
        "(connect, read, write, timeout after 10 s). Any error in any point or turn fails "
        "the run (exit status 1), whatever its speed.",
        "RSS: summed VmRSS of the server's process tree after that row's load; per worker: "
        "the same for one worker, the largest worker process for --workers 2 (the "
        "supervisor process counts in the total only).",
        "ready: from process spawn to the first 200 from the server's readiness path, polled "
        "every 10 ms (for --workers 2: the first of 20 consecutive 200s on new connections).",
    ]
    if model == "mobilenet":
        found += [
            "ratios: req/s over the baseline's req/s at the same workload and connection "
            "count; the bare-ASGI baseline does the real work with no framework: for {b64} "
            "base64 -> Pillow -> LiteRT -> float64 softmax -> orjson, for nested arrays "
            "orjson -> numpy -> LiteRT -> float64 softmax -> orjson.",
            "every server gets the same JPEG: tf.function, LitServe and BentoML as "
            '{"instances": [{"b64": ...}]}, MLServer as a V2 BYTES input holding its base64 '
            "(content_type base64); the service also as the raw body (image/jpeg), as a V2 "
            "BYTES input with the binary extension, and decoded as nested arrays "
            "(the float32 pixels' .tolist(), what a Python client sends).",
            "the batching study: SERVICE_BATCHING=on (the batcher waits up to "
            "SERVICE_BATCH_MAX_WAIT_MS, 2 ms, for a batch to fill once batches hold several "
            "requests), on with SERVICE_BATCH_MAX_WAIT_MS=0, and off; the default (auto) row "
            "is `service`.",
        ]
    else:
        found += [
            "ratios: req/s over the baseline's req/s at the same workload and connection "
            "count; for the 10,000-row workload the bare-ASGI baseline is its real pipeline "
            "(orjson -> numpy -> LiteRT -> float64 softmax -> orjson).",
            "--workers 2: the server may use both cores and the load generator is not pinned, "
            "so they compete for the same two cores.",
        ]
    if any(row.requests_per_s == 0 for row in rows):
        found.append(
            "0 req/s: no request finished within the point's duration (p50/p99 are then n/a)."
        )
    if quick:
        found.append(
            "quick mode: short points, fewer servers and points, no peers unless --peers; "
            "for smoke-testing the harness, not for quoting."
        )
    if bench.generator.fallback:
        found.append(
            "LOAD GENERATOR IS THE PYTHON FALLBACK (wrk unavailable, or --loadgen python): it "
            "saturates long before the fast servers do, so their req/s are understated."
        )
    if not service_knows_batching():
        found.append(
            "this checkout's service has no SERVICE_BATCHING setting: the batching on/off rows "
            "run the same code."
        )
    return found


@dataclass(frozen=True)
class Prepared:
    """A model's servers, ready to measure, and what the report says about the model."""

    specs: list[plan.ServerSpec]
    description: str


def prepare_tabular(args: argparse.Namespace, workdir: Path) -> Prepared:
    """Train the tabular model; the baselines, the service's configurations, the peers."""
    say("training the model into a temporary repository")
    version_dir = plan.train(workdir / "models", args.quick, workdir / "train.log")
    keras_repository = plan.keras_only_copy(version_dir, workdir / "keras-models")
    bodies = plan.write_bodies(version_dir, workdir)
    specs = plan.build_plan(version_dir, keras_repository, bodies, quick=args.quick)
    if args.peers:
        specs += peer_specs(version_dir, bodies, workdir)
    description = (
        "trained by this run with `python -m model_training --quiet"
        + (" --epochs 3`" if args.quick else "`")
        + " (4 Gaussian blobs, 2 features, Dense 12 -> 8 -> 4 softmax)"
    )
    return Prepared(specs, description)


def prepare_image(args: argparse.Namespace, workdir: Path) -> Prepared:
    """Build and export MobileNetV2 (or take --image-model); its servers and peers."""
    if args.image_model is not None:
        version_dir = args.image_model.resolve()
        # The servers serve a repository: give them one holding a copy of just this version
        # (the service refuses symbolic links inside its repository).
        target = workdir / "image-models" / version_dir.parent.name / version_dir.name
        shutil.copytree(version_dir, target)
        version_dir = target
        description = f"the exported version {args.image_model} (--image-model)"
    else:
        say("building MobileNetV2 and exporting it into a temporary repository")
        version_dir = image_plan.build_model(workdir / "image-models", workdir / "build.log")
        description = (
            "MobileNetV2 (alpha 0.35, 96x96x3, 10 classes, random weights: "
            "`benchmarks/workloads/mobilenet_model.py`), exported by this run with "
            "`python -m model_training export mobilenet.keras --name mobilenet "
            "--pixel-range -1 1 --quiet`"
        )
    bodies = image_plan.write_bodies(version_dir, workdir)
    description += (
        f"; the request image: a {bodies.jpeg_bytes}-byte JPEG (quality 90); "
        f"as nested arrays the body is {bodies.nested_bytes} bytes"
    )
    specs = image_plan.build_plan(version_dir, bodies, quick=args.quick)
    if args.peers:
        specs += image_peer_specs(version_dir, bodies, workdir)
    return Prepared(specs, description)


def measure_turns(
    suite: report.Suite, specs: Sequence[plan.ServerSpec], bench: Bench, rounds: int
) -> turns.Turns | None:
    """The suite's contenders, in turns (None when there are none).

    A contender whose server this run does not start (a peer without ``--peers``, one
    that failed to install) is left out; without the reference there are no turns.
    """
    contenders = []
    for turn in suite.turns:
        spec = next((s for s in specs if s.key == turn.key), None)
        load = (
            next((ld for ld in spec.loads if ld.workload.key == turn.workload), None)
            if spec
            else None
        )
        if spec is not None and spec.unavailable is None and load is not None:
            contenders.append(turns.Contender(turn.label, spec, load, turn.connections))
    if rounds <= 0 or len(contenders) < 2 or contenders[0].label != suite.turns[0].label:
        return None
    say(f"measuring {', '.join(c.label for c in contenders)} in turns, {rounds} rounds")
    return turns.take_turns(
        contenders,
        rounds=rounds,
        duration_s=min(bench.duration_s, TURN_S),
        connections=16,
        generator=bench.generator,
        pinning=bench.pinning,
        workdir=bench.workdir,
        say=say,
        check=check_answer,
    )


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status: 1 when any point or turn saw an error
    answer (not 200, or a socket error), whatever the speeds; 0 otherwise (a MISS on a
    speed target, or a peer not available, does not fail the run)."""
    args = parse_args(argv)
    if args.image_model is not None and args.model != "mobilenet":
        print("benchmark: --image-model needs --model mobilenet", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    command = shlex.join(["python", *(sys.argv if argv is None else ["benchmarks/run.py", *argv])])
    default_out = DEFAULT_OUT if args.model == "blobs" else DEFAULT_OUT / args.model
    out = (args.out or default_out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    duration = args.duration or (1 if args.quick else 8)
    warmup = args.warmup or (1 if args.quick else 2)
    suite = report.SUITES[args.model]
    load_before = machine.load_average()
    with tempfile.TemporaryDirectory(prefix="softmax-bench-") as tmp:
        workdir = Path(tmp)
        setup_log: list[str] = []
        generator = loadgen.choose(args.loadgen, workdir, setup_log)
        say(f"load generator: {generator.name}")
        prepare = prepare_tabular if args.model == "blobs" else prepare_image
        prepared = prepare(args, workdir)
        # The service as installed: ``pip install`` and ``make install`` compile its
        # bytecode; a checkout run with PYTHONDONTWRITEBYTECODE=1 would compile every
        # module at every start (benchmarks/startup.py).
        compileall.compile_dir(plan.ROOT / "service", quiet=1)
        machine_info = machine.machine_info(plan.ROOT)  # before the harness pins itself
        pinning = machine.plan_pinning(not args.no_pin)
        machine.pin(os.getpid(), pinning.loadgen)  # the harness stays off the servers' core
        bench = Bench(generator, pinning, duration, warmup, workdir)
        rows = [row for spec in prepared.specs for row in measure(spec, bench)]
        rounds = args.rounds if args.rounds is not None else (2 if args.quick else 7)
        in_turns = measure_turns(suite, prepared.specs, bench, rounds)
        run_notes = [*setup_log, *notes(bench, args.quick, rows, args.model)]
    report.add_ratios(rows, suite.ratios)
    result = report.Report(
        command=command,
        mode="quick" if args.quick else "full",
        machine=machine_info,
        setup={
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "load generator": f"{generator.name}, 1 thread"
            if not generator.fallback
            else generator.name,
            "pinning": pinning.describe(),
            "bytecode": "the service's compiled first, as an install does",
            "timing": f"per server and workload {warmup} s warm-up (at up to "
            f"{WARMUP_CONNECTIONS} connections), then {duration} s per point, each started "
            "once the server answers a request",
            "machine load": f"1-minute load average {load_before} before the run, "
            f"{machine.load_average()} after (anything above 0 is other processes: noise)",
            "model": prepared.description,
        },
        notes=run_notes,
        rows=rows,
        model=args.model,
        turns=in_turns,
    )
    result.targets = suite.targets(rows, in_turns)
    text = report.markdown(result)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps(report.as_json(result), indent=2) + "\n")
    report.chart(result, out / "throughput.png")
    sys.stdout.write(text)
    say(f"wrote {out / 'results.md'}, {out / 'results.json'}, {out / 'throughput.png'}")
    if result.failed:
        say(f"FAILED: {result.error_answers} error answers in this run (see the report)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
