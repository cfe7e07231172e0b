"""MLflow, for real: a SQLite store, a failing stage, an unreachable URI, a live `mlflow server`."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import mlflow
import pytest
import yaml
from documented import documented
from helpers import (
    ROOT,
    free_port,
    make_project,
    run,
    shrunk_params,
    start_mlflow_server,
    stop_server,
    train_cmd,
    train_one,
    write_idx_folder,
    write_params,
)

from pipeline.errors import PipelineError
from pipeline.params import validate


def test_a_failing_stage_leaves_a_failed_run_not_a_running_one(split_dir, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    params_path = write_params(tmp_path, **{"train.lr": 1.0e12})
    with pytest.raises(PipelineError, match="diverged"):
        train_one(validate(yaml.safe_load(params_path.read_text())), "vanilla", split_dir, 0, tmp_path / "models/a.pt")
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["lenet5-variants"])
    assert sorted(zip(runs["tags.mlflow.runName"], runs["status"])) == [("train@vanilla-0", "FAILED")]
    assert not (tmp_path / "models").exists()


def train_stage(params, split_dir, tmp_path, uri):
    """Stage train as DVC runs it, logging to MLflow store `uri`: the finished process, output as text."""
    return subprocess.run(
        train_cmd(params, split_dir, tmp_path),
        cwd=ROOT,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_unreachable_store_is_one_clear_line(split_dir, tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = train_stage(write_params(tmp_path), split_dir, tmp_path, uri)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: MLflow store {uri} cannot be used")
    documented("cannot be used", result.stderr)
    assert not (tmp_path / "models").exists()


def test_tracking_disabled_needs_no_store_nor_mlflow(split_dir, tmp_path):
    """Tracking off: no store is opened, and MLflow is not even imported (about 1 s of every stage process)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    params = write_params(tmp_path, **{"tracking.enabled": False})
    python, *stage = train_cmd(params, split_dir, tmp_path)
    done = subprocess.run(
        [python, "-X", "importtime", *stage], cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=120
    )
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["seed0.pt"]
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert "pipeline.fitting" in imported and not [m for m in imported if m.split(".")[0] == "mlflow"]


@pytest.fixture
def mlflow_server(tmp_path):
    """(url, Popen) of a live server; stopped after the test."""
    port = free_port()
    server = start_mlflow_server(tmp_path, port)
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        stop_server(server)


def rest(url, path, body):
    request = urllib.request.Request(
        f"{url}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_a_stage_logs_to_a_live_server(mlflow_server, split_dir, tmp_path):
    mlflow_server, _ = mlflow_server
    result = train_stage(write_params(tmp_path), split_dir, tmp_path, mlflow_server)
    assert result.returncode == 0, result.stderr
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
    assert sorted(by_name) == ["train@mlp-0"]
    run = by_name["train@mlp-0"]
    assert run["info"]["status"] == "FINISHED"
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["dvc_stage"] == "train@mlp-0" and tags["seed"] == "0"
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["architecture.arch"] == "mlp" and params["train.epochs"] == "2" and params["seed"] == "0"
    assert "train.seeds" not in params  # the run config: what this seed's training read
    assert {m["key"] for m in run["data"]["metrics"]} >= {"val_acc", "train_loss", "lr"}


def start_training(params, split_dir, tmp_path, env, variant="mlp"):
    """The train stage as a background process of its own group, its stdout in a file."""
    log = tmp_path / "stage.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            train_cmd(params, split_dir, tmp_path, variant),
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    return proc, log


def wait_for_epochs(log, count, timeout=120):
    deadline = time.monotonic() + timeout
    while log.read_text().count(" epoch ") < count:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


@pytest.mark.slow  # a whole stage killed or its server stopped: the full tier (make test)
def test_a_server_stopped_mid_run_is_a_warning_and_the_outputs_are_complete(mlflow_server, split_dir, tmp_path):
    url, server = mlflow_server
    params = write_params(tmp_path, **{"train.epochs": 40, "train.seeds": [0]})
    proc, log = start_training(params, split_dir, tmp_path, {**os.environ, "MLFLOW_TRACKING_URI": url})
    wait_for_epochs(log, 2)
    stop_server(server)
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    warnings = stderr.strip().splitlines()
    assert 1 <= len(warnings) <= 2 and all(w.startswith("warning: MLflow: ") for w in warnings), stderr
    assert "the DVC outputs are complete" in warnings[0] and "Traceback" not in stderr
    documented("not mirrored to", warnings[0])
    assert (tmp_path / "models" / "seed0.pt").is_file()

    # The runs finished while the server was down; back up, the next command that opens the store says so
    client = mlflow.MlflowClient(url)
    server = start_mlflow_server(tmp_path, int(url.rsplit(":", 1)[1]))  # the same store, the same address
    try:
        assert {r.info.status for r in client.search_runs(["1"])} == {"RUNNING"}
        opened = predict_model_uri("models:/nosuch@x", {**os.environ, "MLFLOW_TRACKING_URI": url})
        assert "marked KILLED" not in opened.stdout, opened.stdout
        runs = client.search_runs(["1"])
        assert len(runs) == 1 and {r.info.status for r in runs} == {"FINISHED"}
        # and the tag evaluate finds a seed's run by, which the store could not take either: no false "no run
        # of this store trained seed 0" later
        md5 = hashlib.md5((tmp_path / "models" / "seed0.pt").read_bytes()).hexdigest()
        assert runs[0].data.tags["checkpoint_md5"] == md5
    finally:
        stop_server(server)


def predict_model_uri(uri, env):
    """`python -m pipeline.predict <uri>`: a command that opens the store without a run of its own."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.predict", uri], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow  # a whole stage killed or its server stopped: the full tier (make test)
def test_sigkill_leaves_nothing_stuck_once_the_next_commands_run(split_dir, tmp_path):
    """SIGKILL of the stage's process (the OOM killer): the next command that opens the store, whatever
    it is, ends its run KILLED; the next write into its folder removes a temp file it left."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    proc, log = start_training(write_params(tmp_path, **{"train.epochs": 300}), split_dir, tmp_path, env)
    wait_for_epochs(log, 1)
    os.kill(proc.pid, signal.SIGKILL)  # no clean-up of its own run
    proc.wait()
    # what a kill during the checkpoint's write leaves: a temp file named after the dead process
    (tmp_path / "models").mkdir(exist_ok=True)
    (tmp_path / "models" / f".seed0.pt.{proc.pid}.x1y2.tmp").write_bytes(b"half")
    client = mlflow.MlflowClient(uri)
    (experiment,) = client.search_experiments(filter_string="name = 'lenet5-variants'")
    assert [r.info.status for r in client.search_runs([experiment.experiment_id])] == ["RUNNING"]

    opened = predict_model_uri("models:/nosuch@x", env)  # not a stage: it only opens the store
    assert opened.returncode == 2 and opened.stdout.count("was left RUNNING by a dead process: marked KILLED") == 1
    documented("was left RUNNING by a dead process", opened.stdout)
    assert {r.info.status for r in client.search_runs([experiment.experiment_id])} == {"KILLED"}

    again = train_stage(write_params(tmp_path), split_dir, tmp_path, uri)  # the stage, into the same folder
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["seed0.pt"]


def test_relative_store_paths_resolve_against_the_repo_root(tmp_path, monkeypatch):
    from pipeline.mlflow_store import store_path, tracking_uri

    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    for given, expected in [
        ("sqlite:///mlflow.db", f"sqlite:///{tmp_path / 'mlflow.db'}"),
        ("sqlite:///stores/team.db?timeout=30", f"sqlite:///{tmp_path / 'stores/team.db'}?timeout=30"),
        ("sqlite:////srv/mlflow.db", "sqlite:////srv/mlflow.db"),
        ("file:mlruns", (tmp_path / "mlruns").as_uri()),
        ("./mlruns", (tmp_path / "mlruns").as_uri()),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ]:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", given)
        assert tracking_uri() == expected, given
    assert store_path("http://127.0.0.1:5000") is None


CREATE_AND_LOG = """
import sys
from pipeline import tracking
from pipeline.params import load_params
params = load_params(sys.argv[1])
with tracking.variant_run(params, "mlp", "train", sys.argv[1]) as run:
    run.log_metrics({"x": 1.0})
"""


def test_two_clones_create_one_new_store_at_once(tmp_path):
    store = tmp_path / "shared" / "mlflow.db"
    store.parent.mkdir()
    params = write_params(tmp_path)
    procs = []
    for clone in ("a", "b"):  # two clones: two repo roots, one store, started together
        (tmp_path / clone).mkdir()
        env = {**os.environ, "DVC_ROOT": str(tmp_path / clone), "MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
        env["PYTHONPATH"] = str(ROOT)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", CREATE_AND_LOG, str(params)],
                cwd=tmp_path / clone,
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc in procs:
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
    client = mlflow.MlflowClient(f"sqlite:///{store}")
    (experiment,) = client.search_experiments(filter_string="name = 'lenet5-variants'")
    assert experiment.artifact_location == (store.parent / "mlruns").as_uri()  # beside the store, not in a clone
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    assert not (tmp_path / "a" / ".mlflow.lock").exists() and (store.parent / "mlflow.db.lock").exists()


LOG_SPLIT_IN_ROUNDS = """
import contextlib, os, sys, time
from pipeline import tracking
from pipeline.data import load_split
from pipeline.params import load_params
params_path, split_dir, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
params, (images, labels) = load_params(params_path), load_split(split_dir, "train")
with contextlib.ExitStack() as stack:
    runs = []
    for r in range(rounds):  # each round a new experiment, so the split is new to it; its run opened now
        os.environ["MLFLOW_EXPERIMENT_NAME"] = f"round-{r}"
        runs.append(stack.enter_context(tracking.variant_run(params, "mlp", "train", params_path)))
    print("ready", flush=True)
    start = float(sys.stdin.readline())  # one instant for both processes, given once both are ready
    for r, run in enumerate(runs):
        time.sleep(max(0.0, start + 0.5 * r - time.time()))  # both processes log at the same instant
        run.log_dataset(split_dir, "train", images, labels, "synthetic")
"""


@pytest.mark.slow  # two processes racing for 16 rounds of half a second: the full tier (make test)
@pytest.mark.parametrize("store", ["server", "sqlite"])
def test_seeds_that_start_at_once_each_log_the_split(store, split_dir, tmp_path, request):
    """Two train stages that start together log the same split into an experiment that lacks it: MLflow's
    store lets both insert it and refuses one (BAD_REQUEST, a unique key). Each run keeps its input, with no
    warning. Before the fix, rounds that lost a run's mirror: 9 of 30 on a server, 21 of 30 on a SQLite file."""
    url = request.getfixturevalue("mlflow_server")[0] if store == "server" else f"sqlite:///{tmp_path / 'mlflow.db'}"
    params, rounds = write_params(tmp_path), 16
    env = {**os.environ, "MLFLOW_TRACKING_URI": url, "PYTHONPATH": str(ROOT), "DVC_ROOT": str(tmp_path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LOG_SPLIT_IN_ROUNDS, str(params), str(split_dir), str(rounds)],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    assert [proc.stdout.readline() for proc in procs] == ["ready\n"] * 2, [p.communicate() for p in procs]
    start = f"{time.time() + 1}\n"
    for proc in procs:  # to both before waiting for either
        proc.stdin.write(start)
        proc.stdin.flush()
    for proc in procs:
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0 and "warning" not in stderr, stderr
    client = mlflow.MlflowClient(url)
    for r in range(rounds):
        experiment = client.get_experiment_by_name(f"round-{r}")
        runs = client.search_runs([experiment.experiment_id])
        assert len(runs) == 2 and all(len(run.inputs.dataset_inputs) == 1 for run in runs), r


def test_a_deleted_experiment_is_one_line_saying_how_to_restore_it(split_dir, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment_id = client.create_experiment("lenet5-variants")
    client.delete_experiment(experiment_id)
    result = train_stage(write_params(tmp_path), split_dir, tmp_path, uri)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: MLflow experiment 'lenet5-variants' in {uri} is deleted: restore it with "
        f"`mlflow experiments restore --experiment-id {experiment_id}` or set tracking.experiment to a new name"
    ]
    documented("is deleted: restore it", result.stderr)


@pytest.mark.slow  # a whole stage killed or its server stopped: the full tier (make test)
def test_a_run_left_running_by_a_killed_process_is_marked_killed_by_the_next(split_dir, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    params = write_params(tmp_path, **{"train.epochs": 200, "train.seeds": [0]})
    proc, log = start_training(params, split_dir, tmp_path, env)
    wait_for_epochs(log, 1)
    os.killpg(proc.pid, signal.SIGKILL)  # as the out-of-memory killer would
    proc.wait()
    client = mlflow.MlflowClient(uri)
    (experiment,) = client.search_experiments(filter_string="name = 'lenet5-variants'")
    killed = client.search_runs([experiment.experiment_id])
    assert {r.info.status for r in killed} == {"RUNNING"} and len(killed) == 1

    result = train_stage(write_params(tmp_path, **{"train.seeds": [0]}), split_dir, tmp_path, uri)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("was left RUNNING by a dead process: marked KILLED") == 1
    status = {r.info.run_id: r.info.status for r in client.search_runs([experiment.experiment_id])}
    assert all(status[r.info.run_id] == "KILLED" for r in killed)
    assert sorted(status.values()) == ["FINISHED", "KILLED"]


@pytest.mark.slow
def test_a_server_stopped_between_stages_fails_the_next_stage_and_a_rerun_finishes_the_job(tmp_path):
    """`dvc repro` against a team server that goes away after stage train: evaluate fails with one
    line naming the URI, the checkpoints stay, and once the server is back the same `dvc repro`
    finishes without training again."""
    write_idx_folder(tmp_path / "mirror")
    params = shrunk_params(tmp_path / "mirror", **{"train.epochs": 1})
    params["variants"] = {"vanilla": params["variants"]["vanilla"]}
    repo, env = make_project(tmp_path, params)
    port = free_port()
    env["MLFLOW_TRACKING_URI"] = url = f"http://127.0.0.1:{port}"
    server = start_mlflow_server(tmp_path, port)
    try:
        run(["dvc", "repro", "train@vanilla-0", "train@vanilla-1"], repo, env)
        checkpoints = {p.name: p.read_bytes() for p in (repo / "data/models/vanilla").iterdir()}
    finally:
        stop_server(server)

    failed = run(["dvc", "repro"], repo, env, check=False)
    assert failed.returncode != 0
    ours = [line for line in failed.stderr.splitlines() if line.startswith("error: ")]
    assert len(ours) == 1 and ours[0].startswith(f"error: MLflow store {url} cannot be used"), failed.stderr
    assert "Traceback" not in failed.stderr and "Running stage 'evaluate@vanilla'" in failed.stdout
    assert {p.name: p.read_bytes() for p in (repo / "data/models/vanilla").iterdir()} == checkpoints
    assert not (repo / "metrics/vanilla.json").exists()

    server = start_mlflow_server(tmp_path, port)  # the same store, back on the same address
    try:
        done = run(["dvc", "repro"], repo, env).stdout
    finally:
        stop_server(server)
    assert "Running stage 'train@vanilla" not in done and "Running stage 'evaluate@vanilla'" in done
    assert (repo / "report.md").is_file() and json.loads((repo / "metrics/vanilla.json").read_text())["seeds"] == 2
