"""pipeline.pool's kernel against the oracle: PyTorch's nn.ReLU + nn.MaxPool2d, bit for bit."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from helpers import ROOT

from pipeline.models import LeNet5
from pipeline.pool import MaxPool2x2

LAYOUTS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def awkward_input(shape, memory_format):
    """Random values plus the cases a max-pool gets wrong: ties, zeros, all-negative windows, NaNs."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    x[0, 0, :4, :4] = 1.0  # ties among positives: the first position of the window wins
    x[0, 1, :4, :4] = 0.0  # ReLU's boundary: no gradient at 0
    x[0, 2, :4, :4] = -1.0  # ties among negatives; zeroed by the ReLU
    x[1, 0, 0, 1] = x[1, 0, 2, 2] = x[1, 0, 3, 3] = float("nan")  # NaN wins, the last one of a window
    x[1, 1, 0, 0] = float("nan")
    return x.contiguous(memory_format=memory_format)


def same(a, b):
    """Bit-equal values (NaN == NaN) and the same strides."""
    return a.stride() == b.stride() and torch.equal(torch.nan_to_num(a, nan=7.0), torch.nan_to_num(b, nan=7.0))


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(64, 6, 28, 28), (5, 3, 11, 9), (4, 16, 10, 10)])
@pytest.mark.parametrize("threads", [1, 2])
def test_values_and_gradients_equal_pytorchs_layers(relu, layout, shape, threads):
    x = awkward_input(shape, LAYOUTS[layout])
    grad = torch.randn(shape[0], shape[1], shape[2] // 2, shape[3] // 2, generator=torch.Generator().manual_seed(1))
    oracle_x, ours_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ours = MaxPool2x2(relu)(ours_x)
        ours.backward(grad)
    finally:
        torch.set_num_threads(previous)
    oracle = F.max_pool2d(F.relu(oracle_x) if relu else oracle_x, 2)
    oracle.backward(grad)
    assert same(ours, oracle)
    assert same(ours_x.grad, oracle_x.grad)


def test_without_autograd_gives_the_same_values():
    x = awkward_input((8, 6, 28, 28), torch.channels_last)
    with torch.no_grad():
        assert same(MaxPool2x2(True)(x), F.max_pool2d(F.relu(x), 2))


def test_other_dtypes_fall_back_to_pytorch():
    x = awkward_input((2, 6, 8, 8), torch.contiguous_format).double().requires_grad_()
    out = MaxPool2x2(True)(x)
    assert out.dtype == torch.float64 and out.grad_fn.name() == "MaxPool2DWithIndicesBackward0"


@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_lenet5_with_the_kernel_equals_the_textbook_layers(batchnorm, activation):
    """Same seed, same weights; the same logits, loss and gradients, bit for bit (the pool kernel only)."""
    torch.manual_seed(0)
    textbook = LeNet5(activation, batchnorm, dropout=0.0, fast=False).to(memory_format=torch.channels_last)
    torch.manual_seed(0)
    ours = LeNet5(activation, batchnorm, dropout=0.0, fast=True).to(memory_format=torch.channels_last)
    if batchnorm:  # PyTorch's batch norm in both: pipeline.norm's rounds otherwise (tests/test_norm.py)
        ours.bn1, ours.bn2 = textbook.bn1.__class__(6), textbook.bn2.__class__(16)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in ours.modules())
    assert list(ours.state_dict()) == list(textbook.state_dict())  # a checkpoint loads into either
    x = torch.randn(32, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    labels = torch.arange(32) % 10
    for model in (textbook, ours):
        F.cross_entropy(model(x), labels).backward()
    for theirs, mine in zip(textbook.parameters(), ours.parameters(), strict=True):
        assert torch.equal(theirs, mine) and torch.equal(theirs.grad, mine.grad)
    assert torch.equal(textbook(x), ours(x))


def test_torch_export_traces_pytorchs_layers():
    """MLflow logs models through torch.export, which can't trace the kernel."""
    model = LeNet5("relu", batchnorm=False, dropout=0.0, fast=True).eval()
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    exported = torch.export.export(model, (x,))
    assert "max_pool2d" in str(exported.graph)
    assert torch.equal(exported.module()(x), model(x))


def test_one_thread_stays_one_thread():
    """Training with train.threads=1 must not let the kernels (pool, batch norm) raise torch's thread count.

    Autograd runs the backward on a thread where torch.get_num_threads()
    reports all cores; a kernel that asked there and called numba.set_num_threads
    raised torch's own count: two one-thread workers then took ~10x longer.
    A fresh process, so that no earlier test's thread setting counts.
    """
    code = (
        "import torch\n"
        "from pipeline.models import LeNet5\n"
        "torch.set_num_threads(1)\n"
        "torch.manual_seed(0)\n"
        "model = LeNet5('relu', batchnorm=True, dropout=0.0).to(memory_format=torch.channels_last)\n"
        "x = torch.randn(8, 1, 32, 32).contiguous(memory_format=torch.channels_last)\n"
        "for _ in range(3):\n"
        "    model(x).sum().backward()\n"
        "print(torch.get_num_threads())\n"
    )
    env = {**os.environ, "NUMBA_NUM_THREADS": "2"}  # a pool of two exists: it must stay unused
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert out.strip() == "1"
