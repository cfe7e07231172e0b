"""runtime.keep_freed_memory: checked against the kernel's own page-fault counter."""

import subprocess
import sys

from helpers import ROOT

# glibc raises its mmap threshold as blocks are freed, so whether these steps fault
# depends on what was freed first (2 runs in 13 had none): pin glibc's starting
# threshold, 128 KiB, so the default case faults every time.
TRAIN_STEPS = """
import ctypes, resource, sys, torch
from pipeline.models import LeNet5
from pipeline.runtime import keep_freed_memory
torch.set_num_threads(1)
ctypes.CDLL(None).mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
if sys.argv[1] == "keep":
    keep_freed_memory()
model = LeNet5("relu", batchnorm=False, dropout=0.0)
torch.manual_seed(0)
x, y = torch.randn(256, 1, 32, 32), torch.randint(0, 10, (256,))
def step():
    torch.nn.functional.cross_entropy(model(x), y).backward()
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode):
    out = subprocess.run(
        [sys.executable, "-c", TRAIN_STEPS, mode], cwd=ROOT, check=True, capture_output=True, text=True, timeout=120
    ).stdout
    return int(out)


def test_freed_activations_are_reused_instead_of_faulted_in_again():
    # glibc's defaults: every step's activations come back as fresh pages (tens of thousands of faults)
    default, kept = page_faults("default"), page_faults("keep")
    assert default > 10_000
    assert kept * 10 < default, (default, kept)
