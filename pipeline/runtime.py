"""The device choice, the thread count and the allocator."""

import ctypes

import torch


def setup_torch(threads):
    """Pick CUDA when present, else the CPU with `threads` threads.

    The thread count is a param because it changes the numerics (1 vs 2
    threads give different weights) and because two queued experiments with
    the default of all cores would fight over them.
    """
    torch.set_num_threads(threads)
    keep_freed_memory()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def keep_freed_memory():
    """Make glibc keep freed tensor buffers for reuse instead of handing them back to the OS.

    By default glibc serves large blocks with mmap and trims the heap on free,
    so every batch's activations (a few MB each) come back as fresh pages and
    fault in again: ~700k page faults per epoch here, a third of the epoch's
    time. The same reason PyTorch's CPU tuning guide suggests jemalloc/tcmalloc:
    https://pytorch.org/tutorials/recipes/recipes/tuning_guide.html
    No-op where the C library is not glibc.
    """
    libc = ctypes.CDLL(None)  # the C library this process already runs on
    if not hasattr(libc, "mallopt"):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    libc.mallopt(m_mmap_threshold, 32 << 20)  # blocks up to 32 MB (glibc's maximum) from the heap
    libc.mallopt(m_trim_threshold, 1 << 30)  # give back only when 1 GB at the heap's top is free
