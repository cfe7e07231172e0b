"""DVC's experiment workflow for real: a bad value in the queue, a bad -S value, the run-cache, retraining."""

import json
import re
import time

import pytest
from documented import documented
from helpers import run, stop_queue_workers
from pages import copy_of, without_tracking

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(reproduced, tmp_path_factory):
    """A copy of the session's README project (pages.copy_of): the real config shrunk, reproduced, committed; tracking
    off (pages.without_tracking: nothing here reads MLflow)."""
    repo, env = copy_of(reproduced, tmp_path_factory.mktemp("experiments"))
    without_tracking(repo, env)
    yield repo, env
    stop_queue_workers(repo)  # a worker can hang at shutdown after its tasks are done


def wait_for_queue(repo, env, timeout=540):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], repo, env).stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            return status
        time.sleep(2)
    logs = "\n".join(
        f"== {f.name}\n{f.read_text()[-3000:]}" for f in sorted((repo / ".dvc/tmp/exps/celery").glob("*.out"))
    )
    raise AssertionError(f"queue not done in {timeout} s:\n{status}\n{logs}")


def test_a_bad_value_in_the_queue_fails_alone(project):
    """docs/experiments.md: "A value that is not valid fails that experiment with the one-line error and leaves the
    others alone". (The page's own queued grid, read in tests/test_docs.py, checks where queued runs log.)"""
    repo, env = project
    params_before = (repo / "params.yaml").read_bytes()
    # beside it, an experiment that re-runs only check and report (report.margin is read by report alone)
    run(["dvc", "exp", "run", "--queue", "--name", "margin", "-S", "report.margin=0.004"], repo, env)
    run(["dvc", "exp", "run", "--queue", "--name", "banana", "-S", "model.activation=banana"], repo, env)
    run(["dvc", "queue", "start", "-j", "2"], repo, env)
    status = wait_for_queue(repo, env)

    # the bad value fails alone, with the validation error, and touches nothing
    assert re.search(r"banana\s.*Failed", status) and re.search(r"margin\s.*Success", status), status
    logs = run(["dvc", "queue", "logs", "banana"], repo, env, check=False).stdout
    assert "error: model.activation must be one of relu, tanh" in logs
    assert (repo / "params.yaml").read_bytes() == params_before
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], repo, env).stdout.split()
    assert [ref.rsplit("/", 1)[1] for ref in refs if ref.endswith(("/margin", "/banana"))] == ["margin"], refs


def outputs(repo):
    return {
        p: p.read_bytes() for d in ("data/models", "plots", "metrics") for p in (repo / d).rglob("*") if p.is_file()
    }


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "train.batch_size=0",
            "error: train.batch_size must be >= 1, got 0 (fix params.yaml, or restore it: git checkout params.yaml)",
        ),
        ("tracking.enabled=maybe", "error: tracking.enabled must be true or false, got 'maybe'"),
    ],
)
def test_a_bad_value_fails_before_any_output_is_removed(project, override, message):
    repo, env = project
    before = outputs(repo) | {repo / "report.md": (repo / "report.md").read_bytes()}
    result = run(["dvc", "exp", "run", "-S", override], repo, env, check=False)
    log = result.stdout + result.stderr
    assert result.returncode != 0 and message in log, log
    if override == "train.batch_size=0":
        documented("must be >= 1", log)
    assert "Running stage 'check'" in log and "Running stage 'train@" not in log
    assert outputs(repo) | {repo / "report.md": (repo / "report.md").read_bytes()} == before
    run(["git", "checkout", "params.yaml"], repo, env)  # the one-line way back
    assert "up to date" in run(["dvc", "status"], repo, env).stdout


def test_same_experiment_again_comes_from_the_run_cache(project):
    repo, env = project
    first = run(["dvc", "exp", "run", "-S", "variants.dropout.model.dropout=0.4"], repo, env).stdout
    assert "Running stage 'train@dropout-0'" in first
    assert "Running stage 'train@vanilla" not in first and "Stage 'evaluate@vanilla' didn't change" in first
    metrics = (repo / "metrics/dropout.json").read_text()
    run(["dvc", "exp", "run", "-S", "variants.dropout.model.dropout=0.3"], repo, env)
    again = run(["dvc", "exp", "run", "-S", "variants.dropout.model.dropout=0.4"], repo, env).stdout
    assert "Stage 'train@dropout-0' is cached - skipping run" in again, again
    assert (repo / "metrics/dropout.json").read_text() == metrics


def test_retraining_gives_bit_identical_metrics(project):
    repo, env = project
    before = json.loads((repo / "metrics/vanilla.json").read_text())
    run(
        ["dvc", "repro", "--force", "--single-item", "train@vanilla-0", "train@vanilla-1", "evaluate@vanilla"],
        repo,
        env,
    )
    after = json.loads((repo / "metrics/vanilla.json").read_text())
    assert before["seeds"] == 2 and "test_acc_seed1" in before
    assert after == before
