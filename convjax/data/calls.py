"""Reads one op written as a Python call with literal arguments (config strings such as
``'resize_small(256)'`` or ``'flip_lr'``), without evaluating any code."""

from __future__ import annotations

import ast


def parse_call(text: str, error: str) -> tuple[str, tuple, dict]:
    """``'name'`` or ``'name(arg, key=value)'`` -> ``(name, args, kwargs)``.

    Raises ``ValueError(error)`` when ``text`` is not of that form or an argument is not
    a literal (``error`` is the caller's one line, naming the valid names).
    """
    try:
        node = ast.parse(text.strip(), mode="eval").body
        if isinstance(node, ast.Name):
            return node.id, (), {}
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            args = tuple(ast.literal_eval(a) for a in node.args)
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
            return node.func.id, args, kwargs
    except (SyntaxError, ValueError):
        pass
    raise ValueError(error)
