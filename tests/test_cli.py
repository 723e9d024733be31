"""The command line as a new user meets it: the default experiment's output is the run and
nothing else, every documented command is current, ``--help`` answers at once, mistakes
are one line (fine-tuning without weights is refused), loading says what it loaded, and
the 10-fold figure is a standard error."""

from __future__ import annotations

import ast
import os
import pathlib
import re
import shlex
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from convjax.face.evaluation import format_ten_fold, ten_fold_report
from convjax.models.transfer import BACKBONE, flat_paths
from convjax.quiet import ENVIRONMENT, one_line_errors
from convjax.tasks import get_task

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "experiments").glob("*.py"))

# What a user must not see (ISSUE: the first hour of a new user).
NOISE = {
    "absl/C++ log prefix": re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ ", re.M),
    "absl InitializeLog banner": re.compile(r"All log messages before absl::InitializeLog"),
    "oneDNN banner": re.compile(r"oneDNN"),
    "TensorFlow": re.compile(r"tensorflow|cpu_feature_guard", re.I),
    "TPU backend": re.compile(r"Unable to initialize backend"),
    "tfds download banner": re.compile(r"Downloading and preparing"),
    "tfds variant warning": re.compile(r"Variant folder"),
    "python logging default format": re.compile(r"^(WARNING|INFO):", re.M),
    "escape codes / carriage returns": re.compile(r"\x1b\[|\r"),
    "traceback": re.compile(r"Traceback"),
    "count as a metric": re.compile(r"count="),
}


def user_env(tmp_path: pathlib.Path) -> dict[str, str]:
    """A new user's shell: none of the test session's settings, a fresh tfds folder."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("XLA_FLAGS", "PYTHONPATH", *ENVIRONMENT) and not k.startswith("TFDS")
    }
    env["TFDS_DATA_DIR"] = str(tmp_path / "fresh_tfds")
    return env


def test_default_smoke_experiment_prints_the_run_and_nothing_else(tmp_path):
    command = [
        sys.executable,
        "experiments/train.py",
        "--config=configs/lenet5_digits.py:smoke",
        f"--workdir={tmp_path / 'run'}",
    ]
    done = subprocess.run(
        command, cwd=ROOT, env=user_env(tmp_path), capture_output=True, text=True, timeout=600
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    for what, pattern in NOISE.items():
        assert not pattern.search(output), f"{what} in the output:\n{output}"
    lines = done.stdout.splitlines()
    assert re.fullmatch(
        r"Building offline dataset sklearn_digits in .*fresh_tfds/sklearn_digits/1\.0\.0 \.\.\. "
        r"1,797 examples \(train 1,438, test 359\) in [\d.]+ s",
        lines[0],
    ), lines[0]
    steps = [line for line in lines if line.startswith("step ")]
    assert re.match(
        r"step 5/20 \(25%\) \| loss=[\d.]+ accuracy=[\d.]+ \| compile [\d.]+ s \| ", steps[0]
    )
    assert all("compile" not in line for line in steps[1:]) and len(steps) == 4
    evals = [line for line in lines if line.startswith("eval at step")]
    assert len(evals) == 2 and all(" on 359 examples: accuracy=" in line for line in evals)
    records = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert '"count"' not in records  # not a metric, so not plotted
    for written in ("results.json", "training_curves.png", "metrics.csv", "config.json"):
        assert (tmp_path / "run" / written).stat().st_size > 0, written  # before the prompt exit


def test_help_answers_at_once_without_jax_or_tensorflow():
    best = min(_timed([sys.executable, "experiments/train.py", "--help"]) for _ in range(3))
    assert best < 3.0, f"experiments/train.py --help took {best:.1f} s"
    probe = (
        "import runpy, sys\n"
        "sys.argv = [sys.argv[1], '--help']\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "heavy = [m for m in ('jax', 'tensorflow', 'convjax.runs') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    for script in SCRIPTS:
        done = subprocess.run(
            [sys.executable, "-c", probe, str(script)],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert "\nflags:\n" in done.stdout, (script.name, done.stdout[-2000:], done.stderr[-2000:])
        assert "HEAVY []" in done.stdout, (script.name, done.stdout.splitlines()[-1])


def _timed(command: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "--config" in done.stdout, done.stderr
    return time.perf_counter() - start


# ---------------------------------------------------------------- documented commands


def documented_commands() -> list[tuple[str, str]]:
    """(file, command) for every ``python experiments/...`` command in README.md,
    docs/*.md and the scripts' docstrings: in code blocks (with ``\\`` continuations)
    and inline code; ``# comments`` and ``[optional parts]`` dropped."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *SCRIPTS]
    found = []
    for path in files:
        text = path.read_text()
        if path.suffix == ".py":
            text = ast.get_docstring(ast.parse(text)) or ""
        text = re.sub(r"\\\n\s*", " ", text)
        candidates = re.findall(r"`(python3? experiments/[^`]+)`", text)
        candidates += [
            line.strip()
            for line in text.splitlines()
            if line.strip().startswith(("python experiments/", "python3 experiments/"))
        ]
        for command in candidates:
            command = re.sub(r"\s+#.*$", "", command)
            command = re.sub(r"\s*\[[^\]]*\]", "", command).strip()
            found.append((path.name, command))
    return list(dict.fromkeys(found))


def script_interface(script: pathlib.Path) -> tuple[set[str], set[str], tuple[str, ...]]:
    """(flag names, required flag names, VERBS) of an absl script, read from its source."""
    names, required, verbs = set(), set(), ()
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            attr, args = node.func.attr, node.args
            if attr.startswith("DEFINE") and args and isinstance(args[0], ast.Constant):
                names.add(args[0].value)
            elif attr == "mark_flags_as_required":
                required |= {e.value for e in args[0].elts}
            elif attr == "mark_flag_as_required":
                required.add(args[0].value)
        elif isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "VERBS":
            verbs = tuple(e.value for e in node.value.elts)
    return names, required, verbs


COMMANDS = documented_commands()


def test_the_docs_have_commands_for_every_script():
    scripts = {shlex.split(command)[1] for _, command in COMMANDS}
    assert len(COMMANDS) >= 25
    assert {f"experiments/{s.name}" for s in SCRIPTS} - {"experiments/visualize.py"} <= scripts


@pytest.mark.parametrize("where,command", COMMANDS, ids=[c for _, c in COMMANDS])
def test_documented_command_is_current(where, command, tmp_path):
    """Parses the command as its script would: flags it defines (required ones present),
    its verbs, the config file and variant with every ``--config.field=value`` override
    (through ml_collections' own config flag), and what the run checks of a transfer task
    before it compiles. Nothing trains; the default experiment runs for real above."""
    argv = shlex.split(command)
    assert argv[0] in ("python", "python3")
    script = ROOT / argv[1]
    assert script.is_file(), f"{where}: no script {argv[1]}"
    names, required, verbs = script_interface(script)
    given, positional, config_args = {}, [], []
    for arg in argv[2:]:
        if not arg.startswith("--"):
            positional.append(arg)
            continue
        name, has_value, value = arg[2:].partition("=")
        assert has_value, f"{where}: {arg} has no value"
        if name.startswith("config.") and "config" in names:
            config_args.append(arg)
            continue
        assert name in names, f"{where}: {argv[1]} has no flag --{name} (it has {sorted(names)})"
        given[name] = value
    missing = required - set(given)
    assert not missing, f"{where}: {command} lacks the required --{', --'.join(sorted(missing))}"
    if verbs:
        assert positional and positional[0] in verbs, f"{where}: {command}: verb not in {verbs}"
        if positional[0] == "train":
            assert "config" in given, f"{where}: {command}: train needs --config"
    else:
        assert not positional, f"{where}: {command}: unexpected arguments {positional}"
    if "config" in given:
        path, _, variant = given["config"].partition(":")
        spec = str(ROOT / path) + (f":{variant}" if variant else "")
        line = ["prog", f"--config={spec}", *config_args]
        values = flags.FlagValues()
        config_flags.DEFINE_config_file("config", None, "", flag_values=values, sys_argv=line)
        values(line)  # loads the config, applies the overrides
        config = values.config
        if config.get("task") == "transfer":
            kwargs = config.task_kwargs.to_dict()
            if kwargs.get("pretrained"):
                kwargs["pretrained"] = str(tmp_path)  # the documented path exists later
            get_task("transfer", **kwargs)  # refuses a run without weights


# ---------------------------------------------------------------- one-line errors


def test_finetuning_without_weights_is_refused_in_one_line(tmp_path):
    command = [
        sys.executable,
        "experiments/train.py",
        "--config=configs/finetune_resnet18.py:smoke",
        f"--workdir={tmp_path / 'run'}",
    ]
    done = subprocess.run(
        command, cwd=ROOT, env=user_env(tmp_path), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: task 'transfer' has no pretrained weights, so it")
    assert "--config.task_kwargs.pretrained=" in done.stderr
    assert "allow_random_backbone=True" in done.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written


# The commonest mistakes in --config, and the one line each must give (with the hint).
CONFIG_MISTAKES = {
    "misspelt override": (
        ["--config=configs/lenet5_digits.py", "--config.batch_sze=64"],
        "error: --config.batch_sze=64: the config has no field batch_sze; "
        "did you mean --config.batch_size?",
    ),
    "wrong config path": (
        ["--config=configs/lenet5_digit.py"],
        "error: --config=configs/lenet5_digit.py: no such file; "
        "did you mean configs/lenet5_digits.py?",
    ),
    "misspelt variant": (
        ["--config=configs/lenet5_digits.py:smok"],
        "error: --config=configs/lenet5_digits.py:smok: Unknown config variant(s) ['smok']; "
        "valid: smoke",
    ),
    "override into a string": (
        ["--config=configs/lenet5_digits.py", "--config.dataset.augment.x=3"],
        "error: --config.dataset.augment.x=3: string indices must be integers, not 'str'",
    ),
}
# Runs a script as `python SCRIPT ARGS...` would, then says which heavy modules it imported.
HEAVY_PROBE = (
    "import runpy, sys\n"
    "sys.argv = sys.argv[1:]\n"
    "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
    "finally:\n"
    "    heavy = [m for m in ('jax', 'tensorflow', 'convjax.runs') if m in sys.modules]\n"
    "    print('HEAVY', heavy)\n"
)


@pytest.mark.parametrize("mistake", sorted(CONFIG_MISTAKES))
def test_config_mistakes_are_one_line_before_tensorflow_or_jax(mistake, tmp_path):
    args, expected = CONFIG_MISTAKES[mistake]
    command = [sys.executable, "experiments/train.py", *args, f"--workdir={tmp_path / 'run'}"]
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=ROOT, env=user_env(tmp_path), capture_output=True, text=True, timeout=120
    )
    seconds = time.perf_counter() - start
    assert (done.returncode, done.stdout, done.stderr) == (1, "", expected + "\n")
    assert seconds < 3.0, f"{mistake}: {seconds:.1f} s"
    for script in ("train.py", "plain_vs_residual.py", "stylize.py"):
        probe = [sys.executable, "-c", HEAVY_PROBE, f"experiments/{script}", *args, "--workdir=w"]
        done = subprocess.run(probe, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.stderr == expected + "\n", (script, done.stderr[-2000:])
        assert done.stdout == "HEAVY []\n", (script, done.stdout)
    assert not (tmp_path / "run").exists()


def test_a_config_that_imports_jax_gets_the_same_one_line_errors(tmp_path):
    """configs/yolo_shapes.py imports convjax.tasks (JAX): its mistakes are still one line."""
    command = [sys.executable, "experiments/train.py", "--config=configs/yolo_shapes.py:smok"]
    done = subprocess.run(
        [*command, f"--workdir={tmp_path}"], cwd=ROOT, env=user_env(tmp_path),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (
        "error: --config=configs/yolo_shapes.py:smok: Unknown config variant(s) ['smok']; "
        "valid: smoke\n"
    )


def test_without_tensorflow_a_run_says_what_to_install_in_one_line(tmp_path):
    """convjax leaves the TensorFlow distribution to the user (Colab's ``tensorflow`` or
    the ``[tf]`` extra's ``tensorflow-cpu``); where none is installed the run says so."""
    from convjax.tensorflow_check import MISSING

    probe = (
        "import runpy, sys\n"
        "sys.modules['tensorflow'] = None  # as if it were not installed\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    command = [
        sys.executable, "-c", probe, "experiments/train.py",
        "--config=configs/lenet5_digits.py:smoke", f"--workdir={tmp_path / 'run'}",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stderr == f"error: {MISSING}\n"
    assert 'pip install tensorflow-cpu (or "convjax[tf]"' in MISSING


def test_optional_references_say_how_to_install_them():
    """Every test that skips without PyTorch or torchvision names the extra that installs
    it, and that extra exists in pyproject.toml with that package."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    found = 0
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            call = isinstance(node, ast.Call) and getattr(node.func, "attr", "")
            if call != "importorskip":
                continue
            module = node.args[0].value
            if module.split(".")[0] not in ("torch", "torchvision"):
                continue
            found += 1
            reason = next((k.value.value for k in node.keywords if k.arg == "reason"), "")
            extra = re.search(r'pip install -e "\.\[(\w+)\]"', reason)
            assert extra, f"{path.name}: importorskip({module!r}) says not how to install it"
            package = module.split(".")[0]
            assert any(re.match(rf"{package}\b", r) for r in extras.get(extra.group(1), [])), (
                f"{path.name}: extra [{extra.group(1)}] does not install {package}"
            )
    assert found >= 8


def test_a_random_backbone_runs_only_when_asked_and_says_so(capsys):
    with pytest.raises(ValueError, match="frozen, randomly initialised backbone"):
        get_task("transfer", freeze=[BACKBONE])
    with pytest.raises(ValueError, match="from a random initialisation|a random initialisation"):
        get_task("transfer")
    task = get_task("transfer", freeze=[BACKBONE], allow_random_backbone=True)
    assert task.pretrained is None
    warning = capsys.readouterr().err
    assert warning.startswith("warning: NO PRETRAINED WEIGHTS: fine-tuning a frozen, randomly")


def tiny_resnet(num_classes: int):
    from convjax.models.resnet import ResNet

    return ResNet(stage_sizes=(1, 1), stage_widths=(4, 8), stem="cifar", num_classes=num_classes)


@pytest.fixture
def fast_compile():
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


def test_loading_says_what_was_loaded_and_what_was_left_new(tmp_path, capsys, fast_compile):
    from convjax.train.checkpointing import Checkpointer
    from convjax.train.optimizers import make_optimizer
    from convjax.train.state import TrainState

    dummy = jnp.zeros((1, 8, 8, 1))
    source = jax.jit(tiny_resnet(7).init)(jax.random.key(1), dummy)
    source = jax.tree.map(np.asarray, dict(source))
    params = source.pop("params")
    sgd = make_optimizer({"name": "sgd", "learning_rate": 0.1}, 1)
    state = TrainState.create(params=params, model_state=source, tx=sgd, rng=jax.random.PRNGKey(0))
    checkpointer = Checkpointer(str(tmp_path / "checkpoints"))
    checkpointer.save(5, jax.tree.map(np.asarray, state.checkpoint_items()))
    checkpointer.close()

    model = tiny_resnet(10)
    task = get_task("transfer", pretrained=str(tmp_path), freeze=[BACKBONE])
    capsys.readouterr()
    variables = task.init_variables(model, jax.random.key(0), dummy)
    said = capsys.readouterr().out.strip().splitlines()
    # The expected figures, counted from the source checkpoint's own trees.
    loaded = {c: flat_paths(t) for c, t in {"params": params, **source}.items()}
    tensors = sum(1 for tree in loaded.values() for p in tree if not p.startswith("head/"))
    parameters = sum(v.size for p, v in loaded["params"].items() if not p.startswith("head/"))
    assert said == [
        f"Loaded {tensors} tensors / {parameters:,} parameters from {tmp_path}; left new: "
        "params/head/bias [10], params/head/kernel [8, 10] (90 parameters)"
    ]
    assert tensors > 20 and parameters > 500
    for path, value in flat_paths(variables["params"]).items():
        if not path.startswith("head/"):
            np.testing.assert_array_equal(value, loaded["params"][path], err_msg=path)
    # Shape-only initialisations (restoring a workdir) say nothing.
    jax.eval_shape(lambda: task.init_variables(model, jax.random.key(0), dummy))
    assert capsys.readouterr().out == ""


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(capsys):
    def bad_config(argv):
        raise ValueError("model 'lenet' is unknown; valid: lenet5")

    with pytest.raises(SystemExit) as exit_info:
        one_line_errors(bad_config)(["prog"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == "error: model 'lenet' is unknown; valid: lenet5\n"

    def bug(argv):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        one_line_errors(bug)(["prog"])

    class Stopped(Exception):  # like a run stopped by SIGTERM: saved, exit 128 + 15
        exit_code = 143

    def preempted(argv):
        raise Stopped("Interrupted (SIGTERM) at step 7: saved checkpoint 7 in W")

    with pytest.raises(SystemExit) as exit_info:
        one_line_errors(preempted)(["prog"])
    assert exit_info.value.code == 143
    assert capsys.readouterr().err == "Interrupted (SIGTERM) at step 7: saved checkpoint 7 in W\n"


# ---------------------------------------------------------------- the 10-fold figure


def test_ten_fold_accuracy_reports_the_standard_error():
    folds = np.array([0.985, 0.99, 0.98, 0.9883, 0.9817, 0.9867, 0.9833, 0.99, 0.9783, 0.985])
    report = ten_fold_report(folds)
    mean = sum(folds) / 10
    sample_std = np.sqrt(sum((f - mean) ** 2 for f in folds) / 9)  # ddof=1, from the formula
    assert report["ten_fold_accuracy"] == pytest.approx(mean, abs=1e-12)
    assert report["ten_fold_standard_error"] == pytest.approx(sample_std / np.sqrt(10), abs=1e-12)
    assert report["ten_fold_standard_error"] != pytest.approx(np.std(folds), abs=1e-6)
    assert format_ten_fold(report) == (
        f"{100 * mean:.2f} % ± {100 * sample_std / np.sqrt(10):.2f} (standard error over 10 folds)"
    )
    assert (
        format_ten_fold(
            {"ten_fold_accuracy": 0.98534, "ten_fold_standard_error": 0.00137, "ten_fold_folds": 10}
        )
        == "98.53 % ± 0.14 (standard error over 10 folds)"
    )
    with pytest.raises(ValueError, match="F >= 2"):
        ten_fold_report([0.9])


def test_exit_now_runs_atexit_and_joins_threads_then_exits_with_the_status(tmp_path):
    code = (
        "import atexit, threading, time, sys\n"
        "from convjax.quiet import exit_now\n"
        "def late():\n    time.sleep(0.5)\n    open(sys.argv[1], 'w').write('written')\n"
        "threading.Thread(target=late).start()\n"
        "atexit.register(lambda: print('atexit ran', flush=False))\n"
        "print('before', end='')\n"
        "exit_now(3)\n"
        "print('never')\n"
    )
    marker = tmp_path / "marker"
    done = subprocess.run([sys.executable, "-c", code, str(marker)], capture_output=True, text=True)
    assert done.returncode == 3
    assert done.stdout == "beforeatexit ran\n"
    assert marker.read_text() == "written"  # the non-daemon thread finished first
