"""Two tweaks of a stage's process: runtime.keep_freed_memory, checked against the kernel's own page-fault
counter, and errors.run_stage's freezing of the process's objects, checked on the garbage collector's counts."""

import subprocess
import sys

import pytest
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


# A stage's process as run_stage runs it: what was frozen when main() ran, and what the collector still tracks
# once run_stage returns or exits (an atexit handler runs after it, before the interpreter's own collections).
STAGE = """
import atexit, gc, sys
import torch
from pipeline.errors import PipelineError, run_stage
def report():
    print(frozen_in_main, gc.get_freeze_count(), len(gc.get_objects()))
def main():
    global frozen_in_main, made
    frozen_in_main = gc.get_freeze_count()
    made = [[i] for i in range(5000)]  # 5,000 lists main() makes and keeps
    if sys.argv[1] == "fail":
        raise PipelineError("a bad value")
atexit.register(report)
run_stage(main)
"""


@pytest.mark.parametrize("how", ["ok", "fail"])
def test_a_stage_runs_with_its_imports_frozen_and_leaves_nothing_for_the_collections_at_exit(how):
    done = subprocess.run(
        [sys.executable, "-c", STAGE, how], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == (0 if how == "ok" else 2), done.stderr
    frozen_in_main, frozen_at_exit, tracked_at_exit = map(int, done.stdout.split())
    assert frozen_in_main > 100_000  # torch's objects, frozen before main() ran
    assert frozen_at_exit > frozen_in_main + 4000  # and main()'s 5,000 lists, before the exit
    assert tracked_at_exit < 100, tracked_at_exit  # nothing left for the interpreter's collections to walk
