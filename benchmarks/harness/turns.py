"""Contenders measured in turns: the ratios a target rests on, with the noise spread over both.

On a shared machine, back-to-back points drift by more than some targets' margins
(10-40 % here, against a 1.2x goal or a "forms at least as fast" goal of a few per
cent). So the ratios that decide such targets are also measured in turns: every
contender's server is started once (all pinned to the server core), then each round
puts the same load on each contender, a few seconds apart. Every other server
is paused (SIGSTOP) during a turn: some servers poll while idle, and would take CPU
from the one measured. Each round starts one contender later than the one before
(round 1: A B C, round 2: B C A, ...), so no contender always goes first: a turn's
place in its round (right after a resume, after another server's turn) weighs on each
alike. A round's contenders share the machine's state, so the median of the per-round
ratios (paired) is far steadier than a ratio of two single points. The
server's CPU time per request (its process tree's, from ``/proc``) is kept too: it
tells "the server got less of its core" (req/s drops, CPU per request does not)
from "the core ran slower" (both move).
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness import loadgen, machine, plan
from harness.processes import ServerFailed, ServerProcess


@dataclass(frozen=True)
class Contender:
    """One side of a comparison: a label, the server it runs on and the load it gets."""

    label: str
    spec: plan.ServerSpec
    load: plan.Load
    connections: int | None = None  # None: the turns' own count


@dataclass
class Turns:
    """Each contender's req/s, p50 and server CPU µs per request, round by round."""

    reference: str  # the label every ratio is taken against
    labels: list[str]
    rounds: int
    duration_s: int
    connections: int  # the load's connections, unless ``connections_of`` says otherwise
    rates: dict[str, list[float]] = field(default_factory=dict)
    p50_ms: dict[str, list[float]] = field(default_factory=dict)
    cpu_us: dict[str, list[float]] = field(default_factory=dict)
    connections_of: dict[str, int] = field(default_factory=dict)  # each contender's
    orders: list[list[str]] = field(default_factory=list)  # each round's order of turns
    unavailable: str | None = None  # why the turns could not be measured

    def ratios(self, label: str, over: str | None = None) -> list[float]:
        """``label``'s req/s over ``over``'s (default: the reference's), one per round."""
        base_label = over or self.reference
        if self.unavailable is not None or {label, base_label} - set(self.rates):
            return []
        return [
            value / base
            for value, base in zip(self.rates[label], self.rates[base_label], strict=True)
            if base > 0
        ]

    def latency_ratios(self, label: str, over: str) -> list[float]:
        """``label``'s p50 over ``over``'s, one per round."""
        if self.unavailable is not None or {label, over} - set(self.p50_ms):
            return []
        return [
            value / base
            for value, base in zip(self.p50_ms[label], self.p50_ms[over], strict=True)
            if base > 0
        ]

    def paired_latency(self, label: str, over: str) -> float | None:
        """The median of the per-round p50 ratios (None if either was not measured)."""
        found = self.latency_ratios(label, over)
        return statistics.median(found) if found else None

    def paired(self, label: str, over: str | None = None) -> float | None:
        """The median of the per-round ratios to ``over`` (default: the reference), or
        None if either was not measured."""
        found = self.ratios(label, over)
        return statistics.median(found) if found else None

    def wins(self, label: str, over: str | None = None) -> int:
        """In how many rounds ``label`` served at least as many req/s as ``over``."""
        return sum(ratio >= 1 for ratio in self.ratios(label, over))

    def median(self, label: str) -> float | None:
        """``label``'s median req/s (None if not measured)."""
        found = self.rates.get(label) if self.unavailable is None else None
        return statistics.median(found) if found else None

    def cpu_ratio(self, label: str, over: str | None = None) -> float | None:
        """``over``'s (default: the reference's) median CPU per request over ``label``'s
        (above 1: ``label`` is cheaper)."""
        base = self.cpu_us.get(over or self.reference)
        if self.unavailable is not None or not self.cpu_us.get(label) or not base:
            return None
        own = statistics.median(self.cpu_us[label])
        return statistics.median(base) / own if own > 0 else None

    def describe(self) -> str:
        """How the turns were taken, for a target's note."""
        return f"in turns: median of {self.rounds} paired rounds of {self.duration_s} s"


def rotated(items: Sequence[Contender], start: int) -> list[Contender]:
    """``items`` in order from ``start`` (modulo their number), wrapping around."""
    cut = start % len(items) if items else 0
    return [*items[cut:], *items[:cut]]


def take_turns(
    contenders: Sequence[Contender],
    *,
    rounds: int,
    duration_s: int,
    connections: int,
    generator: loadgen.LoadGenerator,
    pinning: machine.Pinning,
    workdir: Path,
    say: Callable[[str], None],
    check: Callable[[str, Path, dict[str, str] | None], str | None],
) -> Turns:
    """Start each contender's server once, warm every load, then measure ``rounds`` rounds.

    ``check`` answers one request (None when it was a 200), and is also used to wait
    until a server has worked off the previous turn's backlog. The first contender is
    the reference.
    """
    labels = [c.label for c in contenders]
    turns = Turns(labels[0], labels, rounds, duration_s, connections)
    turns.rates = {label: [] for label in labels}
    turns.p50_ms = {label: [] for label in labels}
    turns.cpu_us = {label: [] for label in labels}
    turns.connections_of = {c.label: c.connections or connections for c in contenders}
    with contextlib.ExitStack() as stack:
        servers: dict[str, ServerProcess] = {}
        for contender in contenders:
            spec = contender.spec
            if spec.key in servers:
                continue
            if spec.unavailable is not None:
                turns.unavailable = f"{spec.key}: {spec.unavailable}"
                return turns
            try:
                server = spec.start(workdir / f"turns-{spec.key}.log", pinning.server)
            except ServerFailed as exc:
                turns.unavailable = f"{spec.key} did not start: {exc}"
                return turns
            stack.callback(server.stop)
            servers[spec.key] = server
        for contender in contenders:  # each answers, and is warm
            url = servers[contender.spec.key].url + contender.load.path
            problem = check(url, contender.load.body, contender.load.headers)
            if problem is not None:
                turns.unavailable = f"{contender.label}: {problem}"
                return turns
            conns = turns.connections_of[contender.label]
            generator.run(
                url, contender.load.body, conns, 1, pinning.loadgen, contender.load.headers
            )
        for server in servers.values():
            server.pause()
        for round_ in range(1, rounds + 1):
            order = rotated(contenders, round_ - 1)
            turns.orders.append([c.label for c in order])
            for contender in order:
                server = servers[contender.spec.key]
                load = contender.load
                url = server.url + load.path
                server.resume()
                check(url, load.body, load.headers)  # the previous turn's backlog is done
                before = server.cpu_seconds()
                conns = turns.connections_of[contender.label]
                result = generator.run(
                    url, load.body, conns, duration_s, pinning.loadgen, load.headers
                )
                used = (server.cpu_seconds() - before) / max(result.requests, 1) * 1e6
                server.pause()
                if result.errors:
                    turns.unavailable = f"{contender.label}: {result.errors} errors in a turn"
                    return turns
                turns.rates[contender.label].append(result.requests_per_s)
                turns.p50_ms[contender.label].append(result.p50_ms)
                turns.cpu_us[contender.label].append(used)
                say(
                    f"turns, round {round_}: {contender.label:24} "
                    f"@{conns:<3} {result.requests_per_s:9.1f} req/s, p50 {result.p50_ms:7.2f} ms, "
                    f"{used:7.1f} µs CPU per request"
                )
    return turns
