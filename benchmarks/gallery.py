"""Gallery search speed: 1,000 queries against 100,000 enrolled 128-d embeddings.

    python benchmarks/gallery.py [--enrolled 100000] [--queries 1000] [--dim 128] [--k 5]

Prints the time to enroll, the compile time, and the best and median wall time of
one batch of queries (top-k identities with distances, on device and back to
numpy), plus the load average (the machine may be shared: timings are noisy) and
the process CPU time per search, which other jobs do not inflate: on an idle
machine the wall time is at most that (less when XLA uses several cores).
Also checks the answers: each query is a perturbed copy of an enrolled embedding,
which must come back as the top-1 identity.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

from convjax.face.gallery import Gallery


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--enrolled", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--per_identity", type=int, default=1, help="images per identity")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(args.enrolled, args.dim)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    num_ids = args.enrolled // args.per_identity
    names = [f"person_{i:06d}" for i in np.arange(args.enrolled) % num_ids]
    start = time.perf_counter()
    gallery = Gallery(args.dim)
    gallery.enroll(names, embeddings)
    enroll_s = time.perf_counter() - start

    truth = rng.integers(0, args.enrolled, args.queries)
    queries = embeddings[truth] + 0.02 * rng.normal(size=(args.queries, args.dim))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)

    start = time.perf_counter()
    gallery.search(queries, args.k)
    compile_s = time.perf_counter() - start
    times, cpu_times = [], []
    for _ in range(args.repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        distances, ids = gallery.search(queries, args.k)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    top1 = np.mean(ids[:, 0] == truth % num_ids)

    print(
        f"backend: {jax.default_backend()}, devices: {jax.device_count()}, cpus: {os.cpu_count()}"
    )
    print(f"load average (1 min) before timing: {os.getloadavg()[0]:.2f}")
    print(
        f"gallery: {args.enrolled:,} embeddings of {num_ids:,} identities, d={args.dim}; "
        f"enroll {enroll_s:.3f} s"
    )
    print(f"search {args.queries:,} queries, top-{args.k}: compile+first {compile_s:.3f} s")
    print(
        f"search {args.queries:,} queries, top-{args.k}: best {min(times):.3f} s, "
        f"median {np.median(times):.3f} s over {args.repeats} runs"
    )
    print(
        f"CPU time of one search (all threads; load-independent): best {min(cpu_times):.3f} s, "
        f"median {np.median(cpu_times):.3f} s"
    )
    print(f"top-1 correct: {top1:.4f}; distances increase: {bool(np.all(np.diff(distances) >= 0))}")


if __name__ == "__main__":
    main()
