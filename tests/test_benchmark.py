"""The benchmark harness runs end to end in ``--quick`` mode and writes a well-formed report.

It starts every server configuration for real (about a minute for the tabular model,
two for the image model, whose MobileNetV2 is built and exported once and shared with
the breakdown script), so these are the slow tests of the suite. They assert the shape
of the output, never a speed. The turns and the load generator are also run against
``tests/flaky_server.py``, a server that fails on purpose: a contender with error
answers is dropped and the others go on, and any error answer fails the run.
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
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "benchmarks"))  # the harness, as the benchmark scripts import it

from harness import loadgen, machine, plan, report, turns  # noqa: E402
from run import check_answer  # noqa: E402

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
    check_no_errors(stdout, data)
    # Only the peer comparison needs --peers; everything else is measured in quick mode.
    assert [t["name"] for t in data["targets"] if t["result"] == "n/a"] == [
        "/predict 1 row @16 conns: service / best peer (req/s)"
    ]


def check_no_errors(stdout: str, data: dict[str, Any]) -> None:
    """A healthy quick run: no error answer anywhere, said first, and the first target met."""
    assert stdout.splitlines()[2] == (
        "**No errors**: every answer of every point and every turn was a 200."
    )
    assert data["failed"] is False
    assert data["error_answers"] == 0
    assert data["errors_in"] == []
    assert all(row["errors"] == 0 for row in data["rows"])
    first = data["targets"][0]
    assert first["name"].startswith("errors in the whole run")
    assert (first["measured"], first["result"], first["shown"]) == (0, "PASS", "0 errors")


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
    assert turns["dropped"] == {}
    assert turns["errors"] == {}
    assert {row["dropped"] for row in table} == {"no"}
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
    headline = data["targets"][1]
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
@pytest.mark.timeout(600)
def test_the_top_k_script_times_top_k_against_the_whole_distribution() -> None:
    """``benchmarks/top_k.py``: on 1,000 classes, top k and the whole distributions in turns."""
    output = script("benchmarks/top_k.py", "--rounds", "1", "--duration", "1")
    forms = ["whole, rows", "top_k=5, rows", "whole, columnar", "top_k=5, columnar"]
    sizes = markdown_table(output, "body")
    assert [row["body"] for row in sizes] == forms
    size = [float(row["answer bytes"].replace(",", "")) for row in sizes]
    assert size[1] < size[0] / 10
    assert size[3] < size[2] / 10
    table = markdown_table(output, "contender")  # one connection's turns
    assert [row["contender"] for row in table] == forms
    assert all(row["dropped"] == "no" and number(row["median p50 ms"]) > 0 for row in table)
    for fmt in ("rows", "columnar"):
        line = f"top_k=5, {fmt} over whole, {fmt}: p50 "
        assert output.count(line) == 2, output  # at 1 and at 16 connections


@pytest.mark.benchmark
@pytest.mark.timeout(600)
def test_the_grpc_script_measures_grpc_and_http_on_one_service_in_turns() -> None:
    """``benchmarks/grpc_vs_http.py``: /predict, V2 binary over HTTP and gRPC raw, checked
    to agree, then in turns at 1 and 16 requests in flight."""
    output = script("benchmarks/grpc_vs_http.py", "--quick")
    assert output.count("| form | req/s |") == 2, output  # at 1 and at 16 in flight
    table = markdown_table(output, "form")
    assert [row["form"] for row in table] == ["/predict", "V2 binary HTTP", "gRPC raw"]
    assert all(number(row["req/s"].replace(",", "")) > 0 for row in table)
    assert all(number(row["server CPU µs/request"]) > 0 for row in table)


@pytest.mark.benchmark
@pytest.mark.timeout(600)
def test_the_explain_script_times_exact_and_sampled_explanations() -> None:
    """``benchmarks/explain.py``: exact Shapley values up to 12 features, KernelSHAP at 30,
    occlusion on a 96x96 image."""
    output = script("benchmarks/explain.py", "--quick")
    table = markdown_table(output, "model")
    names = ["blobs", "table8", "table12", "table30", "image96"]
    assert [row["model"] for row in table] == names
    inputs = ["2 features", "8 features", "12 features", "30 features", "96x96x3 image"]
    assert [row["input"] for row in table] == inputs
    methods = [row["method"] for row in table]
    assert methods == ["exact shapley"] * 3 + ["kernel shap", "occlusion"]
    variants = [int(row["variants"]) for row in table]
    # 2^features; samples + the empty and full coalitions; 12 x 12 patches + the image
    assert variants == [4, 256, 4096, 2050, 145]
    for row, count in zip(table, variants, strict=True):
        points = 1 if row["method"] == "occlusion" else 10  # the background's 10 points
        assert int(row["model rows"]) == count * points
        assert 0 < number(row["p50 ms"]) <= number(row["p99 ms"])
        assert number(row["per s"]) > 0
    assert [number(row["max s.e."]) for row in table[:3]] == [0, 0, 0]
    assert number(table[3]["max s.e."]) >= 0
    assert table[4]["max s.e."] == "n/a"
    assert "20 one-instance explanations per model" in output


@pytest.mark.benchmark
@pytest.mark.timeout(600)
def test_the_shadow_script_measures_the_live_version_with_the_shadow_on_and_off() -> None:
    """``benchmarks/shadow.py``: two versions, served with the shadow and without, in turns."""
    argv = ["--quick", "--rounds", "1", "--duration", "1", "--connections", "16"]
    output = script("benchmarks/shadow.py", *argv)
    assert output.startswith("**No errors**"), output
    (row,) = markdown_table(output, "conns")
    assert row["conns"] == "16"
    for side in ("off", "on"):
        assert number(row[f"req/s {side}"]) > 0
        assert 0 < number(row[f"p50 ms {side}"]) <= number(row[f"p99 ms {side}"])
    # One round: the paired median is that round's ratio (the medians are rounded).
    ratio = number(row["req/s on"]) / number(row["req/s off"])
    assert math.isclose(number(row["on/off req/s (paired median)"]), ratio, rel_tol=0.02)
    assert row["target ≥ 0.90x"] in {"PASS", "FAIL"}
    assert "Target (issue 26)" in output
    (record,) = markdown_table(output, "conns | rows compared")
    compared, shed = (int(record[k].replace(",", "")) for k in ("rows compared", "rows shed"))
    assert compared > 0
    assert record["other rows not compared"] == "0"
    assert record["shed share"] == f"{shed / (compared + shed):.1%}"
    agreement = markdown_table(output, "rows (requests of 100)")
    assert [found["compared"] for found in agreement] == ["2,000", "2,000"]
    for found in agreement:
        assert 0 <= float(found["top-1 agreement"].removesuffix("%")) <= 100
        assert 0 <= float(found["mean JS divergence (bits)"]) <= 1


@pytest.mark.benchmark
@pytest.mark.timeout(600)
def test_the_monitoring_script_measures_the_service_with_monitoring_on_and_off() -> None:
    """``benchmarks/monitoring.py``: one model, served with monitoring and without, in turns."""
    argv = ["--quick", "--rounds", "1", "--duration", "1", "--connections", "16"]
    output = script("benchmarks/monitoring.py", *argv)
    assert output.startswith("**No errors**"), output
    (row,) = markdown_table(output, "conns")
    assert row["conns"] == "16"
    for side in ("off", "on"):
        assert number(row[f"req/s {side}"]) > 0
        assert 0 < number(row[f"p50 ms {side}"]) <= number(row[f"p99 ms {side}"])
        assert number(row[f"CPU µs/req {side}"]) > 0
    # One round: the paired median is that round's ratio (the medians are rounded).
    ratio = number(row["req/s on"]) / number(row["req/s off"])
    assert math.isclose(number(row["on/off req/s (paired median)"]), ratio, rel_tol=0.02)
    assert row["target ≥ 0.95x"] in {"PASS", "FAIL"}
    assert "Target (issue 27)" in output
    (line,) = [found for found in output.splitlines() if found.startswith("- 16 connections: ")]
    assert line.startswith("- 16 connections: window_rows 1,000 of 1,000, rows_seen "), line
    assert "predicted_mix_psi n/a" not in line
    assert "estimated_accuracy n/a" not in line
    assert line.endswith(": ok"), line


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
    check_no_errors(stdout, data)
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


def flaky_spec(key: str, body: Path, *options: str) -> plan.ServerSpec:
    """``tests/flaky_server.py`` as a benchmark server, with its ``options``."""
    argv = [sys.executable, "-m", "tests.flaky_server", "--port", "{port}", *options]
    load = plan.Load(plan.ONE_ROW, "/predict", body, (4,))
    return plan.ServerSpec(key, "flaky", " ".join(options), argv, [load], ready_timeout_s=30)


@pytest.fixture
def bench_body(tmp_path: Path) -> Path:
    """A request body for the flaky server (it reads and ignores it)."""
    body = tmp_path / "body.json"
    body.write_text('{"instances": [[1.0, 2.0]]}')
    return body


def in_turns(
    contenders: list[turns.Contender], workdir: Path, arm: dict[str, Path], rounds: int = 3
) -> tuple[turns.Turns, list[str]]:
    """``take_turns`` with the real load generator and check, 1 s turns at 4 connections;
    ``arm``: the file that arms a contender's flaky server, made right after its first turn."""
    said: list[str] = []

    def say(message: str) -> None:
        said.append(message)
        for label, path in arm.items():
            if message.startswith(f"turns, round 1: {label} "):
                path.touch()  # from its next request on, the server fails (after --ok N)

    measured = turns.take_turns(
        contenders,
        rounds=rounds,
        duration_s=1,
        connections=4,
        generator=loadgen.choose("auto", workdir, []),
        pinning=machine.plan_pinning(),
        workdir=workdir,
        say=say,
        check=check_answer,
    )
    return measured, said


@pytest.mark.benchmark
@pytest.mark.timeout(300)
def test_the_load_generators_count_every_answer_but_200_as_an_error(
    tmp_path: Path, bench_body: Path
) -> None:
    """wrk itself counts only statuses above 399: a 302 (or a 201) is an error here too."""
    generators = [loadgen.choose("auto", tmp_path, []), loadgen.PythonLoad()]
    for status in ("302", "201", "500"):
        spec = flaky_spec(f"answers-{status}", bench_body, "--ok", "3", "--status", status)
        server = spec.start(tmp_path / f"{spec.key}.log", None)
        try:
            for generator in generators:
                result = generator.run(server.url + "/predict", bench_body, 2, 1, None)
                assert result.requests > 3, (generator.name, result)
                assert result.socket_errors == 0, (generator.name, result)
                # the first 3 requests (of the first run) were answered 200, no later one
                assert result.errors == result.non_200 >= result.requests - 3, (status, result)
        finally:
            server.stop()
    healthy = flaky_spec("healthy", bench_body)
    server = healthy.start(tmp_path / "healthy.log", None)
    try:
        assert generators[0].run(server.url + "/predict", bench_body, 2, 1, None).errors == 0
    finally:
        server.stop()


@pytest.mark.benchmark
@pytest.mark.timeout(300)
def test_turns_drop_a_contender_with_errors_and_go_on(tmp_path: Path, bench_body: Path) -> None:
    """A contender whose server fails, or never answers, or never starts, leaves the turns;
    the others have all their rounds, and the report says who was dropped, when and why."""
    healthy = flaky_spec("healthy", bench_body)
    armed = tmp_path / "flaky.armed"
    flaky = flaky_spec("flaky", bench_body, "--ok", "1", "--armed-by", str(armed))
    broken = flaky_spec("broken", bench_body, "--ok", "0")
    dead = replace(
        flaky_spec("dead", bench_body), argv=[sys.executable, "-c", "raise SystemExit(3)"]
    )
    contenders = [
        turns.Contender("reference", healthy, healthy.loads[0]),
        turns.Contender("flaky", flaky, flaky.loads[0]),
        turns.Contender("steady", healthy, healthy.loads[0], connections=2),
        turns.Contender("broken", broken, broken.loads[0]),
        turns.Contender("dead", dead, dead.loads[0]),
    ]
    measured, said = in_turns(contenders, tmp_path, {"flaky": armed})
    assert measured.rates.keys() == {"reference", "flaky", "steady", "broken", "dead"}
    assert set(measured.dropped) == {"flaky", "broken", "dead"}, said
    # flaky: round 1 measured; its round-2 check got its one 200, then the load got 500s
    reason = measured.dropped["flaky"]
    assert reason.startswith("round 2: "), said
    assert reason.endswith(" errors (answers other than 200, or socket errors) in its turn")
    assert measured.errors["flaky"] > 0
    assert len(measured.rates["flaky"]) == len(measured.p50_ms["flaky"]) == 1
    assert len(measured.cpu_us["flaky"]) == 1
    assert measured.dropped["broken"].startswith("before round 1: POST http://127.0.0.1:")
    assert "answered 500" in measured.dropped["broken"]
    assert measured.errors["broken"] == 1
    assert measured.dropped["dead"].startswith("did not start: exited with status 3")
    assert "dead" not in measured.errors  # no answer at all: not an error answer
    assert measured.error_answers == measured.errors["flaky"] + 1
    for label in ("broken", "dead"):
        assert measured.rates[label] == measured.p50_ms[label] == measured.cpu_us[label] == []
    # the others went on: every round measured, and paired over all of them
    for label in ("reference", "steady"):
        assert len(measured.rates[label]) == len(measured.cpu_us[label]) == 3
        assert all(rate > 0 for rate in measured.rates[label])
    assert measured.orders == [
        ["reference", "flaky", "steady"],
        ["flaky", "steady", "reference"],
        ["steady", "reference"],  # the rotation's third start, without the dropped
    ]
    assert len(measured.ratios("steady")) == 3
    assert measured.ratios("flaky") == [measured.rates["flaky"][0] / measured.rates["reference"][0]]
    assert measured.paired("broken") is None
    assert measured.cpu_ratio("dead") is None
    assert measured.describe("flaky").startswith("in turns: median of 1 paired round of 1 s (of 3")
    assert measured.error_notes("reference", "flaky", "dead") == [
        f"flaky in the turns, {measured.dropped['flaky']}"
    ]

    # The table: each contender's row says whether it was dropped, when and why.
    table = markdown_table("\n".join(report.turns_section(measured)), "contender")
    cells = {row["contender"]: row for row in table}
    assert list(cells) == ["reference", "flaky", "steady", "broken", "dead"]
    assert cells["reference"]["dropped"] == cells["steady"]["dropped"] == "no"
    assert cells["flaky"]["dropped"] == measured.dropped["flaky"].replace("|", "/")
    assert cells["dead"]["dropped"].startswith("did not start")
    assert cells["flaky"]["rounds at or above the reference"].endswith(" of 1")
    assert cells["steady"]["rounds at or above the reference"].endswith(" of 3")
    assert cells["broken"]["median req/s"] == cells["broken"]["req/s by round"] == "n/a"
    assert cells["broken"]["rounds at or above the reference"] == "n/a"
    assert cells["steady"]["conns"] == "2"

    # And the run failed: the report says so first, the JSON too, the first target is missed.
    result = report.Report("test", "quick", MACHINE, {}, [], [], turns=measured)
    result.targets = [report.errors_target([], measured)]
    text = report.markdown(result)
    assert text.splitlines()[2].startswith(f"**RUN FAILED: {measured.error_answers} error answers")
    data = json.loads(json.dumps(report.as_json(result)))
    assert data["failed"] is True
    assert data["error_answers"] == measured.error_answers
    assert len(data["errors_in"]) == 2
    assert data["turns"]["dropped"] == measured.dropped
    assert data["targets"][0]["result"] == "MISS"


@pytest.mark.benchmark
@pytest.mark.timeout(300)
def test_turns_keep_the_rounds_measured_before_the_reference_was_dropped(
    tmp_path: Path, bench_body: Path
) -> None:
    """Once the reference is dropped, ratios to it keep the rounds before; other pairs go on."""
    armed = tmp_path / "reference.armed"
    flaky = flaky_spec("flaky", bench_body, "--ok", "1", "--armed-by", str(armed))
    healthy = flaky_spec("healthy", bench_body)
    contenders = [
        turns.Contender("reference", flaky, flaky.loads[0]),
        turns.Contender("one", healthy, healthy.loads[0]),
        turns.Contender("two", healthy, healthy.loads[0], connections=2),
    ]
    measured, said = in_turns(contenders, tmp_path, {"reference": armed})
    assert list(measured.dropped) == ["reference"], said
    assert measured.dropped["reference"].startswith("round 2: ")
    assert len(measured.rates["reference"]) == 1
    assert len(measured.rates["one"]) == len(measured.rates["two"]) == 3
    ratio = measured.rates["one"][0] / measured.rates["reference"][0]
    assert measured.ratios("one") == [ratio]
    assert measured.paired("one") == ratio
    assert measured.wins("one") == (ratio >= 1)
    assert len(measured.ratios("two", over="one")) == 3
    assert len(measured.ratios("two", over="one", series="p50_ms")) == 3
    reason = measured.dropped["reference"]
    assert measured.describe("one").endswith(f"(of 3: reference dropped {reason})")
    assert measured.describe("two", "one") == "in turns: median of 3 paired rounds of 1 s"


MACHINE = dict.fromkeys(("cpu", "cores", "memory", "os", "python", "commit"), "test")


def report_row(key: str, rate: float, errors: int = 0, **fields: Any) -> report.Row:
    """A measured row of the tabular suite's 1-row workload."""
    values = {"connections": 16, "p50_ms": 1.0, "p99_ms": 2.0, "ready_s": 0.5, **fields}
    return report.Row(
        key,
        key,
        "test",
        workload=plan.ONE_ROW.key,
        workload_label=plan.ONE_ROW.label,
        rows=1,
        requests_per_s=rate,
        rows_per_s=rate,
        errors=errors,
        **values,
    )


def test_a_speed_resting_on_errors_is_no_pass_and_fails_the_run() -> None:
    """The service twice as fast as the floor, but 3 of its answers were errors: MISS."""
    rows = [report_row(plan.FASTAPI, 1000.0), report_row(plan.SERVICE, 2000.0, errors=3)]
    result = report.Report("test", "quick", MACHINE, {}, [], rows, model="blobs")
    result.targets = report.targets(rows)
    found = {target.name: target for target in result.targets}
    first = result.targets[0]
    assert first.name.startswith("errors in the whole run")
    assert (first.measured, first.result) == (3, "MISS")
    assert first.note == "service (test) 1 row @16: 3 errors"
    headline = found["/predict 1 row @16 conns: service / FastAPI floor (req/s)"]
    assert headline.measured == 2.0  # well above its 1.2x goal ...
    assert headline.result == "MISS"  # ... but not a pass
    assert headline.note.endswith("error answers behind it: service (test) 1 row @16: 3 errors")
    assert result.failed
    assert result.error_answers == 3
    text = report.markdown(result)
    assert text.splitlines()[2] == (
        "**RUN FAILED: 3 error answers** (answers other than 200, or socket errors) in "
        "service (test) 1 row @16: 3 errors. A run with errors fails whatever its speed "
        "(run.py exits with 1)."
    )
    # Without the errors, the same numbers pass.
    clean = [replace(row, errors=0) for row in rows]
    passed = {t.name: t.result for t in report.targets(clean)}
    assert passed["/predict 1 row @16 conns: service / FastAPI floor (req/s)"] == "PASS"
    assert passed[first.name] == "PASS"
    assert not report.Report("test", "quick", MACHINE, {}, [], clean).failed


def test_a_server_that_is_not_available_is_not_an_error() -> None:
    """A peer that is not installed, or a server that did not start, has no error answers;
    a first answer that is not a 200 is one (``run.measure_load`` counts it)."""
    rows = [
        report.Row("mlserver", "MLServer", "test", unavailable="not installed"),
        report.Row("litserve", "LitServe", "test", unavailable="did not start: exited"),
    ]
    assert not report.Report("test", "quick", MACHINE, {}, [], rows).failed
    rows.append(report.Row("bentoml", "BentoML", "t", unavailable="answered 500: ...", errors=1))
    result = report.Report("test", "quick", MACHINE, {}, [], rows)
    assert result.failed
    assert report.error_places(rows, None) == ["BentoML (t), its first answer: 1 error"]
    table = markdown_table(report.markdown(result), "server")
    assert [row["errors"] for row in table] == ["n/a", "n/a", "1"]


def test_the_wrk_report_is_read_with_the_scripts_count_of_answers_but_200() -> None:
    """wrk's "Non-2xx or 3xx responses" counts statuses above 399 only: the Lua count wins."""
    text = """Running 1s test @ http://127.0.0.1:1/predict
  1 threads and 2 connections
  Latency Distribution
     50%  100.00us
     99%    1.00ms
  1000 requests in 1.00s, 100.00KB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 10
Requests/sec:   1000.00
Transfer/sec:    100.00KB
Answers other than 200: 25
"""
    result = loadgen.parse_wrk(text)
    assert (result.non_200, result.socket_errors, result.errors) == (25, 3, 28)
    without = loadgen.parse_wrk(text.replace("Answers other than 200: 25\n", ""))
    assert without.non_200 == 10
    assert "Answers other than 200" in loadgen.LUA_POST.format(body="b.json", headers="")


def test_the_startup_script_times_both_servers_in_turns_and_breaks_the_start_down(
    tmp_path: Path,
) -> None:
    """``benchmarks/startup.py``: times to ready, their paired ratio, the import breakdown."""
    output = script("benchmarks/startup.py", "--runs", "2", "--out", str(tmp_path))
    assert output == (tmp_path / "startup.md").read_text()
    data = json.loads((tmp_path / "startup.json").read_text())
    ready = data["ready_s"]
    assert set(ready) == {"service", "FastAPI floor"}
    assert all(len(times) == 2 and all(0 < t < 30 for t in times) for times in ready.values())
    pairs = [s / f for s, f in zip(ready["service"], ready["FastAPI floor"], strict=True)]
    assert math.isclose(data["paired_service_over_floor"], statistics.median(pairs))
    parts = data["breakdown_ms"]
    assert 0 < parts["imports"] < parts["ready"]
    assert math.isclose(sum(parts["by_package"].values()), parts["imports"], rel_tol=1e-9)
    assert {"fastapi", "numpy", "service"} <= set(parts["by_package"])
    assert "service.protocols.v2" in parts["service_modules"]
    assert "PIL" not in parts["by_package"]  # the default model is a table
    assert f"**{data['paired_service_over_floor']:.2f}x**" in output
