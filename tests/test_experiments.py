"""DVC's experiment workflow for real: a queued grid, a bad -S value, the run-cache, retraining."""

import json
import re
import time
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pytest
from documented import documented
from helpers import run, stop_queue_workers
from pages import copy_of

from pipeline.compare import exp_show, flat_rows, rank

pytestmark = pytest.mark.slow
GRID = [("0.1", "true"), ("0.2", "true")]


@pytest.fixture(scope="module")
def project(reproduced, tmp_path_factory):
    """A copy of the session's README project (pages.copy_of): the real config shrunk, reproduced, committed."""
    repo, env = copy_of(reproduced, tmp_path_factory.mktemp("experiments"))
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


def test_queued_grid_and_a_bad_value(project):
    repo, env = project
    params_before = (repo / "params.yaml").read_bytes()
    run(
        [
            "dvc",
            "exp",
            "run",
            "--queue",
            "-S",
            "variants.dropout.model.dropout=0.1,0.2",
            "-S",
            "+variants.dropout.batchnorm=true",
        ],
        repo,
        env,
    )
    run(["dvc", "exp", "run", "--queue", "--name", "banana", "-S", "model.activation=banana"], repo, env)
    # MLflow's documented form, relative: it must resolve against the repo, not the queue's temp copy
    run(["dvc", "queue", "start", "-j", "2"], repo, {**env, "MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"})
    status = wait_for_queue(repo, env)

    # the bad value fails alone, with the validation error, and touches nothing
    assert re.search(r"banana\s.*Failed", status), status
    logs = run(["dvc", "queue", "logs", "banana"], repo, env, check=False).stdout
    assert "error: model.activation must be one of relu, tanh" in logs
    assert (repo / "params.yaml").read_bytes() == params_before

    rows = json.loads(run(["dvc", "exp", "show", "--json"], repo, env).stdout)
    done = [
        exp["revs"][0]
        for commit in rows
        for exp in (commit.get("experiments") or [])
        if exp["revs"][0]["data"].get("metrics") and not exp["revs"][0].get("error")
    ]
    combos = {
        (
            str(e["data"]["params"]["params.yaml"]["data"]["variants"]["dropout"]["model"]["dropout"]),
            str(e["data"]["params"]["params.yaml"]["data"]["variants"]["dropout"]["batchnorm"]).lower(),
        )
        for e in done
    }
    assert combos == set(GRID)
    names = {e["name"] for e in done}

    # every queued experiment landed its MLflow runs and artifacts in the workspace's store
    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("lenet5-variants")
    queued_runs = client.search_runs([experiment.experiment_id], "tags.dvc_exp_name != ''")
    by_exp = {}
    for r in queued_runs:
        by_exp.setdefault(r.data.tags["dvc_exp_name"], []).append(r.info.run_name)
    assert {n: sorted(v) for n, v in by_exp.items() if n in names} == {
        n: [f"evaluate@dropout {n}", "train@dropout-0", "train@dropout-1"] for n in names
    }
    # (the experiment's artifact root is the one the store was made with: the README project's, copied here)
    for r in queued_runs:
        assert r.info.artifact_uri.startswith(experiment.artifact_location) and ".dvc/tmp" not in r.info.artifact_uri
        if r.info.run_name.startswith("evaluate@"):  # the variant's run keeps the params file
            assert (Path(urlparse(r.info.artifact_uri).path) / "params.yaml").is_file()

    # the compare command ranks the configurations by mean val accuracy: against each experiment's own
    # metrics file, read from git (an experiment is a commit), not from `dvc exp show`
    ranked, changed = rank(flat_rows(exp_show(repo)), variant="dropout")
    assert sorted(changed) == ["variants.dropout.batchnorm", "variants.dropout.model.dropout"]
    val = {
        e["name"]: json.loads(run(["git", "show", f"{e['rev']}:metrics/dropout.json"], repo, env).stdout) for e in done
    }
    queued = [r for r in ranked if set(r["experiments"]) <= names]
    assert [r["experiments"] for r in queued] == [[n] for n in sorted(val, key=lambda n: -val[n]["val_acc_mean"])]
    assert all(r["val_acc"] == pytest.approx(val[r["experiments"][0]]["val_acc_mean"]) for r in queued)


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
