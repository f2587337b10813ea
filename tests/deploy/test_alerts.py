"""The alert rules (deploy/prometheus/alerts.yml): valid for promtool, unit-tested by it,
querying only what the service exports, and firing in a real Prometheus that scrapes a
real server when the inputs leave the training data and the reported labels disagree."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from sklearn.datasets import make_blobs  # type: ignore[import-untyped]

from tests.conftest import ROOT, Server, free_port
from tests.deploy.conftest import CENTERS, exported_names, instances, predict
from tests.deploy.test_grafana import METRIC

PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "alerts.yml"


def promtool(*args: str) -> str:
    binary = shutil.which("promtool")
    assert binary, "promtool is Debian's package prometheus (make prometheus installs it)"
    done = subprocess.run([binary, *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_promtool_accepts_the_rules_and_the_example_configuration() -> None:
    assert "SUCCESS: 6 rules found" in promtool("check", "rules", str(RULES))
    assert "is valid prometheus config" in promtool(
        "check", "config", str(PROMETHEUS / "prometheus.yml")
    )


def test_the_rules_pass_their_promtool_unit_tests() -> None:
    # alerts_test.yml: calm windows fire nothing, drift fires only after its `for`, a
    # small window never fires, and each worker's window (pid) alerts on its own.
    assert "SUCCESS" in promtool("test", "rules", str(PROMETHEUS / "alerts_test.yml"))


def rule_metrics() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {name for g in groups for rule in g["rules"] for name in METRIC.findall(rule["expr"])}


def test_every_metric_the_rules_query_is_exported(monitored: Server) -> None:
    assert rule_metrics() - exported_names(monitored) == set()


@pytest.fixture(scope="module")
def prometheus(monitored: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus scraping ``monitored`` every second with the alert rules."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is Debian's package prometheus (make prometheus installs it)"
    workdir = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "softmax-serving",
                "static_configs": [{"targets": [monitored.url.removeprefix("http://")]}],
            }
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(url + "/-/ready", timeout=1).status_code == 200, what="ready")
        yield url
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def wait_for(check: Any, *, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"Prometheus: not {what} within {seconds} s")


def alerts(url: str) -> dict[str, list[dict[str, Any]]]:
    """The alerts Prometheus holds (pending or firing), by name."""
    found: dict[str, list[dict[str, Any]]] = {}
    for alert in httpx.get(url + "/api/v1/alerts", timeout=5).json()["data"]["alerts"]:
        found.setdefault(alert["labels"]["alertname"], []).append(alert)
    return found


def query(url: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(url + "/api/v1/query", params={"query": expr}, timeout=5).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]  # type: ignore[no-any-return]


def test_a_real_prometheus_raises_the_alerts_when_inputs_leave_the_training_data(
    monitored: Server, prometheus: str
) -> None:
    # A calm stream: scraped, rules evaluated without error, nothing pending.
    for i in range(10):
        predict(monitored, instances(40, seed=i), f"calm-{i}")
    wait_for(lambda: query(prometheus, "softmax_window_rows >= 400"), what="scraping the window")
    rules = httpx.get(prometheus + "/api/v1/rules").json()["data"]["groups"][0]["rules"]
    assert {r["name"] for r in rules} == {
        "SoftmaxFeatureDrift",
        "SoftmaxPredictedMixDrift",
        "SoftmaxOutOfDistribution",
        "SoftmaxLessSure",
        "SoftmaxAccuracyBelowEstimate",
        "SoftmaxFeedbackStalled",
    }
    assert all(r["health"] == "ok" for r in rules), rules
    time.sleep(2)  # two more evaluations of the calm window
    assert alerts(prometheus) == {}

    # The same blobs four times as spread out: far from any training data, and the
    # true labels (where each row was drawn) disagree with the confident answers.
    x, y = make_blobs(n_samples=400, centers=CENTERS, cluster_std=6.0, random_state=99)
    for start in range(0, 400, 40):
        rid = f"far-{start}"
        predict(monitored, x[start : start + 40].tolist(), rid)
        body = {"request_id": rid, "labels": [str(label) for label in y[start : start + 40]]}
        joined = httpx.post(monitored.url + "/models/blobs/feedback", json=body)
        assert joined.status_code == 200, joined.text
    expected = {
        "SoftmaxOutOfDistribution",
        "SoftmaxFeatureDrift",
        "SoftmaxLessSure",
        "SoftmaxAccuracyBelowEstimate",
    }
    wait_for(lambda: expected <= set(alerts(prometheus)), what=f"raising {expected}")
    held = alerts(prometheus)
    assert "SoftmaxPredictedMixDrift" not in held  # the four blobs are still equally mixed
    assert "SoftmaxFeedbackStalled" not in held  # the labels have just come back
    for name in expected:
        for alert in held[name]:
            assert alert["state"] == "pending"  # its `for` has not passed yet
            assert alert["labels"]["model"] == "blobs"
    # Once it scrapes the settled window, Prometheus holds what the service's JSON says.
    monitor = httpx.get(monitored.url + "/models/blobs/monitor").json()

    def scraped() -> float:
        (rate,) = query(prometheus, "softmax_window_ood_rate")
        return float(rate["value"][1])

    wait_for(lambda: scraped() == monitor["ood_rate"], what="scraping the settled window")
    assert monitor["ood_rate"] > 0.25
    assert monitor["feedback"]["accuracy"] < monitor["estimated_accuracy"] - 0.05
