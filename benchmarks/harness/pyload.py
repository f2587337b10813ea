"""The fallback load generator, used only when ``wrk`` cannot be installed: stdlib asyncio.

``python pyload.py --url URL --body FILE --connections N --duration S`` keeps N
HTTP/1.1 keep-alive connections busy with the same POST for S seconds and prints
one JSON object: requests, duration, requests per second, p50/p99 latency (ms),
answers other than 200 and socket errors. It is much slower than wrk (one Python thread
parsing every response), so the report labels numbers measured with it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit


@dataclass
class Tally:
    """What all connections observed."""

    latencies_ns: list[int] = field(default_factory=list)
    non_200: int = 0
    socket_errors: int = 0


def request_bytes(
    url: str, body: bytes, headers: list[str] | None = None
) -> tuple[str, int, bytes]:
    """Host, port and the raw POST request for ``url`` (``headers``: ``"Name: value"`` lines,
    by default ``Content-Type: application/json``)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    extra = "".join(f"{line}\r\n" for line in headers or ["Content-Type: application/json"])
    head = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"{extra}Content-Length: {len(body)}\r\n\r\n"
    )
    return host, port, head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one response (Content-Length or chunked); return its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def connection(
    host: str, port: int, request: bytes, deadline: float, timeout: float, tally: Tally
) -> None:
    """One keep-alive connection sending ``request`` back to back until ``deadline``."""
    stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    while time.monotonic() < deadline:
        try:
            if stream is None:
                stream = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            reader, writer = stream
            started = time.perf_counter_ns()
            writer.write(request)
            status = await asyncio.wait_for(read_response(reader), timeout)
            tally.latencies_ns.append(time.perf_counter_ns() - started)
            if status != 200:
                tally.non_200 += 1
        except (
            TimeoutError,
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
        ):
            tally.socket_errors += 1
            if stream is not None:
                stream[1].close()
            stream = None
    if stream is not None:
        stream[1].close()


def percentile(sorted_values: list[int], q: float) -> float:
    """The q-th percentile (nearest rank) of already sorted values; NaN when empty."""
    if not sorted_values:
        return math.nan
    rank = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return float(sorted_values[rank])


async def run(
    url: str,
    body: bytes,
    connections: int,
    duration: float,
    timeout: float,
    headers: list[str] | None = None,
) -> dict[str, float]:
    """Drive the load and summarize it."""
    host, port, request = request_bytes(url, body, headers)
    tally = Tally()
    started = time.monotonic()
    deadline = started + duration
    await asyncio.gather(
        *(connection(host, port, request, deadline, timeout, tally) for _ in range(connections))
    )
    elapsed = time.monotonic() - started
    latencies = sorted(tally.latencies_ns)
    return {
        "requests": len(latencies),
        "duration_s": elapsed,
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50) / 1e6,
        "p99_ms": percentile(latencies, 99) / 1e6,
        "non_200": tally.non_200,
        "socket_errors": tally.socket_errors,
    }


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", type=Path, required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument(
        "--header", action="append", help="'Name: value' (repeatable; default JSON content type)"
    )
    args = parser.parse_args()
    summary = asyncio.run(
        run(
            args.url,
            args.body.read_bytes(),
            args.connections,
            args.duration,
            args.timeout,
            args.header,
        )
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
