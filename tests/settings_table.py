"""The settings table of docs/configuration.md, generated from ``service.settings.Settings``.

Every row comes from the code: the variable from the field's name, the flag from
``python -m service``'s own argument parser (only a few settings have one), the default
from the field, the meaning from the docstring under the field. ``tests/test_docs.py``
checks that the page holds exactly this table; after changing a setting, rewrite it with

    python -m tests.settings_table
"""

from __future__ import annotations

import ast
import inspect
import itertools
import re
from pathlib import Path
from typing import Any

from service.cli import parser
from service.settings import Settings

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
BEGIN = (
    "<!-- settings table: generated from service/settings.py by `python -m tests.settings_table`"
    "; tests/test_docs.py checks it -->"
)
END = "<!-- end of settings table -->"


def flags() -> dict[str, str]:
    """Setting name -> its command-line flag, read from the CLI's parser."""
    return {
        action.dest: action.option_strings[0]
        for action in parser()._actions
        if action.dest in Settings.model_fields
    }


def docstrings(cls: type) -> dict[str, str]:
    """Each field's docstring (the string literal right under it), read from the source.

    What pydantic's ``use_attribute_docstrings`` reads; the service does not turn that on,
    since reading its own source at every start costs a fifth of its import time.
    """
    tree = ast.parse(Path(inspect.getfile(cls)).read_text())
    body = next(
        node.body
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__
    )
    return {
        field.target.id: inspect.cleandoc(doc.value.value)
        for field, doc in itertools.pairwise(body)
        if isinstance(field, ast.AnnAssign)
        and isinstance(field.target, ast.Name)
        and isinstance(doc, ast.Expr)
        and isinstance(doc.value, ast.Constant)
        and isinstance(doc.value.value, str)
    }


def default_text(value: Any) -> str:
    """A default as one would write it in the environment."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, list):
        return f"`{','.join(map(str, value))}`" if value else "empty"
    if isinstance(value, dict):
        return f"`{value}`" if value else "`{}`"
    return f"`{value}`"


def markdown(docstring: str) -> str:
    """A field docstring as one table cell: reST literals as Markdown code, one line."""
    text = " ".join(docstring.split()).replace("``", "`")
    return text.replace("|", "\\|")


def rows() -> list[str]:
    """One Markdown table row per setting, in the order ``Settings`` declares them."""
    flag_of = flags()
    documented = docstrings(Settings)
    lines = []
    for name, field in Settings.model_fields.items():
        assert documented.get(name), f"Settings.{name} needs a docstring"
        flag = f"`{flag_of[name]}`" if name in flag_of else ""
        default = default_text(field.get_default(call_default_factory=True))
        variable = f"`SERVICE_{name.upper()}`"
        lines.append(f"| {variable} | {flag} | {default} | {markdown(documented[name])} |")
    return lines


def table() -> str:
    """The whole generated section, markers included."""
    head = ["| variable | flag | default | meaning |", "|---|---|---|---|"]
    return "\n".join([BEGIN, *head, *rows(), END])


def section(page: str) -> str | None:
    """The generated section as it stands in ``page`` (None when its markers are missing)."""
    match = re.search(re.escape(BEGIN) + r".*?" + re.escape(END), page, re.DOTALL)
    return match.group(0) if match else None


def main() -> None:
    """Rewrite the table in docs/configuration.md."""
    page = PAGE.read_text()
    current = section(page)
    if current is None:
        raise SystemExit(f"{PAGE}: expected the markers {BEGIN!r} ... {END!r}")
    PAGE.write_text(page.replace(current, table()))
    print(f"wrote the settings table of {PAGE}")


if __name__ == "__main__":
    main()
