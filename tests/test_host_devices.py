"""The default experiment runs unchanged on any core count: the device count divides the
config's batch sizes, and a batch-size error names the field it is about."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from convjax import host_devices
from convjax.train.parallel import get_strategy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "lenet5_digits.py")

# The README's default run (batch_size 128, eval_batch_size 256) on core counts that do not
# divide 128 -> the most devices both divide over (worked out by hand).
EXPECTED = {1: 1, 2: 2, 3: 2, 4: 4, 6: 4, 7: 4, 8: 8, 10: 8, 12: 8, 14: 8, 20: 16, 24: 16, 64: 64}


@pytest.mark.parametrize("cores", sorted(EXPECTED))
def test_device_count_divides_both_batch_sizes(cores):
    n = host_devices.device_count_for(cores, [128, 256])
    assert n == EXPECTED[cores]
    assert all(b % n == 0 for b in (128, 256))
    assert not any(128 % m == 0 for m in range(n + 1, cores + 1))


def test_device_count_follows_other_batch_sizes():
    assert host_devices.device_count_for(6, [126, 252]) == 6
    assert host_devices.device_count_for(6, [126, 256]) == 2
    assert host_devices.device_count_for(12, [96]) == 12
    assert host_devices.device_count_for(5, [7]) == 1
    assert host_devices.device_count_for(24, []) == 24  # no config: every core


def test_batch_sizes_are_read_from_the_command_line_config():
    read = host_devices.config_batch_sizes
    base = ["experiments/train.py", f"--config={DEFAULT_CONFIG}", "--workdir=/w"]
    assert read(base) == {"batch_size": 128, "eval_batch_size": 256}
    assert read([base[0], f"--config={DEFAULT_CONFIG}:smoke"]) == {
        "batch_size": 128,
        "eval_batch_size": 256,
    }
    overridden = [*base, "--config.batch_size=96", "--config.eval_batch_size", "48"]
    assert read(overridden) == {"batch_size": 96, "eval_batch_size": 48}
    follows = [base[0], "--config", DEFAULT_CONFIG, "--config.eval_batch_size=None"]
    assert read(follows) == {"batch_size": 128, "eval_batch_size": 128}
    assert read(["script.py"]) == {}
    assert read(["script.py", "--config=no/such/config.py"]) == {}


def test_use_all_cpu_cores_picks_a_dividing_count(monkeypatch, capsys):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setattr(host_devices, "available_cores", lambda: 6)
    argv = ["experiments/train.py", f"--config={DEFAULT_CONFIG}", "--workdir=/w"]
    assert host_devices.use_all_cpu_cores(argv=argv) == 4
    assert "--xla_force_host_platform_device_count=4 " in os.environ["XLA_FLAGS"]
    note = capsys.readouterr().err.strip().splitlines()
    assert note == [
        "Using 4 of 6 CPU cores as devices, the most that batch_size 128 and eval_batch_size "
        "256 split evenly over (XLA_FLAGS=--xla_force_host_platform_device_count=N overrides)."
    ]
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=6")
    assert host_devices.use_all_cpu_cores(argv=argv) is None  # the user's flags win
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=6"


def test_jit_runs_keep_one_device_on_xla_threads(monkeypatch, capsys):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setattr(host_devices, "available_cores", lambda: 6)
    sizes = {"batch_size": 128, "eval_batch_size": 256}
    assert host_devices.use_all_cpu_cores(batch_sizes=sizes, parallel="jit") == 1
    flags = os.environ["XLA_FLAGS"]
    assert "device_count" not in flags and "multi_thread_eigen" not in flags
    assert flags == " ".join(host_devices.conv_library_flags())
    assert capsys.readouterr().err == ""
    monkeypatch.delenv("XLA_FLAGS")
    assert host_devices.use_all_cpu_cores(batch_sizes=sizes, parallel="shard_map") == 4


def test_batch_size_errors_name_the_field():
    strategy = get_strategy("shard_map")  # 4 simulated devices (conftest)
    with pytest.raises(ValueError) as error:
        strategy.check_batch_size(6, "eval_batch_size")
    message = str(error.value)
    assert message.startswith("eval_batch_size 6 does not divide over 4 device(s)")
    assert "set eval_batch_size to a multiple of 4, e.g. 4 or 8" in message
    assert "unset XLA_FLAGS" in message and len(message.splitlines()) == 1
    with pytest.raises(ValueError, match=r"^batch_size 10 does not divide"):
        strategy.check_batch_size(10)
    strategy.check_batch_size(12, "eval_batch_size")


RUN_WITH_CORES = textwrap.dedent(
    """
    import os, runpy, sys
    cores = int(sys.argv[1])  # a machine with this many cores
    os.cpu_count = lambda: cores
    os.sched_getaffinity = lambda pid: set(range(cores))
    sys.argv = ["experiments/train.py", *sys.argv[2:]]
    runpy.run_path("experiments/train.py", run_name="__main__")
    """
)


def test_default_command_runs_on_six_cores(tmp_path):
    """The README command, unchanged but for a shorter run, on a simulated 6-core machine
    (one device per core used to fail: 128 does not divide over 6)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
    workdir = tmp_path / "lenet5"
    args = [
        "--config=configs/lenet5_digits.py",
        f"--workdir={workdir}",
        "--config.num_train_steps=2",
        "--config.eval_every_steps=2",
        "--config.log_every_steps=2",
        "--config.checkpoint_every_steps=2",
    ]
    run = subprocess.run(
        [sys.executable, "-c", RUN_WITH_CORES, "6", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Using 4 of 6 CPU cores as devices" in run.stderr
    with open(workdir / "results.json") as f:
        results = json.load(f)
    assert results["step"] == 2 and results["eval"]["count"] == 359  # the 20% test split


LOOP_OVER_A_COLLECTIVE_STEP = textwrap.dedent(
    """
    import os, sys, time
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:2]))  # a 2-core machine
    from convjax.host_devices import use_all_cpu_cores
    assert use_all_cpu_cores(2) == 2
    import jax, jax.numpy as jnp, optax
    from convjax.train.parallel import get_strategy
    from convjax.train.state import TrainState

    def loss_fn(params, model_state, batch, rng):
        loss = jnp.mean((batch["x"] @ params["w"] - batch["y"]) ** 2)
        return loss, ({}, model_state)

    batch = {"x": jnp.ones((8, 16)), "y": jnp.zeros((8, 4))}
    for name in ("pmap", "shard_map"):
        strategy = get_strategy(name)
        state = TrainState.create(
            params={"w": jnp.full((16, 4), 0.01)}, tx=optax.sgd(0.01), rng=jax.random.PRNGKey(0)
        )
        state, batch_on = strategy.put_state(state), strategy.put_batch(batch)
        step = strategy.compile_train_step(loss_fn)
        state, _ = step(state, batch_on)  # compiled before the clock starts
        jax.block_until_ready(state)
        start = time.perf_counter()
        for _ in range(100):  # a user's own loop: nothing waits for a step to finish
            state, metrics = step(state, batch_on)
        jax.block_until_ready((state, metrics))
        print(name, "100 steps", round(time.perf_counter() - start, 3), flush=True)
    """
)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_a_plain_loop_over_a_collective_step_never_deadlocks():
    """jaxlib 0.10's CPU client deadlocked a 2-device collective step once 32 were queued
    on a 2-core machine (use_all_cpu_cores now sizes its thread pool, PJRT_NPROC). The
    loop runs in a subprocess with a timeout, so a deadlock fails instead of hanging."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PJRT_NPROC")}
    env.update(JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, "-c", LOOP_OVER_A_COLLECTIVE_STEP],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["pmap", "shard_map"], done.stdout
