"""Faults a user meets: each is one line, leaves nothing half-written, and says the way back."""

import os
import signal
import subprocess
import time

import pytest
import torch
from helpers import ROOT, shrunk_params, train_cmd, write_params

from pipeline.checkpoint import load_checkpoint
from pipeline.engine import batches
from pipeline.errors import PipelineError
from pipeline.params import ParamsError, validate
from pipeline.train import train_seed


def test_a_last_batch_of_one_joins_the_batch_before():
    assert [len(b) for b in batches(torch.arange(10), 3)] == [3, 3, 4]
    assert [len(b) for b in batches(torch.arange(9), 3)] == [3, 3, 3]
    assert [len(b) for b in batches(torch.arange(1), 3)] == [1]
    assert torch.equal(torch.cat(batches(torch.arange(10), 3)), torch.arange(10))


def test_batch_norm_trains_when_the_split_leaves_a_batch_of_one(split_dir):
    # 500 training images in batches of 499: PyTorch's batch norm raised on the last batch of one
    params = validate(shrunk_params("unused", **{"tracking.enabled": False, "train.batch_size": 499}))
    _, history = train_seed(params, "batchnorm", split_dir, seed=0)
    assert len(history) == 2


def test_batch_norm_with_batches_of_one_is_refused():
    with pytest.raises(
        ParamsError, match=r"train.batch_size must be >= 2 for variant batchnorm, which uses batch norm; got 1"
    ):
        validate(shrunk_params("unused", **{"train.batch_size": 1}))


def test_a_training_split_smaller_than_one_batch_is_one_line(split_dir, tmp_path):
    params = write_params(tmp_path, **{"tracking.enabled": False, "train.batch_size": 501})
    result = subprocess.run(train_cmd(params, split_dir, tmp_path), cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: the training split holds 500 images, fewer than one batch (train.batch_size 501): "
        "lower train.batch_size or data.val_size (100)"
    ]
    assert not (tmp_path / "models").exists()


def test_a_damaged_checkpoint_is_one_line_naming_it_and_the_way_back(tmp_path):
    path = tmp_path / "models" / "vanilla" / "seed0.pt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:2000])  # truncated, as by a full disk
    with pytest.raises(PipelineError) as error:
        load_checkpoint(path, "cpu")
    message = str(error.value)
    assert message.startswith(f"{path} cannot be read (") and "\n" not in message
    assert f"dvc checkout {path.parent}" in message and "dvc repro --force train@vanilla" in message


@pytest.mark.parametrize(
    "kill, code",
    [
        (lambda pid: os.killpg(pid, signal.SIGINT), 130),  # what Ctrl-C sends: every process of the group
        (lambda pid: os.kill(pid, signal.SIGTERM), 143),  # `kill <pid>`, a scheduler: the stage's process only
    ],
    ids=["ctrl-c", "sigterm"],
)
def test_an_interrupt_is_one_line_and_leaves_no_output_or_worker(split_dir, tmp_path, kill, code):
    params = write_params(tmp_path, **{"tracking.enabled": False, "train.epochs": 200, "train.workers": 2})
    log = tmp_path / "log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            train_cmd(params, split_dir, tmp_path, "vanilla"),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, as a terminal's foreground job
        )
    deadline = time.monotonic() + 120
    while log.read_text().count(" epoch ") < 2 and time.monotonic() < deadline:  # both workers training
        time.sleep(0.2)
    children = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()
    kill(proc.pid)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code
    assert stderr.splitlines() == ["interrupted: the stage stopped and left its previous outputs as they were"]
    assert not (tmp_path / "models").exists() and not list(tmp_path.glob(".models.*"))
    deadline = time.monotonic() + 10  # the workers and multiprocessing's resource tracker exit right after
    while [p for p in children if os.path.exists(f"/proc/{p}")] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(children) >= 3 and not [p for p in children if os.path.exists(f"/proc/{p}")]
