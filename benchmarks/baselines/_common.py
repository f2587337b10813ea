"""What every baseline server shares: its command line, the fixed answer, how uvicorn runs it.

Each baseline is started as ``python benchmarks/baselines/NAME.py --port P VERSION_DIR``
and runs exactly like the service does: uvicorn, uvloop + httptools, one worker, no
access log. It answers ``GET /health/ready`` with 200 once it listens (models are
loaded before uvicorn starts), so time to ready is measured the same way for all.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import orjson
import uvicorn

#: A predict-shaped answer for one row, as the service's row format gives it.
FIXED_ANSWER: dict[str, Any] = {
    "model": "blobs",
    "version": "1",
    "predictions": [
        {
            "probabilities": [
                0.9997166029775605,
                3.0783743784195037e-6,
                9.167787186592471e-6,
                0.0002711508608743596,
            ],
            "argmax": 0,
            "label": "0",
        }
    ],
}
FIXED_BODY: bytes = orjson.dumps(FIXED_ANSWER)
READY_BODY: bytes = orjson.dumps({"status": "ready"})


def parse_args(description: str) -> argparse.Namespace:
    """``--port P VERSION_DIR``: where to listen and which trained version to serve."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    parser.add_argument("version_dir", type=Path, help="models/<name>/<version>/ directory")
    return parser.parse_args()


def read_metadata(version_dir: Path) -> dict[str, Any]:
    """The version's ``metadata.json``."""
    metadata: dict[str, Any] = json.loads((version_dir / "metadata.json").read_text())
    return metadata


def serve(app: Any, port: int) -> None:
    """Run ``app`` the way the service runs: uvloop, httptools, 1 worker, no access log."""
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        workers=1,
        access_log=False,
        log_level="warning",
        server_header=False,
    )
