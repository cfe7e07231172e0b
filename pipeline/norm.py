"""Batch norm in training mode (the batch's own statistics) over a few channels, as numba CPU kernels.

Why: PyTorch's CPU batch norm in channels-last vectorises over the channels,
and LeNet-5's first layer has 6 of them, fewer than a vector holds. There its
forward and backward took ~10 ms of a training step; with these kernels a
LeNet-5 batch-norm step (one thread, batch 256) took 18.1-19.2 ms against
22.3-22.5 ms, 1.20x. With 8 or more channels PyTorch's layer was as fast or
faster (LeNet-5's 16-channel layer, the small CNNs' 8-256), so those keep it:
MAX_CHANNELS below, measured in docs/speed.md.

Same function, other rounding: sums are accumulated in float64, per image and
then over the images in a fixed order, so the serial and parallel builds
agree bit for bit, and the result is closer to a float64 oracle than
PyTorch's float32 one (tests/test_norm.py). The running statistics are updated
as nn.BatchNorm2d does. In eval mode (running statistics), on CUDA, for other
dtypes or layouts and under torch.compile/torch.export, nn.BatchNorm2d's own
forward runs.
"""

import numba
import numpy as np
import torch
from torch import nn

from pipeline.pool import compile_kernels, kernels_for_threads

MAX_CHANNELS = 7  # the kernels run for layers this narrow; from 8 channels on PyTorch's was as fast


def _sums(a, b, shift, partial):
    """partial [N, 2, C]: each image's sum of a and of a * (b - shift) per channel, in float64.

    One kernel for both passes: forward sums x and x * (x - 0), backward grad and grad * (x - mean).
    """
    batch, rows, channels = a.shape
    for n in numba.prange(batch):
        total, weighted = np.zeros(channels), np.zeros(channels)
        for r in range(rows):
            for c in range(channels):
                value = np.float64(a[n, r, c])
                total[c] += value
                weighted[c] += value * (np.float64(b[n, r, c]) - shift[c])
        partial[n, 0, :] = total
        partial[n, 1, :] = weighted


def _normalise(x, mean, scale, bias, out):
    """out = (x - mean) * scale + bias, per channel: scale = weight / sqrt(var + eps)."""
    batch, rows, channels = x.shape
    for n in numba.prange(batch):
        for r in range(rows):
            for c in range(channels):
                out[n, r, c] = (x[n, r, c] - mean[c]) * scale[c] + bias[c]


def _grad_input(x, grad, mean, a, b, k, out):
    """out = a * grad + b * (x - mean) + k, per channel (the coefficients: _BatchNormTrain.backward)."""
    batch, rows, channels = x.shape
    for n in numba.prange(batch):
        for r in range(rows):
            for c in range(channels):
                out[n, r, c] = a[c] * grad[n, r, c] + b[c] * (x[n, r, c] - mean[c]) + k[c]


_KERNELS = compile_kernels(_sums, _normalise, _grad_input)


def _rows(tensor):
    """[N, C, H, W] in channels-last -> a numpy view [N, H*W, C]."""
    n, c, h, w = tensor.shape
    return tensor.detach().permute(0, 2, 3, 1).reshape(n, h * w, c).numpy()


def _empty_rows(n, c, h, w):
    """A channels-last [N, C, H, W] tensor and its numpy view [N, H*W, C]."""
    rows = torch.empty(n, h * w, c)
    return rows.view(n, h, w, c).permute(0, 3, 1, 2), rows.numpy()


class _BatchNormTrain(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        kernels = kernels_for_threads(_KERNELS)  # here, not in backward: see its docstring
        n, c, h, w = x.shape
        count = n * h * w
        partial = np.empty((n, 2, c))
        rows = _rows(x)
        kernels[0](rows, rows, np.zeros(c), partial)
        total = partial.sum(axis=0)
        mean = total[0] / count
        var = np.maximum(total[1] / count - mean * mean, 0.0)  # float64 sums: no cancellation to speak of
        rstd = 1.0 / np.sqrt(var + eps)
        weight64 = weight.detach().double().numpy()
        out, out_rows = _empty_rows(n, c, h, w)
        mean32 = mean.astype(np.float32)
        kernels[1](rows, mean32, (weight64 * rstd).astype(np.float32), bias.detach().numpy(), out_rows)
        ctx.save_for_backward(x, weight)
        ctx.kernels, ctx.mean, ctx.mean32, ctx.rstd = kernels, mean, mean32, rstd
        batch_mean, batch_var = torch.from_numpy(mean32), torch.from_numpy(var.astype(np.float32))
        ctx.mark_non_differentiable(batch_mean, batch_var)
        return out, batch_mean, batch_var

    @staticmethod
    def backward(ctx, grad, _grad_mean, _grad_var):
        x, weight = ctx.saved_tensors
        n, c, h, w = x.shape
        count = n * h * w
        grad_rows = _rows(grad.contiguous(memory_format=torch.channels_last))
        partial = np.empty((n, 2, c))
        x_rows = _rows(x)
        ctx.kernels[0](grad_rows, x_rows, ctx.mean, partial)
        sum_grad, sum_grad_centered = partial.sum(axis=0)
        # d/dx of weight * (x - mean) * rstd + bias, the batch's mean and variance depending on x:
        # rstd * weight * (grad - mean(grad) - (x - mean) * rstd^2 * mean(grad * (x - mean)))
        scale = weight.detach().double().numpy() * ctx.rstd  # the coefficient of grad
        b = -scale * ctx.rstd**2 * sum_grad_centered / count
        k = -scale * sum_grad / count
        grad_x, grad_x_rows = _empty_rows(n, c, h, w)
        f32 = [v.astype(np.float32) for v in (scale, b, k)]
        ctx.kernels[2](x_rows, grad_rows, ctx.mean32, *f32, grad_x_rows)
        grad_weight = torch.from_numpy((sum_grad_centered * ctx.rstd).astype(np.float32))
        grad_bias = torch.from_numpy(sum_grad.astype(np.float32))
        return grad_x, grad_weight, grad_bias, None


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d whose training-mode forward and backward run the kernels above on the CPU (few channels)."""

    def forward(self, x):
        if not self._kernel_applies(x):
            return super().forward(x)
        out, mean, var = _BatchNormTrain.apply(x, self.weight, self.bias, self.eps)
        if self.track_running_stats:
            # as nn.BatchNorm2d: momentum, or a cumulative average when it is None; unbiased variance
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                count = x.shape[0] * x.shape[2] * x.shape[3]
                self.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
                self.running_var.mul_(1 - factor).add_(var * (count / (count - 1)), alpha=factor)
        return out

    def _kernel_applies(self, x):
        return (
            self.training
            and self.affine
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and x.dim() == 4
            and x.shape[1] <= MAX_CHANNELS
            and x.is_contiguous(memory_format=torch.channels_last)
            and x.shape[0] * x.shape[2] * x.shape[3] > 1  # else PyTorch's own error
            and not torch.compiler.is_compiling()
        )
