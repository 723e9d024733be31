"""The shape of the code: imports only point down the layers, functions stay short.

Layers (rank: folders), from DESIGN.md "drivers up, math down":

  6: runs      5: evals, analysis      4: train      3: tasks      2: models, losses, data
  1: detection, face, style, viz            0: ops

A module may import its own folder and folders of a lower rank, never a higher rank
and never another folder of the same rank (two such folders would end up importing
each other). Top-level modules (``convjax/*.py``) import no convjax folder. Every
import statement counts, including those inside functions.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterable, Iterator

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "convjax")

RANKS = {
    "ops": 0,
    "detection": 1,
    "face": 1,
    "style": 1,
    "viz": 1,
    "models": 2,
    "losses": 2,
    "data": 2,
    "tasks": 3,
    "train": 4,
    "evals": 5,
    "analysis": 5,
    "runs": 6,
}
MAX_FUNCTION_LINES = 60
# Functions allowed to be longer, each with the reason it reads better whole: none.
LONG_FUNCTIONS_ALLOWED: dict[str, str] = {}


def _modules() -> Iterator[tuple[str, ast.Module]]:
    """(path relative to the repository, parsed module) for every file in convjax/."""
    for folder, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path) as f:
                    yield os.path.relpath(path, ROOT), ast.parse(f.read(), path)


def _folder(relpath: str) -> str | None:
    """``convjax/<folder>/...`` -> folder; top-level modules -> None."""
    parts = relpath.split(os.sep)
    return parts[1] if len(parts) > 2 else None


def _package_of(relpath: str) -> list[str]:
    """``convjax/train/loop.py`` (or ``.../__init__.py``) -> ``['convjax', 'train']``."""
    return relpath[: -len(".py")].split(os.sep)[:-1]


def _imported_folders(relpath: str, tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, convjax folder) for every import of a convjax folder in the module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                package = _package_of(relpath)
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # ``from convjax import data`` imports the folder ``data``.
            names = [f"{module}.{a.name}" for a in node.names] if module == "convjax" else [module]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "convjax" and len(parts) > 1 and parts[1] in RANKS:
                yield node.lineno, parts[1]


def _layering_violations(modules: Iterable[tuple[str, ast.Module]]) -> list[str]:
    problems = []
    for relpath, tree in modules:
        folder = _folder(relpath)
        if folder is not None and folder not in RANKS:
            problems.append(f"{relpath}: folder {folder!r} has no layer; add it to RANKS")
            continue
        for line, target in _imported_folders(relpath, tree):
            if target == folder:
                continue
            if folder is None:
                problems.append(f"{relpath}:{line}: a top-level module imports convjax.{target}")
            elif RANKS[target] > RANKS[folder]:
                problems.append(
                    f"{relpath}:{line}: {folder} (layer {RANKS[folder]}) imports "
                    f"{target} (layer {RANKS[target]}), above it"
                )
            elif RANKS[target] == RANKS[folder]:
                problems.append(
                    f"{relpath}:{line}: {folder} imports {target}, a folder of the same "
                    f"layer ({RANKS[folder]})"
                )
    return problems


def test_imports_point_down_the_layers():
    problems = _layering_violations(_modules())
    assert not problems, "imports against the layering:\n" + "\n".join(problems)


def test_functions_are_at_most_60_lines():
    long = []
    for relpath, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                where = f"{relpath}::{node.name}"
                if lines > MAX_FUNCTION_LINES and where not in LONG_FUNCTIONS_ALLOWED:
                    long.append(f"{where} ({lines} lines, line {node.lineno})")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def test_library_code_leaves_matplotlib_global_state_alone():
    """No ``matplotlib.use(...)`` and no ``pyplot`` in convjax/: figures are explicit
    ``matplotlib.figure.Figure`` objects, so importing convjax never changes a
    notebook's backend."""
    found = []
    for relpath, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom):
                    modules = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
                if "matplotlib.pyplot" in modules:
                    found.append(f"{relpath}:{node.lineno}: imports matplotlib.pyplot")
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "use"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "matplotlib"
            ):
                found.append(f"{relpath}:{node.lineno}: calls matplotlib.use")
    assert not found, "\n".join(found)


def _parsed(relpath: str, source: str) -> tuple[str, ast.Module]:
    return relpath.replace("/", os.sep), ast.parse(source)


# The checker itself, on made-up modules: it must be able to fail.
@pytest.mark.parametrize(
    "relpath, source, expected",
    [
        ("convjax/ops/a.py", "from convjax.models import x", "ops (layer 0) imports models"),
        ("convjax/face/a.py", "import convjax.detection.yolo", "same layer"),
        ("convjax/tasks/a.py", "def f():\n    from convjax.train import loop", "imports train"),
        ("convjax/data/a.py", "from convjax import runs", "imports runs"),
        ("convjax/train/a.py", "from ..runs import workdir", "imports runs"),
        ("convjax/x.py", "from convjax.ops import conv", "top-level module"),
    ],
)
def test_the_checker_catches_upward_imports(relpath, source, expected):
    problems = _layering_violations([_parsed(relpath, source)])
    assert len(problems) == 1 and expected in problems[0], problems


def test_the_checker_allows_downward_and_own_folder_imports():
    sources = [
        ("convjax/runs/a.py", "from convjax.train import loop\nfrom convjax.ops import conv"),
        ("convjax/tasks/a.py", "from convjax.tasks.base import Task\nfrom . import registry"),
        ("convjax/models/a.py", "import jax\nfrom convjax.ops.conv import conv2d"),
        ("convjax/train/__init__.py", "from .loop import run_steps\nfrom ..tasks import Task"),
    ]
    assert _layering_violations([_parsed(p, s) for p, s in sources]) == []
