"""Tasks: what a batch means for a model (loss and metrics). Importing registers them."""

from convjax.tasks import (
    activation_max,  # noqa: F401  (registers tasks)
    classification,  # noqa: F401  (registers tasks)
    detection,  # noqa: F401  (registers tasks)
    embedding,  # noqa: F401  (registers tasks)
    localization,  # noqa: F401  (registers tasks)
    style,  # noqa: F401  (registers tasks)
    transfer,  # noqa: F401  (registers tasks)
    verification,  # noqa: F401  (registers tasks)
)
from convjax.tasks.base import Task, apply_model
from convjax.tasks.registry import get_task, list_tasks, register_task

__all__ = ["Task", "apply_model", "get_task", "list_tasks", "register_task"]
