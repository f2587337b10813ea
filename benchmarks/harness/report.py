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

    @property
    def error_answers(self) -> int:
        """Answers other than 200 plus socket errors, in every point and turn of the run."""
        return error_answers(self.rows, self.turns)

    @property
    def failed(self) -> bool:
        """Whether the run failed: any error answer fails it, whatever its speed."""
        return self.error_answers > 0


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


def _where(row: Row) -> str:
    """A row, as error notes name it."""
    if row.workload_label is None or row.connections is None:
        return f"{row.server} ({row.config}), its first answer"
    return f"{row.server} ({row.config}) {row.workload_label} @{row.connections}"


def _row_errors(on: Sequence[Row | None]) -> list[str]:
    """Which of these rows saw error answers, and how many."""
    return [
        f"{_where(row)}: {row.errors} error{'s' * (row.errors != 1)}"
        for row in on
        if row is not None and row.errors
    ]


def error_places(rows: Sequence[Row], turns: Turns | None) -> list[str]:
    """Every point and turn that saw error answers (not 200, or socket errors)."""
    return [*_row_errors(rows), *(turns.error_notes(*turns.labels) if turns else [])]


def error_answers(rows: Sequence[Row], turns: Turns | None) -> int:
    """The error answers of the whole run: every point and every turn."""
    return sum(row.errors or 0 for row in rows) + (turns.error_answers if turns else 0)


def _with_errors(note: str, errors: Sequence[str]) -> str:
    if not errors:
        return note
    return f"{note}; " * bool(note) + "error answers behind it: " + "; ".join(errors)


def _goal(
    name: str,
    value: float | None,
    goal: float,
    *,
    unit: str = "x",
    at_most: bool = False,
    note: str = "",
    on: Sequence[Row | None] = (),
    errors: Sequence[str] = (),
) -> Target:
    """A target met when ``value`` is at least (at most) ``goal``, and never when the rows
    it rests on (``on``) or its turns (``errors``, from ``Turns.error_notes``) saw an
    error answer: a fast number with errors is no pass."""
    sign = "<=" if at_most else ">="
    passed = None if value is None else (value <= goal if at_most else value >= goal)
    found = [*_row_errors(on), *errors]
    if found and passed:
        passed = False
    shown = f"{goal:g}x" if unit == "x" else f"{goal:g} {unit}"
    return Target(name, value, unit, f"{sign} {shown}", passed, _with_errors(note, found))


def errors_target(rows: Sequence[Row], turns: Turns | None) -> Target:
    """The first target: no error answer anywhere in the run. Any fails the run."""
    places = error_places(rows, turns)
    return Target(
        "errors in the whole run: answers other than 200 + socket errors, every point and turn",
        error_answers(rows, turns),
        "errors",
        "= 0 (else the run fails)",
        not places,
        "; ".join(places) if places else "every answer was a 200",
    )


def _in_turns(
    name: str,
    turns: Turns | None,
    label: str,
    single: float | None,
    goal: float,
    *,
    over: str | None = None,
    note: str = "",
    on: Sequence[Row | None] = (),
) -> Target:
    """A ratio target (``label`` over ``over``, default the reference) decided by the turns
    when they were measured, else by the single points of the table (``on``: those rows)."""
    paired = turns.paired(label, over) if turns is not None else None
    prefix = f"{note}; " if note else ""
    if paired is None or turns is None:
        errors = turns.error_notes(label, over or turns.reference) if turns is not None else []
        return _goal(
            name,
            single,
            goal,
            note=f"{prefix}one point each (no turns measured)",
            on=on,
            errors=errors,
        )
    spread = turns.ratios(label, over)
    cpu = turns.cpu_ratio(label, over)
    return _goal(
        name,
        paired,
        goal,
        note=f"{prefix}{turns.describe(label, over)} (per round {min(spread):.2f}x to "
        f"{max(spread):.2f}x; in server CPU per request {fmt(cpu, 'ratio')}); "
        f"one point each: {fmt(single, 'ratio')}",
        on=on,
        errors=turns.error_notes(label, over or turns.reference),
    )


def _info_in_turns(
    name: str,
    turns: Turns | None,
    label: str,
    over: str,
    single: float | None,
    on: Sequence[Row | None] = (),
) -> Target:
    """A reported ratio: from the turns when both were measured in them, else single points."""
    paired = turns.paired(label, over) if turns is not None else None
    errors = turns.error_notes(label, over) if turns is not None else []
    if paired is None or turns is None:
        return _info(name, single, note="one point each", on=on, errors=errors)
    return _info(
        name,
        paired,
        note=f"{turns.describe(label, over)}; one point each: {fmt(single, 'ratio')}",
        on=on,
        errors=errors,
    )


def _info(
    name: str,
    value: float | None,
    *,
    unit: str = "x",
    note: str = "",
    on: Sequence[Row | None] = (),
    errors: Sequence[str] = (),
) -> Target:
    """A figure to report, with no goal."""
    note = _with_errors(note, [*_row_errors(on), *errors])
    return Target(name, value, unit, "(reported)", None, note, informational=True)


def _rps(row: Row | None) -> float | None:
    return row.requests_per_s if row else None


def _p50(row: Row | None) -> float | None:
    return row.p50_ms if row else None


def _p99(row: Row | None) -> float | None:
    return row.p99_ms if row else None


def _best(candidates: dict[str, Row | None]) -> str | None:
    """The key of the row with the most req/s (None when none was measured)."""
    measured = {key: rate for key, row in candidates.items() if (rate := _rps(row))}
    return max(measured, key=lambda key: measured[key]) if measured else None


def targets(rows: Sequence[Row], turns: Turns | None = None) -> list[Target]:
    """The issue's targets, as ratios within this run."""

    def at_(key: str, workload: str, conns: int) -> Row | None:
        return find(rows, key, workload, conns)

    one, bulk = ONE_ROW.key, BULK.key
    service16 = at_(SERVICE, one, 16)
    floor16, bare16 = at_(FASTAPI, one, 16), at_(BARE, one, 16)
    best_peer = _best({key: at_(key, one, 16) for key in PEERS})
    peer16 = at_(best_peer, one, 16) if best_peer else None
    service64, workers64 = at_(SERVICE, one, 64), at_(SERVICE_2W, one, 64)
    bulk_service, bulk_bare = at_(SERVICE, bulk, 1), at_(BARE, bulk, 1)
    keras_on_1, keras_off_1 = at_(KERAS_ON, one, 1), at_(KERAS_OFF, one, 1)
    keras_on_64, keras_off_64 = at_(KERAS_ON, one, 64), at_(KERAS_OFF, one, 64)
    found = [
        errors_target(rows, turns),
        _in_turns(
            "/predict 1 row @16 conns: service / FastAPI floor (req/s)",
            turns,
            SERVICE_LABEL,
            _ratio(_rps(service16), _rps(floor16)),
            1.2,
            on=(service16, floor16),
        ),
        _goal(
            "/predict 1 row @16 conns: service / bare ASGI (req/s, stretch)",
            _ratio(_rps(service16), _rps(bare16)),
            0.5,
            on=(service16, bare16),
        ),
        _goal(
            "/predict 1 row @16 conns: service / best peer (req/s)",
            _ratio(_rps(service16), _rps(peer16)),
            10,
            note=f"best peer: {best_peer}" if best_peer else "peers not measured (--peers)",
            on=(service16, peer16),
        ),
        _goal(
            "/predict 1 row @64 conns: service p99 / p50",
            _ratio(_p99(service64), _p50(service64)),
            3,
            at_most=True,
            on=(service64,),
        ),
        _goal(
            f"{BULK.label} @1 conn: service / bare ASGI pipeline (rows/s)",
            _ratio(_rps(bulk_service), _rps(bulk_bare)),
            0.5,
            on=(bulk_service, bulk_bare),
        ),
    ]
    for key, label in ((SERVICE, "1 worker"), (SERVICE_2W, "2 workers")):
        workers = 2 if key == SERVICE_2W else 1
        ready = next((r.ready_s for r in rows if r.key == key and r.ready_s is not None), None)
        limit = 0.8 if workers == 1 else 1.0  # benchmarks/startup.py: in turns, broken down
        found.append(
            _goal(f"service ({label}): start to ready", ready, limit, unit="s", at_most=True)
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
            _ratio(_rps(workers64), _rps(service64)),
            1.8,
            note=_workers_note(service64, workers64),
            on=(workers64, service64),
        ),
        _goal(
            "Keras runtime @64 conns: batching on / off (req/s)",
            _ratio(_rps(keras_on_64), _rps(keras_off_64)),
            3,
            on=(keras_on_64, keras_off_64),
        ),
        _goal(
            "Keras runtime @1 conn: batching on / off (p50 latency)",
            _ratio(_p50(keras_on_1), _p50(keras_off_1)),
            1.10,
            at_most=True,
            on=(keras_on_1, keras_off_1),
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

    def at_(key: str, workload: str, conns: int) -> Row | None:
        return find(rows, key, workload, conns)

    b64, raw, v2, nested = (w.key for w in image_plan.WORKLOADS_SHOWN)
    service16, service64 = at_(SERVICE, b64, 16), at_(SERVICE, b64, 64)
    tf16 = at_(TF_FUNCTION, b64, 16)
    best_peer = _best({key: at_(key, b64, 16) for key in PEERS})
    peer16 = at_(best_peer, b64, 16) if best_peer else None
    in_turns = {k: turns.median(k) for k in PEERS} if turns is not None else {}
    turned = {k: v for k, v in in_turns.items() if v}
    best_turned = max(turned, key=lambda k: turned[k]) if turned else None
    ready = {r.key: r.ready_s for r in rows if r.ready_s is not None}
    peer_ready = {k: ready[k] for k in PEERS if k in ready}
    fastest_peer = min(peer_ready, key=lambda k: peer_ready[k]) if peer_ready else None
    rss = [r.rss_per_worker_mb for r in rows if r.key == SERVICE and r.rss_per_worker_mb]
    nested_service, nested_bare = at_(SERVICE, nested, 16), at_(BARE, nested, 16)
    raw16, v2_16 = at_(SERVICE, raw, 16), at_(SERVICE, v2, 16)
    found = [
        errors_target(rows, turns),
        _in_turns(
            "{b64} JPEG @16 conns: service / FastAPI + tf.function (req/s)",
            turns,
            B64_LABEL,
            _ratio(_rps(service16), _rps(tf16)),
            5,
            over=TF_FUNCTION,
            on=(service16, tf16),
        ),
        _in_turns(
            "{b64} JPEG @16 conns: service / best peer, batching on (req/s)",
            turns,
            B64_LABEL,
            _ratio(_rps(service16), _rps(peer16)),
            3,
            over=best_turned,
            note=f"best peer: {best_turned or best_peer}",
            on=(service16, peer16),
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
            _ratio(_rps(nested_service), _rps(nested_bare)),
            0.5,
            on=(nested_service, nested_bare),
        ),
        _goal(
            "{b64} JPEG @64 conns: service p99 / p50",
            _ratio(_p99(service64), _p50(service64)),
            3,
            at_most=True,
            on=(service64,),
        ),
        _goal(
            "{b64} JPEG @64 conns: service errors",
            service64.errors if service64 else None,
            0,
            unit="errors",
            at_most=True,
            on=(service64,),
        ),
        _in_turns(
            "raw image/jpeg body @16 conns: service / {b64} (req/s)",
            turns,
            RAW_LABEL,
            _ratio(_rps(raw16), _rps(service16)),
            1.0,
            on=(raw16, service16),
        ),
        _in_turns(
            "V2 BYTES binary @16 conns: service / {b64} (req/s)",
            turns,
            V2_LABEL,
            _ratio(_rps(v2_16), _rps(service16)),
            1.0,
            on=(v2_16, service16),
        ),
    ]
    for conns in (16, 64):
        on, off = at_(SERVICE_BATCHING, b64, conns), at_(SERVICE_BATCHING_OFF, b64, conns)
        nowait = at_(SERVICE_BATCHING_NOWAIT, b64, conns)
        found += [
            _info_in_turns(
                f"{{b64}} JPEG @{conns} conns: batching on / off (req/s)",
                turns,
                at(SERVICE_BATCHING, conns),
                at(SERVICE_BATCHING_OFF, conns),
                _ratio(_rps(on), _rps(off)),
                on=(on, off),
            ),
            _info_in_turns(
                f"{{b64}} JPEG @{conns} conns: batching on, no fill wait / off (req/s)",
                turns,
                at(SERVICE_BATCHING_NOWAIT, conns),
                at(SERVICE_BATCHING_OFF, conns),
                _ratio(_rps(nowait), _rps(off)),
                on=(nowait, off),
            ),
        ]
    p50_name = "{b64} JPEG @1 conn: batching on / off (p50 latency)"
    on1_row, off1_row = at_(SERVICE_BATCHING, b64, 1), at_(SERVICE_BATCHING_OFF, b64, 1)
    p50_single = _ratio(_p50(on1_row), _p50(off1_row))
    on1, off1 = at(SERVICE_BATCHING, 1), at(SERVICE_BATCHING_OFF, 1)
    p50_paired = turns.paired(on1, off1, "p50_ms") if turns is not None else None
    p50_errors = turns.error_notes(on1, off1) if turns is not None else []
    if turns is not None and p50_paired is not None:
        spread = turns.ratios(on1, off1, "p50_ms")
        p50_note = (
            f"{turns.describe(on1, off1, 'p50_ms')} (per round {min(spread):.2f}x to "
            f"{max(spread):.2f}x); one point each: {fmt(p50_single, 'ratio')}"
        )
        found.append(
            _goal(
                p50_name,
                p50_paired,
                1.10,
                at_most=True,
                note=p50_note,
                on=(on1_row, off1_row),
                errors=p50_errors,
            )
        )
    else:
        found.append(
            _goal(
                p50_name,
                p50_single,
                1.10,
                at_most=True,
                note="one point each",
                on=(on1_row, off1_row),
                errors=p50_errors,
            )
        )
    for conns in (16, 64):
        studied = [at_(key, b64, conns) for key in BATCHING_KEYS]
        rates = [_rps(row) for row in studied]
        best = None if None in rates else max(r for r in rates if r is not None)
        defaults = service16 if conns == 16 else service64
        single = _ratio(_rps(defaults), best)
        name = f"{{b64}} JPEG @{conns} conns: defaults / best batching setting (req/s)"
        note = "best of on, on without fill wait, off: the default is right when this holds"
        reference = at(B64_LABEL, conns)
        against = (
            [turns.paired(reference, at(key, conns)) for key in BATCHING_KEYS] if turns else []
        )
        errors = (
            turns.error_notes(reference, *(at(key, conns) for key in BATCHING_KEYS))
            if turns
            else []
        )
        points = (defaults, *studied)
        if turns is not None and against and None not in against:
            shown = ", ".join(fmt(r, "ratio") for r in against)
            worst = min(r for r in against if r is not None)
            note += f"; {turns.describe()}: against on, no fill wait, off {shown}"
            found.append(
                _goal(
                    name,
                    worst,
                    0.95,
                    note=f"{note}; one point each: {fmt(single, 'ratio')}",
                    on=points,
                    errors=errors,
                )
            )
        else:
            found.append(
                _goal(
                    name,
                    single,
                    0.95,
                    note=f"{note} (one point each)",
                    on=points,
                    errors=errors,
                )
            )
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
    if kind == "int" or (kind == "float" and isinstance(value, int)):
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
        cells = [row.server, row.config, *[NA] * (len(BASE_COLUMNS) + len(ratios) - 2)]
        cells[BASE_COLUMNS.index("errors")] = fmt(row.errors, "int")  # a failed first answer
        return cells
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
        verdict(report),
        "",
        f"- command: `{report.command}`",
        f"- machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory']}, "
        f"{machine['os']}, {machine['python']}; commit {machine['commit']}",
        *(f"- {name}: {value}" for name, value in report.setup.items()),
        "",
        *table_lines(suite.columns, [_cells(row, suite.ratios) for row in report.rows]),
        "",
        "### Targets (ratios within this run: a slow number is a MISS and fails nothing; "
        "an error answer anywhere fails the run)",
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


def verdict(report: Report) -> str:
    """The report's first line: whether any answer of the run was an error."""
    count = report.error_answers
    if not count:
        return "**No errors**: every answer of every point and every turn was a 200."
    places = "; ".join(error_places(report.rows, report.turns))
    return (
        f"**RUN FAILED: {count} error answers** (answers other than 200, or socket errors) "
        f"in {places}. A run with errors fails whatever its speed (run.py exits with 1)."
    )


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def turns_section(turns: Turns) -> list[str]:
    """The contenders measured in turns: medians, paired ratios, p50, CPU per request, and
    which contenders were dropped from the remaining rounds, when and why."""
    title = (
        f"### Measured in turns ({turns.rounds} rounds of {turns.duration_s} s, "
        f"contenders alternating; req/s ratios to {turns.reference})"
    )
    body = []
    for label in turns.labels:
        rates, ratios = turns.rates[label], turns.ratios(label)
        body.append(
            [
                label,
                str(turns.connections_of.get(label, turns.connections)),
                fmt(_median(rates)),
                fmt(turns.paired(label), "ratio"),
                f"{fmt(min(ratios), 'ratio')} to {fmt(max(ratios), 'ratio')}" if ratios else NA,
                f"{turns.wins(label)} of {len(ratios)}"
                if label != turns.reference and ratios
                else NA,
                fmt(_median(turns.p50_ms[label])),
                fmt(_median(turns.cpu_us[label])),
                fmt(turns.cpu_ratio(label), "ratio"),
                ", ".join(fmt(r) for r in rates) or NA,
                turns.dropped.get(label, "no"),
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
        "dropped",
    )
    lines = [title, "", *table_lines(header, body)]
    if turns.dropped:
        lines += [
            "",
            "A dropped contender left the turns from then on (its partial round discarded) "
            "and the others went on; each ratio counts only the rounds that measured both "
            "of its contenders.",
        ]
    return lines


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
    return {
        "columns": list(SUITES[report.model].columns),
        "failed": report.failed,
        "error_answers": report.error_answers,
        "errors_in": error_places(report.rows, report.turns),
        **clean(data),
    }


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
