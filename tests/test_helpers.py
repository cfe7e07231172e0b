"""The test harness's own guarantees: a stuck or forking command can't wedge the suite."""

import os
import signal
import time

import pytest
from helpers import run


def test_run_does_not_wait_for_what_the_command_left_running(tmp_path):
    # like `dvc queue start`, whose forked helpers keep its stdout open while workers live
    start = time.monotonic()
    result = run(["bash", "-c", "sleep 30 & echo $! > sleeper.pid; echo started"], tmp_path)
    elapsed = time.monotonic() - start
    os.kill(int((tmp_path / "sleeper.pid").read_text()), signal.SIGKILL)  # leave no process behind
    assert result.stdout == "started\n"
    assert elapsed < 10


def test_run_kills_a_command_that_overruns_its_timeout(tmp_path):
    start = time.monotonic()
    with pytest.raises(AssertionError, match=r"timed out after 1 s(.|\n)*stdout:\nbegun"):
        run(["bash", "-c", "echo begun; sleep 30"], tmp_path, timeout=1)
    assert time.monotonic() - start < 10
