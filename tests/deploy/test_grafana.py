"""The Grafana dashboard queries only metrics that the running service really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.conftest import ROOT, Server
from tests.deploy.conftest import exported_names

DASHBOARD = ROOT / "deploy" / "grafana" / "softmax-serving.json"
METRIC = re.compile(r"\b(softmax_[a-z_]+)\b")


def test_dashboard_is_valid_json_with_panels_and_queries() -> None:
    dashboard = json.loads(Path(DASHBOARD).read_text())
    assert dashboard["uid"] == "softmax-serving"
    assert len(dashboard["panels"]) >= 8
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert all(t["expr"] for t in panel["targets"])


def test_every_queried_metric_is_exported(monitored: Server) -> None:
    dashboard = json.loads(Path(DASHBOARD).read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in METRIC.findall(target["expr"])
    }
    exported = exported_names(monitored)
    missing = {name for name in queried if name not in exported}
    assert not missing, f"the dashboard queries metrics the service does not export: {missing}"
