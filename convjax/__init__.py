"""convjax: the classic convolutional-network curriculum as fast, tested JAX/Flax software."""

__version__ = "0.1.0"
