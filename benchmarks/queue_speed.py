"""Time 4 shrunken experiments run one after another against the same 4 through `dvc queue start -j 2`.

In a temp git repo (the project's files, synthetic IDX data, two variants,
a few epochs on 6,000 images, train.threads=1):
  sequential: `dvc exp run -S variants.dropout.model.dropout=<v>` four times;
  queued:     the same four with `--queue`, then `dvc queue start -j 2`,
              the run-cache emptied first so nothing is restored.
Prints both wall times and the ratio.

    python benchmarks/queue_speed.py [--epochs 3]
"""

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import make_project, run, shrunk_params, stop_queue_workers, write_idx_folder  # noqa: E402

VALUES = ["0.1", "0.2", "0.4", "0.6"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="queue-speed-"))
    try:
        write_idx_folder(tmp / "mirror", n_train=6000, n_test=1000)
        params = shrunk_params(tmp / "mirror", **{"train.epochs": args.epochs, "data.val_size": 1000})
        params["variants"] = {k: params["variants"][k] for k in ("vanilla", "dropout")}
        repo, env = make_project(tmp, params)
        run(["dvc", "repro"], repo, env)
        run(["git", "add", "-A"], repo, env)
        run(["git", "commit", "-qm", "baseline"], repo, env)

        start = time.perf_counter()
        for value in VALUES:
            run(["dvc", "exp", "run", "-S", f"variants.dropout.model.dropout={value}"], repo, env)
        sequential = time.perf_counter() - start

        run(["git", "checkout", "--", "params.yaml"], repo, env)
        shutil.rmtree(repo / ".dvc" / "cache" / "runs", ignore_errors=True)
        for value in VALUES:
            run(["dvc", "exp", "run", "--queue", "-S", f"variants.dropout.model.dropout={value}"], repo, env)
        start = time.perf_counter()
        run(["dvc", "queue", "start", "-j", "2"], repo, env)
        while re.search(r"\b(Queued|Running)\b", run(["dvc", "queue", "status"], repo, env).stdout):
            time.sleep(1)
        queued = time.perf_counter() - start
        failed = run(["dvc", "queue", "status"], repo, env).stdout.count("Failed")
        print(f"4 experiments one after another: {sequential:.1f} s")
        print(f"4 experiments, dvc queue -j 2:   {queued:.1f} s  ({failed} failed)")
        print(f"speed-up: {sequential / queued:.2f}x")
    finally:
        stop_queue_workers(tmp / "project")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
