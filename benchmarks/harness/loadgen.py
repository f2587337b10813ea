"""Load generators: ``wrk`` (installed from the distribution when missing), else a Python one.

Both POST one body file to one URL over N keep-alive connections for a fixed time
and give a ``LoadResult``; the body is JSON unless the call gives other headers
(``Content-Type: image/jpeg``, the V2 binary extension's header length). ``wrk``
gets the body from a small Lua script and its ``--latency`` report is parsed; the
script also counts the answers other than 200 (wrk's own "Non-2xx or 3xx responses"
counts only statuses above 399: a 201 or a 302 would pass). The Python fallback
(``pyload.py``) prints JSON and is labelled as such in the report, because it
saturates long before wrk does.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from harness.machine import pin

PYLOAD = Path(__file__).with_name("pyload.py")
#: Per-request timeout: slow baselines at 64 connections take seconds per answer.
REQUEST_TIMEOUT_S = 10


@dataclass(frozen=True)
class LoadResult:
    """One bounded load run."""

    requests: int
    duration_s: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_200: int  # answers other than 200: the benchmarks POST, nothing else is right
    socket_errors: int

    @property
    def errors(self) -> int:
        """Answers other than 200 plus socket errors (connect, read, write, timeout)."""
        return self.non_200 + self.socket_errors


class LoadGenerator(Protocol):
    """What the harness needs from a load generator."""

    name: str
    fallback: bool

    def run(
        self,
        url: str,
        body: Path,
        connections: int,
        duration_s: int,
        cpus: frozenset[int] | None,
        headers: Mapping[str, str] | None = None,
    ) -> LoadResult:
        """POST ``body`` to ``url`` over ``connections`` connections for ``duration_s``."""
        ...


class LoadError(Exception):
    """The load generator itself failed (not the server under test)."""


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_TIME = r"([\d.]+)(us|ms|s|m|h)"


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def parse_wrk(text: str) -> LoadResult:
    """Read wrk's ``--latency`` report: requests, req/s, p50, p99, answers other than 200
    (``LUA_POST``'s count; wrk's own count of statuses above 399 without it), socket errors."""
    done = re.search(rf"(\d+) requests in {_TIME}", text)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not done or not rate:
        raise LoadError(f"unexpected wrk output:\n{text}")
    requests = int(done.group(1))
    percentiles = {
        int(m.group(1)): _ms(m.group(2), m.group(3))
        for m in re.finditer(rf"^\s+(50|99)%\s+{_TIME}\s*$", text, re.MULTILINE)
    }
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    non_200 = re.search(r"^Answers other than 200: (\d+)", text, re.MULTILINE) or re.search(
        r"Non-2xx or 3xx responses: (\d+)", text
    )
    return LoadResult(
        requests=requests,
        duration_s=_ms(done.group(2), done.group(3)) / 1e3,
        requests_per_s=float(rate.group(1)),
        p50_ms=percentiles.get(50, math.nan) if requests else math.nan,
        p99_ms=percentiles.get(99, math.nan) if requests else math.nan,
        non_200=int(non_200.group(1)) if non_200 else 0,
        socket_errors=sum(int(n) for n in sockets.groups()) if sockets else 0,
    )


#: Every request's headers unless a load says otherwise.
JSON = {"Content-Type": "application/json"}

LUA_POST = """-- POST the body file {body} (written by benchmarks/run.py)
wrk.method = "POST"
{headers}
local file = assert(io.open("{body}", "rb"))
wrk.body = file:read("*a")
file:close()

-- Count every answer other than 200 (wrk's own count takes only statuses above 399).
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) not_200 = 0 end
function response(status, headers, body)
  if status ~= 200 then not_200 = not_200 + 1 end
end
function done(summary, latency, requests)
  local count = 0
  for _, thread in ipairs(threads) do count = count + thread:get("not_200") end
  io.write(string.format("Answers other than 200: %d\\n", count))
end
"""


def lua(text: str) -> str:
    """A Lua string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _run_pinned(argv: list[str], cpus: frozenset[int] | None, timeout: float) -> str:
    """Run a load generator process on ``cpus``; its stdout."""
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    pin(process.pid, cpus)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise LoadError(f"{argv[0]} did not finish within {timeout:.0f} s") from None
    if process.returncode != 0:
        raise LoadError(f"{argv[0]} exited with {process.returncode}: {stderr.strip()[-2000:]}")
    return stdout


class Wrk:
    """wrk with one thread (it saturates a core by itself), bodies from Lua scripts."""

    fallback = False

    def __init__(self, executable: str, workdir: Path) -> None:
        self.executable = executable
        self.workdir = workdir
        version = subprocess.run(
            [executable, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
        words = (version.stdout + version.stderr).split()
        self.name = f"wrk {words[1]}" if len(words) > 1 else "wrk"

    def _script(self, body: Path, headers: Mapping[str, str]) -> Path:
        lines = "\n".join(f"wrk.headers[{lua(k)}] = {lua(v)}" for k, v in headers.items())
        tag = hashlib.sha256(lines.encode()).hexdigest()[:8]
        script = self.workdir / f"post-{body.stem}-{tag}.lua"
        if not script.exists():
            script.write_text(LUA_POST.format(body=body.resolve(), headers=lines))
        return script

    def run(
        self,
        url: str,
        body: Path,
        connections: int,
        duration_s: int,
        cpus: frozenset[int] | None,
        headers: Mapping[str, str] | None = None,
    ) -> LoadResult:
        """One wrk run; parses its report."""
        argv = [
            self.executable,
            "-t1",
            f"-c{connections}",
            f"-d{duration_s}s",
            f"--timeout={REQUEST_TIMEOUT_S}s",
            "--latency",
            "-s",
            str(self._script(body, headers or JSON)),
            url,
        ]
        return parse_wrk(_run_pinned(argv, cpus, duration_s + REQUEST_TIMEOUT_S + 30))


class PythonLoad:
    """The stdlib asyncio fallback (``pyload.py``): only when wrk cannot be had."""

    name = "python-asyncio fallback (saturates early: numbers not comparable with wrk's)"
    fallback = True

    def run(
        self,
        url: str,
        body: Path,
        connections: int,
        duration_s: int,
        cpus: frozenset[int] | None,
        headers: Mapping[str, str] | None = None,
    ) -> LoadResult:
        """One run of ``pyload.py`` in its own process."""
        argv = [
            sys.executable,
            str(PYLOAD),
            f"--url={url}",
            f"--body={body}",
            f"--connections={connections}",
            f"--duration={duration_s}",
            f"--timeout={REQUEST_TIMEOUT_S}",
            *(f"--header={k}: {v}" for k, v in (headers or JSON).items()),
        ]
        out = json.loads(_run_pinned(argv, cpus, duration_s + REQUEST_TIMEOUT_S + 30))
        return LoadResult(
            requests=int(out["requests"]),
            duration_s=float(out["duration_s"]),
            requests_per_s=float(out["requests_per_s"]),
            p50_ms=float(out["p50_ms"]),
            p99_ms=float(out["p99_ms"]),
            non_200=int(out["non_200"]),
            socket_errors=int(out["socket_errors"]),
        )


def install(program: str, log: list[str]) -> str | None:
    """``apt-get install program`` (as root, or with passwordless sudo); its path, or None.

    For the tools the benchmarks run (wrk, valgrind), whose Debian packages bear their names.
    """
    apt = shutil.which("apt-get")
    if apt is None:
        log.append(f"{program} is not installed and there is no apt-get to install it")
        return None
    if os.geteuid() == 0:
        prefix: list[str] = []
    elif shutil.which("sudo"):
        prefix = ["sudo", "-n"]
    else:
        log.append(f"{program} is not installed and installing it needs root")
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    attempts = (
        [[apt, "install", "-y", "-q", program]],
        [[apt, "update", "-q"], [apt, "install", "-y", "-q", program]],
    )
    for steps in attempts:
        print(f"benchmark: installing {program}: {' '.join(steps[-1])}", file=sys.stderr)
        try:
            ok = all(
                subprocess.run(
                    [*prefix, *step], env=env, capture_output=True, timeout=600, check=False
                ).returncode
                == 0
                for step in steps
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.append(f"installing {program} failed: {exc}")
            return None
        if ok and (found := shutil.which(program)):
            log.append(f"{program} was installed from the distribution by this run")
            return found
    log.append(f"{program} is not installed and apt-get could not install it")
    return None


def choose(kind: str, workdir: Path, log: list[str]) -> LoadGenerator:
    """The load generator for ``--loadgen``: ``auto`` is wrk (installed if missing), else Python."""
    if kind == "python":
        return PythonLoad()
    found = shutil.which("wrk") or install("wrk", log)
    if found:
        return Wrk(found, workdir)
    if kind == "wrk":
        raise LoadError("wrk was asked for and cannot be installed: " + "; ".join(log))
    return PythonLoad()
