"""Progress lines tell the truth: compile time apart, steps/s and ETA over the run so far
(not the last interval), evaluation time in the ETA, a resumed run counting only its own
steps. Time is a fake clock that the fake step and evaluation advance; the ETA printed
on each line is compared with the time that actually remained."""

from __future__ import annotations

import re

import numpy as np
import pytest

from convjax.train.loop import Every, Progress, format_duration, run_steps


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def simulate(
    *,
    start_step=0,
    num_steps=400,
    log_every=50,
    eval_every=200,
    compile_s=5.0,
    step_s=0.16,
    eval_s=1.5,
    eval_compile_s=1.0,
    checkpoint_every=100,
    checkpoint_s=0.6,
    seed=0,
):
    """Runs the real step loop (``run_steps``) on a fake step on a fake clock, shaped like
    the default experiment: the first call compiles; steps cost ``step_s`` +-30 %
    (the first 10 twice that, while the input pipeline warms up); checkpoints and
    evaluations (+ their compile the first time) cost what they cost.

    Returns ``[(step, line, eta_printed_seconds, actual_remaining_seconds)]``, where a
    line that says ``+ N evals`` (none timed yet, so not in its ETA) is compared with
    the time that remained without those evaluations."""
    clock = FakeClock()
    rng = np.random.default_rng(seed)
    progress = Progress(start_step, num_steps, eval_every=eval_every, clock=clock)
    logged = []
    eval_times = []  # (clock at its end, seconds) of each evaluation
    compiled = [False, False]  # train step, eval step

    def train_step(state, batch):
        if not compiled[0]:
            clock.now += compile_s  # trace + compile
            compiled[0] = True
        warmup = 2.0 if state < start_step + 10 else 1.0
        clock.now += step_s * warmup * rng.uniform(0.7, 1.3)
        return state + 1, {"loss": np.float32(1.0 / (state + 1))}

    def eval_step():
        if not compiled[1]:
            clock.now += eval_compile_s
            compiled[1] = True

    timed_eval = progress.timed_first_call(eval_step, "eval")

    def evaluate(step, state):
        start = clock.now
        with progress.evaluating(step):
            timed_eval()  # compiles on its first call
            clock.now += eval_s * rng.uniform(0.9, 1.1)
        eval_times.append((clock.now, clock.now - start))

    def checkpoint(step, state):
        clock.now += checkpoint_s

    def on_log(step, scalars):
        progress.update(step)
        logged.append((step, progress.line(step, scalars), clock.now))

    run_steps(
        progress.timed_first_call(train_step),
        start_step,
        iter(range(10**6)),
        get_metrics=lambda m: m,
        start_step=start_step,
        num_steps=num_steps,
        log_every=log_every,
        on_log=on_log,
        every=(Every(eval_every, evaluate), Every(checkpoint_every, checkpoint)),
    )
    end = clock.now
    out = []
    for step, line, at in logged:
        eta = re.search(r"ETA (\d+):(\d\d):(\d\d)", line)
        seconds = int(eta[1]) * 3600 + int(eta[2]) * 60 + int(eta[3])
        remaining = end - at
        if re.search(r"\+ \d+ evals?$", line):
            remaining -= sum(seconds for done, seconds in eval_times if done > at)
        out.append((step, line, seconds, remaining))
    return out


def rate(line: str) -> float:
    return float(re.search(r"\| ([\d.]+) steps/s", line)[1])


def test_first_line_shows_compile_apart_and_rate_excludes_it():
    lines = simulate(compile_s=20.0, step_s=0.1)
    step, first, _, _ = lines[0]
    assert step == 50
    assert re.search(r"\| compile 20\.[0-2] s \|", first), first  # + the first step itself
    # ~1/0.1 s per step (slower while warming up); with the compile counted: 2.0.
    assert 6.0 <= rate(first) <= 11.0, first
    assert all("compile" not in line for _, line, _, _ in lines[1:])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eta_within_30_percent_of_the_actual_remaining_time_from_the_second_line(seed):
    lines = simulate(seed=seed)  # the default experiment's shape: 400 steps, eval at 200, 400
    for _, line, eta, actual in lines[1:-1]:
        assert abs(eta - actual) <= 0.3 * actual, (line, actual)
    # At the last step the final evaluation (~1.5 s, as timed at step 200) and the last
    # checkpoint (0.6 s, which the ETA spreads over the steps) remain; shown in whole seconds.
    step, line, eta, _ = lines[-1]
    assert step == 400 and 1 <= eta <= 2, line


def test_eta_counts_the_evaluations_still_to_come():
    # Costly evaluations (3 s every 100 steps of ~0.1 s): 4 evaluations are 12 of ~55 s.
    lines = simulate(eval_every=100, eval_s=3.0, step_s=0.1, checkpoint_s=0.0)
    before = [entry for entry in lines if entry[0] <= 100]
    assert all(line.endswith(("+ 4 evals", "+ 3 evals")) for _, line, _, _ in before), before
    after = [entry for entry in lines if 100 < entry[0] < 400]
    assert after and all(" evals" not in line and " eval" not in line for _, line, _, _ in after)
    for _, line, eta, actual in after:
        assert abs(eta - actual) <= 0.3 * actual, (line, actual)
    # Just before the eval at 300: 100 steps (~10 s) and 2 evaluations (~6 s) to go.
    _, line, eta, _ = next(entry for entry in lines if entry[0] == 300)
    assert 14 <= eta <= 19, line


def test_resumed_run_counts_only_its_own_steps():
    lines = simulate(start_step=300, log_every=25, eval_every=0, checkpoint_every=50)
    first_step, first, _, _ = lines[0]
    assert first_step == 325 and "compile 5." in first
    assert 4.0 <= rate(first) <= 6.3, first  # ~1/0.16 s per step; over 325 steps it was 60
    for _, line, eta, actual in lines[1:-1]:
        assert abs(eta - actual) <= 0.3 * actual, (line, actual)
        assert line.endswith("+ 1 eval")  # the final evaluation, not timed yet


def test_format_duration():
    assert format_duration(0.4) == "0:00:00"
    assert format_duration(62) == "0:01:02"
    assert format_duration(3 * 86400 + 61) == "72:01:01"
    assert format_duration(float("nan")) == "?"


def test_a_run_without_evaluations_counts_none():
    """Style transfer's loop has no evaluations: none is announced or added to the ETA."""
    clock = FakeClock()
    progress = Progress(0, 10, eval_every=None, clock=clock)
    step = progress.timed_first_call(lambda: None)
    step()
    clock.now += 5.0  # 10 steps of 0.5 s
    progress.update(10)
    assert progress.evals_to_come(1) == 0
    assert progress.line(10, {}).endswith("| ETA 0:00:00")
    with_evals = Progress(0, 10, clock=clock)  # the default: one after the last step
    assert with_evals.evals_to_come(1) == 1 and "+ 1 eval" in with_evals.line(1, {})
