"""pipeline.norm's batch norm against two oracles: nn.BatchNorm2d, and the same function in float64."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.norm import BatchNorm2d

SHAPES = [(64, 6, 28, 28), (5, 3, 11, 9), (256, 7, 10, 10), (4, 1, 1, 1)]


def channels_last(*shape, seed, scale=1.0, shift=0.0):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale + shift
    return x.contiguous(memory_format=torch.channels_last)


def forward_backward(layer, x, grad, threads=1):
    x = x.clone().requires_grad_()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = layer(x)
        out.backward(grad)
    finally:
        torch.set_num_threads(previous)
    return out, x.grad, layer.weight.grad, layer.bias.grad


def pair(channels, seed=0):
    """Ours and nn.BatchNorm2d with the same random affine weights."""
    ours, oracle = BatchNorm2d(channels), nn.BatchNorm2d(channels)
    g = torch.Generator().manual_seed(seed)
    weight, bias = torch.rand(channels, generator=g) + 0.5, torch.randn(channels, generator=g)
    with torch.no_grad():
        for layer in (ours, oracle):
            layer.weight.copy_(weight)
            layer.bias.copy_(bias)
    return ours, oracle


@pytest.mark.parametrize("shape", SHAPES)
def test_values_and_gradients_match_float64_closer_than_pytorch(shape):
    """Off-centre data (mean 3, std 2), where float32 batch norm loses digits."""
    x, grad = channels_last(*shape, seed=1, scale=2.0, shift=3.0), channels_last(*shape, seed=2)
    ours, oracle = pair(shape[1])
    mine, theirs = forward_backward(ours, x, grad), forward_backward(oracle, x, grad)
    exact = forward_backward(pair(shape[1])[1].double(), x.double(), grad.double())
    for name, m, t, e in zip(["out", "grad x", "grad weight", "grad bias"], mine, theirs, exact, strict=True):
        assert m.dtype == torch.float32 and m.shape == t.shape, name
        error, pytorch_error = (m.double() - e).abs().max().item(), (t.double() - e).abs().max().item()
        scale = e.abs().max().item()
        assert error <= 2e-6 * scale, (name, error, scale)
        assert error <= pytorch_error + 1e-7 * scale, (name, error, pytorch_error)
    assert mine[0].is_contiguous(memory_format=torch.channels_last)
    assert mine[1].is_contiguous(memory_format=torch.channels_last)


def test_serial_and_parallel_builds_agree_bit_for_bit():
    x, grad = channels_last(64, 6, 28, 28, seed=3), channels_last(64, 6, 28, 28, seed=4)
    one = forward_backward(pair(6)[0], x, grad, threads=1)
    two = forward_backward(pair(6)[0], x, grad, threads=2)
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_running_statistics_follow_nn_batchnorm(momentum):
    ours, oracle = pair(6)
    ours.momentum = oracle.momentum = momentum
    for step in range(3):
        x = channels_last(16, 6, 7, 7, seed=10 + step, scale=1.5, shift=step)
        ours(x), oracle(x)
    assert int(ours.num_batches_tracked) == int(oracle.num_batches_tracked) == 3
    torch.testing.assert_close(ours.running_mean, oracle.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.running_var, oracle.running_var, rtol=1e-5, atol=1e-6)
    ours.eval(), oracle.eval()
    x = channels_last(4, 6, 7, 7, seed=20)
    torch.testing.assert_close(ours(x), oracle(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "case",
    ["eval", "contiguous", "float64", "eight channels", "one value per channel"],
)
def test_where_the_kernel_does_not_apply_nn_batchnorm_runs(case):
    channels = 8 if case == "eight channels" else 3
    ours, oracle = pair(channels)
    x = channels_last(4, channels, 5, 5, seed=5)
    if case == "eval":
        ours.eval(), oracle.eval()
    elif case == "contiguous":
        x = x.contiguous()
    elif case == "float64":
        ours.double(), oracle.double()
        x = x.double()
    else:
        x = x[:1, :, :1, :1]
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            ours(x)
        return
    out = ours(x.clone().requires_grad_())
    assert torch.equal(out, oracle(x)) and "NativeBatchNorm" in out.grad_fn.name()


def test_the_kernel_runs_where_it_applies():
    out = pair(6)[0](channels_last(4, 6, 5, 5, seed=8).requires_grad_())
    assert out.grad_fn.name() == "_BatchNormTrainBackward"


def test_a_checkpoint_loads_into_nn_batchnorm():
    ours, _ = pair(6)
    ours(channels_last(8, 6, 4, 4, seed=6))
    plain = nn.BatchNorm2d(6)
    plain.load_state_dict(ours.state_dict())
    assert list(plain.state_dict()) == list(ours.state_dict())


def test_a_training_step_through_lenet5_matches_the_textbook_model_in_float64():
    """The whole model: the same logits and gradients as PyTorch's layers in float64, to float32 rounding.

    The oracle is float64 because ReLU and max pooling route gradients by
    sign and by the largest value: PyTorch's float32 batch norm is off by
    ~1e-5, enough to flip a value near 0 and move a gradient entry (seen
    against it, one value in 150,000); ours is off by ~1e-7.
    """
    from pipeline.models import LeNet5

    torch.manual_seed(0)
    ours = LeNet5("relu", batchnorm=True).to(memory_format=torch.channels_last)
    oracle = LeNet5("relu", batchnorm=True, fast=False).double()
    oracle.load_state_dict(ours.state_dict())
    assert isinstance(ours.bn1, BatchNorm2d) and not isinstance(oracle.bn1, BatchNorm2d)
    x = channels_last(8, 1, 32, 32, seed=7)
    labels = torch.arange(8) % 10
    logits = ours(x), oracle(x.double())
    torch.testing.assert_close(logits[0].double(), logits[1], rtol=1e-5, atol=1e-5)
    for out in logits:
        F.cross_entropy(out, labels).backward()
    for (name, mine), theirs in zip(ours.named_parameters(), oracle.parameters(), strict=True):
        torch.testing.assert_close(mine.grad.double(), theirs.grad, rtol=1e-4, atol=1e-5, msg=name)
