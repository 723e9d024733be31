"""Pure array functions: convolution, pooling, edge filters (NHWC images, HWIO filters).

Nothing here knows about Flax modules or training; every function is jit-able.
"""

from convjax.ops.conv import (
    PADDING_CHOICES,
    conv2d,
    conv2d_reference,
    conv_output_size,
    conv_param_count,
    same_padding,
)
from convjax.ops.filters import (
    EDGE_OPERATORS,
    FILTERS,
    edge_detect,
    filter_bank,
    get_filter,
    list_filters,
    to_grayscale,
)
from convjax.ops.pooling import (
    avg_pool,
    avg_pool_reference,
    max_pool,
    max_pool_reference,
    pool_output_size,
)

__all__ = [
    "EDGE_OPERATORS",
    "FILTERS",
    "PADDING_CHOICES",
    "avg_pool",
    "avg_pool_reference",
    "conv2d",
    "conv2d_reference",
    "conv_output_size",
    "conv_param_count",
    "edge_detect",
    "filter_bank",
    "get_filter",
    "list_filters",
    "max_pool",
    "max_pool_reference",
    "pool_output_size",
    "same_padding",
    "to_grayscale",
]
