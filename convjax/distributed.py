"""Multi-host start-up: JAX's own ``jax.distributed.initialize``, switched by one flag.

Every script defines ``--jax_distributed`` by importing this module and calls
:func:`initialize` at the start of ``main``, before JAX creates its devices:

- ``auto`` (default): join a cluster when JAX detects one -- a Cloud TPU pod slice,
  a SLURM job step (``srun``), a Kubernetes job, or ``JAX_COORDINATOR_ADDRESS``
  with ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` in the environment (e.g.
  several CPU hosts); else run as one process, as before.
- ``on``: the same, but fail with one line when no cluster is found.
- ``off``: never join one.

The environment variable ``CONVJAX_DISTRIBUTED`` sets the default. CPU devices of
several processes talk over gloo (TCP). Once joined, every process runs the same
program on its own devices; process 0 prints progress and writes the workdir's
shared files, and every process writes its shards of each checkpoint.

This module does not import JAX until :func:`initialize` is called.
"""

from __future__ import annotations

import os
import sys

from absl import flags

MODES = ("auto", "on", "off")
ENV = "CONVJAX_DISTRIBUTED"

_MODE = flags.DEFINE_enum(
    "jax_distributed",
    os.environ.get(ENV, "auto") if os.environ.get(ENV) in MODES else "auto",
    MODES,
    "Multi-host start-up (jax.distributed.initialize): 'auto' joins a TPU pod, SLURM, "
    "Kubernetes or JAX_COORDINATOR_ADDRESS cluster when one is detected; 'off' never.",
)

# jax.distributed.initialize's errors when it finds no cluster to join.
_NO_CLUSTER = ("coordinator_address should be defined", "must be defined")


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def initialize(mode: str | None = None) -> bool:
    """Joins the cluster per ``mode`` (default: the ``--jax_distributed`` flag, or
    ``auto`` when flags are not parsed). Returns whether this process is now one of
    several. Call it before anything asks JAX for devices."""
    if mode is None:
        mode = _MODE.value if flags.FLAGS.is_parsed() else os.environ.get(ENV, "auto")
    if mode not in MODES:
        raise ValueError(f"jax_distributed must be one of {', '.join(MODES)}; got {mode!r}")
    if mode == "off":
        return False
    import jax

    collectives = "jax_cpu_collectives_implementation"
    previous = getattr(jax.config, collectives)
    jax.config.update(collectives, "gloo")  # CPU devices of several processes talk over TCP
    try:
        jax.distributed.initialize(
            num_processes=_env_int("JAX_NUM_PROCESSES"), process_id=_env_int("JAX_PROCESS_ID")
        )
    except ValueError as error:
        if mode == "auto" and any(text in str(error) for text in _NO_CLUSTER):
            jax.config.update(collectives, previous)  # one process: as before
            return False
        raise ValueError(
            f"--jax_distributed={mode}: no cluster to join ({error}); run under a TPU pod "
            "slice, srun or Kubernetes, or set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES "
            "and JAX_PROCESS_ID (docs/scaling.md)"
        ) from None
    if jax.process_count() > 1 and jax.process_index() == 0:
        print(
            f"Joined {jax.process_count()} processes: {jax.device_count()} devices "
            f"({jax.local_device_count()} here, {jax.default_backend()})",
            file=sys.stderr,
            flush=True,
        )
    return jax.process_count() > 1
