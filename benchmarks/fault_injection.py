r"""Fault injection: kill the default experiment at random instants, damage what it left,
read it while it trains, and check that nothing is lost, bit for bit.

Runs the README's default command (LeNet-5 on the bundled digits) once uninterrupted,
then ``--rounds`` times on a fresh workdir each. In a round the run is stopped one to
``--max-kills`` times, each time resuming the last, with SIGKILL, SIGTERM or SIGINT at
one of these moments:

- ``instant``: a random time between the first step and the expected end;
- ``mid-save``: as soon as a checkpoint save is in flight (orbax's temporary step
  directory appears);
- ``eval``: during an evaluation (just after the step line of an eval step).

Between runs, some rounds damage the newest checkpoint (a truncated array file, a
garbage ``manifest.ocdbt`` or ``_METADATA``, a missing ``_METADATA``, a stray empty step
directory), and some replace workdir files with symbolic links to files outside it
(``metrics.csv``, ``training_curves.png``, ``results.json``, and a checkpoint step that
links to a copy of a real one). Throughout every round a reader process restores the
workdir in a loop (``convjax.runs.workdir.restore``, what detect and faces do). The run
is then resumed to the end. A round passes when

- the final checkpoint's parameters, optimizer state and every other saved array are
  bit-identical to the uninterrupted run's;
- after SIGTERM or SIGINT the run exited within ``--grace`` seconds without a traceback
  and lost no step;
- a damaged checkpoint was named and moved to ``checkpoints/corrupt/`` (never deleted);
- no file outside the workdir changed, and the workdir holds no link it wrote through;
- the reader never failed (other than "no checkpoint yet") and never hurt the run.

The plan (signals, moments, damage) comes from ``--seed``: another seed, another plan.

  python benchmarks/fault_injection.py --smoke --rounds 20 --seed 1
  python benchmarks/fault_injection.py --rounds 20 --seed 7 --out faults.json

Prints one line per round and a table of the faults injected and the rounds passed.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT)  # this checkout's convjax, not an installed one
STEP_LINE = re.compile(r"^step (\d+)/(\d+)")
RESUMED = re.compile(r"Resumed from .* at step (\d+)")
SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT}
MOMENTS = ("instant", "mid-save", "eval")
CORRUPTIONS = ("truncate_array", "garbage_manifest", "garbage_metadata", "missing_metadata",
               "empty_step_dir")  # fmt: skip
LINKED_FILES = ("metrics.csv", "training_curves.png", "results.json")
READER = """
import os, sys, time
from convjax.runs import workdir
W, stop = sys.argv[1], sys.argv[2]
reads = 0
while not os.path.exists(stop):
    if not os.path.isfile(os.path.join(W, "config.json")):
        time.sleep(0.05)
        continue
    try:
        workdir.restore(W)
        reads += 1
    except FileNotFoundError as error:
        if "No checkpoint in" not in str(error):
            raise
        time.sleep(0.05)
print("reads", reads, flush=True)
"""


class Run:
    """One training process; ``fire(sig)`` sends a signal, ``lines`` is its stdout."""

    def __init__(self, workdir: str, smoke: bool, log: str):
        config = "configs/lenet5_digits.py" + (":smoke" if smoke else "")
        command = [
            sys.executable, "experiments/train.py", f"--config={config}",
            f"--workdir={workdir}", "--config.log_every_steps=1",
        ]  # fmt: skip
        self.log = open(log, "a")  # noqa: SIM115 -- closed in wait()
        self.log.write(f"\n==== {' '.join(command)}\n")
        self.log.flush()
        self.start = time.time()
        self.proc = subprocess.Popen(
            command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.last_step, self.resumed_from, self.stderr = 0, 0, ""
        self.step_times: dict[int, float] = {}
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]  # fmt: skip
        for thread in self._threads:
            thread.start()
        self.sent_at: float | None = None

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            self.log.write(line)
            if match := RESUMED.search(line):
                self.resumed_from = int(match.group(1))
            if match := STEP_LINE.match(line):
                self.last_step = int(match.group(1))
                self.step_times[self.last_step] = time.time()

    def _read_stderr(self) -> None:
        self.stderr = self.proc.stderr.read()

    def fire(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.sent_at = time.time()

    def wait(self, grace: float) -> bool:
        """Waits for the process; False when it outlived ``grace`` after a signal."""
        in_grace = True
        try:
            self.proc.wait(timeout=grace if self.sent_at else None)
        except subprocess.TimeoutExpired:
            in_grace = False
            self.proc.kill()
            self.proc.wait()
        for thread in self._threads:
            thread.join()
        self.log.write(self.stderr)
        self.log.close()
        return in_grace


def saving(workdir: str) -> bool:
    return bool(glob.glob(os.path.join(workdir, "checkpoints", "*.orbax-checkpoint-tmp*")))


def kill_at_moment(run: Run, workdir: str, rng: random.Random, moment: str, plan: dict) -> str:
    """Sends the planned signal at ``moment``; returns what happened ('sent' or
    'finished first')."""
    sig = SIGNALS[plan["signal"]]
    deadline = None
    while run.proc.poll() is None:
        if run.last_step >= 1 and deadline is None:  # compiled: the steps are running
            deadline = time.time() + rng.uniform(0, plan["expected_seconds"])
        if moment == "instant" and deadline is not None and time.time() >= deadline:
            break
        if moment == "mid-save" and run.last_step >= plan["after_step"] and saving(workdir):
            break
        if moment == "eval" and run.last_step >= plan["after_step"]:
            if run.last_step % plan["eval_every"] == 0:
                time.sleep(rng.uniform(0.0, 0.2))  # inside the evaluation
                break
        time.sleep(0.005)
    if run.proc.poll() is not None:
        return "finished first"
    run.fire(sig)
    return "sent"


def checkpoint_steps(workdir: str) -> list[int]:
    directory = os.path.join(workdir, "checkpoints")
    names = os.listdir(directory) if os.path.isdir(directory) else []
    return sorted(int(n) for n in names if n.isdigit() and not os.path.islink(f"{directory}/{n}"))


def corrupt_newest(workdir: str, rng: random.Random, num_steps: int) -> tuple[str, int]:
    """Damages the newest checkpoint (or adds a stray empty step directory)."""
    steps = checkpoint_steps(workdir)
    kind = rng.choice(CORRUPTIONS if steps else ("empty_step_dir",))
    if kind == "empty_step_dir":
        step = max(steps, default=0) + rng.randint(1, num_steps)
        os.makedirs(os.path.join(workdir, "checkpoints", str(step)))
        return kind, step
    step = steps[-1]
    item = os.path.join(workdir, "checkpoints", str(step), "default")
    if kind == "truncate_array":
        data = max(glob.glob(f"{item}/**/d/*", recursive=True), key=os.path.getsize)
        with open(data, "r+b") as f:
            f.truncate(os.path.getsize(data) // 2)
    elif kind == "missing_metadata":
        os.remove(os.path.join(item, "_METADATA"))
    else:
        name = "manifest.ocdbt" if kind == "garbage_manifest" else "_METADATA"
        with open(os.path.join(item, name), "wb") as f:
            f.write(b"\x00garbage")
    return kind, step


def plant_links(workdir: str, outside: str) -> dict[str, bytes]:
    """Links workdir files (and, when a checkpoint exists, step 0 -> a copy of the
    oldest one) to files outside; returns the outside files' contents to compare."""
    os.makedirs(outside, exist_ok=True)
    for name in LINKED_FILES:
        target = os.path.join(outside, name)
        with open(target, "wb") as f:
            f.write(f"a file outside the workdir: {name}\n".encode())
        path = os.path.join(workdir, name)
        if os.path.lexists(path):
            os.remove(path)
        os.symlink(target, path)
    steps = checkpoint_steps(workdir)
    if steps and not os.path.lexists(os.path.join(workdir, "checkpoints", "0")):
        shutil.copytree(os.path.join(workdir, "checkpoints", str(steps[0])), f"{outside}/step")
        os.symlink(f"{outside}/step", os.path.join(workdir, "checkpoints", "0"))
    return outside_contents(outside)


def outside_contents(outside: str) -> dict[str, bytes]:
    found = {}
    for path in sorted(glob.glob(f"{outside}/**", recursive=True)):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                found[os.path.relpath(path, outside)] = f.read()
    return found


def final_arrays(workdir: str) -> dict[str, bytes] | str:
    """Every saved array of the newest checkpoint as ``path -> dtype, shape, bytes``
    (through the reader's restore), or the error as text."""
    import jax
    import numpy as np

    from convjax.runs import workdir as workdir_lib

    try:
        restored = workdir_lib.restore(workdir)
    except Exception as error:  # noqa: BLE001 -- reported as the round's problem
        return f"{type(error).__name__}: {error}"
    leaves = jax.tree_util.tree_flatten_with_path(restored.state.checkpoint_items())[0]
    return {
        jax.tree_util.keystr(path): (str(np.asarray(x).dtype), np.shape(x), np.asarray(x).tobytes())
        for path, x in leaves
    }


def compare(reference: dict, final: dict | str) -> str | None:
    if isinstance(final, str):
        return f"final checkpoint unreadable: {final[:200]}"
    if final.keys() != reference.keys():
        return f"arrays differ in names: {sorted(final.keys() ^ reference.keys())[:4]}"
    differ = [k for k in reference if final[k] != reference[k]]
    return (
        f"{len(differ)} arrays differ from the uninterrupted run, e.g. {differ[:3]}"
        if differ
        else None
    )


def kill_once(index: int, args, rng, workdir: str, log: str, plan: dict, problems: list) -> dict:
    plan = dict(plan, signal=rng.choice(args.signals), moment=rng.choice(args.moments))
    plan["after_step"] = rng.randint(1, max(1, plan["num_steps"] - 2))
    run = Run(workdir, args.smoke, log)
    outcome = kill_at_moment(run, workdir, rng, plan["moment"], plan)
    in_grace = run.wait(args.grace)
    kept = max(checkpoint_steps(workdir), default=0)
    name, at = plan["signal"], run.last_step
    kill = {"signal": name, "moment": plan["moment"], "at": at, "checkpoint": kept,
            "outcome": outcome, "returncode": run.proc.returncode}  # fmt: skip
    if outcome == "sent" and name != "KILL":
        if not in_grace:
            problems.append(f"SIG{name} at step {at}: still running after {args.grace:.0f} s")
        elif "Traceback" in run.stderr:
            problems.append(f"SIG{name} at step {at}: traceback on exit")
        if kept < at and in_grace:
            problems.append(f"SIG{name} at step {at}: newest checkpoint is step {kept}")
        kill["exit_seconds"] = round(time.time() - run.sent_at, 1)
    if outcome == "finished first" and run.proc.returncode != 0:
        problems.append(f"run exited {run.proc.returncode} before the kill (see {log})")
    return kill


def one_round(index: int, args, rng: random.Random, reference: dict, plan: dict) -> dict:
    """Kills a fresh run 1..max_kills times (a reader restoring beside it), maybe damages
    a checkpoint and plants links, resumes to the end, compares every saved array."""
    workdir = os.path.join(args.workdir_root, f"round_{index:02d}")
    log, outside, stop = workdir + ".log", workdir + ".outside", workdir + ".stop"
    os.makedirs(workdir, exist_ok=True)
    record = {"round": index, "kills": [], "corruption": None, "links": False, "problems": []}
    problems = record["problems"]
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, workdir, stop], cwd=ROOT,
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    for _ in range(rng.randint(1, args.max_kills)):
        record["kills"].append(kill_once(index, args, rng, workdir, log, plan, problems))
    if rng.random() < args.corrupt_fraction:
        kind, bad = corrupt_newest(workdir, rng, plan["num_steps"])
        record["corruption"] = {"kind": kind, "step": bad}
    before = None
    if rng.random() < args.link_fraction:
        before, record["links"] = plant_links(workdir, outside), True
    final = Run(workdir, args.smoke, log)
    final.wait(None)
    open(stop, "w").close()
    reader_out, reader_err = reader.communicate(timeout=600)
    record["reads"] = int(reader_out.split()[-1]) if reader_out.split() else 0
    record["resumed_from"] = final.resumed_from
    if final.proc.returncode != 0:
        problems.append(f"resumed run exited {final.proc.returncode} (see {log})")
    if reader.returncode != 0:
        problems.append(f"the reader failed: {reader_err.strip().splitlines()[-1:]}")
    if difference := compare(reference, final_arrays(workdir)):
        problems.append(difference)
    if record["corruption"]:
        bad = record["corruption"]["step"]
        if f"step {bad} is unreadable" not in final.stderr:
            problems.append(f"no message naming the damaged step {bad}")
        if not glob.glob(os.path.join(workdir, "checkpoints", "corrupt", f"{bad}-*")):
            problems.append(f"damaged step {bad} was not moved to checkpoints/corrupt/")
    if before is not None:
        if outside_contents(outside) != before:
            problems.append("a file outside the workdir changed")
        if any(os.path.islink(os.path.join(workdir, name)) for name in LINKED_FILES):
            problems.append("a linked workdir file was written through, not replaced")
    if not problems and not args.keep:
        for path in (workdir, outside):
            shutil.rmtree(path, ignore_errors=True)
        for path in (log, stop):
            os.remove(path)
    return record


def tally(records: list[dict]) -> list[str]:
    """The faults injected (signal x moment, damage, links) and the rounds they passed."""
    rows: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for record in records:
        passed = not record["problems"]
        faults = {f"SIG{k['signal']} {k['moment']}" + ("" if k["outcome"] == "sent" else
                  " (finished first)") for k in record["kills"]}  # fmt: skip
        if record["corruption"]:
            faults.add(f"damaged: {record['corruption']['kind']}")
        if record["links"]:
            faults.add("symbolic links")
        faults.add("reader beside training")
        for fault in faults:
            rows[fault]["rounds"] += 1
            rows[fault]["passed"] += passed
    lines = [f"{'fault':34} {'rounds':>6} {'passed':>6}"]
    lines += [f"{name:34} {c['rounds']:6d} {c['passed']:6d}" for name, c in sorted(rows.items())]
    same = sum(not any("differ" in p or "unreadable" in p for p in r["problems"]) for r in records)
    passed = sum(not r["problems"] for r in records)
    lines.append(f"{same}/{len(records)} rounds bit-identical to the uninterrupted run; "
                 f"{passed}/{len(records)} rounds passed")  # fmt: skip
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="the :smoke config (20 steps)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None, help="the plan's seed (default: new)")
    parser.add_argument("--max-kills", type=int, default=2, help="kills per round, at most")
    parser.add_argument("--signals", default="KILL,TERM,INT", help="comma-separated")
    parser.add_argument("--moments", default=",".join(MOMENTS), help="comma-separated")
    parser.add_argument("--corrupt-fraction", type=float, default=0.4)
    parser.add_argument("--link-fraction", type=float, default=0.3)
    parser.add_argument("--grace", type=float, default=60.0, help="seconds to exit after TERM")
    parser.add_argument("--workdir-root", default=None, help="default: a new temp directory")
    parser.add_argument("--keep", action="store_true", help="keep the workdirs of passed rounds")
    parser.add_argument("--out", default=None, help="write the rounds and tally as JSON")
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    from convjax.quiet import quiet_startup

    quiet_startup()  # before this process imports TensorFlow (to read the checkpoints)
    args.signals = [s.strip().upper().removeprefix("SIG") for s in args.signals.split(",")]
    args.moments = [m.strip() for m in args.moments.split(",")]
    for given, valid in ((args.signals, SIGNALS), (args.moments, MOMENTS)):
        if unknown := [s for s in given if s not in valid]:
            parser.error(f"unknown {unknown}; valid: {', '.join(valid)}")
    args.seed = random.randrange(2**31) if args.seed is None else args.seed
    args.workdir_root = args.workdir_root or tempfile.mkdtemp(prefix="fault_injection_")
    os.makedirs(args.workdir_root, exist_ok=True)
    rng = random.Random(args.seed)

    reference_dir = os.path.join(args.workdir_root, "uninterrupted")
    ref = Run(reference_dir, args.smoke, reference_dir + ".log")
    ref.wait(None)
    reference = final_arrays(reference_dir)
    if ref.proc.returncode != 0 or isinstance(reference, str):
        print(f"the uninterrupted run failed (exit {ref.proc.returncode}); see {reference_dir}.log")
        return 2
    from convjax.runs import workdir as workdir_lib

    config = workdir_lib.load_config(reference_dir)
    steps = sorted(ref.step_times)
    plan = {
        "num_steps": ref.last_step,
        "eval_every": int(config.get("eval_every_steps") or ref.last_step),
        "expected_seconds": ref.step_times[steps[-1]] - ref.step_times[steps[0]],
    }
    seconds = time.time() - ref.start
    print(f"seed {args.seed}; uninterrupted: {ref.last_step} steps, {len(reference)} arrays "
          f"({seconds:.0f} s); workdirs in {args.workdir_root}", flush=True)  # fmt: skip
    records = []
    for index in range(1, args.rounds + 1):
        record = one_round(index, args, rng, reference, plan)
        records.append(record)
        kills = ", ".join(f"SIG{k['signal']} {k['moment']}@{k['at']} (ckpt {k['checkpoint']})"
                          + ("" if k["outcome"] == "sent" else " finished first")
                          for k in record["kills"])  # fmt: skip
        damage = record["corruption"]
        damage = f"; damaged step {damage['step']} ({damage['kind']})" if damage else ""
        links = "; links planted" if record["links"] else ""
        verdict = "ok, bit-identical" if not record["problems"] else "FAIL: " + "; ".join(
            record["problems"])  # fmt: skip
        print(f"round {index:2d}: {kills}{damage}{links}; {record['reads']} reads beside it; "
              f"resumed from {record['resumed_from']} -> {verdict}", flush=True)  # fmt: skip
    lines = tally(records)
    print("\n".join(lines))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"seed": args.seed, "rounds": records, "tally": lines}, f, indent=2)
    return 0 if all(not r["problems"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
