"""The train stages on a real Ray cluster: a head and two one-CPU nodes on 127.0.0.x, each in folders of its
own (tests/helpers.RayCluster), the team's MLflow server, tiny data. DVC records on the driver, so the record
is the one a local run writes; the faults of docs/cluster.md, each for real."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import mlflow
import pytest
import yaml
from helpers import (
    RayCluster,
    free_port,
    make_project,
    run,
    shrunk_params,
    start_mlflow_server,
    stop_server,
    write_idx_folder,
)

from pipeline.cluster import host_port
from pipeline.errors import PipelineError


def test_a_cluster_address_is_host_port_or_ray_client():
    assert host_port("10.0.0.5:6379") == ("10.0.0.5", 6379)
    assert host_port("ray://head.example:10002") == ("head.example", 10002)
    assert host_port("ray://head") == ("head", 10001)  # Ray Client's default port
    for bad in ("head", "10.0.0.5:port", "http://head"):
        with pytest.raises(PipelineError, match=f"RAY_ADDRESS '{re.escape(bad)}' is not host:port or ray://host:port"):
            host_port(bad)


@pytest.fixture(scope="module")
def cluster():
    nodes = RayCluster()
    yield nodes
    nodes.stop()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A committed tiny project (one variant, two seeds) after a local `make run` (no cluster)."""
    tmp = tmp_path_factory.mktemp("cluster-project")
    write_idx_folder(tmp / "mirror", contrast=35)
    params = shrunk_params(tmp / "mirror")
    params["variants"] = {"vanilla": params["variants"]["vanilla"]}
    repo, env = make_project(tmp, params)
    env.pop("RAY_ADDRESS", None)
    run([sys.executable, "scripts/repro.py"], repo, {**env, "PIPELINE_WORKERS": "2"})
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "results"], repo, env)
    return repo, env


def recorded(repo):
    """{path: bytes} of what DVC and git keep: dvc.lock, the checkpoints, metrics, plots, the report."""
    files = [p for folder in ("data/models", "metrics", "plots") for p in (repo / folder).rglob("*") if p.is_file()]
    return {str(p.relative_to(repo)): p.read_bytes() for p in files + [repo / "dvc.lock", repo / "report.md"]}


def clone(reference, tmp_path, name="clone"):
    repo, env = reference
    target = tmp_path / name
    run(["git", "clone", "-q", str(repo), str(target)], tmp_path, env)
    return target


@pytest.mark.slow
def test_a_cluster_run_records_what_a_local_run_records(cluster, reference, tmp_path):
    """`RAY_ADDRESS=... make run` in a fresh clone (no DVC cache: every train stage trains on a node): the same
    bytes as the local run, a clean `git status`, and every seed's run on the team server with its node."""
    repo = clone(reference, tmp_path)
    port = free_port()
    server = start_mlflow_server(tmp_path, port)
    try:
        env = {**reference[1], "RAY_ADDRESS": cluster.address, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
        env.pop("PIPELINE_WORKERS")  # as many at once as the cluster has CPUs
        out = run([sys.executable, "scripts/repro.py"], repo, env).stdout
        client = mlflow.MlflowClient(f"http://127.0.0.1:{port}")
        experiment = client.get_experiment_by_name("lenet5-variants")
        seeds = client.search_runs([experiment.experiment_id], "attributes.run_name LIKE 'train@%-%'")
    finally:
        stop_server(server)
    assert run(["git", "status", "--porcelain"], repo, reference[1]).stdout == ""
    before, after = recorded(reference[0]), recorded(repo)
    assert sorted(after) == sorted(before) and [path for path in before if before[path] != after[path]] == []
    # one bar's worth of stages, two at once (the cluster's 2 CPUs), and where each ran
    (summary,) = [line for line in out.splitlines() if line.startswith("2 train stage(s) in ")]
    assert ", 2 at once: " in summary
    counts = re.findall(r"(\d+) on \S+ \((127\.0\.0\.[34])\)", summary)
    assert sum(int(n) for n, _ in counts) == 2, summary
    for stage in ("train@vanilla-0", "train@vanilla-1"):
        assert "trained on node " in (repo / f"observations/repro/{stage}.log").read_text()
    assert len(seeds) == 2 and {r.info.status for r in seeds} == {"FINISHED"}
    logs = "".join((repo / f"observations/repro/train@vanilla-{k}.log").read_text() for k in (0, 1))
    assert all(r.data.tags.get("ray_node", "").endswith(")") and len(r.data.metrics) >= 4 for r in seeds), logs
    observed = json.loads((repo / "observations/train/vanilla/seed0.json").read_text())
    assert re.fullmatch(r"\S+ \(127\.0\.0\.[34]\)", observed["node"])


@pytest.mark.slow
def test_a_cluster_nobody_answers_at_is_one_line_before_anything_starts(reference, tmp_path):
    repo = clone(reference, tmp_path)
    address = f"127.0.0.2:{free_port()}"
    env = {**reference[1], "RAY_ADDRESS": address}
    result = run([sys.executable, "scripts/repro.py"], repo, env, check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        f"error: no Ray cluster answers at {address} (RAY_ADDRESS: Connection refused): start its head with "
        "`ray start --head` (docs/cluster.md), or unset RAY_ADDRESS to train on this machine\n"
    )
    assert not (repo / "observations").exists()  # no stage ran
    # a plain `dvc repro` of a train stage says the same, before an MLflow run opens
    run(["dvc", "repro", "split"], repo, {**env, "RAY_ADDRESS": ""})
    stage = run(["dvc", "repro", "--single-item", "train@vanilla-0"], repo, env, check=False)
    assert stage.returncode != 0 and f"error: no Ray cluster answers at {address}" in stage.stderr
    assert not (repo / "mlflow.db").exists()


def start_repro(repo, env, log):
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "scripts/repro.py"], cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def wait_for_work(cluster, process, log, timeout=120):
    """The nodes running a training task, once one is."""
    deadline = time.monotonic() + timeout
    while not (busy := [ip for ip in cluster.nodes if cluster.workers_of(ip)]):
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "no task reached a node"
        time.sleep(0.2)
    return busy


def long_training(repo, env, epochs):
    """The project's params with one variant and one seed trained for `epochs`: a stage of several seconds."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["variants"] = {"vanilla": params["variants"]["vanilla"]}
    params["train"].update(seeds=[0], epochs=epochs)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "commit", "-qam", "one long seed"], repo, env)


@pytest.mark.slow
def test_ctrl_c_on_the_driver_cancels_the_tasks_and_leaves_no_running_run(cluster, reference, tmp_path):
    repo = clone(reference, tmp_path)
    env = {k: v for k, v in reference[1].items() if k != "PIPELINE_WORKERS"}
    long_training(repo, env, epochs=400)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["seeds"] = [0, 1]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = tmp_path / "repro.log"
    driver = start_repro(repo, {**env, "RAY_ADDRESS": cluster.address}, log)
    busy = wait_for_work(cluster, driver, log)
    time.sleep(1)
    os.killpg(driver.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole process group
    try:
        assert driver.wait(timeout=120) == 130
    finally:  # a failure leaves no 400-epoch training behind
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    out = log.read_text()
    assert "interrupted: 2 train stage(s) were running, 0 not started" in out, out
    for stage in ("train@vanilla-0", "train@vanilla-1"):
        assert f"  {stage}: interrupted: the stage stopped before it finished" in out
    deadline = time.monotonic() + 30
    while any(cluster.workers_of(ip) for ip in busy):  # ray.cancel(force=True) ends the node's worker
        assert time.monotonic() < deadline, "a task kept running on its node after Ctrl-C"
        time.sleep(0.5)
    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs and "RUNNING" not in {r.info.status for r in runs}


@pytest.mark.slow
def test_a_node_killed_mid_stage_and_the_run_completes_on_another(cluster, reference, tmp_path):
    """The node running the only seed dies (its raylet and worker SIGKILLed): Ray runs the task again on the
    other node, the stage is recorded once, its MLflow run once, and the checkpoint is a local run's."""
    repo = clone(reference, tmp_path)
    env = {k: v for k, v in reference[1].items() if k != "PIPELINE_WORKERS"}
    long_training(repo, env, epochs=25)
    log = tmp_path / "repro.log"
    driver = start_repro(repo, {**env, "RAY_ADDRESS": cluster.address}, log)
    (victim,) = wait_for_work(cluster, driver, log)
    time.sleep(1)
    cluster.kill(victim)
    assert driver.wait(timeout=300) == 0, log.read_text()
    (survivor,) = cluster.nodes.keys() - {"127.0.0.2"}
    stage_log = (repo / "observations/repro/train@vanilla-0.log").read_text()
    assert stage_log.count("trained on node ") == 1 and f"({survivor})" in stage_log
    assert "1 train stage(s) in " in log.read_text()
    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "attributes.run_name = 'train@vanilla-0'"
    )
    assert [r.info.status for r in runs] == ["FINISHED"] and runs[0].data.tags["ray_node"].endswith(f"({survivor})")
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["train@vanilla-0"]["outs"][0]["md5"]
    local_env = {**env, "RAY_ADDRESS": ""}
    run(["dvc", "repro", "--force", "--single-item", "train@vanilla-0"], repo, local_env)
    assert yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["train@vanilla-0"]["outs"][0]["md5"] == lock


@pytest.mark.slow
def test_a_node_without_the_projects_venv_is_one_line_naming_it(reference, tmp_path):
    """A node whose Ray was started from a Python with Ray alone (no torch): the stage fails in one line that
    names the node and the fix, and its MLflow run is FAILED, not RUNNING."""
    bare = tmp_path / "bare-venv"
    run([sys.executable, "-m", "venv", str(bare)], tmp_path)
    run([str(bare / "bin/pip"), "install", "--quiet", "--disable-pip-version-check", "ray==2.60.0"], tmp_path)
    repo = clone(reference, tmp_path)
    env = {**reference[1], "RAY_ADDRESS": ""}
    run(["dvc", "repro", "split"], repo, env)
    nodes = RayCluster(workers=0)
    try:
        nodes.add_node("127.0.0.5", ray=str(bare / "bin/ray"))
        stage = run(
            ["dvc", "repro", "--single-item", "train@vanilla-0"], repo, {**env, "RAY_ADDRESS": nodes.address}, False
        )
    finally:
        nodes.stop()
    (ours,) = [line for line in stage.stderr.splitlines() if line.startswith("error: ")]
    assert re.match(  # then the restore advice of any failed stage (pipeline/errors.py)
        r"error: node \S+ \(127\.0\.0\.5\): No module named 'torch'; start the node's Ray from the project's "
        r"venv \(`\.venv/bin/ray start --address \.\.\.`, docs/cluster\.md\); DVC removed",
        ours,
    ), stage.stderr
    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.status for r in runs] == ["FAILED"]
