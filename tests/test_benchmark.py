"""The benchmark harness runs end to end in ``--quick`` mode and writes a well-formed report.

It starts every server configuration for real (about a minute for the tabular model,
two for the image model, whose MobileNetV2 is built and exported once and shared with
the breakdown script), so these are the slow tests of the suite. They assert the shape
of the output, never a speed.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICK_SERVERS = {
    "bare-asgi",
    "fastapi-floor",
    "naive-predict",
    "service",
    "service-2w",
    "service-keras-batching-on",
    "service-keras-batching-off",
}
NUMERIC = (
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
RATIOS = {
    "vs FastAPI floor": "fastapi-floor",
    "vs bare ASGI": "bare-asgi",
    "vs naive": "naive-predict",
}
IMAGE_RATIOS = {"vs tf.function": "tf-function", "vs bare ASGI": "bare-asgi"}
#: The image workload's quick points: (server, workload) -> connection counts.
IMAGE_POINTS = {
    ("bare-asgi", "jpeg-b64"): (1, 16, 64),
    ("bare-asgi", "nested"): (16,),
    ("tf-function", "jpeg-b64"): (16,),
    ("service", "jpeg-b64"): (1, 16, 64),
    ("service", "jpeg-raw"): (16,),
    ("service", "v2-bytes"): (16,),
    ("service", "nested"): (16,),
    ("service-batching", "jpeg-b64"): (1, 16, 64),
    ("service-batching-off", "jpeg-b64"): (1, 16, 64),
    ("service-batching-nowait", "jpeg-b64"): (1, 16, 64),
}
BREAKDOWN_STEPS = (
    "parse + validate the JSON body",
    "base64 -> bytes",
    "decode JPEG -> model pixels (all of it)",
    "inference, 1 image",
    "scores: float64 softmax, argmax, entropy",
    "answer: row format -> JSON bytes",
    "inference, per image in a batch of 16",
    "DataPlane.predict, batching off",
    "DataPlane.predict, batching on",
)


def script(*argv: str, timeout: float = 300) -> str:
    """Run a benchmark script with no stray SERVICE_* settings; its stdout (it must exit 0)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVICE_")}
    result = subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    return result.stdout


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``python benchmarks/run.py --quick --out DIR``: the output directory and stdout."""
    out = tmp_path_factory.mktemp("bench")
    return out, script("benchmarks/run.py", "--quick", "--out", str(out))


@pytest.fixture(scope="module")
def image_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image workload's MobileNetV2, built and exported once as ``run.py`` does."""
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, 'benchmarks'); "
        "from harness import image_plan; "
        "print(image_plan.build_model(Path(sys.argv[1]), Path(sys.argv[2])))"
    )
    work = tmp_path_factory.mktemp("image-model")
    out = script("-c", code, str(work / "models"), str(work / "build.log"), timeout=600)
    return Path(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory, image_model: Path) -> tuple[Path, str]:
    """``run.py --model mobilenet --quick --image-model DIR --out DIR``."""
    out = tmp_path_factory.mktemp("bench-mobilenet")
    argv = ["--model", "mobilenet", "--quick", "--image-model", str(image_model)]
    return out, script("benchmarks/run.py", *argv, "--out", str(out), timeout=420)


def markdown_table(text: str, first_column: str) -> list[dict[str, str]]:
    """The rows of the markdown table whose header starts with ``first_column``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_column} |"))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    assert set(lines[start + 1].strip("|").split("|")) == {"---"}
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == len(header), line
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def number(cell: str) -> float:
    """A numeric cell (``n/a`` is NaN, ratios end in ``x``)."""
    return math.nan if cell == "n/a" else float(cell.removesuffix("x"))


def close(shown: float, exact: float) -> bool:
    """``shown`` is ``exact`` rounded to about three significant digits."""
    return math.isclose(shown, exact, rel_tol=0.01, abs_tol=0.006)


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG, after checking its signature and IHDR chunk CRC."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR"
    assert length == 13
    chunk = data[12 : 12 + 4 + length]
    assert struct.unpack(">I", data[16 + length : 20 + length])[0] == zlib.crc32(chunk)
    assert data.endswith(b"IEND\xaeB`\x82")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.benchmark
@pytest.mark.timeout(420)
def test_quick_benchmark_prints_the_table_it_writes(run: tuple[Path, str]) -> None:
    out, stdout = run
    assert stdout == (out / "results.md").read_text()
    assert "command: `python benchmarks/run.py --quick --out " in stdout
    assert "machine: " in stdout
    assert "load generator: " in stdout


def check_table(
    stdout: str, data: dict[str, Any], expected: set[tuple[str, str, int]], ratios: dict[str, str]
) -> None:
    """The printed table is the JSON's rows, every expected point measured, ratios consistent."""
    table = markdown_table(stdout, "server")
    assert list(table[0]) == data["columns"]
    assert data["columns"][-len(ratios) :] == list(ratios)
    assert len(table) == len(data["rows"])
    # Every configuration is really measured: a server that fails to start is a bug.
    assert [row["key"] for row in data["rows"] if row["unavailable"] is not None] == []
    points = {(row["key"], row["workload"], row["connections"]): row for row in data["rows"]}
    cells_of = dict(zip(points, table, strict=True))
    assert expected <= set(points)

    for point, row in points.items():
        cells = cells_of[point]
        assert cells["server"] == row["server"]
        assert cells["conns"] == str(row["connections"])
        for column in NUMERIC:
            if column not in {"p50 ms", "p99 ms"}:  # n/a when no request finished in time
                assert not math.isnan(number(cells[column])), (column, cells)
        assert close(number(cells["req/s"]), row["requests_per_s"])
        assert close(number(cells["rows/s"]), row["rows_per_s"])
        assert math.isclose(row["rows_per_s"], row["requests_per_s"] * row["rows"])
        assert close(number(cells["ready s"]), row["ready_s"])
        assert close(number(cells["RSS MB"]), row["rss_mb"])
        assert row["errors"] >= 0
        assert row["rss_mb"] > 0
        assert row["ready_s"] > 0
        assert close(number(cells["server CPU"]), row["server_cores"])
        # CPU seconds per second of load: above 0 while serving, at most the cores it may use
        assert 0 < row["server_cores"] <= (2.2 if row["key"] == "service-2w" else 1.1)
        if row["p50_ms"] is not None:
            assert row["p50_ms"] <= row["p99_ms"]
        for column, baseline in ratios.items():
            shown = number(cells[column])
            base = points.get((baseline, row["workload"], row["connections"]))
            if base is None or not base["requests_per_s"]:
                assert math.isnan(shown), (column, cells)
                continue
            exact = row["requests_per_s"] / base["requests_per_s"]
            assert math.isclose(shown, exact, rel_tol=0.005, abs_tol=0.0051), (column, cells)
            base_cells = cells_of[(baseline, row["workload"], row["connections"])]
            as_printed = number(cells["req/s"]) / number(base_cells["req/s"])
            assert math.isclose(shown, as_printed, rel_tol=0.02, abs_tol=0.011), (column, cells)


@pytest.mark.benchmark
@pytest.mark.timeout(420)
def test_quick_benchmark_table_is_well_formed(run: tuple[Path, str]) -> None:
    out, stdout = run
    data: dict[str, Any] = json.loads((out / "results.json").read_text())
    expected = {(key, "1row", c) for key in QUICK_SERVERS for c in (1, 16, 64)}
    expected |= {("service", "10k", 1), ("bare-asgi", "10k", 1)}
    check_table(stdout, data, expected, RATIOS)


@pytest.mark.benchmark
@pytest.mark.timeout(420)
def test_quick_benchmark_lists_every_target(run: tuple[Path, str]) -> None:
    out, stdout = run
    data = json.loads((out / "results.json").read_text())
    targets = markdown_table(stdout, "target")
    assert [t["target"] for t in targets] == [t["name"] for t in data["targets"]]
    assert all(t["result"] in {"PASS", "MISS", "n/a"} for t in targets)
    # Only the peer comparison needs --peers; everything else is measured in quick mode.
    assert [t["name"] for t in data["targets"] if t["result"] == "n/a"] == [
        "/predict 1 row @16 conns: service / best peer (req/s)"
    ]


@pytest.mark.benchmark
@pytest.mark.timeout(420)
def test_quick_benchmark_draws_the_chart(run: tuple[Path, str]) -> None:
    out, _ = run
    width, height = png_size(out / "throughput.png")
    assert width > 400
    assert height > 200


def test_the_ab_script_compares_two_revisions() -> None:
    """``benchmarks/ab.py`` serves two git revisions in turn and prints B / A."""
    output = script(
        "benchmarks/ab.py", "HEAD", "HEAD", "--rounds", "1", "--duration", "1", "--quick"
    )
    check_ab_output(output)


def check_ab_output(output: str) -> None:
    """Two median lines (req/s, µs CPU per request) and their ratios, consistent."""
    lines = output.splitlines()
    medians = [float(line.split("median ")[1].split()[0]) for line in lines[:2]]
    cpu = [float(line.split("req/s, ")[1].split()[0]) for line in lines[:2]]
    assert all(m > 0 for m in medians)
    assert all(0 < c < 1e6 for c in cpu)
    ratio = float(lines[2].split("B / A = ")[1].split()[0])
    assert math.isclose(ratio, medians[1] / medians[0], rel_tol=0.002)
    cpu_ratio = float(lines[2].split("in req/s, ")[1].split()[0])
    assert math.isclose(cpu_ratio, cpu[0] / cpu[1], rel_tol=0.002)
    paired = float(lines[2].split("CPU per request, ")[1].split()[0])
    assert math.isclose(paired, ratio, rel_tol=0.002)  # one round: the same ratio


def test_the_ab_script_measures_the_fastapi_floor_against_the_service() -> None:
    """``ab.py floor HEAD``: the headline ratio of ``run.py``, in turns."""
    output = script(
        "benchmarks/ab.py", "floor", "HEAD", "--rounds", "1", "--duration", "1", "--quick"
    )
    assert output.splitlines()[0].startswith("A floor: median ")
    check_ab_output(output)


def check_turns(text: str, turns: dict[str, Any], labels: list[str], rounds: int) -> None:
    """The "in turns" table matches the JSON's rounds: medians and paired ratios recomputed."""
    table = markdown_table(text, "contender")
    assert [row["contender"] for row in table] == labels == turns["labels"]
    assert turns["unavailable"] is None
    # Each round starts one contender later: none always goes first.
    assert turns["orders"] == [
        labels[i % len(labels) :] + labels[: i % len(labels)] for i in range(rounds)
    ]
    reference = turns["rates"][labels[0]]
    for row in table:
        rates, cpu = turns["rates"][row["contender"]], turns["cpu_us"][row["contender"]]
        assert len(rates) == len(cpu) == rounds
        assert all(rate > 0 for rate in rates)
        assert all(0 < c < 1e6 for c in cpu)
        assert math.isclose(number(row["median req/s"]), statistics.median(rates), rel_tol=0.01)
        paired = statistics.median(r / b for r, b in zip(rates, reference, strict=True))
        assert close(number(row["paired ratio (median)"]), paired)
        assert int(row["conns"]) == turns["connections_of"][row["contender"]]
        p50 = turns["p50_ms"][row["contender"]]
        assert len(p50) == rounds
        assert all(ms > 0 for ms in p50)
        assert close(number(row["median p50 ms"]), statistics.median(p50))
        if row["contender"] != labels[0]:
            wins = sum(r / b >= 1 for r, b in zip(rates, reference, strict=True))
            assert row["rounds at or above the reference"] == f"{wins} of {rounds}"
        cpu_ratio = statistics.median(turns["cpu_us"][labels[0]]) / statistics.median(cpu)
        assert close(number(row["ratio in CPU/request"]), cpu_ratio)


@pytest.mark.benchmark
@pytest.mark.timeout(420)
def test_quick_benchmark_measures_the_floor_and_the_service_in_turns(
    run: tuple[Path, str],
) -> None:
    out, stdout = run
    data = json.loads((out / "results.json").read_text())
    check_turns(stdout, data["turns"], ["FastAPI floor", "service"], rounds=2)
    headline = data["targets"][0]
    assert headline["name"] == "/predict 1 row @16 conns: service / FastAPI floor (req/s)"
    rates = data["turns"]["rates"]
    paired = statistics.median(
        s / f for s, f in zip(rates["service"], rates["FastAPI floor"], strict=True)
    )
    assert math.isclose(headline["measured"], paired, rel_tol=1e-9)
    assert headline["note"].startswith("in turns: median of 2 paired rounds")


@pytest.mark.benchmark
@pytest.mark.timeout(600)
def test_the_forms_script_compares_image_bodies_on_one_service() -> None:
    """``benchmarks/forms.py``: b64, raw and V2 binary in turns, each against b64."""
    output = script("benchmarks/forms.py", "--rounds", "1", "--duration", "1")
    table = markdown_table(output, "contender")
    assert [row["contender"] for row in table] == ["{b64}", "raw image/jpeg", "V2 BYTES binary"]
    base = number(table[0]["median req/s"])
    for row in table:
        ratio = number(row["median req/s"]) / base
        # One round: the paired median is that round's ratio (the medians are rounded).
        assert math.isclose(number(row["paired ratio (median)"]), ratio, rel_tol=0.02)
        assert number(row["server CPU µs/request"]) > 0


@pytest.mark.benchmark
@pytest.mark.timeout(900)
def test_quick_image_benchmark_is_well_formed(image_run: tuple[Path, str]) -> None:
    out, stdout = image_run
    assert stdout == (out / "results.md").read_text()
    assert "## Benchmark results: mobilenet (quick mode)" in stdout
    data: dict[str, Any] = json.loads((out / "results.json").read_text())
    assert data["model"] == "mobilenet"
    expected = {(k, w, c) for (k, w), conns in IMAGE_POINTS.items() for c in conns}
    check_table(stdout, data, expected, IMAGE_RATIOS)
    width, height = png_size(out / "throughput.png")
    assert width > 400
    assert height > 200


@pytest.mark.benchmark
@pytest.mark.timeout(900)
def test_quick_image_benchmark_lists_every_target(image_run: tuple[Path, str]) -> None:
    out, stdout = image_run
    data = json.loads((out / "results.json").read_text())
    targets = markdown_table(stdout, "target")
    assert [t["target"] for t in targets] == [t["name"] for t in data["targets"]]
    assert all(t["result"] in {"PASS", "MISS", "INFO", "n/a"} for t in targets)
    # Only the peer comparisons need --peers; everything else is measured in quick mode.
    assert [t["name"] for t in data["targets"] if t["result"] == "n/a"] == [
        "{b64} JPEG @16 conns: service / best peer, batching on (req/s)",
        "start to ready: fastest peer / service",
    ]
    labels = ["{b64}", "raw image/jpeg", "V2 BYTES binary", "tf-function"]
    batching = ["service-batching", "service-batching-nowait", "service-batching-off"]
    labels += batching
    labels += ["{b64} @64", *(f"{key} @64" for key in batching)]
    labels += ["service-batching @1", "service-batching-off @1"]
    check_turns(stdout, data["turns"], labels, rounds=2)
    assert data["turns"]["connections_of"]["{b64} @64"] == 64
    assert data["turns"]["connections_of"]["service-batching @1"] == 1
    rates = data["turns"]["rates"]
    for name, label, over in (
        ("raw image/jpeg body @16 conns: service / {b64} (req/s)", labels[1], labels[0]),
        ("V2 BYTES binary @16 conns: service / {b64} (req/s)", labels[2], labels[0]),
        ("{b64} JPEG @16 conns: service / FastAPI + tf.function (req/s)", labels[0], labels[3]),
        (
            "{b64} JPEG @64 conns: batching on / off (req/s)",
            "service-batching @64",
            "service-batching-off @64",
        ),
    ):
        target = next(t for t in data["targets"] if t["name"] == name)
        ratios = [r / b for r, b in zip(rates[label], rates[over], strict=True)]
        assert math.isclose(target["measured"], statistics.median(ratios), rel_tol=1e-9)
        assert target["note"].startswith("in turns: median of 2 paired rounds")
    p50 = data["turns"]["p50_ms"]
    target = next(t for t in data["targets"] if t["name"].endswith("on / off (p50 latency)"))
    ratios = [
        on / off
        for on, off in zip(p50["service-batching @1"], p50["service-batching-off @1"], strict=True)
    ]
    assert math.isclose(target["measured"], statistics.median(ratios), rel_tol=1e-9)
    assert target["note"].startswith("in turns: median of 2 paired rounds")
    defaults64 = next(
        t for t in data["targets"] if t["name"].startswith("{b64} JPEG @64 conns: defaults")
    )
    worst = min(
        statistics.median(
            r / b for r, b in zip(rates["{b64} @64"], rates[f"{key} @64"], strict=True)
        )
        for key in batching
    )
    assert math.isclose(defaults64["measured"], worst, rel_tol=1e-9)


@pytest.mark.benchmark
@pytest.mark.timeout(900)
def test_breakdown_prints_every_step(image_model: Path) -> None:
    """``benchmarks/breakdown.py`` times each step of one image request: a positive number each."""
    stdout = script("benchmarks/breakdown.py", "--image-model", str(image_model), "--repeat", "5")
    rows = markdown_table(stdout, "path")
    steps = {row["step"]: row for row in rows}
    assert set(BREAKDOWN_STEPS) <= set(steps)
    for row in rows:
        assert 0 < number(row["min us"]) <= number(row["median us"]), row
        assert number(row["min us"]) <= number(row["mean us"]), row
    shares = [float(row["share"].removesuffix("%")) for row in rows if row["share"]]
    assert len(shares) == 6
    assert 97 <= sum(shares) <= 103  # rounded percentages of the request's steps


@pytest.mark.benchmark
@pytest.mark.timeout(900)
def test_instructions_counts_each_body_form_under_callgrind(image_model: Path) -> None:
    """``benchmarks/instructions.py``: each form's instructions per request, and its ratio."""
    argv = ["--image-model", str(image_model), "--requests", "3", "--warmup", "1"]
    stdout = script("benchmarks/instructions.py", *argv, timeout=900)
    rows = markdown_table(stdout, "form")
    assert [row["form"] for row in rows] == ["{b64}", "raw image/jpeg", "V2 BYTES binary"]
    counts = [float(row["instructions per request"].replace(",", "")) for row in rows]
    # The CNN's inference runs on the worker thread: counted, it is millions per request.
    assert all(n > 1e6 for n in counts), counts
    for row, n in zip(rows, counts, strict=True):
        assert close(number(row["ratio to {b64}"]), n / counts[0])
        assert abs(float(row["difference"].replace(",", "")) - (n - counts[0])) <= 1
