"""Datasets and input pipelines: tfds builders (offline ones register on import),
deterministic per-host pipelines, and the example-function extension point.

    from convjax import data
    spec = data.resolve(config.dataset)          # checked once; every function takes it
    meta = data.dataset_metadata(spec)
    train = data.create_train_iterator(spec, global_batch_size=128, seed=0)
"""

from convjax.tensorflow_check import require_tensorflow

require_tensorflow()  # one clear line, not a ModuleNotFoundError deep in tfds

from convjax.data import (  # noqa: E402, F401  (register the offline tfds builders)
    identities,
    shapes,
    skimage_sets,
    sklearn_digits,
)
from convjax.data.builders import get_builder, offline_datasets  # noqa: E402
from convjax.data.config import default_dataset_config, resolve_dataset_config  # noqa: E402
from convjax.data.examples import register_example_fn  # noqa: E402
from convjax.data.pipeline import (  # noqa: E402
    DatasetMetadata,
    create_eval_iterator,
    create_train_iterator,
    dataset_metadata,
)
from convjax.data.preprocess import list_ops, parse_chain, register_op  # noqa: E402
from convjax.data.spec import DatasetSpec, resolve  # noqa: E402

__all__ = [
    "DatasetMetadata",
    "DatasetSpec",
    "create_eval_iterator",
    "create_train_iterator",
    "dataset_metadata",
    "default_dataset_config",
    "get_builder",
    "list_ops",
    "offline_datasets",
    "parse_chain",
    "register_example_fn",
    "register_op",
    "resolve",
    "resolve_dataset_config",
]
