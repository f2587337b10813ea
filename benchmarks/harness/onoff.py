"""A setting's cost to the service: two servers of one build, the setting off and on, in turns.

``shadow.py`` (a shadow version) and ``monitoring.py`` (the live window and the feedback
store) measure this way. Each connection count gets fresh servers and its own turns
(``turns.take_turns``, off the reference); the load generator is wrapped in a ``Recorder``,
which keeps every run's whole result, so each turn's p99 is known too. A ``WatchedSpec``
remembers the server it started last and can read what that server recorded under load
just before the turns stop it. The report is one table, a row per connection count:
req/s, p50, p99 and the server's CPU µs per request, off and on, the paired on/off ratio
and its target; a count whose turns saw an error answer is FAIL whatever its speed.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import loadgen, machine, report, turns
from harness.plan import Load, ServerSpec
from harness.processes import ServerProcess, free_port


def parse_args(argv: Sequence[str] | None, prog: str, doc: str | None) -> argparse.Namespace:
    """The command line of an on/off script: ``--rounds``, ``--duration``, ``--connections``,
    ``--quick``; the description is the first paragraph of ``doc``."""
    p = argparse.ArgumentParser(prog=prog, description=(doc or "").split("\n\n", 1)[0])
    p.add_argument("--rounds", type=int, help="turns each (default 7; 2 with --quick)")
    p.add_argument("--duration", type=int, help="seconds per turn (default 4; 2 with --quick)")
    p.add_argument(
        "--connections",
        type=int,
        nargs="+",
        default=[1, 16, 64],
        help="connection counts, each measured in its own turns (default 1 16 64)",
    )
    p.add_argument("--quick", action="store_true", help="train 3 epochs; 2 rounds of 2 s")
    args = p.parse_args(argv)
    args.rounds = args.rounds if args.rounds is not None else 2 if args.quick else 7
    args.duration = args.duration if args.duration is not None else 2 if args.quick else 4
    return args


# --- the servers -----------------------------------------------------------------------


class WatchedServer(ServerProcess):
    """A server that is read (resumed) just before it is stopped: ``read(url)``'s answer is
    kept as ``found``. The turns stop their servers on the way out, so this is where what a
    server recorded under load can still be asked for."""

    read: Callable[[str], Any] | None = None
    found: Any = None

    def stop(self, timeout: float = 20.0) -> None:
        """Read (if asked, and the server got ready), then stop as any server."""
        if self.read is not None and not math.isnan(self.ready_s):  # it did get ready
            self.resume()
            self.found = self.read(self.url)
        super().stop(timeout)


@dataclass
class WatchedSpec(ServerSpec):
    """A server configuration whose servers are ``WatchedServer``s reading with ``read``
    (None: nothing is read); remembers the server it started last."""

    read: Callable[[str], Any] | None = field(default=None, repr=False)
    latest: WatchedServer | None = field(default=None, repr=False)

    def start(self, log: Path, cpus: frozenset[int] | None) -> WatchedServer:
        """As ``ServerSpec.start``, as a ``WatchedServer``."""
        port = free_port()
        server = WatchedServer.start(
            self.command(port),
            port=port,
            env=self.environment(port),
            cwd=self.cwd,
            log=log,
            cpus=cpus,
            ready_path=self.ready_path,
            ready_timeout=self.ready_timeout_s,
            workers=self.workers,
        )
        assert isinstance(server, WatchedServer)
        server.read = self.read
        self.latest = server
        return server


class Recorder:
    """The load generator, keeping every run's whole result by URL: the turns keep each
    turn's req/s and p50, this also its p99."""

    def __init__(self, inner: loadgen.LoadGenerator) -> None:
        self.inner = inner
        self.name = inner.name
        self.fallback = inner.fallback
        self.runs: dict[str, list[loadgen.LoadResult]] = {}

    def run(
        self,
        url: str,
        body: Path,
        connections: int,
        duration_s: int,
        cpus: frozenset[int] | None,
        headers: Mapping[str, str] | None = None,
    ) -> loadgen.LoadResult:
        """One run of the load generator, recorded."""
        result = self.inner.run(url, body, connections, duration_s, cpus, headers)
        self.runs.setdefault(url, []).append(result)
        return result

    def turns_of(self, url: str, rates: list[float]) -> list[loadgen.LoadResult]:
        """The results of the turns whose req/s the turns kept (``rates``): the runs on
        ``url`` after its warm-up."""
        found = self.runs.get(url, [])[1 : 1 + len(rates)]
        if [r.requests_per_s for r in found] != rates:
            raise RuntimeError(f"the recorded runs on {url} are not the turns' runs")
        return found


# --- the measurement -------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """The two sides' labels, and the least paired on/off req/s ratio that passes."""

    off: str
    on: str
    target: float


@dataclass
class Point:
    """One connection count's turns, each turn's p99, the requests the load generator
    counted on each side's server (warm-up and turns), and what the "on" side's server
    was read to hold just before it was stopped (None: nothing read)."""

    comparison: Comparison
    connections: int
    taken: turns.Turns
    p99_ms: dict[str, list[float]]
    requests: dict[str, int]
    found: Any

    def ratio(self) -> float | None:
        """On over off in req/s, the median of the per-round ratios."""
        return self.taken.paired(self.comparison.on, self.comparison.off)

    def p99_ratio(self) -> float | None:
        """On over off in p99, the median of the per-round ratios."""
        on, off = self.comparison.on, self.comparison.off
        pairs = zip(self.p99_ms[on], self.p99_ms[off], strict=False)
        found = [a / b for a, b in pairs if b > 0]
        return statistics.median(found) if found else None

    @property
    def errors(self) -> int:
        """Error answers in these turns."""
        return self.taken.error_answers

    def verdict(self) -> str:
        """PASS, or FAIL and why."""
        ratio = self.ratio()
        if self.errors or self.taken.dropped:
            return "FAIL (" + "; ".join(f"{k} {v}" for k, v in self.taken.dropped.items()) + ")"
        if ratio is None:
            return "FAIL (no round measured both)"
        return "PASS" if ratio >= self.comparison.target else "FAIL"


def measure(
    comparison: Comparison,
    off: WatchedSpec,
    on: WatchedSpec,
    load: Load,
    *,
    rounds: int,
    duration_s: int,
    connections: Sequence[int],
    generator: Recorder,
    pinning: machine.Pinning,
    workdir: Path,
    say: Callable[[str], None],
    check: Callable[[str, Path, dict[str, str] | None], str | None],
) -> list[Point]:
    """Each connection count's turns, on fresh servers: ``off`` (the reference) and ``on``."""
    points = []
    for count in connections:
        generator.runs.clear()  # a port may be used again by the next servers
        taken = turns.take_turns(
            [turns.Contender(comparison.off, off, load), turns.Contender(comparison.on, on, load)],
            rounds=rounds,
            duration_s=duration_s,
            connections=count,
            generator=generator,
            pinning=pinning,
            workdir=workdir,
            say=say,
            check=check,
        )
        p99, requests = {}, {}
        for label, spec in ((comparison.off, off), (comparison.on, on)):
            url = spec.latest.url + load.path if spec.latest is not None else ""
            p99[label] = [r.p99_ms for r in generator.turns_of(url, taken.rates[label])]
            requests[label] = sum(r.requests for r in generator.runs.get(url, []))
        found = on.latest.found if on.latest is not None else None
        points.append(Point(comparison, count, taken, p99, requests, found))
    return points


# --- the report ------------------------------------------------------------------------


def median(values: Sequence[float]) -> float | None:
    """The median, or None of nothing."""
    return statistics.median(values) if values else None


def main_table(points: Sequence[Point]) -> list[str]:
    """Off against on, one row per connection count."""
    body = []
    target = points[0].comparison.target if points else math.nan
    for point in points:
        taken, off, on = point.taken, point.comparison.off, point.comparison.on
        ratios = taken.ratios(on, off)
        body.append(
            [
                str(point.connections),
                report.fmt(taken.median(off)),
                report.fmt(taken.median(on)),
                report.fmt(point.ratio(), "ratio"),
                f"{report.fmt(min(ratios), 'ratio')} to {report.fmt(max(ratios), 'ratio')}"
                if ratios
                else report.NA,
                report.fmt(median(taken.p50_ms[off])),
                report.fmt(median(taken.p50_ms[on])),
                report.fmt(median(point.p99_ms[off])),
                report.fmt(median(point.p99_ms[on])),
                report.fmt(point.p99_ratio(), "ratio"),
                report.fmt(median(taken.cpu_us[off])),
                report.fmt(median(taken.cpu_us[on])),
                point.verdict(),
            ]
        )
    header = (
        "conns",
        "req/s off",
        "req/s on",
        "on/off req/s (paired median)",
        "per round",
        "p50 ms off",
        "p50 ms on",
        "p99 ms off",
        "p99 ms on",
        "on/off p99",
        "CPU µs/req off",
        "CPU µs/req on",
        f"target ≥ {target:.2f}x",
    )
    return report.table_lines(header, body)


def print_table(points: Sequence[Point]) -> bool:
    """The errors line (first) and the main table; True if the run failed on an error answer."""
    errors = sum(p.errors for p in points)
    dropped = [f"{p.connections} connections: {p.taken.dropped}" for p in points if p.taken.dropped]
    failed = bool(errors or dropped)
    if failed:
        print(f"**RUN FAILED: {errors} error answers** ({'; '.join(dropped)})\n")
    else:
        print("**No errors**: every answer in every turn was a 200.\n")
    print("\n".join(main_table(points)))
    return failed


def passed(points: Sequence[Point], failed: bool) -> bool:
    """The target: no error answer, and every connection count's verdict PASS."""
    return not failed and all(p.verdict() == "PASS" for p in points)


def print_turns(points: Sequence[Point], generator: Recorder, pinning: str) -> None:
    """Each connection count's turns, and how they were measured."""
    for point in points:
        print(f"\n### {point.connections} connection{'s' if point.connections > 1 else ''}\n")
        print("\n".join(report.turns_section(point.taken)))
    print(f"\n{generator.name}, {pinning}, load average {machine.load_average()} at the end")
