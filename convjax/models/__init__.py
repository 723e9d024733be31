"""Flax linen architectures and the registry that builds them by name.

Importing this package registers every architecture.
"""

from convjax.models import (
    alexnet,  # noqa: F401  (registers models)
    detection,  # noqa: F401  (registers models)
    embedding,  # noqa: F401  (registers models)
    inception,  # noqa: F401  (registers models)
    lenet,  # noqa: F401  (registers models)
    nin,  # noqa: F401  (registers models)
    resnet,  # noqa: F401  (registers models)
    vgg,  # noqa: F401  (registers models)
)
from convjax.models.registry import get_model, get_model_constructor, list_models, register

__all__ = ["get_model", "get_model_constructor", "list_models", "register"]
