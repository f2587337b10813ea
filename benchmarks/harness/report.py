"""The report: one markdown table with ratios to the baselines, the targets, JSON, a chart.

Ratios are always taken between rows of the same run, the same workload and the
same connection count, so they hold across machines far better than raw numbers.
Each model (``run.py --model``) is a ``Suite``: its ratio columns, its targets and
what its chart shows; the table's format is the same for all.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from harness import image_plan
from harness.plan import (
    BARE,
    BULK,
    FASTAPI,
    KERAS_OFF,
    KERAS_ON,
    NAIVE,
    ONE_ROW,
    PEERS,
    SERVICE,
    SERVICE_2W,
    SERVICE_BATCHING,
    SERVICE_BATCHING_NOWAIT,
    SERVICE_BATCHING_OFF,
    TF_FUNCTION,
)
from harness.turns import Turns

#: Ratio columns: (JSON field, column title, baseline spec key).
Ratios = tuple[tuple[str, str, str], ...]
RATIOS: Ratios = (
    ("vs_fastapi_floor", "vs FastAPI floor", FASTAPI),
    ("vs_bare_asgi", "vs bare ASGI", BARE),
    ("vs_naive", "vs naive", NAIVE),
)
IMAGE_RATIOS: Ratios = (
    ("vs_tf_function", "vs tf.function", TF_FUNCTION),
    ("vs_bare_asgi", "vs bare ASGI", BARE),
)
BASE_COLUMNS = (
    "server",
    "config",
    "workload",
    "conns",
    "req/s",
    "rows/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "RSS MB",
    "RSS MB/worker",
    "ready s",
    "server CPU",
)
COLUMNS = (*BASE_COLUMNS, *(title for _, title, _ in RATIOS))
NA = "n/a"
#: Contender labels of the turns (``Suite.turns``) that targets read.
SERVICE_LABEL = "service"
B64_LABEL = "{b64}"
#: The batching study's configurations (each a server of its own).
BATCHING_KEYS = (SERVICE_BATCHING, SERVICE_BATCHING_NOWAIT, SERVICE_BATCHING_OFF)
RAW_LABEL = "raw image/jpeg"
V2_LABEL = "V2 BYTES binary"


def at(label: str, connections: int) -> str:
    """The label of a contender measured in turns at other than 16 connections."""
    return label if connections == 16 else f"{label} @{connections}"


class Turn(NamedTuple):
    """A contender of a suite's turns: its label, server key, workload key and connections."""

    label: str
    key: str
    workload: str
    connections: int = 16


@dataclass
class Row:
    """One measured point (or one server that could not be measured)."""

    key: str
    server: str
    config: str
    workload: str | None = None  # Workload.key
    workload_label: str | None = None
    rows: int | None = None
    connections: int | None = None
    requests_per_s: float | None = None
    rows_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int | None = None
    rss_mb: float | None = None
    rss_per_worker_mb: float | None = None
    ready_s: float | None = None
    server_cores: float | None = None  # CPU seconds of the server's processes per second
    unavailable: str | None = None
    ratios: dict[str, float | None] = field(default_factory=dict)


@dataclass
class Target:
    """One goal of the performance issue, checked on this run's numbers."""

    name: str
    measured: float | None
    unit: str  # "x" for a ratio, else the unit of an absolute figure
    goal: str
    passed: bool | None  # None: not measured in this run (or informational)
    note: str = ""
    informational: bool = False  # a figure the issue asks to report, with no goal

    @property
    def shown(self) -> str:
        """The measured value as the report shows it."""
        if self.unit == "x":
            return fmt(self.measured, "ratio")
        return fmt(self.measured) + ("" if self.measured is None else f" {self.unit}")

    @property
    def result(self) -> str:
        """PASS, MISS, INFO (reported, no goal), or n/a (not measured)."""
        if self.informational and self.measured is not None:
            return "INFO"
        return NA if self.passed is None else ("PASS" if self.passed else "MISS")


@dataclass
class Report:
    """Everything one run produced."""

    command: str
    mode: str
    machine: dict[str, str]
    setup: dict[str, str]
    notes: list[str]
    rows: list[Row]
    targets: list[Target] = field(default_factory=list)
    model: str = "blobs"  # which Suite: "blobs" (tabular) or "mobilenet" (image)
    turns: Turns | None = None  # the suite's contenders measured in turns


def find(rows: Sequence[Row], key: str, workload: str, connections: int) -> Row | None:
    """The measured row of ``key`` at that workload and connection count."""
    for row in rows:
        if (row.key, row.workload, row.connections) == (key, workload, connections):
            return row if row.requests_per_s is not None else None
    return None


def add_ratios(rows: Sequence[Row], columns: Ratios = RATIOS) -> None:
    """Fill each row's ratio columns: its req/s over the baseline's, same workload and conns."""
    for row in rows:
        ratios: dict[str, float | None] = {}
        for name, _, key in columns:
            base = None
            if row.workload is not None and row.connections is not None:
                base = find(rows, key, row.workload, row.connections)
            ratios[name] = _ratio(row.requests_per_s, base.requests_per_s if base else None)
        row.ratios = ratios  # a new dict: rows made with dataclasses.replace share the old one


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base <= 0 or math.isnan(value) or math.isnan(base):
        return None
    return value / base


def _goal(
    name: str,
    value: float | None,
    goal: float,
    *,
    unit: str = "x",
    at_most: bool = False,
    note: str = "",
) -> Target:
    sign = "<=" if at_most else ">="
    passed = None if value is None else (value <= goal if at_most else value >= goal)
    shown = f"{goal:g}x" if unit == "x" else f"{goal:g} {unit}"
    return Target(name, value, unit, f"{sign} {shown}", passed, note)


def _in_turns(
    name: str,
    turns: Turns | None,
    label: str,
    single: float | None,
    goal: float,
    *,
    over: str | None = None,
    note: str = "",
) -> Target:
    """A ratio target (``label`` over ``over``, default the reference) decided by the turns
    when they were measured, else by the single points of the table."""
    paired = turns.paired(label, over) if turns is not None else None
    prefix = f"{note}; " if note else ""
    if paired is None or turns is None:
        return _goal(name, single, goal, note=f"{prefix}one point each (no turns measured)")
    spread = turns.ratios(label, over)
    cpu = turns.cpu_ratio(label, over)
    return _goal(
        name,
        paired,
        goal,
        note=f"{prefix}{turns.describe()} (per round {min(spread):.2f}x to {max(spread):.2f}x; "
        f"in server CPU per request {fmt(cpu, 'ratio')}); one point each: {fmt(single, 'ratio')}",
    )


def _info_in_turns(
    name: str, turns: Turns | None, label: str, over: str, single: float | None
) -> Target:
    """A reported ratio: from the turns when both were measured in them, else single points."""
    paired = turns.paired(label, over) if turns is not None else None
    if paired is None or turns is None:
        return _info(name, single, note="one point each")
    return _info(name, paired, note=f"{turns.describe()}; one point each: {fmt(single, 'ratio')}")


def _info(name: str, value: float | None, *, unit: str = "x", note: str = "") -> Target:
    """A figure to report, with no goal."""
    return Target(name, value, unit, "(reported)", None, note, informational=True)


def targets(rows: Sequence[Row], turns: Turns | None = None) -> list[Target]:
    """The issue's targets, as ratios within this run."""

    def rate(key: str, workload: str, conns: int) -> float | None:
        row = find(rows, key, workload, conns)
        return row.requests_per_s if row else None

    def field_of(key: str, workload: str, conns: int, get: Callable[[Row], Any]) -> Any:
        row = find(rows, key, workload, conns)
        return get(row) if row else None

    one, bulk = ONE_ROW.key, BULK.key
    service16 = rate(SERVICE, one, 16)
    peer_rates = {key: rate(key, one, 16) for key in PEERS}
    measured_peers = {k: v for k, v in peer_rates.items() if v}
    best_peer = max(measured_peers, key=lambda k: measured_peers[k]) if measured_peers else None
    p50_64 = field_of(SERVICE, one, 64, lambda r: r.p50_ms)
    p99_64 = field_of(SERVICE, one, 64, lambda r: r.p99_ms)
    keras_on_1 = field_of(KERAS_ON, one, 1, lambda r: r.p50_ms)
    keras_off_1 = field_of(KERAS_OFF, one, 1, lambda r: r.p50_ms)
    found = [
        _in_turns(
            "/predict 1 row @16 conns: service / FastAPI floor (req/s)",
            turns,
            SERVICE_LABEL,
            _ratio(service16, rate(FASTAPI, one, 16)),
            1.2,
        ),
        _goal(
            "/predict 1 row @16 conns: service / bare ASGI (req/s, stretch)",
            _ratio(service16, rate(BARE, one, 16)),
            0.5,
        ),
        _goal(
            "/predict 1 row @16 conns: service / best peer (req/s)",
            _ratio(service16, measured_peers.get(best_peer) if best_peer else None),
            10,
            note=f"best peer: {best_peer}" if best_peer else "peers not measured (--peers)",
        ),
        _goal(
            "/predict 1 row @64 conns: service p99 / p50", _ratio(p99_64, p50_64), 3, at_most=True
        ),
        _goal(
            f"{BULK.label} @1 conn: service / bare ASGI pipeline (rows/s)",
            _ratio(rate(SERVICE, bulk, 1), rate(BARE, bulk, 1)),
            0.5,
        ),
    ]
    for key, label in ((SERVICE, "1 worker"), (SERVICE_2W, "2 workers")):
        workers = 2 if key == SERVICE_2W else 1
        ready = next((r.ready_s for r in rows if r.key == key and r.ready_s is not None), None)
        found.append(
            _goal(f"service ({label}): start to ready", ready, 1.0, unit="s", at_most=True)
        )
        rss = [r.rss_per_worker_mb for r in rows if r.key == key and r.rss_per_worker_mb]
        found.append(
            _goal(
                f"service ({label}): RSS per worker after load (max)",
                max(rss) if rss else None,
                120,
                unit="MB",
                at_most=True,
                note="largest worker process" if workers > 1 else "",
            )
        )
    found += [
        _goal(
            "/predict 1 row @64 conns: --workers 2 / 1 worker (req/s)",
            _ratio(rate(SERVICE_2W, one, 64), rate(SERVICE, one, 64)),
            1.8,
            note=_workers_note(find(rows, SERVICE, one, 64), find(rows, SERVICE_2W, one, 64)),
        ),
        _goal(
            "Keras runtime @64 conns: batching on / off (req/s)",
            _ratio(rate(KERAS_ON, one, 64), rate(KERAS_OFF, one, 64)),
            3,
        ),
        _goal(
            "Keras runtime @1 conn: batching on / off (p50 latency)",
            _ratio(keras_on_1, keras_off_1),
            1.10,
            at_most=True,
        ),
    ]
    return found


def _workers_note(single: Row | None, double: Row | None) -> str:
    """How many cores each configuration got, and the req/s per core it used."""
    cores = (single.server_cores, double.server_cores) if single and double else (None, None)
    if not single or not double or not cores[0] or not cores[1]:
        return "2 workers share both cores with the load generator"
    per_core = _ratio(
        (double.requests_per_s or 0) / cores[1], (single.requests_per_s or 0) / cores[0]
    )
    return (
        f"2 workers share both cores with the load generator: they got {cores[1]:.2f} "
        f"cores (1 worker: {cores[0]:.2f}); req/s per core used: {fmt(per_core, 'ratio')}"
    )


def image_targets(rows: Sequence[Row], turns: Turns | None = None) -> list[Target]:
    """Issue 16's targets for the image workload, as ratios within this run."""

    def rate(key: str, workload: str, conns: int) -> float | None:
        row = find(rows, key, workload, conns)
        return row.requests_per_s if row else None

    def field_of(key: str, workload: str, conns: int, get: Callable[[Row], Any]) -> Any:
        row = find(rows, key, workload, conns)
        return get(row) if row else None

    b64, raw, v2, nested = (w.key for w in image_plan.WORKLOADS_SHOWN)
    service16 = rate(SERVICE, b64, 16)
    peer_rates = {key: rate(key, b64, 16) for key in PEERS}
    measured_peers = {k: v for k, v in peer_rates.items() if v}
    best_peer = max(measured_peers, key=lambda k: measured_peers[k]) if measured_peers else None
    in_turns = {k: turns.median(k) for k in PEERS} if turns is not None else {}
    turned = {k: v for k, v in in_turns.items() if v}
    best_turned = max(turned, key=lambda k: turned[k]) if turned else None
    ready = {r.key: r.ready_s for r in rows if r.ready_s is not None}
    peer_ready = {k: ready[k] for k in PEERS if k in ready}
    fastest_peer = min(peer_ready, key=lambda k: peer_ready[k]) if peer_ready else None
    rss = [r.rss_per_worker_mb for r in rows if r.key == SERVICE and r.rss_per_worker_mb]
    found = [
        _in_turns(
            "{b64} JPEG @16 conns: service / FastAPI + tf.function (req/s)",
            turns,
            B64_LABEL,
            _ratio(service16, rate(TF_FUNCTION, b64, 16)),
            5,
            over=TF_FUNCTION,
        ),
        _in_turns(
            "{b64} JPEG @16 conns: service / best peer, batching on (req/s)",
            turns,
            B64_LABEL,
            _ratio(service16, measured_peers.get(best_peer) if best_peer else None),
            3,
            over=best_turned,
            note=f"best peer: {best_turned or best_peer}",
        )
        if best_peer
        else _goal(
            "{b64} JPEG @16 conns: service / best peer, batching on (req/s)",
            None,
            3,
            note="peers not measured (--peers)",
        ),
        _goal(
            "nested arrays @16 conns: service / bare ASGI orjson-numpy-LiteRT (req/s)",
            _ratio(rate(SERVICE, nested, 16), rate(BARE, nested, 16)),
            0.5,
        ),
        _goal(
            "{b64} JPEG @64 conns: service p99 / p50",
            _ratio(
                field_of(SERVICE, b64, 64, lambda r: r.p99_ms),
                field_of(SERVICE, b64, 64, lambda r: r.p50_ms),
            ),
            3,
            at_most=True,
        ),
        _goal(
            "{b64} JPEG @64 conns: service errors",
            field_of(SERVICE, b64, 64, lambda r: r.errors),
            0,
            unit="errors",
            at_most=True,
        ),
        _in_turns(
            "raw image/jpeg body @16 conns: service / {b64} (req/s)",
            turns,
            RAW_LABEL,
            _ratio(rate(SERVICE, raw, 16), service16),
            1.0,
        ),
        _in_turns(
            "V2 BYTES binary @16 conns: service / {b64} (req/s)",
            turns,
            V2_LABEL,
            _ratio(rate(SERVICE, v2, 16), service16),
            1.0,
        ),
    ]
    for conns in (16, 64):
        on, off = rate(SERVICE_BATCHING, b64, conns), rate(SERVICE_BATCHING_OFF, b64, conns)
        nowait = rate(SERVICE_BATCHING_NOWAIT, b64, conns)
        found += [
            _info_in_turns(
                f"{{b64}} JPEG @{conns} conns: batching on / off (req/s)",
                turns,
                at(SERVICE_BATCHING, conns),
                at(SERVICE_BATCHING_OFF, conns),
                _ratio(on, off),
            ),
            _info_in_turns(
                f"{{b64}} JPEG @{conns} conns: batching on, no fill wait / off (req/s)",
                turns,
                at(SERVICE_BATCHING_NOWAIT, conns),
                at(SERVICE_BATCHING_OFF, conns),
                _ratio(nowait, off),
            ),
        ]
    p50_name = "{b64} JPEG @1 conn: batching on / off (p50 latency)"
    p50_single = _ratio(
        field_of(SERVICE_BATCHING, b64, 1, lambda r: r.p50_ms),
        field_of(SERVICE_BATCHING_OFF, b64, 1, lambda r: r.p50_ms),
    )
    on1, off1 = at(SERVICE_BATCHING, 1), at(SERVICE_BATCHING_OFF, 1)
    p50_paired = turns.paired_latency(on1, off1) if turns is not None else None
    if turns is not None and p50_paired is not None:
        spread = turns.latency_ratios(on1, off1)
        p50_note = (
            f"{turns.describe()} (per round {min(spread):.2f}x to {max(spread):.2f}x); "
            f"one point each: {fmt(p50_single, 'ratio')}"
        )
        found.append(_goal(p50_name, p50_paired, 1.10, at_most=True, note=p50_note))
    else:
        found.append(_goal(p50_name, p50_single, 1.10, at_most=True, note="one point each"))
    for conns in (16, 64):
        studied = [
            rate(key, b64, conns)
            for key in (SERVICE_BATCHING, SERVICE_BATCHING_NOWAIT, SERVICE_BATCHING_OFF)
        ]
        best = None if None in studied else max(r for r in studied if r is not None)
        single = _ratio(service16 if conns == 16 else rate(SERVICE, b64, conns), best)
        name = f"{{b64}} JPEG @{conns} conns: defaults / best batching setting (req/s)"
        note = "best of on, on without fill wait, off: the default is right when this holds"
        reference = at(B64_LABEL, conns)
        against = (
            [turns.paired(reference, at(key, conns)) for key in BATCHING_KEYS] if turns else []
        )
        if turns is not None and against and None not in against:
            shown = ", ".join(fmt(r, "ratio") for r in against)
            worst = min(r for r in against if r is not None)
            note += f"; {turns.describe()}: against on, no fill wait, off {shown}"
            found.append(
                _goal(name, worst, 0.95, note=f"{note}; one point each: {fmt(single, 'ratio')}")
            )
        else:
            found.append(_goal(name, single, 0.95, note=f"{note} (one point each)"))
    found += [
        _goal(
            "start to ready: fastest peer / service",
            _ratio(peer_ready.get(fastest_peer) if fastest_peer else None, ready.get(SERVICE)),
            5,
            note=f"fastest peer: {fastest_peer}"
            if fastest_peer
            else "peers not measured (--peers)",
        ),
        _info("service: start to ready", ready.get(SERVICE), unit="s"),
        _info(
            "service (1 worker): RSS per worker after load (max)",
            max(rss) if rss else None,
            unit="MB",
        ),
    ]
    return found


@dataclass(frozen=True)
class Suite:
    """What differs between the models ``run.py`` benchmarks."""

    key: str
    ratios: Ratios
    targets: Callable[[Sequence[Row], Turns | None], list[Target]]
    chart_workloads: tuple[str, ...]  # the rows drawn: these workloads at 16 connections
    chart_title: str
    #: What is measured in turns: the first the reference of every ratio in the table
    #: (targets may pair any two); one whose server this run does not start (a peer
    #: without --peers) is left out.
    turns: tuple[Turn, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        """The table's columns."""
        return (*BASE_COLUMNS, *(title for _, title, _ in self.ratios))


SUITES = {
    "blobs": Suite(
        "blobs",
        RATIOS,
        targets,
        (ONE_ROW.key,),
        "POST /predict, 1 row, 16 connections",
        (Turn("FastAPI floor", FASTAPI, ONE_ROW.key), Turn(SERVICE_LABEL, SERVICE, ONE_ROW.key)),
    ),
    "mobilenet": Suite(
        "mobilenet",
        IMAGE_RATIOS,
        image_targets,
        tuple(w.key for w in image_plan.WORKLOADS_SHOWN),
        "MobileNetV2 (96x96x3), 1 image per request, 16 connections",
        (
            Turn(B64_LABEL, SERVICE, image_plan.B64.key),
            Turn(RAW_LABEL, SERVICE, image_plan.RAW.key),
            Turn(V2_LABEL, SERVICE, image_plan.V2_BYTES.key),
            Turn(TF_FUNCTION, TF_FUNCTION, image_plan.B64.key),
            *(Turn(peer, peer, image_plan.B64.key) for peer in PEERS),
            *(Turn(key, key, image_plan.B64.key) for key in BATCHING_KEYS),
            # the batching study at 64 connections, and its p50 with one client
            Turn(at(B64_LABEL, 64), SERVICE, image_plan.B64.key, 64),
            *(Turn(at(key, 64), key, image_plan.B64.key, 64) for key in BATCHING_KEYS),
            *(
                Turn(at(key, 1), key, image_plan.B64.key, 1)
                for key in (SERVICE_BATCHING, SERVICE_BATCHING_OFF)
            ),
        ),
    ),
}


def fmt(value: float | None, kind: str = "float") -> str:
    """Table formatting: about three significant digits, no thousands separators."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NA
    if kind == "int":
        return str(round(value))
    if kind == "ratio":
        return f"{value:.{2 if value < 10 else 1 if value < 100 else 0}f}x"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _cells(row: Row, ratios: Ratios = RATIOS) -> list[str]:
    if row.unavailable is not None:
        return [row.server, row.config, *[NA] * (len(BASE_COLUMNS) + len(ratios) - 2)]
    return [
        row.server,
        row.config,
        row.workload_label or NA,
        fmt(row.connections, "int"),
        fmt(row.requests_per_s),
        fmt(row.rows_per_s),
        fmt(row.p50_ms),
        fmt(row.p99_ms),
        fmt(row.errors, "int"),
        fmt(row.rss_mb),
        fmt(row.rss_per_worker_mb),
        fmt(row.ready_s),
        fmt(row.server_cores),
        *(fmt(row.ratios.get(name), "ratio") for name, _, _ in ratios),
    ]


def table_lines(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table's lines (a "|" inside a cell becomes "/")."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |" for cells in body]
    return lines


def markdown(report: Report) -> str:
    """The whole report as markdown: setup, the table, the targets, notes."""
    machine = report.machine
    suite = SUITES[report.model]
    lines = [
        f"## Benchmark results: {report.model} ({report.mode} mode)",
        "",
        f"- command: `{report.command}`",
        f"- machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory']}, "
        f"{machine['os']}, {machine['python']}; commit {machine['commit']}",
        *(f"- {name}: {value}" for name, value in report.setup.items()),
        "",
        *table_lines(suite.columns, [_cells(row, suite.ratios) for row in report.rows]),
        "",
        "### Targets (informational: ratios within this run; nothing fails on a MISS)",
        "",
        *table_lines(
            ("target", "measured", "goal", "result", "note"),
            [
                [
                    t.name,
                    fmt(t.measured, "ratio" if t.unit == "x" else "float"),
                    t.goal,
                    t.result,
                    t.note,
                ]
                for t in report.targets
            ],
        ),
    ]
    if report.turns is not None:
        lines += ["", *turns_section(report.turns)]
    unavailable = [row for row in report.rows if row.unavailable is not None]
    notes = [
        *report.notes,
        *(f"{row.server} ({row.config}) not available: {row.unavailable}" for row in unavailable),
    ]
    if notes:
        lines += ["", "Notes:", "", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def turns_section(turns: Turns) -> list[str]:
    """The contenders measured in turns: medians, paired ratios, p50, CPU per request."""
    title = (
        f"### Measured in turns ({turns.rounds} rounds of {turns.duration_s} s, "
        f"contenders alternating; req/s ratios to {turns.reference})"
    )
    if turns.unavailable is not None:
        return [title, "", f"Not measured: {turns.unavailable}"]
    body = []
    for label in turns.labels:
        rates, ratios = turns.rates[label], turns.ratios(label)
        body.append(
            [
                label,
                str(turns.connections_of.get(label, turns.connections)),
                fmt(statistics.median(rates)),
                fmt(turns.paired(label), "ratio"),
                f"{fmt(min(ratios), 'ratio')} to {fmt(max(ratios), 'ratio')}" if ratios else NA,
                f"{turns.wins(label)} of {len(ratios)}" if label != turns.reference else NA,
                fmt(statistics.median(turns.p50_ms[label])),
                fmt(statistics.median(turns.cpu_us[label])),
                fmt(turns.cpu_ratio(label), "ratio"),
                ", ".join(fmt(r) for r in rates),
            ]
        )
    header = (
        "contender",
        "conns",
        "median req/s",
        "paired ratio (median)",
        "per-round ratios",
        "rounds at or above the reference",
        "median p50 ms",
        "server CPU µs/request",
        "ratio in CPU/request",
        "req/s by round",
    )
    return [title, "", *table_lines(header, body)]


def as_json(report: Report) -> dict[str, Any]:
    """The report as plain data (NaN becomes null)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    data = asdict(report)
    for target, raw in zip(data["targets"], report.targets, strict=True):
        target["result"] = raw.result
        target["shown"] = raw.shown
    return {"columns": list(SUITES[report.model].columns), **clean(data)}


def chart(report: Report, path: Path) -> None:
    """Bar chart of req/s at 16 connections per server configuration (and workload), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    suite = SUITES[report.model]
    bars = [
        row
        for row in report.rows
        if row.workload in suite.chart_workloads and row.connections == 16 and row.requests_per_s
    ]
    bars.sort(key=lambda row: row.requests_per_s or 0.0)
    several = len(suite.chart_workloads) > 1
    labels = [
        f"{row.server}\n{row.config}" + (f"\n{row.workload_label}" if several else "")
        for row in bars
    ]
    values = [row.requests_per_s or 0.0 for row in bars]
    palette = {"this service": "#4c72b0", "baseline": "#8c8c8c", "peer": "#dd8452"}
    kinds = [
        "this service"
        if row.key.startswith(SERVICE)
        else "peer"
        if row.key in PEERS
        else "baseline"
        for row in bars
    ]
    figure, axes = plt.subplots(figsize=(10, (0.75 if several else 0.55) * len(bars) + 1.6))
    axes.barh(range(len(bars)), values, color=[palette[kind] for kind in kinds])
    handles = [Patch(color=color, label=kind) for kind, color in palette.items() if kind in kinds]
    axes.legend(handles=handles, loc="lower right", fontsize=7)
    axes.set_yticks(range(len(bars)), labels, fontsize=7)
    if values and min(values) > 0 and max(values) / min(values) > 30:
        axes.set_xscale("log")
    for i, value in enumerate(values):
        axes.text(value, i, f" {value:,.0f}", va="center", fontsize=7)
    axes.set_xlabel("requests per second (higher is better)")
    axes.set_title(
        f"{suite.chart_title} ({report.mode} mode)\n"
        f"{report.machine['cpu']}, {report.machine['cores']} cores; "
        f"{report.setup.get('load generator', '')}",
        fontsize=9,
    )
    axes.margins(x=0.15)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
