"""2x2 max pooling (optionally after a ReLU) as one small CPU kernel, compiled by numba.

Why: PyTorch's CPU max-pool kernels vectorise over channels, and LeNet's first
pool sees 6 of them: it took ~1.9 ms of a ~10 ms training step, with another
0.5 ms for ReLU's forward and backward on the same 1.2M values. This kernel
reads each 2x2 window once and writes the max and which of the four won
(a uint8); the backward writes the gradient to the winner. Fusing the ReLU is
exact because ReLU is monotonic: max(relu(x)) == relu(max(x)).

Same values and gradients as nn.ReLU + nn.MaxPool2d(2), bit for bit, ties and
NaNs included (a tie goes to the first position of the window, as in PyTorch):
tests/test_pool.py checks that against PyTorch's own layers. On CUDA, for
other dtypes and under torch.compile/torch.export it calls PyTorch's layers.
"""

import types

import numba
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NO_WINNER = 4  # the ReLU zeroed the window's max: no gradient flows


def _forward(x, out, winner, relu):
    """x [N, H, W, C] -> out, winner [N, H//2, W//2, C] (any strides)."""
    batch, height, width, channels = out.shape
    for n in numba.prange(batch):
        for i in range(height):
            for j in range(width):
                for c in range(channels):
                    a, b = x[n, 2 * i, 2 * j, c], x[n, 2 * i, 2 * j + 1, c]
                    d, e = x[n, 2 * i + 1, 2 * j, c], x[n, 2 * i + 1, 2 * j + 1, c]
                    # PyTorch's rule, pairwise: a later value wins if greater or NaN
                    take_b, take_e = (b > a) | (b != b), (e > d) | (e != e)
                    top, bottom = b if take_b else a, e if take_e else d
                    take_bottom = (bottom > top) | (bottom != bottom)
                    best = bottom if take_bottom else top
                    k = (np.uint8(2) + np.uint8(take_e)) if take_bottom else np.uint8(take_b)
                    if relu and not (best > 0 or best != best):
                        best, k = np.float32(0), np.uint8(NO_WINNER)
                    out[n, i, j, c] = best
                    winner[n, i, j, c] = k


def _backward(grad, winner, grad_in):
    """grad, winner [N, h, w, C] -> grad_in [N, H, W, C]: the gradient at each window's winner."""
    batch, height, width, channels = grad.shape
    for n in numba.prange(batch):
        for i in range(height):
            for j in range(width):
                for c in range(channels):
                    g, k = grad[n, i, j, c], winner[n, i, j, c]
                    zero = g * 0
                    grad_in[n, 2 * i, 2 * j, c] = g if k == 0 else zero
                    grad_in[n, 2 * i, 2 * j + 1, c] = g if k == 1 else zero
                    grad_in[n, 2 * i + 1, 2 * j, c] = g if k == 2 else zero
                    grad_in[n, 2 * i + 1, 2 * j + 1, c] = g if k == 3 else zero


# Each kernel twice: over threads (prange), and serial for one thread, so that a
# one-thread worker never starts numba's thread pool. numba's disk cache is
# keyed by the function's name: the two builds get names of their own, or a
# process could load the parallel build as the serial one.
def _compiled(function, parallel):
    renamed = types.FunctionType(function.__code__, function.__globals__, function.__name__)
    renamed.__qualname__ = f"{function.__qualname__}_{'parallel' if parallel else 'serial'}"
    return numba.njit(parallel=parallel, cache=True)(renamed)


def compile_kernels(*functions):
    """{parallel: (compiled function, ...)} for parallel in (False, True); see kernels_for_threads."""
    return {parallel: tuple(_compiled(f, parallel) for f in functions) for parallel in (False, True)}


def kernels_for_threads(kernels):
    """The build for torch's thread count (train.threads): queued runs with 1 each stay at 1.

    Call it in an autograd Function's forward, on the caller's thread:
    autograd runs the backward on a thread of its own, where
    torch.get_num_threads() reports all cores, and numba.set_num_threads()
    there would raise torch's own count too.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        return kernels[False]
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    return kernels[True]


_KERNELS = compile_kernels(_forward, _backward)


def _nhwc(tensor):
    """A numpy view [N, H, W, C] of a CPU tensor [N, C, H, W], whatever its memory format."""
    return tensor.detach().permute(0, 2, 3, 1).numpy()


def _like(shape, memory_format, dtype=torch.float32):
    return torch.empty(shape, dtype=dtype, memory_format=memory_format)


class _MaxPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, relu):
        n, c, h, w = x.shape
        memory_format = (
            torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        )
        out = _like((n, c, h // 2, w // 2), memory_format)
        winner = _like((n, c, h // 2, w // 2), memory_format, torch.uint8)
        ctx.kernels = kernels_for_threads(_KERNELS)  # here, not in backward: see its docstring
        ctx.kernels[0](_nhwc(x), _nhwc(out), _nhwc(winner), relu)
        ctx.save_for_backward(winner)
        ctx.input_shape, ctx.memory_format = x.shape, memory_format
        return out

    @staticmethod
    def backward(ctx, grad):
        (winner,) = ctx.saved_tensors
        n, c, h, w = ctx.input_shape
        grad_in = _like((n, c, h, w), ctx.memory_format)
        if h % 2 or w % 2:  # an odd last row or column is in no window
            grad_in.zero_()
        ctx.kernels[1](_nhwc(grad), _nhwc(winner), _nhwc(grad_in))
        return grad_in, None


class MaxPool2x2(nn.Module):
    """nn.MaxPool2d(2), preceded by nn.ReLU() when relu=True, in one kernel on the CPU."""

    def __init__(self, relu):
        super().__init__()
        self.relu = relu

    def forward(self, x):
        # PyTorch's layers where the kernel can't run, and under torch.compile / torch.export
        # (MLflow exports the logged model), so that the traced graph holds standard ops only
        if x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 4 or torch.compiler.is_compiling():
            return F.max_pool2d(F.relu(x) if self.relu else x, 2)
        return _MaxPool2x2.apply(x, self.relu)

    def extra_repr(self):
        return f"relu={self.relu}"
