"""A client process sending a steady stream of requests, one after another, logging each answer.

Run as ``python -m tests.stream_client URL LOG STOP_FILE SECONDS``: alternates ``/predict``
and the V2 ``infer`` (both say which version answered) until STOP_FILE exists or
SECONDS have passed. Each answer is one JSON line: send and answer times (wall
clock), the HTTP status (0: no answer) and the version.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import httpx

PREDICT = {"instances": [[15.0, 0.0], [29.5, 14.2]]}
INFER = {"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [15.0, 0.0]}]}


def ask(client: httpx.Client, n: int) -> tuple[int, str]:
    """One request; the status and the version that answered."""
    try:
        if n % 2:
            response = client.post("/v2/models/blobs/infer", json=INFER)
            key = "model_version"
        else:
            response = client.post("/predict", json=PREDICT)
            key = "version"
    except httpx.TransportError as exc:
        return 0, type(exc).__name__
    if response.status_code != 200:
        return response.status_code, response.text[:200]
    return 200, str(response.json()[key])


def main() -> None:
    url, log, stop, seconds = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=10) as client, log.open("w") as sink:
        n = 0
        while time.monotonic() < deadline and not stop.exists():
            sent = time.time()
            status, version = ask(client, n)
            line = {"sent": sent, "answered": time.time(), "status": status, "version": version}
            sink.write(json.dumps(line) + "\n")
            sink.flush()
            n += 1


if __name__ == "__main__":
    main()
