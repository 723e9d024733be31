"""Make the CPU cores JAX devices; call before JAX creates its devices.

XLA:CPU runs a convolution on one core, so on a CPU host a data-parallel step over
one simulated device per core uses the whole machine (ResNet-18 trained 2.3x faster
on 2 cores). The global batch is split evenly over the devices, so the count is the
largest one, up to the number of cores, that divides the run's ``batch_size`` and
``eval_batch_size``: a script with ``--config=...`` gets them from that config (and
its ``--config.batch_size=``/``--config.eval_batch_size=`` overrides), so the same
command runs unchanged on any core count -- 128/256 on 6 cores uses 4 devices, on 24
cores 16 -- and reaches the same result, since the global batch is unchanged. A line
on stderr says when cores are left out. ``XLA_FLAGS`` set by the user wins.

This module does not import JAX.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Iterable, Sequence

# Simulated devices each run on their own thread. With XLA's multi-threaded Eigen
# pool as well, the device threads' collectives can wedge that shared pool (the
# step hangs in an all-reduce rendezvous, then XLA aborts the process after 40 s);
# one thread per device is also the intended use of the cores. The longer
# timeouts let a device that an oversubscribed host delays catch up.
HOST_DEVICE_FLAGS = (
    "--xla_cpu_multi_thread_eigen=false",
    "--xla_cpu_collective_call_terminate_timeout_seconds=3600",
    "--xla_cpu_collective_timeout_seconds=3600",
)
BATCH_FIELDS = ("batch_size", "eval_batch_size")
# Threads of the CPU client's pool per simulated device. jaxlib 0.10's client runs the
# executions and the wait for a launch slot (32 steps may be queued ahead) on one pool
# of one thread per core: with 2 devices on 2 cores, a loop that queues a collective
# step 32 times deadlocks (the all-reduce waits for a device whose thread waits for a
# slot). Two threads per device measured enough (2 devices: 3 threads hang, 4 run).
PJRT_THREADS_PER_DEVICE = 2


def conv_library_flags() -> tuple[str, ...]:
    """Convolutions on Eigen, not YNNPACK, where jaxlib has that flag (0.10-0.12).

    YNNPACK's weight gradients and layout copies trained ResNets 1.3-1.8x slower on
    jaxlib 0.10 and compiled 2-4x slower; on 0.12 its weight gradient is 2-4x slower
    than Eigen's and ResNet-18-CIFAR trained 1.4x slower with it (benchmarks/README.md).
    Newer jaxlibs are left at XLA's defaults: an unknown flag would abort XLA at start.
    """
    try:
        version = tuple(int(v) for v in importlib.metadata.version("jaxlib").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return ()
    if (0, 10) <= version < (0, 13):
        return ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)
    return ()


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def device_count_for(cores: int, batch_sizes: Iterable[int]) -> int:
    """The largest device count ``<= cores`` that divides every batch size."""
    sizes = [int(b) for b in batch_sizes if b]
    return next(n for n in range(max(cores, 1), 0, -1) if all(b % n == 0 for b in sizes))


def _flag_value(argv: Sequence[str], name: str) -> str | None:
    """The last value of ``--name=v`` or ``--name v`` in ``argv``."""
    value = None
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
        elif arg == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def config_batch_sizes(argv: Sequence[str]) -> dict[str, int]:
    """``batch_size`` and ``eval_batch_size`` of the ``--config=path[:arg]`` in ``argv``
    with its command-line overrides; empty when there is no loadable config (the script
    then reports the config error itself). ``eval_batch_size`` defaults to ``batch_size``."""
    spec = _flag_value(argv, "config")
    if not spec:
        return {}
    path, _, arg = spec.partition(":")
    try:
        module_spec = importlib.util.spec_from_file_location("_convjax_device_config", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        config = module.get_config(arg) if arg else module.get_config()
        sizes = {field: config.get(field) for field in BATCH_FIELDS}
        for field in BATCH_FIELDS:
            override = _flag_value(argv, f"config.{field}")
            if override is not None:
                sizes[field] = None if override in ("None", "") else int(override)
    except Exception:  # noqa: BLE001 -- the script's own config flag reports it properly
        return {}
    sizes["eval_batch_size"] = sizes["eval_batch_size"] or sizes["batch_size"]
    return {k: int(v) for k, v in sizes.items() if isinstance(v, int) and v > 0}


def use_all_cpu_cores(
    num_devices: int | None = None,
    *,
    batch_sizes: dict[str, int] | None = None,
    argv: Sequence[str] | None = None,
    parallel: str | None = None,
) -> int | None:
    """Sets ``XLA_FLAGS`` for host devices, and ``PJRT_NPROC`` (the CPU client's thread
    pool, unless set) to :data:`PJRT_THREADS_PER_DEVICE` threads per device, so a plain
    loop over a compiled collective step never deadlocks; returns the device count
    (None if left alone).

    Args:
      num_devices: an explicit count; default: the largest count up to
        :func:`available_cores` that divides every batch size.
      batch_sizes: ``{"batch_size": 128, "eval_batch_size": 256}``; default: read from
        the ``--config`` in ``argv`` (:func:`config_batch_sizes`).
      argv: the command line (default ``sys.argv``).
      parallel: the run's ``config.parallel``. ``'jit'`` trains on one device, so no
        host devices are made: XLA's own threads share the cores (for ResNets and VGG
        on 2 cores 5-15 % faster than one device per core; slower for LeNet-5).

    Leaves ``XLA_FLAGS`` alone when the user already set it.
    """
    if "XLA_FLAGS" in os.environ:
        return None
    if parallel == "jit" and num_devices is None:
        os.environ["XLA_FLAGS"] = " ".join(conv_library_flags())
        return 1
    if num_devices is None:
        cores = available_cores()
        if batch_sizes is None:
            batch_sizes = config_batch_sizes(sys.argv if argv is None else argv)
        num_devices = device_count_for(cores, batch_sizes.values())
        if num_devices < cores:
            sizes = " and ".join(f"{k} {v}" for k, v in batch_sizes.items())
            print(
                f"Using {num_devices} of {cores} CPU cores as devices, the most that {sizes} "
                "split evenly over (XLA_FLAGS=--xla_force_host_platform_device_count=N "
                "overrides).",
                file=sys.stderr,
                flush=True,
            )
    threads = max(available_cores(), PJRT_THREADS_PER_DEVICE * int(num_devices))
    os.environ.setdefault("PJRT_NPROC", str(threads))  # the CPU client's pool size
    os.environ["XLA_FLAGS"] = " ".join(
        (
            f"--xla_force_host_platform_device_count={int(num_devices)}",
            *HOST_DEVICE_FLAGS,
            *conv_library_flags(),
        )
    )
    return int(num_devices)
