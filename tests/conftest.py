"""Test setup: 4 simulated CPU devices and fast compiles, before JAX is imported."""

import os

from convjax.host_devices import use_all_cpu_cores  # noqa: E402  (does not import jax)

use_all_cpu_cores(4)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import jax  # noqa: E402

jax.config.update("jax_platforms", "cpu")
