"""Train stages on a Ray cluster of two one-CPU nodes against one, on this machine, and the cluster path's
overhead per stage (docs/cluster.md). Real data: run after `dvc repro split` in the main project.

    python benchmarks/cluster_throughput.py                  # train@vanilla-0..3
    python benchmarks/cluster_throughput.py --stages train@batchnorm-0 train@batchnorm-1

It starts its own clusters on 127.0.0.x (tests/helpers.RayCluster: a head without CPUs, one-CPU nodes) and
re-runs the stages with `dvc repro --force --single-item` (the outputs come out the same bytes):
1. one stage on this machine alone (no Ray), then the same stage on a fresh one-node cluster: the difference
   is the cluster path's overhead (joining, shipping code and data, a fresh worker, numba's first compile on
   that node, the weights back);
2. the stages one at a time on the one-node cluster, then two at once on a two-node cluster: the throughput
   ratio (ideal 2x).
Each stage's training time (the sum of its epochs, observations/train/) is printed beside its wall time.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from helpers import RayCluster  # noqa: E402


def stage(name, address):
    """Wall seconds of `dvc repro --force --single-item name`, and its epochs' seconds (observations)."""
    env = {**os.environ, "RAY_ADDRESS": address or "", "DVC_NO_ANALYTICS": "1"}
    start = time.perf_counter()
    done = subprocess.run(
        ["dvc", "--wait-for-lock", "repro", "--force", "--single-item", name], cwd=ROOT, env=env, capture_output=True
    )
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{name} failed:\n{done.stdout.decode()[-2000:]}{done.stderr.decode()[-2000:]}")
    variant, seed = name.removeprefix("train@").rsplit("-", 1)
    observed = json.loads((ROOT / f"observations/train/{variant}/seed{seed}.json").read_text())
    return wall, sum(observed["seconds_per_epoch"])


def batch(names, address, at_once):
    start = time.perf_counter()
    with ThreadPoolExecutor(at_once) as pool:
        results = list(pool.map(lambda name: stage(name, address), names))
    return time.perf_counter() - start, results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", nargs="+", default=[f"train@vanilla-{s}" for s in range(4)], help="train stages")
    args = parser.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    print(f"CPU: {cpu}, {os.cpu_count()} cores; stages: {' '.join(args.stages)}", flush=True)

    local_wall, local_train = stage(args.stages[0], None)
    print(f"{args.stages[0]} here, no Ray: {local_wall:.1f} s (training {local_train:.1f} s)", flush=True)
    one = RayCluster(workers=1)
    try:
        first_wall, first_train = stage(args.stages[0], one.address)
        print(
            f"{args.stages[0]} on a fresh one-node cluster: {first_wall:.1f} s (training {first_train:.1f} s); "
            f"overhead {first_wall - local_wall:+.1f} s = {100 * (first_wall - local_wall) / local_wall:+.1f}%",
            flush=True,
        )
        serial, results = batch(args.stages, one.address, 1)
        print(f"{len(args.stages)} stages on 1 node, one at a time: {serial:.1f} s", flush=True)
        for name, (wall, train) in zip(args.stages, results):
            print(f"  {name}: {wall:.1f} s wall, {train:.1f} s training ({100 * (wall - train) / wall:.1f}% other)")
    finally:
        one.stop()
    two = RayCluster(workers=2)
    try:
        batch(args.stages[:2], two.address, 2)  # warm: numba's compile on each node is a one-time cost
        parallel, results = batch(args.stages, two.address, 2)
    finally:
        two.stop()
    print(f"{len(args.stages)} stages on 2 nodes, two at once: {parallel:.1f} s", flush=True)
    for name, (wall, train) in zip(args.stages, results):
        print(f"  {name}: {wall:.1f} s wall, {train:.1f} s training")
    print(f"throughput, 2 nodes / 1 node: {serial / parallel:.2f}x", flush=True)


if __name__ == "__main__":
    main()
