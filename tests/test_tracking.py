"""MLflow, for real: a SQLite store, a failing stage, an unreachable URI, a live `mlflow server`."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import mlflow
import pytest
import yaml
from helpers import ROOT, shrunk_params, train_cmd

from pipeline.errors import PipelineError
from pipeline.params import validate
from pipeline.train import train_variant


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_params(tmp_path, **overrides):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(shrunk_params("unused", **overrides)))
    return path


def test_a_failing_stage_leaves_a_failed_run_not_a_running_one(split_dir, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    params_path = write_params(tmp_path, **{"train.lr": 1.0e12})
    with pytest.raises(PipelineError, match="diverged"):
        train_variant(
            validate(yaml.safe_load(params_path.read_text())), "vanilla", split_dir, tmp_path / "models", params_path
        )
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["lenet5-variants"])
    assert sorted(zip(runs["tags.mlflow.runName"], runs["status"])) == [
        ("train@vanilla", "FAILED"),
        ("train@vanilla/seed0", "FAILED"),
    ]
    assert not (tmp_path / "models").exists()


def test_unreachable_store_is_one_clear_line(split_dir, tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    result = subprocess.run(
        train_cmd(write_params(tmp_path), split_dir, tmp_path),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: MLflow store {uri} cannot be used")
    assert not (tmp_path / "models").exists()


def test_tracking_disabled_needs_no_store(split_dir, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    params = write_params(tmp_path, **{"tracking.enabled": False})
    subprocess.run(
        train_cmd(params, split_dir, tmp_path), cwd=ROOT, env=env, check=True, capture_output=True, timeout=120
    )
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["seed0.pt", "seed1.pt"]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1, small (1 worker, no job runner), stopped by its PID."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None, "mlflow server exited"
                assert time.monotonic() < deadline, "mlflow server not up in 60 s"
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # its own process group: the worker goes too
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def rest(url, path, body):
    request = urllib.request.Request(
        f"{url}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_a_stage_logs_to_a_live_server(mlflow_server, split_dir, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    subprocess.run(
        train_cmd(write_params(tmp_path), split_dir, tmp_path),
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=180,
    )
    with urllib.request.urlopen(
        f"{mlflow_server}/api/2.0/mlflow/experiments/get-by-name?experiment_name=lenet5-variants", timeout=10
    ) as response:
        experiment_id = json.loads(response.read())["experiment"]["experiment_id"]
    found = rest(
        mlflow_server,
        "/api/2.0/mlflow/runs/search",
        {"experiment_ids": [experiment_id], "filter": "tags.variant = 'mlp'"},
    )["runs"]
    by_name = {r["info"]["run_name"]: r for r in found}
    assert sorted(by_name) == ["train@mlp", "train@mlp/seed0", "train@mlp/seed1"]
    parent = by_name["train@mlp"]
    for name in ("train@mlp/seed0", "train@mlp/seed1"):
        run = by_name[name]
        assert run["info"]["status"] == "FINISHED"
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert tags["mlflow.parentRunId"] == parent["info"]["run_id"]
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert params["variant.arch"] == "mlp" and params["train.epochs"] == "2"
        assert {m["key"] for m in run["data"]["metrics"]} >= {"val_acc", "train_loss", "lr"}
