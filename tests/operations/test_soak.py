"""Several client processes send mixed good and bad requests; the server stays correct and lean."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import TrainedRepository, start_server, subprocess_env


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def soak(url: str, seconds: float, clients: int) -> list[dict[str, int]]:
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.soak_client", url, str(seconds), str(seed)],
            stdout=subprocess.PIPE,
            env=subprocess_env(),
            text=True,
        )
        for seed in range(clients)
    ]
    outputs = [p.communicate(timeout=seconds + 60)[0] for p in processes]
    assert all(p.returncode == 0 for p in processes)
    return [json.loads(out) for out in outputs]


def test_soak_with_mixed_traffic_keeps_answers_right_and_memory_flat(
    trained: TrainedRepository, tmp_path: Path
) -> None:
    server = start_server(trained.workdir, tmp_path / "log")
    try:
        reference = httpx.post(server.url + "/predict", json={"instances": [[15.0, 0.0]]}).json()
        soak(server.url, 2.0, 2)  # warm-up: allocator pools and caches reach steady state
        before = rss_kib(server.process.pid)
        counts = soak(server.url, 6.0, 3)
        after = rss_kib(server.process.pid)
        answer = httpx.post(server.url + "/predict", json={"instances": [[15.0, 0.0]]}).json()
    finally:
        assert server.stop() == 0
    total: dict[str, int] = {}
    for c in counts:
        for status, n in c.items():
            total[status] = total.get(status, 0) + n
    assert set(total) <= {"200", "400", "404", "413", "422"}, total
    assert total["200"] > 100
    assert sum(total.values()) - total["200"] > 100
    assert answer == reference
    assert after - before < 20 * 1024, f"RSS grew from {before} to {after} KiB"
