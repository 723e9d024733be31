"""Registry of tasks by name (``classification``, ``detection``, ``embedding`` ...)."""

from __future__ import annotations

from collections.abc import Callable

from convjax.tasks.base import Task

_TASKS: dict[str, Callable[..., Task]] = {}


def register_task(name: str) -> Callable[[Callable[..., Task]], Callable[..., Task]]:
    def wrap(ctor: Callable[..., Task]) -> Callable[..., Task]:
        if name in _TASKS:
            raise ValueError(f"task {name!r} is registered twice")
        _TASKS[name] = ctor
        return ctor

    return wrap


def list_tasks() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str, **kwargs) -> Task:
    """Builds the task ``name``; unknown names list the valid ones."""
    if name not in _TASKS:
        raise ValueError(f"Unknown task {name!r}. Valid tasks: {', '.join(list_tasks())}")
    return _TASKS[name](**kwargs)
