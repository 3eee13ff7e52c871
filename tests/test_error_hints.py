"""Every error mimocli raises on purpose says what to do: each MimoError the package makes (raised,
yielded or handed to a worker's result) gets a hint (the second argument), so that each one-line
error ends with its remedy."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import mimocli
from mimocli import errors

PACKAGE = Path(mimocli.__file__).parent
ERRORS = {name for name, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, errors.MimoError)}


def raised_without_a_hint(source: str) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(source)):
        call = node
        if isinstance(call, ast.Call):
            func = call.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            hinted = len(call.args) >= 2 or any(k.arg in ("hint", None) for k in call.keywords)
            if name in ERRORS and not hinted:
                found.append((call.lineno, ast.unparse(call)[:100]))
    return found


def test_the_finder_finds_a_raise_without_a_hint():
    source = 'raise ImageError(f"{p}: truncated")\nraise ImageError("x", "fix it")\nraise ValueError("y")\n'
    source += 'yield job, errors.OutputError("z")\nreturn OutputError("w", hint=fix)\n'
    assert raised_without_a_hint(source) == [(1, "ImageError(f'{p}: truncated')"), (4, "errors.OutputError('z')")]


def test_every_error_raised_on_purpose_says_what_to_do():
    missing = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {call}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, call in raised_without_a_hint(path.read_text())
    ]
    assert not missing, "\n".join(missing)
