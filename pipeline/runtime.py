"""The one seed helper, the device choice and the thread count."""
import random

import numpy as np
import torch


def seed_everything(seed):
    """Seed python, numpy and torch (CPU and CUDA) from one params value."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup_torch(threads):
    """Pick CUDA when present, else the CPU with `threads` threads.

    The thread count is a param because it changes the numerics (1 vs 2
    threads give different weights) and because two queued experiments with
    the default of all cores would fight over them.
    """
    torch.set_num_threads(threads)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
