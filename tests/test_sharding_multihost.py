"""A sharded (fsdp) run on 2 processes x 4 CPU devices (gloo on loopback), stopped by
SIGTERM and resumed on the same layout, on 1 process x 8 devices and on 1 process x 4
devices, ends with the parameters of an uninterrupted run; each process wrote only
its shards of the checkpoints."""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from convjax.runs import workdir as workdir_lib
from convjax.tasks import get_task
from convjax.train.checkpointing import Checkpointer
from convjax.train.setup import abstract_train_state, build_model

WORKER = os.path.join(os.path.dirname(__file__), "helpers", "sharding_multihost_worker.py")
STEPS = 40


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(num_processes, local_devices, workdir, data_dir):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return [
        subprocess.Popen(
            [
                sys.executable,
                WORKER,
                str(i),
                str(num_processes),
                str(port),
                str(local_devices),
                workdir,
                data_dir,
                str(STEPS),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for i in range(num_processes)
    ]


def _finish(procs, expect=0):
    outputs = []
    for proc in procs:
        output, _ = proc.communicate(timeout=400)
        assert proc.returncode == expect, output[-4000:]
        outputs.append(output)
    return outputs


def _stop_part_way(procs):
    """Sends SIGTERM to every process once the first has logged step 10."""
    seen = []
    for line in procs[0].stdout:
        seen.append(line)
        if line.startswith("step 10/"):
            break
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    return "".join(seen)


def _params(workdir):
    """The newest checkpoint's parameters (numpy), read on this one process."""
    config = workdir_lib.load_config(workdir)  # its task only changes the batches it reads
    abstract = abstract_train_state(build_model(config), get_task("classification"), config,
                                    (32, 32, 1))  # fmt: skip
    checkpointer = Checkpointer(os.path.join(workdir, workdir_lib.CHECKPOINT_DIR))
    try:
        items = checkpointer.restore(abstract.checkpoint_items())
    finally:
        checkpointer.close()
    return jax.tree_util.tree_flatten_with_path(items["params"])[0]


def _bytes_under(path):
    return sum(os.path.getsize(f) for f in glob.glob(os.path.join(path, "**"), recursive=True)
               if os.path.isfile(f))  # fmt: skip


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    from convjax.data.builders import get_builder
    from convjax.data.config import default_dataset_config

    dataset = default_dataset_config()
    dataset.data_dir = str(tmp_path_factory.mktemp("tfds"))
    get_builder(dataset)  # prepared once, before the processes start
    return dataset.data_dir


def test_fsdp_run_stopped_and_resumed_on_other_layouts(digits_dir, tmp_path):
    reference = str(tmp_path / "uninterrupted")
    _finish(_launch(2, 4, reference, digits_dir))
    with open(os.path.join(reference, workdir_lib.RESULTS_JSON)) as f:
        assert json.load(f)["eval"]["count"] == 359  # every test digit once, over both hosts

    stopped = str(tmp_path / "stopped")
    procs = _launch(2, 4, stopped, digits_dir)
    head = _stop_part_way(procs)
    tail = _finish(procs, expect=143)[0]
    assert "Interrupted (SIGTERM)" in tail, head + tail
    saved = max(int(s) for s in os.listdir(os.path.join(stopped, "checkpoints")) if s.isdigit())
    assert 10 <= saved < STEPS

    # Each process wrote its own shards: the fsdp-split arrays are halved between them.
    step_dir = os.path.join(stopped, "checkpoints", str(saved), "default")
    sizes = {p: _bytes_under(os.path.join(step_dir, f"ocdbt.process_{p}")) for p in (0, 1)}
    print(f"checkpoint {saved}: bytes written per process {sizes}")
    state_bytes = sum(np.asarray(x).nbytes for _, x in _params(stopped)) * 2  # + momentum
    assert 0 < sizes[1] < sizes[0] < state_bytes, (sizes, state_bytes)
    assert sizes[1] > state_bytes / 4  # process 1 holds half of the big kernels

    expected = _params(reference)
    for name, (num_processes, devices) in {"same": (2, 4), "1x8": (1, 8), "1x4": (1, 4)}.items():
        resumed = str(tmp_path / name)
        shutil.copytree(stopped, resumed)
        output = _finish(_launch(num_processes, devices, resumed, digits_dir))[0]
        assert f"at step {saved}" in output, output[-2000:]
        for (path, want), (_, got) in zip(expected, _params(resumed), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=f"{name} {path}")
