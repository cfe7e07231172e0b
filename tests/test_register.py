"""`python -m pipeline.register`'s failures: each one line naming the file or store and what to run."""

import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT, write_params


@pytest.fixture
def project(tmp_path):
    """Shrunk params, each variant's metrics (mlp best on validation, vanilla best on test), no checkpoint."""
    params = write_params(tmp_path, **{"tracking.enabled": True, "tracking.experiment": "register-test"})
    (tmp_path / "metrics").mkdir()
    for name, val, test in [
        ("vanilla", 0.80, 0.95),
        ("batchnorm", 0.81, 0.8),
        ("dropout", 0.7, 0.7),
        ("weight_decay", 0.7, 0.7),
        ("mlp", 0.9, 0.6),
    ]:
        metrics = {"val_acc_mean": val, "test_acc_mean": test, "seeds": 2}
        (tmp_path / "metrics" / f"{name}.json").write_text(json.dumps(metrics))
    return tmp_path, params


def register(tmp_path, params, store, **environ):
    command = [
        sys.executable,
        "-m",
        "pipeline.register",
        "--params",
        str(params),
        "--models",
        str(tmp_path / "models"),
        "--metrics",
        str(tmp_path / "metrics"),
    ]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_EXPERIMENT_NAME"}
    env.update(MLFLOW_TRACKING_URI=store, **environ)
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)


def last_line(result):
    assert result.returncode == 2, result.stderr
    return result.stderr.strip().splitlines()[-1]


def test_missing_metrics_and_a_missing_checkpoint(project):
    tmp_path, params = project
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "metrics/dropout.json").unlink()
    missing = tmp_path / "metrics/dropout.json"
    assert last_line(register(tmp_path, params, store)) == f"error: {missing} not found: run `dvc repro` first"
    (tmp_path / "metrics/dropout.json").write_text(json.dumps({"val_acc_mean": 0.7, "test_acc_mean": 0.7}))
    checkpoint = tmp_path / "models/mlp/seed0.pt"  # the best on validation, never the best on test
    assert last_line(register(tmp_path, params, store)) == (
        f"error: {checkpoint} not found: `dvc checkout {checkpoint}`, or `dvc repro` to train it"
    )


@pytest.mark.parametrize("exported", [None, "lenet5-tuned"])
def test_a_checkpoint_no_run_of_the_store_trained(project, exported):
    """The line names the store and the experiment it searched: MLFLOW_EXPERIMENT_NAME's where a shell exported
    it (docs/team.md's workers do), else tracking.experiment."""
    tmp_path, params = project
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    checkpoint = tmp_path / "models/mlp/seed0.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"a checkpoint DVC restored from its cache: no run logged it here")
    environ = {"MLFLOW_EXPERIMENT_NAME": exported} if exported else {}
    line = last_line(register(tmp_path, params, store, **environ))
    assert line == (
        f"error: no run in {store}, experiment {exported or 'register-test'}, trained {checkpoint} (tracking was "
        "off, DVC restored it from its cache, or it trained against another store or experiment: "
        "MLFLOW_EXPERIMENT_NAME, if set, names the one searched): retrain it with `dvc repro --force train@mlp-0`"
    )
