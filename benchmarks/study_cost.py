"""The cost of every row of the small-CNN study (study/params.yaml and study/wide/params.yaml) on this CPU.

For each row, as its run config builds it (pipeline.params, models, optim): the
parameter count; the median time of one training step (batch train.batch_size
of random 32x32 inputs, channels_last, the row's optimiser, forward, backward
and step) after a warm-up step; from it the seconds of one epoch's training
steps in one process (the 55,000 training images; scoring the validation set
adds ~5%) and the core-hours one seed of the row needs (its epochs, one
process per core, train.threads threads); and the inference latency the seeds'
study reports, ms per batch of evaluate.batch_size, as stage evaluate measures
it (evaluate.latency_ms). Timings stay out of the DVC record (docs/study.md
prints this table). Speeds are ratios within one run: the "x cnn4" column.

    python benchmarks/study_cost.py [--rows cnn4,cnn4_w64] [--steps 5] [--train-size 55000]
"""

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from cnn_step import step_ms  # noqa: E402

from pipeline.engine import batches_per_epoch  # noqa: E402
from pipeline.evaluate import latency_ms  # noqa: E402
from pipeline.models import build_model, count_parameters  # noqa: E402
from pipeline.optim import make_optimizer  # noqa: E402
from pipeline.params import load_params  # noqa: E402
from pipeline.runtime import setup_torch  # noqa: E402

PROFILES = ("study/params.yaml", "study/wide/params.yaml")


def rows(names):
    """(name, Params, run config) of every row of the study's params files, once each (cnn4 is in both),
    cnn4 first: the other rows' speeds are ratios to it."""
    seen = {}
    for profile in PROFILES:
        params = load_params(ROOT / profile)
        for name in params.variants:
            if name not in seen and (not names or name in names or name == "cnn4"):
                seen[name] = (params, params.run_config(name))
    return {"cnn4": seen.pop("cnn4"), **seen}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", help="comma-separated row names (default: every row of both files)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per row, at most (default 5)")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per row before stopping at 2 steps")
    parser.add_argument("--train-size", type=int, default=55000, help="training images per epoch (default 55000)")
    args = parser.parse_args()
    torch.manual_seed(0)
    found = rows(args.rows.split(",") if args.rows else None)
    print("| row | params | ms per step | s/epoch, one process | x cnn4 | epochs | core-hours per seed | latency ms |")
    print("|---|---|---|---|---|---|---|---|")
    base = None
    for name, (params, config) in found.items():
        setup_torch(config.train.threads)
        model = build_model(config.architecture, config.model).to(memory_format=torch.channels_last)
        optimizer = make_optimizer(model, config.train, 0.0)
        ms = step_ms(model.train(), args.steps, optimizer, config.train.batch_size, warmup=1, budget_s=args.budget)
        epoch_s = ms / 1000 * batches_per_epoch(args.train_size, config.train.batch_size)
        base = base or epoch_s
        setup_torch(params.evaluate.threads)
        inputs = torch.randn(params.evaluate.batch_size, 1, 32, 32).contiguous(memory_format=torch.channels_last)
        latency = latency_ms(model.eval(), inputs, max(2, min(params.evaluate.latency_repeats, 5)))
        hours = epoch_s * config.train.epochs / 3600 * config.train.threads
        print(
            f"| {name} | {count_parameters(model):,} | {ms:.0f} | {epoch_s:.1f} | {epoch_s / base:.2f} "
            f"| {config.train.epochs} | {hours:.2f} | {latency:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
