"""``--workers 2`` on the real server: both workers answer, each request is logged once,
and SIGTERM to the supervisor drains requests in flight on both workers.

Which worker holds a connection is read from the kernel, not guessed: the server side of
each TCP connection is found in ``/proc/net/tcp`` by the client's port, and its socket
inode among the open files of each worker process (Linux only, as the containers are).
Hot reload with two workers (each worker loads a new version on its own) is proven in
``tests/repository/test_reload.py::test_each_of_two_workers_picks_up_a_new_version``, and
metrics aggregation in
``tests/operations/test_observability.py::test_metrics_aggregate_across_two_workers``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server, TrainedRepository, start_server

WORKERS = 2
BODY = b'{"instances": [[15.0, 0.0]]}'
#: Most connections opened while waiting for the kernel to hand some to each worker.
MAX_CONNECTIONS = 40
#: Connections each worker must hold before the test goes on.
PER_WORKER = 2
#: SERVICE_TIMEOUT_GRACEFUL_SHUTDOWN's default: in-flight requests get this long after SIGTERM.
GRACE = 8.0


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"expected {what} within {seconds} s")


def port_of(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])  # fields after "(comm)": state, ppid


def worker_pids(server: Server) -> list[int]:
    """The worker processes, from uvicorn's "Started server process [pid]" line in each,
    once every worker has loaded the models.

    ``start_server`` returns at the first 200 from ``/health/ready``, which only one worker
    needs to give: another may still be loading, and answer 503 meanwhile.
    """

    def started() -> list[int]:
        return [int(p) for p in re.findall(r"Started server process \[(\d+)\]", server.output())]

    def loaded() -> bool:
        return len(started()) == WORKERS and server.output().count("models ready in") == WORKERS

    wait_for(loaded, 30, f"{WORKERS} workers to start and load the models")
    pids = started()
    assert len(set(pids)) == WORKERS, pids
    for pid in pids:
        assert parent_pid(pid) == server.process.pid, f"{pid} is not a child of the supervisor"
    return pids


def owner(server_port: int, client_port: int, pids: list[int]) -> int | None:
    """The worker whose open files hold the server side of the connection from ``client_port``.

    None while the connection still waits in the listening socket's accept queue.
    """
    local, remote = f":{server_port:04X}", f":{client_port:04X}"
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        established = fields[3] == "01"
        if established and fields[1].endswith(local) and fields[2].endswith(remote):
            inode = fields[9]
    if inode is None or inode == "0":
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in os.listdir(fd_dir):
            try:
                if os.readlink(fd_dir / fd) == target:
                    return pid
            except OSError:  # closed meanwhile
                continue
    return None


def wait_for_owner(server: Server, sock: socket.socket, pids: list[int]) -> int:
    found: list[int] = []

    def accepted() -> bool:
        pid = owner(port_of(server), sock.getsockname()[1], pids)
        if pid is not None:
            found.append(pid)
        return pid is not None

    wait_for(accepted, 10, "a worker to accept the connection")
    return found[-1]


def request_head(length: int) -> bytes:
    return (
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % length
    )


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], Any]:
    """Status, headers (lower-case names) and JSON body of one HTTP/1.1 response."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of a response body"
        body += chunk
    return int(status_line.split()[1]), headers, json.loads(body)


def assert_right_answer(answer: Any) -> None:
    assert answer["model"] == "blobs", answer
    [prediction] = answer["predictions"]
    assert prediction["argmax"] == 0, answer
    assert abs(sum(prediction["probabilities"]) - 1.0) < 1e-9, answer


@contextmanager
def connections() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        yield opened
    finally:
        for sock in opened:
            sock.close()


@pytest.fixture
def two_workers(trained: TrainedRepository, tmp_path: Path) -> Iterator[Server]:
    server = start_server(trained.workdir, tmp_path / "server.log", args=("--workers", "2"))
    try:
        yield server
    finally:
        server.stop()


def access_lines(server: Server) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in server.output().splitlines() if x.startswith("{")]
    return [line for line in lines if line["logger"] in {"service.access", "uvicorn.access"}]


def test_both_workers_answer_and_each_request_is_logged_once(two_workers: Server) -> None:
    server = two_workers
    pids = worker_pids(server)
    answered: Counter[int] = Counter()
    with connections() as opened:
        while min(answered[pid] for pid in pids) < PER_WORKER and len(opened) < MAX_CONNECTIONS:
            sock = socket.create_connection(("127.0.0.1", port_of(server)), timeout=20)
            opened.append(sock)
            sock.sendall(request_head(len(BODY)) + BODY)
            status, _, answer = read_response(sock)
            assert status == 200, answer
            assert_right_answer(answer)
            # Kept alive after the response: the connection is still the worker's.
            answered[wait_for_owner(server, sock, pids)] += 1
    print(f"\n{len(opened)} connections, answered per worker pid: {dict(answered)}")
    assert all(answered[pid] >= PER_WORKER for pid in pids), (
        f"after {len(opened)} connections a worker holds < {PER_WORKER}: {dict(answered)}"
    )

    def predict_lines() -> list[dict[str, Any]]:  # ours, and uvicorn's: "... POST /predict ..."
        return [
            line
            for line in access_lines(server)
            if line.get("path") == "/predict" or "POST /predict " in line["message"]
        ]

    wait_for(lambda: len(predict_lines()) >= len(opened), 10, "an access line per request")
    time.sleep(0.3)  # any second line for the same request would be written by now
    lines = predict_lines()
    assert [line["logger"] for line in lines] == ["service.access"] * len(opened), (
        "with --workers each request must be logged once, by the service, as with one "
        f"worker: {[(line['logger'], line['message']) for line in lines][:6]}"
    )
    assert all(line["status"] == 200 for line in lines)
    uvicorn_access = [line for line in access_lines(server) if line["logger"] == "uvicorn.access"]
    assert not uvicorn_access, uvicorn_access[:3]
    assert server.stop() == 0, server.output()[-3000:]


def test_sigterm_drains_requests_in_flight_on_both_workers_and_exits_0(
    two_workers: Server,
) -> None:
    server = two_workers
    pids = worker_pids(server)
    held: dict[socket.socket, int] = {}
    first, rest = BODY[:12], BODY[12:]
    with connections() as opened:
        counts: Counter[int] = Counter()
        while min(counts[pid] for pid in pids) < PER_WORKER and len(opened) < MAX_CONNECTIONS:
            sock = socket.create_connection(("127.0.0.1", port_of(server)), timeout=20)
            opened.append(sock)
            # Headers and part of the body: the request is in flight, its handler waiting.
            sock.sendall(request_head(len(BODY)) + first)
            held[sock] = wait_for_owner(server, sock, pids)
            counts[held[sock]] += 1
        print(f"\nin flight per worker pid: {dict(counts)} ({len(opened)} connections)")
        assert all(counts[pid] >= PER_WORKER for pid in pids), (
            f"after {len(opened)} connections a worker holds < {PER_WORKER}: {dict(counts)}"
        )

        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        def draining() -> bool:
            return server.output().count("Waiting for connections to close") == WORKERS

        wait_for(draining, GRACE / 2, "both workers to wait for their connections")
        assert server.process.poll() is None, "the supervisor exited with requests in flight"

        for sock in opened:
            sock.sendall(rest)
        answers = [(held[sock], *read_response(sock)) for sock in opened]
        exit_status = server.process.wait(timeout=GRACE + 10)
        took = time.monotonic() - signalled

    print(f"all {len(answers)} in-flight requests answered; exit {exit_status} after {took:.2f} s")
    for pid, status, headers, answer in answers:
        assert status == 200, (pid, answer)
        assert_right_answer(answer)
        assert headers.get("connection") == "close", headers  # no keep-alive while draining
    assert exit_status == 0, server.output()[-3000:]
    assert took < GRACE, f"the drain took {took:.2f} s, longer than the graceful timeout"
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"worker {pid} outlived the supervisor"
    log = server.output()
    assert "Received SIGTERM" in log
    assert log.count("Finished server process") == WORKERS, log[-3000:]
