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

A contender that fails (its server does not start, it does not answer its check, or one
of its turns sees an error answer: anything but a 200, or a socket error) is dropped
from the remaining rounds, its partial round discarded, and the others go on. A ratio
counts only the rounds in which both its contenders were measured: once the reference
is dropped, the ratios to it keep the rounds before.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from harness import loadgen, machine, plan
from harness.processes import ServerFailed, ServerProcess


@dataclass(frozen=True)
class Contender:
    """One side of a comparison: a label, the server it runs on and the load it gets."""

    label: str
    spec: plan.ServerSpec
    load: plan.Load
    connections: int | None = None  # None: the turns' own count


#: The per-round series a ratio can be taken of: req/s, or p50 latency.
Series = Literal["rates", "p50_ms"]


@dataclass
class Turns:
    """Each contender's req/s, p50 and server CPU µs per request, round by round.

    A contender is measured in every round until it is dropped (its server did not start
    or did not answer its check, or a turn saw an error answer): each of its lists holds
    its rounds 1 to n in order, n the rounds it completed, so two contenders were both
    measured in the first min(n, m) rounds. A dropped contender's partial round is not kept.
    """

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
    dropped: dict[str, str] = field(default_factory=dict)  # label -> why, and from when
    #: label -> the error answers (not 200, or socket errors) that dropped it
    errors: dict[str, int] = field(default_factory=dict)

    def ratios(self, label: str, over: str | None = None, series: Series = "rates") -> list[float]:
        """``label``'s req/s (or p50) over ``over``'s (default: the reference's), one per round
        both were measured in."""
        values = self.p50_ms if series == "p50_ms" else self.rates
        own, base = values.get(label), values.get(over or self.reference)
        if not own or not base:
            return []
        # Both lists start at round 1: zip stops at the last round both were measured in.
        return [value / b for value, b in zip(own, base, strict=False) if b > 0]

    def paired(self, label: str, over: str | None = None, series: Series = "rates") -> float | None:
        """The median of the per-round ratios to ``over`` (default: the reference), or
        None if no round measured both."""
        found = self.ratios(label, over, series)
        return statistics.median(found) if found else None

    def wins(self, label: str, over: str | None = None) -> int:
        """In how many rounds ``label`` served at least as many req/s as ``over``."""
        return sum(ratio >= 1 for ratio in self.ratios(label, over))

    def median(self, label: str) -> float | None:
        """``label``'s median req/s over the rounds it was measured in (None if none)."""
        found = self.rates.get(label)
        return statistics.median(found) if found else None

    def cpu_ratio(self, label: str, over: str | None = None) -> float | None:
        """``over``'s (default: the reference's) median CPU per request over ``label``'s
        (above 1: ``label`` is cheaper), in the rounds both were measured in."""
        own, base = self.cpu_us.get(label) or [], self.cpu_us.get(over or self.reference) or []
        both = min(len(own), len(base))
        if not both:
            return None
        mine = statistics.median(own[:both])
        return statistics.median(base[:both]) / mine if mine > 0 else None

    @property
    def error_answers(self) -> int:
        """Error answers seen in the turns (each dropped the contender that got them)."""
        return sum(self.errors.values())

    def error_notes(self, *labels: str | None) -> list[str]:
        """Which of ``labels`` got error answers in the turns, and when."""
        return [
            f"{label} in the turns, {self.dropped[label]}"
            for label in dict.fromkeys(labels)
            if label is not None and self.errors.get(label)
        ]

    def describe(
        self, label: str | None = None, over: str | None = None, series: Series = "rates"
    ) -> str:
        """How the turns were taken, for a target's note (on ``label`` over ``over``: how
        many rounds measured both, and which of them was dropped)."""
        count = self.rounds if label is None else len(self.ratios(label, over, series))
        text = f"in turns: median of {count} paired round{'' if count == 1 else 's'}"
        text += f" of {self.duration_s} s"
        if label is None:
            return text
        gone = [
            f"{name} dropped {self.dropped[name]}"
            for name in dict.fromkeys((label, over or self.reference))
            if name in self.dropped
        ]
        return f"{text} (of {self.rounds}: {'; '.join(gone)})" if gone else text


def rotated(items: Sequence[Contender], start: int) -> list[Contender]:
    """``items`` in order from ``start`` (modulo their number), wrapping around."""
    cut = start % len(items) if items else 0
    return [*items[cut:], *items[:cut]]


@dataclass(frozen=True)
class _Turn:
    """One contender's turn: what it measured, or why it is dropped."""

    result: loadgen.LoadResult | None = None
    cpu_us: float = 0.0
    problem: str | None = None  # why the contender leaves the turns
    errors: int = 0  # error answers behind ``problem``


def _one_turn(
    contender: Contender,
    server: ServerProcess,
    connections: int,
    duration_s: int,
    generator: loadgen.LoadGenerator,
    pinning: machine.Pinning,
    check: Callable[[str, Path, dict[str, str] | None], str | None],
) -> _Turn:
    """Resume the contender's server, wait for its backlog, put the load on it, pause it."""
    load = contender.load
    url = server.url + load.path
    server.resume()
    try:
        problem = check(url, load.body, load.headers)  # the previous turn's backlog is done
        if problem is not None:
            return _Turn(problem=problem, errors=1)
        before = server.cpu_seconds()
        try:
            result = generator.run(
                url, load.body, connections, duration_s, pinning.loadgen, load.headers
            )
        except loadgen.LoadError as exc:
            return _Turn(problem=f"load generator failed: {exc}")
        used = (server.cpu_seconds() - before) / max(result.requests, 1) * 1e6
    finally:
        server.pause()
    if result.errors:
        what = "errors (answers other than 200, or socket errors)"
        return _Turn(problem=f"{result.errors} {what} in its turn", errors=result.errors)
    return _Turn(result, used)


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
    the reference. A contender whose server does not start, whose check fails, or whose
    turn sees an error answer is dropped from the remaining rounds (``Turns.dropped``
    says why, ``Turns.errors`` counts the error answers) and the others go on; the
    rounds stop early when fewer than two contenders are left.
    """
    labels = [c.label for c in contenders]
    turns = Turns(labels[0], labels, rounds, duration_s, connections)
    turns.rates = {label: [] for label in labels}
    turns.p50_ms = {label: [] for label in labels}
    turns.cpu_us = {label: [] for label in labels}
    turns.connections_of = {c.label: c.connections or connections for c in contenders}

    def drop(label: str, reason: str, errors: int = 0) -> None:
        turns.dropped[label] = reason
        if errors:
            turns.errors[label] = errors
        say(f"turns: {label} is dropped from the remaining rounds: {reason}")

    with contextlib.ExitStack() as stack:
        servers: dict[str, ServerProcess] = {}
        missing: dict[str, str] = {}  # spec key -> why its server is not there
        for contender in contenders:
            spec = contender.spec
            if spec.key not in servers and spec.key not in missing:
                if spec.unavailable is not None:
                    missing[spec.key] = f"not available: {spec.unavailable}"
                else:
                    try:
                        server = spec.start(workdir / f"turns-{spec.key}.log", pinning.server)
                    except ServerFailed as exc:
                        missing[spec.key] = f"did not start: {exc}"
                    else:
                        stack.callback(server.stop)
                        servers[spec.key] = server
            if spec.key in missing:
                drop(contender.label, missing[spec.key])
        for contender in contenders:  # each answers, and is warm
            if contender.label in turns.dropped:
                continue
            url = servers[contender.spec.key].url + contender.load.path
            problem = check(url, contender.load.body, contender.load.headers)
            if problem is not None:
                drop(contender.label, f"before round 1: {problem}", errors=1)
                continue
            conns = turns.connections_of[contender.label]
            try:
                generator.run(
                    url, contender.load.body, conns, 1, pinning.loadgen, contender.load.headers
                )
            except loadgen.LoadError as exc:
                drop(contender.label, f"before round 1: load generator failed: {exc}")
        for server in servers.values():
            server.pause()
        for round_ in range(1, rounds + 1):
            order = [c for c in rotated(contenders, round_ - 1) if c.label not in turns.dropped]
            if len(order) < 2:
                say(f"turns: fewer than two contenders left, no round {round_}")
                break
            turns.orders.append([c.label for c in order])
            for contender in order:
                conns = turns.connections_of[contender.label]
                server = servers[contender.spec.key]
                turn = _one_turn(contender, server, conns, duration_s, generator, pinning, check)
                if turn.result is None:
                    drop(contender.label, f"round {round_}: {turn.problem}", turn.errors)
                    continue
                result = turn.result
                turns.rates[contender.label].append(result.requests_per_s)
                turns.p50_ms[contender.label].append(result.p50_ms)
                turns.cpu_us[contender.label].append(turn.cpu_us)
                say(
                    f"turns, round {round_}: {contender.label:24} "
                    f"@{conns:<3} {result.requests_per_s:9.1f} req/s, p50 {result.p50_ms:7.2f} ms, "
                    f"{turn.cpu_us:7.1f} µs CPU per request"
                )
    return turns
