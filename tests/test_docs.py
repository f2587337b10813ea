"""The docs are tested: every example in README.md and docs/*.md runs against a real server.

Which fenced blocks are examples, and how each is checked:

- ```` ```console ````: lines ``$ curl ...`` (continued while a line ends with ``\\`` or a
  quote is still open; a trailing ``# comment`` is bash's), each followed by the output it
  shows, up to the next ``$`` line or the end of the block. The command runs in bash with
  the real ``curl``, ``localhost:8000`` pointing at the test server (the default model,
  trained with seed 42). The output and the shown one are read as a sequence of JSON
  values (so ``curl -w '\\n%{http_code}\\n'`` shows the status after the body) and
  compared: numbers equal within a relative 1e-9, everything else exactly, except where
  the docs elide, with one of three marks:

      "..."    any value                   {"request_id": "..."}
      [...]    any list                    {"history": [...]}
      ...      (an object member) any further members: {"name": "blobs", ...}

  (so ``{...}`` is any object). Anything else in the shown output is literal JSON.

  Info-string words after ``console`` change how a block runs: ``text`` compares the
  outputs as text, as doctest does with ELLIPSIS (``...`` matches anything; for
  non-JSON answers such as Prometheus metrics); ``SERVICE_<NAME>=value`` words run the
  block against a server of its own, started on the same repository with those settings;
  ``repository=NAME`` against one on another repository (``REPOSITORIES``: the digits
  example, exported models of every input kind, or two versions with a rollout).
  Commands run from the repository root, so ``@docs/digit.png`` names the example image.
- ```` ```pycon ````: run by doctest (ELLIPSIS, NORMALIZE_WHITESPACE), ``127.0.0.1:8000``
  and ``localhost:8000`` pointing at the test server. Each block stands alone.

Every other block (```` ```sh ```` set-up commands, JSON excerpts, diagrams) is not run, so
it must not look like an example: no ``$ curl`` line, no ``>>>`` prompt. docs/containers.md
(the container images, whose commands need Docker) is not run here.
"""

from __future__ import annotations

import doctest
import json
import math
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from service.settings import Settings
from tests import settings_table
from tests.conftest import (
    ROOT,
    Server,
    TrainedRepository,
    python_argv,
    start_server,
    subprocess_env,
)
from tests.versions import rollout_repository

EXCLUDED = {"docs/containers.md"}  # container commands, not requests to the test server
DOCS = sorted(
    path
    for path in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    if path.relative_to(ROOT).as_posix() not in EXCLUDED
)
RUN = {"console", "pycon"}
DOCS_ADDRESS = re.compile(r"(?:localhost|127\.0\.0\.1):8000\b")
REL_TOL = 1e-9

# --- parsing the docs --------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A fenced code block: where it is, its info string and its lines."""

    path: Path
    line: int  # of the first line inside the fence, 1-based
    info: list[str]
    lines: list[str]

    @property
    def language(self) -> str:
        return self.info[0] if self.info else ""

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """Every ```-fenced block of a Markdown file."""
    found: list[Block] = []
    opened: tuple[int, list[str]] | None = None
    body: list[str] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fence = re.match(r"^\s*```(.*)$", line)
        if fence and opened is None:
            opened, body = (number + 1, fence.group(1).split()), []
        elif fence and opened is not None:
            found.append(Block(path, opened[0], opened[1], body))
            opened = None
        elif opened is not None:
            body.append(line)
    assert opened is None, f"{path}: a code block opened at line {opened[0] - 1} never closes"
    return found


@dataclass(frozen=True)
class Command:
    """A ``$`` command of a console block and the output shown under it."""

    line: int
    command: str
    shown: str


def _continues(command: str) -> bool:
    """True while a command line goes on: a trailing backslash, or an open quote."""
    if command.endswith("\\"):
        return True
    try:
        shlex.split(command, comments=True)
    except ValueError:  # no closing quotation
        return True
    return False


def commands(block: Block) -> list[Command]:
    """The commands of a console block, each with the output lines that follow it."""
    found: list[Command] = []
    lines, i = block.lines, 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        assert lines[i].startswith("$ "), f"{block.where}: expected a '$ ' line, got {lines[i]!r}"
        start, command = i, lines[i][2:]
        while _continues(command):
            i += 1
            assert i < len(lines), f"{block.where}: the command of line {block.line + start} ends"
            command += "\n" + lines[i]
        i += 1
        shown = []
        while i < len(lines) and not lines[i].startswith("$ "):
            shown.append(lines[i])
            i += 1
        found.append(Command(block.line + start, command, "\n".join(shown).strip()))
    return found


ALL_BLOCKS = [block for path in DOCS for block in blocks(path)]
EXAMPLES = [block for block in ALL_BLOCKS if block.language in RUN]

# --- comparing JSON with elisions --------------------------------------------------------

ANY = "..."  # "..." : any value
ANY_LIST = "\ue000[...]"  # [...] : any list
MORE = "\ue000..."  # ... as an object member: further members allowed


def _elisions(text: str) -> str:
    """The shown JSON with ``[...]`` and member ``...`` made into JSON the parser takes."""
    out, i, in_string = [], 0, False
    while i < len(text):
        char = text[i]
        if in_string:
            out.append(text[i : i + 2] if char == "\\" else char)
            i += 2 if char == "\\" else 1
            in_string = char != '"' or char == "\\"
            continue
        if text.startswith("[...]", i):
            out.append(json.dumps(ANY_LIST))
            i += 5
        elif text.startswith("...", i):
            out.append(f"{json.dumps(MORE)}: null")
            i += 3
        else:
            out.append(char)
            in_string = char == '"'
            i += 1
    return "".join(out)


def json_values(text: str) -> list[Any]:
    """Every JSON value in ``text``, in order (ValueError when it is not such a sequence)."""
    decoder, values, i = json.JSONDecoder(), [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            return values
        value, i = decoder.raw_decode(text, i)
        values.append(value)


def shown_values(text: str) -> list[Any]:
    """The values an example shows, elisions included."""
    return json_values(_elisions(text))


def differences(shown: Any, actual: Any, where: str = "$") -> list[str]:
    """Where ``actual`` is not what ``shown`` says (empty: it is)."""
    if shown == ANY:
        return []
    if shown == ANY_LIST:
        return [] if isinstance(actual, list) else [f"{where}: expected a list, got {actual!r}"]
    if isinstance(shown, dict) and isinstance(actual, dict):
        open_ended = shown.pop(MORE, 0) is None
        found = [f"{where}: missing {key!r}" for key in shown if key not in actual]
        if not open_ended:
            found += [f"{where}: unexpected {key!r}" for key in actual if key not in shown]
        for key in shown:
            if key in actual:
                found += differences(shown[key], actual[key], f"{where}.{key}")
        return found
    if isinstance(shown, list) and isinstance(actual, list):
        if len(shown) != len(actual):
            return [f"{where}: expected {len(shown)} items, got {len(actual)}: {actual!r}"]
        pairs = enumerate(zip(shown, actual, strict=True))
        return [found for k, (s, a) in pairs for found in differences(s, a, f"{where}[{k}]")]
    numbers = (int, float)
    if (
        isinstance(shown, numbers)
        and isinstance(actual, numbers)
        and not isinstance(shown, bool)
        and not isinstance(actual, bool)
    ):
        close = math.isclose(shown, actual, rel_tol=REL_TOL, abs_tol=0.0)
        return [] if close else [f"{where}: expected {shown!r}, got {actual!r}"]
    if type(shown) is not type(actual) or shown != actual:
        return [f"{where}: expected {shown!r}, got {actual!r}"]
    return []


# --- servers -----------------------------------------------------------------------------


def _settings(block: Block) -> dict[str, str]:
    """The ``SERVICE_*=value`` words of a block's info string."""
    pairs = [word.split("=", 1) for word in block.info[1:] if "=" in word]
    for key, _ in pairs:
        assert key.startswith("SERVICE_") or key == "repository", (
            f"{block.where}: unknown block setting {key}"
        )
    return dict(pairs)


#: The repositories a block may run against (``repository=NAME``): fixtures giving a
#: working directory whose ``models`` holds them. The default: the 4-blob model.
REPOSITORIES = {
    "default": "trained",
    "digits": "trained_digits",
    "kinds": "exported_kinds",
    "rollout": "rollout_blobs",
}
#: The rollout of docs/operations.md's example: version 1 stable, 2 canary and shadow.
ROLLOUT = {
    "version_labels": {"stable": 1, "canary": 2},
    "canary_fraction": 0.0,
    "shadow": {"label": "canary", "fraction": 1.0},
}


@pytest.fixture(scope="module")
def rollout_blobs(
    trained: TrainedRepository,
    trained_seed7: TrainedRepository,
    tmp_path_factory: pytest.TempPathFactory,
) -> TrainedRepository:
    """docs/operations.md's rollout: the 4-blob model trained with seeds 42 (version 1)
    and 7 (version 2), with a serving.json."""
    workdir = tmp_path_factory.mktemp("rollout")
    sources = [t.repository / "blobs" / "1" for t in (trained, trained_seed7)]
    rollout_repository(workdir / "models", sources, ROLLOUT)
    return TrainedRepository(workdir, workdir / "models", "")


def _sequence_model() -> Any:
    import keras

    keras.utils.set_random_seed(11)
    return keras.Sequential(
        [
            keras.Input(shape=(4, 3)),
            keras.layers.Conv1D(5, 2, activation="relu"),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )


def _token_model() -> Any:
    import keras

    keras.utils.set_random_seed(12)
    return keras.Sequential(
        [
            keras.Input(shape=(6,), dtype="int32"),
            keras.layers.Embedding(1000, 8),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )


def _any_length_model() -> Any:
    import keras

    keras.utils.set_random_seed(13)
    return keras.Sequential(
        [
            keras.Input(shape=(None,), dtype="int64"),
            keras.layers.Embedding(1000, 8, mask_zero=True),
            keras.layers.Bidirectional(keras.layers.LSTM(4)),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )


def _text_model() -> Any:
    import keras
    import numpy as np

    keras.utils.set_random_seed(14)
    vectorize = keras.layers.TextVectorization(max_tokens=100, output_sequence_length=8)
    vectorize.adapt(np.array([["what a great film"], ["an awful plot"], ["fine, not great"]]))
    return keras.Sequential(
        [
            keras.Input(shape=(1,), dtype="string"),
            vectorize,
            keras.layers.Embedding(100, 4),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )


def _named_model() -> Any:
    import keras
    import numpy as np

    keras.utils.set_random_seed(15)
    inputs = {
        "age": keras.Input((1,), name="age"),
        "income": keras.Input((1,), name="income"),
        "city": keras.Input((1,), dtype="string", name="city"),
    }
    age, income = keras.layers.Normalization(), keras.layers.Normalization()
    age.adapt(np.array([[20.0], [45.0], [70.0]]))
    income.adapt(np.array([[1e4], [5e4], [9e4]]))
    city = keras.layers.StringLookup(output_mode="one_hot")
    city.adapt(np.array([["Lyon"], ["Paris"], ["Nice"]]))
    x = keras.layers.concatenate(
        [age(inputs["age"]), income(inputs["income"]), city(inputs["city"])]
    )
    x = keras.layers.Dense(8, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


@pytest.fixture(scope="module")
def exported_kinds(tmp_path_factory: pytest.TempPathFactory) -> TrainedRepository:
    """docs/inputs.md's models trained elsewhere: a sequence, a token-id model, one over
    token ids of any length, one taking raw text and one of several named inputs, brought
    in with the real ``python -m model_training export``."""
    workdir = tmp_path_factory.mktemp("kinds")
    models = (
        ("sequence", _sequence_model()),
        ("tokens", _token_model()),
        ("reviews", _any_length_model()),
        ("words", _text_model()),
        ("people", _named_model()),
    )
    for name, model in models:
        source = workdir / f"{name}.keras"
        model.save(source)
        argv = ("python", "-m", "model_training", "export", str(source), "--name", name)
        result = subprocess.run(
            python_argv(argv),
            cwd=workdir,
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-2000:]
    return TrainedRepository(workdir, workdir / "models", "")


@pytest.fixture(scope="module")
def servers(server: Server) -> Iterator[dict[tuple[tuple[str, str], ...], Server]]:
    """The shared server, and one more per set of block settings, started when first needed."""
    running: dict[tuple[tuple[str, str], ...], Server] = {(): server}
    yield running
    for key, extra in running.items():
        if key:
            assert extra.stop() == 0, extra.output()


def _server_for(
    block: Block,
    running: dict[tuple[tuple[str, str], ...], Server],
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Server:
    settings = _settings(block)
    key = tuple(sorted(settings.items()))
    if key not in running:
        repository = settings.pop("repository", "default")
        assert repository in REPOSITORIES, f"{block.where}: unknown repository {repository}"
        trained: TrainedRepository = request.getfixturevalue(REPOSITORIES[repository])
        log = tmp_path_factory.mktemp("docs-server") / "server.log"
        running[key] = start_server(trained.workdir, log, **settings)
    return running[key]


# --- running the examples ----------------------------------------------------------------


def _address(server: Server) -> str:
    return server.url.removeprefix("http://")


def _run(command: Command, where: str, server: Server) -> str:
    """Run a documented curl command against ``server``; its standard output."""
    assert command.command.startswith("curl "), f"{where}: examples are curl commands"
    assert DOCS_ADDRESS.search(command.command), f"{where}: expected a request to localhost:8000"
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", DOCS_ADDRESS.sub(_address(server), command.command)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{where}: exit {result.returncode}: {result.stderr}"
    return result.stdout


def _check_console(block: Block, server: Server) -> list[str]:
    text_mode = "text" in block.info[1:]
    checker, flags = doctest.OutputChecker(), doctest.ELLIPSIS
    problems = []
    for command in commands(block):
        where = f"{block.path.relative_to(ROOT).as_posix()}:{command.line}"
        output = _run(command, where, server)
        if text_mode:
            if not checker.check_output(command.shown + "\n", output.strip() + "\n", flags):
                shown = f"shown:\n{command.shown}\ngot:\n{output}"
                problems.append(f"{where}: $ {command.command}\n{shown}")
            continue
        try:
            shown = shown_values(command.shown)
        except ValueError as exc:
            problems.append(f"{where}: the shown output is not JSON with elisions: {exc}")
            continue
        try:
            actual = json_values(output)
        except ValueError:
            problems.append(f"{where}: the output is not JSON (mark the block `text`?):\n{output}")
            continue
        found = "\n  ".join(differences(shown, actual))
        if found:
            real = f"the real output:\n{output}"
            problems.append(f"{where}: $ {command.command}\n  {found}\n{real}")
    return problems


def _check_pycon(block: Block, server: Server) -> list[str]:
    source = DOCS_ADDRESS.sub(_address(server), "\n".join(block.lines) + "\n")
    name = block.where
    test = doctest.DocTestParser().get_doctest(
        source, {"__name__": "__docs__"}, name, str(block.path), block.line - 1
    )
    report: list[str] = []
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    runner.run(test, out=report.append, clear_globs=True)
    return ["".join(report)] if runner.failures else []


@pytest.mark.parametrize("block", EXAMPLES, ids=[block.where for block in EXAMPLES])
def test_example_answers_as_shown(
    block: Block,
    servers: dict[tuple[tuple[str, str], ...], Server],
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    if shutil.which("curl") is None:
        pytest.fail("curl is required: the docs' examples are curl commands (apt-get install curl)")
    server = _server_for(block, servers, request, tmp_path_factory)
    check = _check_console if block.language == "console" else _check_pycon
    problems = check(block, server)
    assert not problems, "\n\n".join(problems)


# --- what the examples cover -------------------------------------------------------------


def test_every_example_is_in_a_block_that_runs() -> None:
    hidden = [
        f"{block.where} ({block.language or 'no language'})"
        for block in ALL_BLOCKS
        if block.language not in RUN
        and any(line.startswith(("$ curl", ">>> ")) for line in block.lines)
    ]
    assert not hidden, f"requests shown in blocks that are not run: {hidden}"


def test_every_console_block_shows_commands_with_their_answers() -> None:
    for block in EXAMPLES:
        if block.language == "console":
            found = commands(block)
            assert found, f"{block.where}: a console block with no command"
            for command in found:
                assert command.command.startswith("curl "), f"{block.where}: {command.command}"
                if "text" not in block.info[1:]:
                    shown_values(command.shown)  # raises when it is not JSON with elisions
        else:
            assert any(line.startswith(">>> ") for line in block.lines), block.where


def test_the_readme_is_short_and_links_into_the_docs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for page in (ROOT / "docs").glob("*.md"):
        assert f"docs/{page.name}" in readme, f"README.md does not link to docs/{page.name}"


#: Pages written on other branches; links to them are not checked until they are merged.
PENDING: set[str] = set()


def anchors(page: Path) -> set[str]:
    """The anchors GitHub makes of a page's headings (lower case, punctuation dropped)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    headings = re.findall(r"^#+ (.+)$", text, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_relative_links_point_at_files_and_headings_that_exist() -> None:
    broken = []
    pages = [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    for path in pages:
        prose = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", prose):
            if re.match(r"[a-z]+:", target):
                continue
            resolved = (path.parent / target).resolve() if target else path
            relative = (
                resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else ""
            )
            if relative in PENDING and not resolved.exists():
                continue
            if not resolved.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
            elif anchor and anchor not in anchors(resolved):
                broken.append(f"{path.relative_to(ROOT)}: {target}#{anchor}")
    assert not broken, broken


def test_the_settings_table_is_the_settings() -> None:
    page = settings_table.PAGE.read_text()
    assert settings_table.section(page) == settings_table.table(), (
        "docs/configuration.md's settings table is not service/settings.py's: "
        "run `python -m tests.settings_table`"
    )


def test_every_setting_the_docs_name_exists() -> None:
    real = {f"SERVICE_{name.upper()}" for name in Settings.model_fields}
    for path in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        named = set(re.findall(r"\bSERVICE_[A-Z][A-Z_]*[A-Z]\b", path.read_text()))
        assert named <= real, f"{path.relative_to(ROOT)} names settings that do not exist"


def test_only_the_cli_flags_are_documented_as_flags() -> None:
    row = re.compile(r"^\| `SERVICE_\w+` \| `(--[a-z-]+)` \|", re.MULTILINE)
    documented = set(row.findall(settings_table.PAGE.read_text()))
    assert documented == set(settings_table.flags().values())
    assert len(documented) == 6


# --- the checker itself ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shown", "actual"),
    [
        ('{"a": 1.5, "b": [1, 2]}', '{"b":[1,2],"a":1.5000000000001}'),  # within 1e-9
        ('{"id": "...", "n": 3}', '{"id":"5f3a","n":3}'),
        ('{"id": "...", "n": 3}', '{"id":{"x":[1]},"n":3}'),
        ('{"history": [...]}', '{"history":[0.1,0.2]}'),
        ('{"name": "blobs", ...}', '{"name":"blobs","version":"1"}'),
        ('{..., "name": "blobs"}', '{"name":"blobs","version":"1"}'),
        ('{"error": "a ... b [...]"}', '{"error":"a ... b [...]"}'),
        ('{"e": "quote \\" ..."}', '{"e":"quote \\" ..."}'),
        ('{"a": 1}\n422', '{"a":1}\n422\n'),
        ("", ""),
    ],
)
def test_the_checker_accepts(shown: str, actual: str) -> None:
    assert differences(shown_values(shown), json_values(actual)) == []


@pytest.mark.parametrize(
    ("shown", "actual"),
    [
        ('{"p": 0.9999999584713557}', '{"p":0.9999998584713557}'),  # one digit edited
        ('{"p": 3.912863494278876e-12}', '{"p":3.912864494278876e-12}'),
        ('{"p": 3.72108797e-316}', '{"p":3.72118797e-316}'),  # subnormal
        ('{"a": 1.5, "b": 2}', '{"a":1.5}'),
        ('{"a": 1.5}', '{"a":1.5,"b":2}'),
        ('{"a": [1, 2]}', '{"a":[1,2,3]}'),
        ('{"a": [...]}', '{"a":{"b":1}}'),
        ('{"a": true}', '{"a":1}'),
        ('{"a": 1}', '{"a":"1"}'),
        ('{"a": "x..."}', '{"a":"xy"}'),
        ('{"a": 1}\n422', '{"a":1}\n400\n'),
        ('{"a": 1}', ""),
    ],
)
def test_the_checker_refuses(shown: str, actual: str) -> None:
    assert differences(shown_values(shown), json_values(actual)) != []


def test_the_checker_refuses_an_elision_it_does_not_know() -> None:
    with pytest.raises(json.JSONDecodeError):  # "..." as a list item is not one of the three marks
        shown_values("[1, ..., 3]")
