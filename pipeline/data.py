"""The data as in-memory tensors: load a split, pad and normalise it once.

A batch is then a slice `images[idx]`: no per-sample transforms, no
DataLoader workers (both cost more than they give on 2 cores; see
benchmarks/epoch_speed.py).
"""

from pathlib import Path

import torch
import torch.nn.functional as F


def split_file(folder, split):
    return Path(folder) / f"{split}.pt"


def load_split(folder, split):
    """(images uint8 [N, 28, 28], labels int64 [N]) of one split written by stage split."""
    blob = torch.load(split_file(folder, split), weights_only=True)
    return blob["images"], blob["labels"]


def normalisation(images):
    """Mean and std of uint8 images, in [0, 1] units: computed on the train split only."""
    x = images.float() / 255
    return x.mean().item(), x.std().item()


def to_model_input(images, mean, std, device):
    """uint8 [N, 28, 28] -> float [N, 1, 32, 32] on `device`, normalised.

    Zero-padded to 32x32 as in the LeNet-5 paper, so that the 5x5 kernels of
    the first layer can centre on the stroke ends at the image border.
    channels_last is ~10% faster for convolutions on this CPU.
    """
    x = F.pad(images.to(device).float().div_(255), (2, 2, 2, 2))
    x = (x - mean) / std
    return x.unsqueeze(1).contiguous(memory_format=torch.channels_last)
