"""Nothing a user trained is lost: one run per workdir, SIGTERM/SIGINT save the step they
stop at, a diverging run never saves a diverged state and names the first bad step,
a changed config is refused (config.json kept), step counts, strict results.json, and
TensorBoard without duplicated steps after a resume. Real processes and signals where
the behaviour is a process's."""

from __future__ import annotations

import collections
import glob
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import lenet5_digits
from convjax.runs import workdir as workdir_lib
from convjax.runs.train import train_and_evaluate, write_results
from convjax.train import loop
from convjax.train.guard import DivergenceError, DivergenceGuard, check_state_finite
from convjax.train.parallel import get_strategy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP = re.compile(r"^step (\d+)/")
NOT_SCALARS = ("step", "split", "time")
HELPER = os.path.join(os.path.dirname(__file__), "helpers", "stop_agreement_worker.py")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def smoke_config(data_dir, **overrides):
    config = lenet5_digits.get_config("smoke")
    config.dataset.data_dir = data_dir
    config.parallel = "jit"
    for key, value in overrides.items():
        config[key] = value
    return config


# ------------------------------------------------------------------ real processes


class Run:
    """``experiments/train.py`` on the smoke config in a subprocess, read line by line."""

    def __init__(self, workdir, data_dir, *extra):
        command = [
            sys.executable, os.path.join(ROOT, "experiments", "train.py"),
            f"--config={os.path.join(ROOT, 'configs', 'lenet5_digits.py')}:smoke",
            f"--workdir={workdir}", "--config.checkpoint_every_steps=100000",
            "--config.eval_every_steps=100000", "--config.parallel=jit", *extra,
        ]  # fmt: skip
        env = dict(os.environ, TFDS_DATA_DIR=data_dir)
        self.proc = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self.last_step = 0

    def wait_for_step(self, step: int) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            if match := STEP.match(line):
                self.last_step = int(match.group(1))
                if self.last_step >= step:
                    return
        raise AssertionError("".join(self.lines[-30:]))

    def finish(self, timeout: float = 300) -> tuple[int, str]:
        rest, _ = self.proc.communicate(timeout=timeout)
        self.lines.append(rest)
        return self.proc.returncode, "".join(self.lines)


def tensorboard_steps(workdir):
    """(tag, step) of every scalar in the workdir's TensorBoard event files."""
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    seen = []
    for path in sorted(glob.glob(os.path.join(workdir, "tensorboard", "*tfevents*"))):
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            event = event_pb2.Event.FromString(record)
            seen += [(value.tag, event.step) for value in event.summary.value]
    return seen


def checkpoints(workdir):
    names = os.listdir(os.path.join(workdir, "checkpoints"))
    return sorted(int(n) for n in names if n.isdigit())


def test_busy_workdir_signals_and_changed_config_in_real_processes(data_dir, tmp_path):
    """(kill -9 of a lock holder: tests/test_workdir_lock.py; of a training run:
    tests/test_train_loop.py.)"""
    workdir = str(tmp_path / "run")
    long = "--config.num_train_steps=100000"
    # A second run on a busy workdir is refused, naming the running one.
    first = Run(workdir, data_dir, long)
    first.wait_for_step(3)
    config_before = open(os.path.join(workdir, "config.json")).read()
    refused = subprocess.run(
        first.proc.args, env=dict(os.environ, TFDS_DATA_DIR=data_dir),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert refused.returncode == 1, refused.stderr[-3000:]
    assert f"is in use by pid {first.proc.pid} on host {socket.gethostname()}" in refused.stderr
    assert "Traceback" not in refused.stderr + refused.stdout
    assert not STEP.search(refused.stdout)
    assert open(os.path.join(workdir, "config.json")).read() == config_before
    # SIGTERM: the step it stops at is saved, one line, exit status 128 + 15.
    first.proc.send_signal(signal.SIGTERM)
    code, output = first.finish()
    saved = int(
        re.search(r"Interrupted \(SIGTERM\) at step (\d+): saved checkpoint \1 in", output)[1]
    )
    assert code == 143 and "Traceback" not in output, output[-3000:]
    assert saved >= first.last_step and checkpoints(workdir) == [saved]
    # Ctrl-C on the resumed run: the same, exit status 130.
    second = Run(workdir, data_dir, long)
    second.wait_for_step(saved + 3)
    assert f"Resumed from {workdir}/checkpoints at step {saved}" in "".join(second.lines)
    second.proc.send_signal(signal.SIGINT)
    code, output = second.finish()
    resumed = int(
        re.search(r"Interrupted \(SIGINT\) at step (\d+): saved checkpoint \1 in", output)[1]
    )
    assert code == 130 and "Traceback" not in output, output[-3000:]
    assert resumed >= second.last_step
    # Another model on this workdir: two lines, no traceback, nothing written.
    config_before = open(os.path.join(workdir, "config.json")).read()
    code, output = Run(workdir, data_dir, "--config.model_kwargs.activation=tanh").finish()
    assert code == 1 and "Traceback" not in output, output[-3000:]
    message = [line for line in output.splitlines() if line.startswith("error:")]
    assert message and "model_kwargs.activation: 'relu' -> 'tanh'" in message[0], output[-2000:]
    assert "--resume_with_changed_config" in output
    assert open(os.path.join(workdir, "config.json")).read() == config_before
    assert checkpoints(workdir) == [saved, resumed]


def test_hosts_agree_on_the_step_to_stop_at(tmp_path):
    """Two JAX processes (gloo on loopback); SIGTERM reaches only the second: both stop
    at the same step, the first agreement step after the signal."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [
        subprocess.Popen(
            [sys.executable, HELPER, str(i), str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    lines = []
    for line in procs[1].stdout:
        lines.append(line)
        if line.startswith("step 12"):
            procs[1].send_signal(signal.SIGTERM)
            break
    outputs = [procs[0].communicate(timeout=300)[0], procs[1].communicate(timeout=300)[0]]
    outputs[1] = "".join(lines) + outputs[1]
    stops = [re.search(r"stopped after step (\d+) on signal (\d+)", out) for out in outputs]
    assert all(stops), outputs
    noticed = int(re.search(r"signal noticed after step (\d+)", outputs[1])[1])
    assert "noticed" not in outputs[0]  # the first host never got the signal
    # agree_every=5: both stop at the first agreement at or after the step it was noticed.
    assert {int(m[1]) for m in stops} == {5 * math.ceil(noticed / 5)}, outputs
    assert {int(m[2]) for m in stops} == {signal.SIGTERM}


# ------------------------------------------------------------------ divergence


def _losses(workdir):
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return [r["loss"] for r in records if r["split"] == "train"]


def test_diverging_run_saves_nothing_after_the_first_bad_step(data_dir, tmp_path):
    sgd = dict(name="sgd", learning_rate=30.0, warmup_steps=30, schedule="cosine")

    def config(**overrides):
        c = smoke_config(data_dir, num_train_steps=40, eval_every_steps=0, **overrides)
        c.optimizer.update(sgd)
        return c

    # Every step logged, no explosion limit: the loss of each step up to the first NaN.
    logged = config(log_every_steps=1, checkpoint_every_steps=1000, max_loss_factor=None)
    with pytest.raises(DivergenceError) as nan_error:
        train_and_evaluate(logged, str(tmp_path / "logged"))
    losses = _losses(str(tmp_path / "logged"))
    first_nan = len(losses) + 1
    assert all(math.isfinite(x) for x in losses) and first_nan == nan_error.value.step
    # Between log steps, a checkpoint every step: the same step named, nothing after it saved.
    sparse = str(tmp_path / "sparse")
    quiet = config(log_every_steps=50, checkpoint_every_steps=1, keep_checkpoints=None,
                   max_loss_factor=None)  # fmt: skip
    with pytest.raises(DivergenceError) as error:
        train_and_evaluate(quiet, sparse)
    message = str(error.value)
    assert error.value.step == first_nan
    assert f"Diverged at step {first_nan}: the training loss is nan" in message
    assert f"last good checkpoint: step {first_nan - 1}" in message
    assert checkpoints(sparse) == list(range(1, first_nan))
    last = workdir_lib.restore(sparse)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(last.state.params))
    # A finite explosion (default limit: 1e6 x the median of the earlier first steps),
    # found from the logged losses by the formula.
    explode = next(
        i + 1 for i in range(1, len(losses)) if losses[i] > 1e6 * np.median(losses[: min(i, 20)])
    )
    assert explode < first_nan
    exploding = str(tmp_path / "exploding")
    with pytest.raises(DivergenceError, match=f"Diverged at step {explode}: .* exploded"):
        train_and_evaluate(config(log_every_steps=50, checkpoint_every_steps=1), exploding)
    assert checkpoints(exploding)[-1] == explode - 1


def test_guard_finds_the_first_bad_step_between_checks_without_a_sync():
    """A fake step whose loss is a table: the guard names the first bad entry whenever
    it is checked, and only then fetches."""
    table = jnp.array([2.0, 3.0, 2.5, 2.0, 1.5, 3e6, 1.0, jnp.nan, 1.0, 1.0])
    step_fn = jax.jit(lambda s, b: (s + 1, {"loss": table[s]}))
    fetched = []

    def get_metrics(tree):
        fetched.append(len(tree))
        return jax.tree.map(np.asarray, tree)

    for factor, max_loss, bad in ((1e6, None, 6), (None, None, 8), (None, 2.9, 2)):
        guard = DivergenceGuard(
            get_metrics, start_step=0, max_loss_factor=factor, max_loss=max_loss
        )
        wrapped = guard.wrap(step_fn)
        fetched.clear()
        with pytest.raises(DivergenceError) as error:
            loop.run_steps(
                wrapped, jnp.int32(0), iter(range(10)), get_metrics=get_metrics,
                start_step=0, num_steps=10, log_every=10,
                every=(loop.Every(4, lambda step, s, g=guard: g.check(step - 4 or None)),),
            )  # fmt: skip
        assert error.value.step == bad, str(error.value)
        assert f"Nothing after step {bad - 1} was saved" in str(error.value)
        assert fetched[0] == 4  # the losses of steps 1..4 came back in one fetch, at step 4
    with pytest.raises(ValueError, match="max_loss_factor must be a positive number"):
        DivergenceGuard(get_metrics, start_step=0, max_loss_factor=0)
    check_state_finite({"w": np.ones(3, np.float32), "step": np.int32(3)}, 3)
    with pytest.raises(DivergenceError, match=r"state at step 7 .*\['b'\]"):
        check_state_finite({"a": np.ones(2), "b": jnp.array([1.0, jnp.inf], jnp.bfloat16)}, 7)


# ------------------------------------------------------------------ configs and steps


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("trained"))
    train_and_evaluate(smoke_config(data_dir, num_train_steps=6, checkpoint_every_steps=3), workdir)
    return workdir


def test_changed_model_is_refused_unless_asked_and_config_json_keeps_the_record(
    trained, data_dir, tmp_path
):
    import shutil

    workdir = str(tmp_path / "copy")
    shutil.copytree(trained, workdir)
    saved = open(os.path.join(workdir, "config.json")).read()
    tanh = smoke_config(data_dir, num_train_steps=8, checkpoint_every_steps=3)
    tanh.model_kwargs.activation = "tanh"
    tanh.optimizer.learning_rate = 0.01
    with pytest.raises(workdir_lib.ConfigChangedError) as error:
        train_and_evaluate(tanh, workdir)
    message = str(error.value)
    assert "model_kwargs.activation: 'relu' -> 'tanh'" in message
    assert "optimizer.learning_rate: 0.002 -> 0.01" in message
    assert len(message.splitlines()) == 2 and "num_train_steps" not in message
    assert open(os.path.join(workdir, "config.json")).read() == saved
    assert checkpoints(workdir) == [3, 6]
    # Opted in: it resumes; config.json becomes the new config at the first new
    # checkpoint and the one that produced steps 1..6 is kept as config.6.json.
    train_and_evaluate(tanh, workdir, resume_with_changed_config=True)
    assert workdir_lib.load_config(workdir).model_kwargs.activation == "tanh"
    assert open(os.path.join(workdir, "config.6.json")).read() == saved
    assert json.load(open(os.path.join(workdir, "results.json")))["step"] == 8


def test_step_counts_and_strict_results(trained, data_dir, tmp_path, capsys):
    for steps in (0, -5):
        with pytest.raises(
            ValueError, match=f"num_train_steps must be a positive integer.*{steps}"
        ):
            train_and_evaluate(smoke_config(data_dir, num_train_steps=steps), str(tmp_path / "x"))
    assert not os.path.exists(tmp_path / "x")
    # A workdir past num_train_steps: evaluated only, and results.json says its real step.
    before = checkpoints(trained)
    train_and_evaluate(smoke_config(data_dir, num_train_steps=2), trained)
    assert (
        "workdir is at step 6 \u2265 num_train_steps 2: evaluating only" in capsys.readouterr().out
    )
    assert json.load(open(os.path.join(trained, "results.json")))["step"] == 6
    assert checkpoints(trained) == before
    # NaN and infinities are not JSON: results.json writes null.
    figures = {"loss": math.inf, "accuracy": math.nan, "n": 1.0}
    path = write_results(str(tmp_path), 3, {"eval": figures})  # evaluator name -> figures
    text = open(path).read()
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text) == {"step": 3, "eval": {"loss": None, "accuracy": None, "n": 1.0}}


def test_stop_before_the_last_step_returns_that_state():
    strategy = get_strategy("jit")
    step_fn = jax.jit(lambda s, b: (s + 1, {"loss": jnp.float32(1.0)}))
    asked, logged = [], []

    def stop(step):
        asked.append(step)
        return step == 4

    state = loop.run_steps(
        step_fn, jnp.int32(0), iter(range(10)), get_metrics=strategy.get_metrics,
        start_step=0, num_steps=10, log_every=3, stop=stop,
        on_log=lambda step, scalars: logged.append(step),
    )  # fmt: skip
    assert int(state) == 4 and asked == [1, 2, 3, 4]
    assert logged == [3, 4]  # the step it stops at is logged


def test_tensorboard_has_each_step_once_after_a_resume(trained, data_dir, tmp_path):
    """A run killed after its last checkpoint logged steps that the resumed run logs
    again: the event files keep each (tag, step) once, as metrics.jsonl does."""
    import shutil

    workdir = str(tmp_path / "copy")
    shutil.copytree(trained, workdir)
    shutil.rmtree(os.path.join(workdir, "checkpoints", "6"))  # as if killed before saving 6
    before = tensorboard_steps(workdir)
    assert ("train/loss", 5) in before and ("eval/accuracy", 6) in before
    train_and_evaluate(smoke_config(data_dir, num_train_steps=6, checkpoint_every_steps=3), workdir)
    logged = tensorboard_steps(workdir)
    repeated = [key for key, n in collections.Counter(logged).items() if n > 1]
    assert not repeated, repeated[:5]
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    jsonl = {(f"{r['split']}/{k}", r["step"]) for r in records for k in r if k not in NOT_SCALARS}
    assert set(logged) == jsonl and len(logged) == len(jsonl)


def test_other_drivers_that_write_a_workdir_are_refused_while_it_is_held(tmp_path):
    from configs import style_transfer
    from convjax.runs import faces, stylize
    from convjax.runs.lock import WorkdirBusyError, WorkdirLock

    workdir = str(tmp_path / "busy")
    with WorkdirLock(workdir, command="python experiments/train.py --workdir=busy"):
        with pytest.raises(WorkdirBusyError, match="command: python experiments/train.py"):
            stylize.stylize(style_transfer.get_config("smoke"), workdir)
        with pytest.raises(WorkdirBusyError):
            faces.evaluate(workdir)
    assert os.listdir(workdir) == ["run.lock"]  # nothing else was written
    # A driver calling another on the same workdir (faces train_and_evaluate -> the
    # training run) nests its hold; the lock goes when the outer hold ends.
    from convjax.runs.lock import hold

    with hold(workdir) as outer:
        with hold(workdir) as inner:
            assert inner is outer and outer.held
        with pytest.raises(WorkdirBusyError):
            WorkdirLock(workdir).acquire()
    assert not outer.held
    with WorkdirLock(workdir):
        pass
