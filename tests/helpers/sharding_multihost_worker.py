"""One process of a sharded training run (run by tests/test_sharding_multihost.py).

usage: sharding_multihost_worker.py PROCESS_ID NUM_PROCESSES PORT LOCAL_DEVICES WORKDIR
           DATA_DIR NUM_STEPS

Trains LeNet-5 (BatchNorm) on the offline digits with ``train_and_evaluate``, the
``gspmd`` strategy, ``config.mesh = (("fsdp", 4), ("data", -1))`` and the ``fsdp``
preset, on NUM_PROCESSES processes of LOCAL_DEVICES CPU devices each (joined with
``convjax.distributed`` over gloo on loopback). Each global batch is the same
whatever the process count -- batch k of the one-host input pipeline, each process
taking its rows -- so runs on different layouts train on the same examples. Exits
with the run's exit code (143 after a SIGTERM).
"""

import os
import sys
import time

process_id, num_processes, port, local_devices = (int(a) for a in sys.argv[1:5])
workdir, data_dir, num_steps = sys.argv[5], sys.argv[6], int(sys.argv[7])
os.environ["XLA_FLAGS"] = (
    f"--xla_force_host_platform_device_count={local_devices} --xla_cpu_multi_thread_eigen=false"
)
if num_processes > 1:
    os.environ.update(
        JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
        JAX_NUM_PROCESSES=str(num_processes),
        JAX_PROCESS_ID=str(process_id),
    )

import jax  # noqa: E402

jax.config.update("jax_platforms", "cpu")

from convjax import distributed  # noqa: E402

distributed.initialize("on" if num_processes > 1 else "off")
assert jax.process_count() == num_processes

from convjax.data import pipeline  # noqa: E402
from convjax.data.config import default_dataset_config  # noqa: E402
from convjax.runs.train import train_and_evaluate  # noqa: E402
from convjax.tasks import register_task  # noqa: E402
from convjax.tasks.classification import Classification  # noqa: E402
from convjax.train.preemption import TrainingInterrupted  # noqa: E402


@register_task("same_batches_on_any_layout")
class SameBatches(Classification):
    """Classification whose global batch k does not depend on the number of hosts."""

    def train_iterator(self, dataset_config, *, global_batch_size, seed, start_step):
        batches = pipeline.create_train_iterator(
            dataset_config,
            global_batch_size=global_batch_size,
            seed=seed,
            start_step=start_step,
            process_index=0,
            process_count=1,
        )
        rows = global_batch_size // jax.process_count()
        mine = slice(jax.process_index() * rows, (jax.process_index() + 1) * rows)
        for batch in batches:
            time.sleep(0.05)  # leaves the test time to stop the run part-way
            yield {k: v[mine] for k, v in batch.items()}


import ml_collections  # noqa: E402

config = ml_collections.ConfigDict(
    {
        "model": "lenet5",
        "model_kwargs": {"batch_norm": True},
        "dataset": default_dataset_config(),
        "task": "same_batches_on_any_layout",
        "optimizer": {"name": "momentum", "learning_rate": 0.02, "momentum": 0.9},
        "batch_size": 32,
        "eval_batch_size": 64,
        "num_train_steps": num_steps,
        "log_every_steps": 5,
        "eval_every_steps": 0,
        "checkpoint_every_steps": 10,
        "keep_checkpoints": 2,
        "seed": 0,
        "parallel": "gspmd",
        "mesh": (("fsdp", 4), ("data", -1)),
        "partitioning": "fsdp",
        "dtype": "float32",
        "conv_impl": "auto",
    }
)
config.dataset.data_dir = data_dir
config.dataset.image_size = (32, 32)
try:
    train_and_evaluate(config, workdir)
    code = 0
except TrainingInterrupted as stop:
    print(stop, flush=True)
    code = stop.exit_code
if num_processes > 1:
    jax.distributed.shutdown()
sys.exit(code)
