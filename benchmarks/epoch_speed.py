"""Time one training epoch: our in-memory tensor path against the typical DataLoader path.

All three train LeNet-5 (the same function, from the same initial weights)
with the same optimizer on the same 50,000 training images (data/split from
`dvc repro`), batch 256, 2 threads, no augmentation:
  typical:        torchvision FashionMNIST with per-sample Resize(32) / ToTensor /
                  Normalize, through a DataLoader (num_workers=0; 2 is slower on
                  2 cores); LeNet-5 from PyTorch's textbook layers; PyTorch's defaults
  typical+alloc:  the same, plus our allocator setting (pipeline.runtime.setup_torch)
  ours:           the pipeline's training path: setup_torch, channels_last,
                  pipeline.pool's ReLU + max-pool kernel, uint8 tensors padded and
                  normalised once, randperm slices (pipeline.engine.train_one_epoch)
The allocator setting (glibc mallopt) cannot be undone inside a process, so
each measurement runs in a fresh process: a few warm-up batches, then one timed
epoch. Repeats are interleaved, so a load on the machine hits all alike; the
ratios of the medians are printed.

    python benchmarks/epoch_speed.py [--repeats 3]
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.data import load_split, normalisation, to_model_input  # noqa: E402
from pipeline.engine import train_one_epoch  # noqa: E402
from pipeline.models import LeNet5  # noqa: E402
from pipeline.runtime import setup_torch  # noqa: E402

PATHS = ["typical", "typical+alloc", "ours"]
THREADS, WARMUP_BATCHES = 2, 5


def fresh_model(memory_format, fast):
    torch.manual_seed(0)
    model = LeNet5("relu", batchnorm=False, dropout=0.0, fast=fast).to(memory_format=memory_format)
    return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def typical_epoch(model, optimizer, loader, max_batches=None):
    model.train()
    for i, (x, y) in enumerate(loader):
        if i == max_batches:
            break
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def time_one_epoch(path, raw, split, batch_size):
    """Seconds for one epoch of `path`, in this (fresh) process."""
    if path == "typical":
        torch.set_num_threads(THREADS)  # what PyTorch picks on 2 cores anyway
    else:
        setup_torch(THREADS)
    images, labels = load_split(split, "train")
    mean, std = normalisation(images)
    if path == "ours":
        x, generator = to_model_input(images, mean, std, "cpu"), torch.Generator().manual_seed(0)
        model, optimizer = fresh_model(torch.channels_last, fast=True)
        settings = SimpleNamespace(batch_size=batch_size, hflip=False, shift=0, erase=0.0)  # no augmentation
        warmup = (x[: WARMUP_BATCHES * batch_size], labels[: WARMUP_BATCHES * batch_size])
        train_one_epoch(model, optimizer, warmup, settings, generator)
        start = time.perf_counter()
        train_one_epoch(model, optimizer, (x, labels), settings, generator)
        return time.perf_counter() - start
    from torchvision import datasets, transforms

    indices = torch.load(Path(split) / "train.pt", weights_only=True)["indices"]
    transform = transforms.Compose(
        [transforms.Resize(32), transforms.ToTensor(), transforms.Normalize((mean,), (std,))]
    )
    dataset = torch.utils.data.Subset(datasets.FashionMNIST(raw, train=True, transform=transform), indices.tolist())
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0)
    model, optimizer = fresh_model(torch.contiguous_format, fast=False)
    typical_epoch(model, optimizer, loader, WARMUP_BATCHES)
    start = time.perf_counter()
    typical_epoch(model, optimizer, loader)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", default="data/raw")
    parser.add_argument("--split", default="data/split")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--one", choices=PATHS, help=argparse.SUPPRESS)  # internal: time one path here
    args = parser.parse_args()
    if args.one:
        print(time_one_epoch(args.one, args.raw, args.split, args.batch_size))
        return

    times = {path: [] for path in PATHS}
    for _ in range(args.repeats):
        for path in PATHS:
            command = [
                sys.executable,
                __file__,
                "--one",
                path,
                "--raw",
                args.raw,
                "--split",
                args.split,
                "--batch-size",
                str(args.batch_size),
            ]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            times[path].append(float(output.split()[-1]))
    medians = {path: statistics.median(t) for path, t in times.items()}
    for path, t in times.items():
        print(f"{path:14s} median {medians[path]:.2f} s/epoch  (runs: {', '.join(f'{s:.2f}' for s in t)})")
    print(f"speed-up, ours vs typical:       {medians['typical'] / medians['ours']:.2f}x")
    print(f"ours vs typical+alloc:           {medians['typical+alloc'] / medians['ours']:.2f}x")
    print(f"({args.repeats} interleaved repeats, each in a fresh process; {THREADS} threads, batch {args.batch_size})")


if __name__ == "__main__":
    main()
