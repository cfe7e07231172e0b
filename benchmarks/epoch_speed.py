"""Time one training epoch: our in-memory tensor path against the typical DataLoader path.

Both train the same LeNet-5 with the same optimizer on the same 50,000
training images (data/split from `dvc repro`), batch 256, no augmentation:
  typical:   torchvision FashionMNIST with per-sample Resize(32) / ToTensor /
             Normalize, through a DataLoader (num_workers=0; 2 is slower on 2 cores)
  in-memory: uint8 tensors padded and normalised once, randperm slices
             (pipeline.engine.train_one_epoch)
Repeats are interleaved, so a load on the machine hits both alike; the ratio
of the medians is printed.

    python benchmarks/epoch_speed.py [--repeats 3] [--threads 2]
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.data import load_split, normalisation, to_model_input  # noqa: E402
from pipeline.engine import train_one_epoch  # noqa: E402
from pipeline.models import build_lenet5  # noqa: E402
from pipeline.runtime import setup_torch  # noqa: E402


def typical_epoch(model, optimizer, loader):
    model.train()
    for x, y in loader:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", default="data/raw")
    parser.add_argument("--split", default="data/split")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    setup_torch(args.threads)  # the pipeline's thread count and allocator setting, for both paths
    from torchvision import datasets, transforms

    images, labels = load_split(args.split, "train")
    indices = torch.load(Path(args.split) / "train.pt", weights_only=True)["indices"]
    mean, std = normalisation(images)
    typical_data = torch.utils.data.Subset(datasets.FashionMNIST(args.raw, train=True, transform=transforms.Compose(
        [transforms.Resize(32), transforms.ToTensor(), transforms.Normalize((mean,), (std,))])), indices.tolist())
    loader = torch.utils.data.DataLoader(typical_data, batch_size=args.batch_size, shuffle=True, num_workers=0)
    x, y = to_model_input(images, mean, std, "cpu"), labels
    generator = torch.Generator().manual_seed(0)

    def fresh():
        torch.manual_seed(0)
        model = build_lenet5("relu", batchnorm=False, dropout=0.0)
        return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    runs = {
        "typical (DataLoader + per-sample transforms)": lambda m, o: typical_epoch(m, o, loader),
        "in-memory tensors (ours)": lambda m, o: train_one_epoch(
            m.to(memory_format=torch.channels_last), o, x, y, args.batch_size, generator, False, 0),
    }
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, epoch in runs.items():
            model, optimizer = fresh()
            start = time.perf_counter()
            epoch(model, optimizer)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(f"{name:46s} median {medians[name]:.2f} s/epoch  (runs: {', '.join(f'{s:.2f}' for s in t)})")
    typical, ours = medians.values()
    print(f"speed-up: {typical / ours:.2f}x  ({args.repeats} interleaved repeats, {args.threads} threads, "
          f"batch {args.batch_size}, {len(labels):,} images)")


if __name__ == "__main__":
    main()
