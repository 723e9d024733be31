"""One host of a 2-process CPU cluster (run by tests/test_run_safety.py): a step loop that
stops where every host agrees after a SIGTERM that reaches only some of them.

usage: stop_agreement_worker.py PROCESS_ID PORT
"""

import os
import sys
import time

process_id, port = sys.argv[1:3]
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"

import jax  # noqa: E402

jax.config.update("jax_platforms", "cpu")
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(
    f"localhost:{port}", num_processes=2, process_id=int(process_id), initialization_timeout=120
)

from convjax.train.preemption import StopSignals  # noqa: E402

assert jax.process_count() == 2
noticed = None
with StopSignals(agree_every=5) as signals:
    for step in range(1, 1000):
        time.sleep(0.1)  # a training step
        print(f"step {step}", flush=True)
        if signals.requested and noticed is None:
            noticed = step
            print(f"signal noticed after step {step}", flush=True)
        if signals.should_stop(step):
            print(f"stopped after step {step} on signal {signals.agreed_signum}", flush=True)
            break
jax.distributed.shutdown()
