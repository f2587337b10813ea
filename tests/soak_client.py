"""A soak-test client process: mixed good and bad requests for a while, counts printed as JSON.

Run as ``python -m tests.soak_client URL SECONDS SEED``.
"""

from __future__ import annotations

import json
import random
import sys
import time

import httpx

GOOD = [
    ("/predict", {"instances": [[15.0, 0.0], [0.0, 15.0]]}),
    ("/predict", {"instances": [[30.0, 15.0]] * 200, "format": "columnar"}),
    ("/softmax", {"logits": [[2.0, 4.3, 1.2, -3.1]] * 10, "temperature": 0.5}),
]
BAD = [
    ("/predict", b'{"instances": [[1, 2, 3]]}'),
    ("/predict", b'{"instances": [[1, NaN]]}'),
    ("/predict", b'{"instances": [[1, 2]'),
    ("/models/nope/predict", b'{"instances": [[1, 2]]}'),
    ("/softmax", b'{"logits": [1, 2], "temperature": -1}'),
    ("/softmax", b'{"logits": ' + b"[" * 100 + b"]" * 100 + b"}"),
]


def main() -> None:
    url, seconds, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    counts: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=10) as client:
        while time.monotonic() < deadline:
            if rng.random() < 0.5:
                path, body = rng.choice(GOOD)
                status = client.post(path, json=body).status_code
            else:
                path, raw = rng.choice(BAD)
                status = client.post(path, content=raw).status_code
            counts[str(status)] = counts.get(str(status), 0) + 1
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
