"""Shared fixtures, built from tests/helpers.py: synthetic IDX files, a split folder, a temp project; and the
reproduced shrunk project the docs' pages are read on (tests/pages.py)."""

import atexit
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
from filelock import FileLock
from helpers import compile_kernels_once, make_project, shrunk_params, synthetic_images, write_idx_folder
from pages import reproduce_readme

# A suite started in the background of a non-interactive shell (`make test &`, nohup) inherits SIGINT ignored,
# and every process it starts would too (an ignored signal stays ignored across exec): the Ctrl-C tests would
# see their stages carry on. Python's own handler here; a process started from here gets the default again.
signal.signal(signal.SIGINT, signal.default_int_handler)
# One training process per stage, in this process and the commands it starts (as helpers.project_env):
# the tests run two files at once on 2 cores. A test that wants the process pool sets it itself.
os.environ.setdefault("PIPELINE_WORKERS", "1")
# A stage run from the checkout (cwd=ROOT) writes its observations/ and, with tracking on and no
# MLFLOW_TRACKING_URI, its MLflow store under the repo root: point that at a folder of the test
# session's own, never at the developer's workspace. Temp projects drop it (helpers.project_env).
os.environ["DVC_ROOT"] = tempfile.mkdtemp(prefix="pipeline-tests-root-")
atexit.register(shutil.rmtree, os.environ["DVC_ROOT"], True)  # this process's: xdist's controller makes one too


# The test files that take longest, slowest first, by their seconds in a full run (2026-12-06, 2 workers): pytest
# hands the files to its workers in this order (`--dist loadfile --no-loadscope-reorder` in pyproject.toml), so the
# long ones start first and the short ones fill the end. xdist's own order, files with more tests first, left one
# worker idle for the last 263 s of 1,206: it started docs/extending.md's 3 tests (339 s) at 747 s. Every other
# file comes after these, in its own order.
SLOWEST_FIRST = [
    "test_docs_pipelines.py",  # 339 s
    "test_docs_team.py",  # 283
    "test_cluster.py",  # 197
    "test_pipeline.py",  # 194
    "test_tracking.py",  # 170
    "test_docs.py",  # 164
    "test_faults.py",  # 157
    "test_reproducible.py",  # 120
    "test_decide.py",  # 115
    "test_tune.py",  # 111
    "test_experiments.py",  # 95
    "test_extending.py",  # 54
    "test_predict.py",  # 45
    "test_messages.py",  # 23
]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests keep their order


@pytest.fixture(scope="session", autouse=True)
def kernels_compiled():
    """numba's cache of the CPU kernels, filled once here and copied into every temp project."""
    compile_kernels_once()


@pytest.fixture
def idx_folder(tmp_path):
    folder = tmp_path / "mirror"
    return folder, write_idx_folder(folder)


@pytest.fixture
def split_dir(tmp_path):
    """A split folder as stage split writes it, from synthetic images."""
    import torch

    from pipeline.split import write_split

    train_images, train_labels = synthetic_images(600, seed=1)
    test_images, test_labels = synthetic_images(200, seed=2)
    folder = tmp_path / "split"
    folder.mkdir()
    write_split(
        folder,
        torch.from_numpy(train_images),
        torch.from_numpy(train_labels).long(),
        torch.from_numpy(test_images),
        torch.from_numpy(test_labels).long(),
        [str(c) for c in range(10)],
        "FashionMNIST",
        val_size=100,
        seed=0,
    )
    return folder


@pytest.fixture
def tiny_project(tmp_path, idx_folder):
    """A committed temp project on synthetic data, not yet reproduced."""
    folder, _ = idx_folder
    return make_project(tmp_path, shrunk_params(folder))


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory, worker_id):
    """README.md read on a fresh shrunk project (`make run`), results committed: (repo, env), read only; a page's
    test reads a copy (pages.copy_of). Built once per session: with pytest-xdist, by the first worker to ask,
    while the other waits (their common temp folder, a file lock)."""
    if worker_id == "master":  # one process (-n 0)
        return reproduce_readme(tmp_path_factory.mktemp("readme"))
    shared = tmp_path_factory.getbasetemp().parent
    with FileLock(shared / "readme.lock"):
        done = shared / "readme.json"
        if not done.is_file():
            (shared / "readme").mkdir()
            repo, env = reproduce_readme(shared / "readme")
            done.write_text(json.dumps([str(repo), env]))
        repo, env = json.loads(done.read_text())
        return Path(repo), env
