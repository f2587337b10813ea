"""The import arrows of docs/architecture.md, read from the source: the core never looks up.

``protocols -> http -> dataplane -> repository -> inference``: the runtime and its
helpers (``inference``) take and return numpy arrays and know nothing of the
repository, the data plane or HTTP; the repository knows the runtime but no request.
Neither imports a web framework. Checked on every ``import`` in the source, those
inside functions and ``TYPE_CHECKING`` blocks included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[1] / "service"
WEB = ("fastapi", "starlette", "uvicorn", "httpx")

#: package -> what it may import of the service (itself always).
ALLOWED = {
    "service.inference": ("service.errors", "service.inference"),
    "service.repository": ("service.errors", "service.inference", "service.repository"),
}


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, as absolute names."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def modules(package: str) -> list[Path]:
    return sorted((SERVICE / package.removeprefix("service.")).glob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_the_core_imports_nothing_above_it_and_no_web_framework(package: str) -> None:
    upward = {
        f"{path.name} imports {name}"
        for path in modules(package)
        for name in imports(path)
        if (name.startswith("service.") and not name.startswith(ALLOWED[package]))
        or name.split(".")[0] in WEB
    }
    assert not upward, sorted(upward)


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from service.repository.artifact import InputSpec\n")
    assert "service.repository.artifact" in imports(module)
