"""Time one training step of LeNet-5 and the study's small CNNs, with and without our CPU kernels.

One process, batch 256 of random 32x32 inputs, channels_last, SGD with
momentum: the median of `--steps` timed steps after two warm-up steps. The
CNN rows are models.SmallCNN as the study profile builds it (batch norm,
dropout 0.2, 3x3). "+ torch bn" swaps pipeline.norm's batch norm (LeNet-5's
6-channel layer) for nn.BatchNorm2d, the pool kernel staying; the CNNs'
layers are wider than pipeline.norm.MAX_CHANNELS, so they run PyTorch's
batch norm anyway. "textbook" uses PyTorch's layers throughout
(nn.BatchNorm2d, nn.ReLU + nn.MaxPool2d). Speeds are ratios within one run:
this machine's speed varies by 10-15% between runs (docs/speed.md).

    python benchmarks/cnn_step.py [--threads 1] [--steps 10]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.models import LeNet5, SmallCNN, count_parameters  # noqa: E402
from pipeline.norm import BatchNorm2d  # noqa: E402
from pipeline.runtime import setup_torch  # noqa: E402


def torch_batchnorm(model):
    """The same model with nn.BatchNorm2d in place of pipeline.norm's (same initial weights: ones, zeros)."""
    for name, child in model.named_children():
        if isinstance(child, BatchNorm2d):
            setattr(model, name, torch.nn.BatchNorm2d(child.num_features))
        else:
            torch_batchnorm(child)
    return model


MODELS = {
    "lenet5": lambda: LeNet5("relu"),
    "lenet5 bn": lambda: LeNet5("relu", batchnorm=True),
    "lenet5 bn + torch bn": lambda: torch_batchnorm(LeNet5("relu", batchnorm=True)),
    "cnn2": lambda: SmallCNN("relu", True, 0.2, 2, 32, 3, False),
    "cnn2 textbook": lambda: SmallCNN("relu", True, 0.2, 2, 32, 3, False, fast=False),
    "cnn4": lambda: SmallCNN("relu", True, 0.2, 4, 32, 3, False),
    "cnn4 textbook": lambda: SmallCNN("relu", True, 0.2, 4, 32, 3, False, fast=False),
}


def step_ms(model, steps, optimizer=None, batch=256, warmup=2, budget_s=float("inf")):
    """Median ms of one training step (SGD with momentum unless `optimizer`) after `warmup` steps; at least two
    timed steps, and no more once `budget_s` seconds have passed."""
    model = model.to(memory_format=torch.channels_last)
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 1, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    times, started = [], time.perf_counter()
    for _ in range(steps + warmup):
        start = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
        if len(times) >= warmup + 2 and time.perf_counter() - started > budget_s:
            break
    return 1000 * statistics.median(times[warmup:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as train.threads)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model (default 10)")
    args = parser.parse_args()
    setup_torch(args.threads)
    torch.manual_seed(0)
    base = None
    for name, build in MODELS.items():
        model = build()
        ms = step_ms(model, args.steps)
        base = base or ms
        print(f"{name:20s} {count_parameters(model):>9,d} params  {ms:6.1f} ms/step  {ms / base:5.2f}x lenet5")


if __name__ == "__main__":
    main()
