"""Monitoring's cost to the live path: one-row throughput with monitoring on and off, in turns.

    python benchmarks/monitoring.py              # 7 rounds of 4 s at 1, 16 and 64 connections
    python benchmarks/monitoring.py --quick      # the model trained 3 epochs, 2 rounds of 2 s
    python benchmarks/monitoring.py --rounds 11 --connections 16 64

Monitoring is two things the data plane does after each prediction (``service/dataplane.py``):
the live drift window (``service/operations/monitor.py``) writes the answer's row, predicted
class, confidence and entropy into the version's ring buffers (``SERVICE_MONITOR_WINDOW``
rows, default 1000), and the feedback store (``service/operations/feedback.py``) keeps its
probabilities by request id, for a true label reported later (``SERVICE_FEEDBACK_MAX_BYTES``,
off by default: opt-in). The default tabular model (four Gaussian blobs) is trained
once with the project's command into a temporary repository; two servers of the same build
serve it, started as users start them on 127.0.0.1 and pinned to one core, the load
generator on the other: one with both off (``SERVICE_MONITOR_WINDOW=0``,
``SERVICE_FEEDBACK_MAX_BYTES=0``), one with the defaults (the drift window on, feedback
off). A first run with feedback on too (64 MiB) measured 0.89x, 0.89x and 0.90x at 1, 16
and 64 connections: that is why feedback is opt-in.

Before the turns, each server is checked over HTTP: a row answered 200, ``GET
/models/blobs/monitor`` monitored (one row in its window) or not, and a true label for that
answer refused (403: feedback off, in both). Then the two servers take turns
(``harness/turns.py``, ``harness/onoff.py``) under one-row native ``/predict`` requests, fresh
servers for each connection count. When a count's turns are over, the monitored server's
``GET /models/blobs/monitor`` is read, and printed as a sanity line: its window full, every
answer the load generator counted seen, the predicted mix's PSI and the estimated accuracy.

Prints a markdown table (req/s, p50, p99 and the server's CPU µs per request, off and on, the
paired on/off ratios) and the target of issue 27: throughput with monitoring on within 5 % of
off (a paired median ratio of at least 0.95x) at every connection count. A run with any error
answer (a check that fails, a turn with an answer other than 200 or a socket error) is FAIL
whatever its speed, and exits with 1; a slow number is FAIL and nothing more (exit 0).
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from harness import loadgen, machine, onoff, plan
from harness.onoff import WatchedSpec
from harness.plan import Load
from run import check_answer, say

MODEL = "blobs"
PATH = "/predict"
OFF, ON = "monitoring off", "monitoring on"
#: Both halves of monitoring off; "on" is the defaults (no SERVICE_* setting at all).
OFF_ENV = {"SERVICE_MONITOR_WINDOW": "0", "SERVICE_FEEDBACK_MAX_BYTES": "0"}
#: Throughput with monitoring on over off, paired per round (issue 27: within 5 %).
TARGET = 0.95


def train(workdir: Path, quick: bool) -> Path:
    """The default model, trained once into a temporary repository; its version's directory."""
    repository = workdir / "models"
    argv = [sys.executable, "-m", "model_training", "--model-repository", str(repository)]
    argv += ["--quiet", *(["--epochs", "3", "--no-report"] if quick else [])]
    say("training the default model")
    plan.run_logged(argv, workdir / "training.log", "training")
    return plan.newest_version(repository, "training")


# --- the servers -----------------------------------------------------------------------


def monitor_summary(url: str) -> dict[str, Any]:
    """``GET /models/blobs/monitor``."""
    answer = httpx.get(f"{url}/models/{MODEL}/monitor", timeout=10)
    answer.raise_for_status()
    summary: dict[str, Any] = answer.json()
    return summary


def read_monitor(url: str) -> dict[str, Any] | None:
    """The monitored server's summary, read just before the turns stop it; None if it
    cannot be read."""
    try:
        return monitor_summary(url)
    except httpx.HTTPError as exc:
        say(f"could not read GET /models/{MODEL}/monitor: {exc!r}")
        return None


def server_spec(repository: Path, load: Load, monitored: bool) -> WatchedSpec:
    """The service on ``repository`` as users start it, monitoring off or the defaults
    (whose summary is read after the turns)."""
    return WatchedSpec(
        "monitoring-on" if monitored else "monitoring-off",
        "service",
        "defaults: drift window of 1000 rows, feedback off"
        if monitored
        else ", ".join(f"{k}={v}" for k, v in OFF_ENV.items()),
        plan.service(repository),
        [load],
        env={} if monitored else dict(OFF_ENV),
        ready_timeout_s=plan.NO_TENSORFLOW_READY_TIMEOUT_S,
        read=read_monitor if monitored else None,
    )


def check_servers(
    off: WatchedSpec, on: WatchedSpec, body: Path, pinning: machine.Pinning, workdir: Path
) -> list[str]:
    """Each server answers a row with a 200; its monitor and its feedback store are on or
    off as set. The problems found."""
    problems: list[str] = []
    for spec, monitored in ((off, False), (on, True)):
        with contextlib.ExitStack() as stack:
            server = spec.start(workdir / f"check-{spec.key}.log", pinning.server)
            stack.callback(server.stop)
            request_id = f"check-{spec.key}"
            headers = {**loadgen.JSON, "X-Request-ID": request_id}
            answer = httpx.post(
                server.url + PATH, content=body.read_bytes(), headers=headers, timeout=60
            )
            if answer.status_code != 200:
                problems.append(f"{spec.key}: answered {answer.status_code}: {answer.text[:200]}")
                continue
            summary = monitor_summary(server.url)
            seen = summary.get("window_rows") == 1 if monitored else "window_rows" not in summary
            if summary.get("monitored") is not monitored or not seen:
                problems.append(f"{spec.key}: GET /models/{MODEL}/monitor shows {summary}")
            label = httpx.post(
                f"{server.url}/models/{MODEL}/feedback",
                json={"request_id": request_id, "labels": [0]},
                timeout=10,
            )
            expected = 403  # feedback is off by default
            if label.status_code != expected:
                problems.append(
                    f"{spec.key}: a true label for its answer was answered {label.status_code}, "
                    f"expected {expected} (feedback off): "
                    f"{label.text[:200]}"
                )
    return problems


# --- the report ------------------------------------------------------------------------


def summary_problem(point: onoff.Point) -> str | None:
    """What is off in the monitored server's summary after the turns (None: nothing)."""
    summary, counted = point.found, point.requests[ON]
    if summary is None:
        return "not read"
    if not summary.get("monitored"):
        return "not monitored"
    if summary.get("window_rows") != summary.get("window"):
        return "the window is not full"
    if (summary.get("rows_seen") or 0) < counted:
        return "fewer rows seen than answers counted"
    return None


def summary_line(point: onoff.Point) -> str:
    """The monitored server's ``GET /models/blobs/monitor`` after one count's turns."""
    summary, conns = point.found or {}, point.connections
    problem = summary_problem(point)
    psi, accuracy = summary.get("predicted_mix_psi"), summary.get("estimated_accuracy")
    return (
        f"- {conns} connection{'s' if conns > 1 else ''}: "
        f"window_rows {summary.get('window_rows', 0):,} of {summary.get('window', 0):,}, "
        f"rows_seen {summary.get('rows_seen') or 0:,} "
        f"(answers the load generator counted: {point.requests[ON]:,}), "
        f"predicted_mix_psi {'n/a' if psi is None else f'{psi:.3f}'}, "
        f"estimated_accuracy {'n/a' if accuracy is None else f'{accuracy:.4f}'}: "
        f"{'ok' if problem is None else f'UNEXPECTED ({problem})'}"
    )


def print_report(points: Sequence[onoff.Point], generator: onoff.Recorder, pinning: str) -> bool:
    """The table, the verdict and the sanity lines; True if the run failed on an error answer."""
    failed = onoff.print_table(points)
    passed = onoff.passed(points, failed)
    counts = ", ".join(str(p.connections) for p in points)
    print(
        f"\nTarget (issue 27), throughput with monitoring on within {1 - TARGET:.0%} of off "
        f"at {counts} connections (paired median of on/off req/s ≥ {TARGET:.2f}x), and no "
        f"error answer: **{'PASS' if passed else 'FAIL'}**"
    )
    print(f"\n### The monitored server's GET /models/{MODEL}/monitor after each count's turns\n")
    print("\n".join(summary_line(point) for point in points))
    print(
        "\nUnder load every request is the same row, so the predicted mix is one class against "
        "the training data's four: a large PSI is what should show. rows_seen also counts the "
        "checks before each turn."
    )
    onoff.print_turns(points, generator, pinning)
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison; returns the exit status: 1 on any error answer."""
    args = onoff.parse_args(argv, "python benchmarks/monitoring.py", __doc__)
    with tempfile.TemporaryDirectory(prefix="softmax-monitoring-") as tmp:
        workdir = Path(tmp)
        setup: list[str] = []
        generator = onoff.Recorder(loadgen.choose("auto", workdir, setup))
        for line in setup:
            say(line)
        version_dir = train(workdir, args.quick)
        body = plan.write_bodies(version_dir, workdir).one_row
        load = Load(plan.ONE_ROW, PATH, body, tuple(args.connections))
        repository = version_dir.parents[1]
        off = server_spec(repository, load, monitored=False)
        on = server_spec(repository, load, monitored=True)
        pinning = machine.plan_pinning()
        machine.pin(0, pinning.loadgen)  # the script stays off the servers' core
        say("checking both servers")
        problems = check_servers(off, on, body, pinning, workdir)
        for problem in problems:
            say(f"FAILED: {problem}")
        if problems:
            print(f"**RUN FAILED**: {'; '.join(problems)}")
            return 1
        points = onoff.measure(
            onoff.Comparison(OFF, ON, TARGET),
            off,
            on,
            load,
            rounds=args.rounds,
            duration_s=args.duration,
            connections=args.connections,
            generator=generator,
            pinning=pinning,
            workdir=workdir,
            say=say,
            check=check_answer,
        )
    failed = print_report(points, generator, pinning.describe())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
