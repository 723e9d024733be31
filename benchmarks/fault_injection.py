r"""Fault injection: kill the default experiment at random steps and check nothing is lost.

Runs the README's default command (LeNet-5 on the bundled digits) once uninterrupted,
then ``--rounds`` times on a fresh workdir each: the run is stopped at a random step
with SIGKILL, SIGTERM or SIGINT (one to ``--max-kills`` times in a row, each resuming
the last), in some rounds the newest checkpoint is then damaged (a truncated array
file, a garbage ``manifest.ocdbt`` or ``_METADATA``, a missing ``_METADATA``, a stray
empty step directory), and the run is resumed to the end. A round passes when

- the resumed run finishes and its final eval accuracy equals the uninterrupted run's;
- after a damaged checkpoint, the resume named the bad step and moved it to
  ``checkpoints/corrupt/`` (never deleted it);
- after SIGTERM or SIGINT, the run exited within ``--grace`` seconds without a
  traceback and lost no step (it saved the step it was at).

Every run logs each step (``--config.log_every_steps=1``) so that the kill lands on a
known step; logging does not change the training.

  python benchmarks/fault_injection.py --smoke --rounds 20   # about a minute a run, 2 cores
  python benchmarks/fault_injection.py --rounds 20 --signals KILL

Prints one line per round and a tally by signal; ``--out`` writes them as JSON.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
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
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP_LINE = re.compile(r"^step (\d+)/(\d+)")
RESUMED = re.compile(r"Resumed from .* at step (\d+)")
SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT}
CORRUPTIONS = ("truncate_array", "garbage_manifest", "garbage_metadata", "missing_metadata",
               "empty_step_dir")  # fmt: skip


@dataclasses.dataclass
class Run:
    returncode: int
    last_step: int  # the last step the run printed
    resumed_from: int  # 0 when it started from scratch
    stderr: str
    seconds: float
    exited_in_grace: bool = True


def train_command(workdir: str, smoke: bool) -> list[str]:
    config = "configs/lenet5_digits.py" + (":smoke" if smoke else "")
    return [
        sys.executable, "experiments/train.py", f"--config={config}", f"--workdir={workdir}",
        "--config.log_every_steps=1",
    ]  # fmt: skip


def run_training(workdir: str, smoke: bool, log: str, kill_at=None, sig=None, grace=60.0) -> Run:
    """Runs the experiment; sends ``sig`` once it has printed step ``kill_at``."""
    start = time.time()
    with open(log, "a") as err:
        err.write(f"\n==== {' '.join(train_command(workdir, smoke))} (kill at {kill_at})\n")
        err.flush()
        proc = subprocess.Popen(
            train_command(workdir, smoke), cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True
        )
        last, resumed, sent = 0, 0, None
        for line in proc.stdout:
            err.write(line)
            if match := RESUMED.search(line):
                resumed = int(match.group(1))
            if match := STEP_LINE.match(line):
                last = int(match.group(1))
            if kill_at is not None and sent is None and last >= kill_at:
                proc.send_signal(sig)
                sent = time.time()
        in_grace = True
        try:
            proc.wait(timeout=grace if sent else None)
        except subprocess.TimeoutExpired:
            in_grace = False
            proc.kill()
            proc.wait()
    with open(log) as f:
        stderr = f.read().rsplit("\n==== ", 1)[-1]
    return Run(proc.returncode, last, resumed, stderr, time.time() - start, in_grace)


def checkpoint_steps(workdir: str) -> list[int]:
    directory = os.path.join(workdir, "checkpoints")
    names = os.listdir(directory) if os.path.isdir(directory) else []
    return sorted(int(n) for n in names if n.isdigit())


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


def final_accuracy(workdir: str) -> float | None:
    try:
        with open(os.path.join(workdir, "results.json")) as f:
            return float(json.load(f)["eval"]["accuracy"])
    except (OSError, KeyError, ValueError):
        return None


def one_round(index: int, args, rng: random.Random, reference: float, num_steps: int) -> dict:
    """Kills a fresh run 1..max_kills times, maybe damages a checkpoint, resumes to the end."""
    workdir = os.path.join(args.workdir_root, f"round_{index:02d}")
    log = workdir + ".log"
    os.makedirs(workdir, exist_ok=True)
    record = {"round": index, "kills": [], "corruption": None, "problems": []}
    problems = record["problems"]
    step = 0
    for _ in range(rng.randint(1, args.max_kills)):
        if step >= num_steps - 1:
            break
        name = rng.choice(args.signals)
        kill_at = rng.randint(step + 1, num_steps - 1)
        run = run_training(workdir, args.smoke, log, kill_at, SIGNALS[name], args.grace)
        kept = max(checkpoint_steps(workdir), default=0)
        record["kills"].append({"signal": name, "at": run.last_step, "checkpoint": kept})
        if name != "KILL":
            if not run.exited_in_grace:
                problems.append(f"SIG{name} at step {run.last_step}: still running after "
                                f"{args.grace:.0f} s")  # fmt: skip
            if "Traceback" in run.stderr:
                problems.append(f"SIG{name} at step {run.last_step}: traceback on exit")
            if kept < run.last_step:
                problems.append(f"SIG{name} at step {run.last_step}: newest checkpoint is "
                                f"step {kept}, {run.last_step - kept} step(s) lost")  # fmt: skip
        step = run.last_step
    if rng.random() < args.corrupt_fraction:
        kind, bad = corrupt_newest(workdir, rng, num_steps)
        record["corruption"] = {"kind": kind, "step": bad}
    final = run_training(workdir, args.smoke, log, grace=args.grace)
    record["resumed_from"] = final.resumed_from
    record["accuracy"] = accuracy = final_accuracy(workdir)
    if final.returncode != 0:
        problems.append(f"resumed run exited {final.returncode} (see {log})")
    if accuracy != reference:
        problems.append(f"final accuracy {accuracy} != uninterrupted {reference}")
    if record["corruption"]:
        bad = record["corruption"]["step"]
        if f"step {bad} is unreadable" not in final.stderr:
            problems.append(f"no message naming the damaged step {bad}")
        if not glob.glob(os.path.join(workdir, "checkpoints", "corrupt", f"{bad}-*")):
            problems.append(f"damaged step {bad} was not moved to checkpoints/corrupt/")
    if not problems and not args.keep:
        shutil.rmtree(workdir)
        os.remove(log)
    return record


def tally(records: list[dict]) -> list[str]:
    by_signal: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for record in records:
        for name in {kill["signal"] for kill in record["kills"]}:
            counts = by_signal[name]
            counts["rounds"] += 1
            counts["passed"] += not record["problems"]
            counts["same accuracy"] += not any("accuracy" in p for p in record["problems"])
            counts["with damaged checkpoint"] += bool(record["corruption"])
    lines = [f"{'signal':6} {'rounds':>6} {'passed':>6} {'same acc':>8} {'damaged':>7}"]
    for name, c in sorted(by_signal.items()):
        lines.append(
            f"SIG{name:3} {c['rounds']:6d} {c['passed']:6d} {c['same accuracy']:8d} "
            f"{c['with damaged checkpoint']:7d}"
        )
    passed = sum(not r["problems"] for r in records)
    lines.append(f"{passed}/{len(records)} rounds passed")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="the :smoke config (20 steps)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--max-kills", type=int, default=2, help="kills per round, at most")
    parser.add_argument("--signals", default="KILL,TERM,INT", help="comma-separated")
    parser.add_argument("--corrupt-fraction", type=float, default=0.4)
    parser.add_argument("--grace", type=float, default=60.0, help="seconds to exit after TERM")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir-root", default=None, help="default: a new temp directory")
    parser.add_argument("--keep", action="store_true", help="keep the workdirs of passed rounds")
    parser.add_argument("--out", default=None, help="write the rounds and tally as JSON")
    args = parser.parse_args()
    args.signals = [s.strip().upper().removeprefix("SIG") for s in args.signals.split(",")]
    unknown = [s for s in args.signals if s not in SIGNALS]
    if unknown:
        parser.error(f"unknown signal(s) {unknown}; valid: {', '.join(SIGNALS)}")
    args.workdir_root = args.workdir_root or tempfile.mkdtemp(prefix="fault_injection_")
    os.makedirs(args.workdir_root, exist_ok=True)
    rng = random.Random(args.seed)

    reference_dir = os.path.join(args.workdir_root, "uninterrupted")
    ref = run_training(reference_dir, args.smoke, reference_dir + ".log")
    reference = final_accuracy(reference_dir)
    if ref.returncode != 0 or reference is None:
        print(f"the uninterrupted run failed (exit {ref.returncode}); see {reference_dir}.log")
        return 2
    num_steps = ref.last_step
    print(f"uninterrupted: {num_steps} steps, accuracy {reference} ({ref.seconds:.0f} s); "
          f"workdirs in {args.workdir_root}", flush=True)  # fmt: skip
    records = []
    for index in range(1, args.rounds + 1):
        record = one_round(index, args, rng, reference, num_steps)
        records.append(record)
        kills = ", ".join(f"SIG{k['signal']}@{k['at']} (ckpt {k['checkpoint']})"
                          for k in record["kills"])  # fmt: skip
        damage = record["corruption"]
        damage = f"; damaged step {damage['step']} ({damage['kind']})" if damage else ""
        verdict = "ok" if not record["problems"] else "FAIL: " + "; ".join(record["problems"])
        print(f"round {index:2d}: {kills}{damage}; resumed from {record['resumed_from']}; "
              f"accuracy {record['accuracy']} -> {verdict}", flush=True)  # fmt: skip
    lines = tally(records)
    print("\n".join(lines))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"reference": reference, "rounds": records, "tally": lines}, f, indent=2)
    return 0 if all(not r["problems"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
