"""The team MLflow server for real: scripts/mlflow-server.sh with PostgreSQL and artifacts on moto's S3.

A shrunk pipeline logs to it over HTTP, by the machine's host name and with a
teammate's login (MLflow's basic-auth app); the runs, their metrics and
artifacts are read back through the REST API and from the bucket; the registry
alias resolves. Without a login, and by a host name the server does not list,
a stage fails with one line saying which. PostgreSQL comes from Debian's
`postgresql` (`make test` installs it): without it these tests fail.
"""

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import boto3
import pytest
import yaml
from helpers import (
    ROOT,
    S3_CREDENTIALS,
    free_port,
    make_project,
    run,
    s3_server,
    shrunk_params,
    train_cmd,
    wait_for_url,
    write_idx_folder,
)

pytestmark = pytest.mark.slow
BUCKET = "team-mlflow"
TEAMMATE = ("alice", "wonderland-rabbit")  # MLflow wants 12+ characters
# A host name clients use, resolving to this machine's loopback (the hosts file names the machine);
# the server lists it. 127.0.0.1 it does not list: a client using it is refused (HTTP 403).
HOST = socket.gethostname()


def login_env(env):
    return {**env, "MLFLOW_TRACKING_USERNAME": TEAMMATE[0], "MLFLOW_TRACKING_PASSWORD": TEAMMATE[1]}


@pytest.fixture(scope="module")
def server():
    """scripts/mlflow-server.sh on free ports, its PostgreSQL in a temp folder, artifacts on moto: the URL."""
    assert socket.gethostbyname(HOST).startswith("127."), f"the hosts file should map {HOST} to 127.0.0.1"
    with s3_server(BUCKET) as s3_url:
        pgdata = Path(tempfile.mkdtemp(dir="/tmp", prefix="mlflow-pg-"))  # outside pytest's 0700 tree
        state = Path(tempfile.mkdtemp(prefix="mlflow-state-"))
        (state / "users").write_text(f"{TEAMMATE[0]}:{TEAMMATE[1]}\n")
        port = free_port()
        env = {
            **os.environ,
            **S3_CREDENTIALS,
            "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{BUCKET}/mlflow",
            "MLFLOW_S3_ENDPOINT_URL": s3_url,
            "PGDATA": str(pgdata),
            "PGPORT": str(free_port()),
            "MLFLOW_PORT": str(port),
            "MLFLOW_BIN": str(Path(sys.executable).parent / "mlflow"),
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "STATE": str(state),
            "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-password-for-tests",
            "MLFLOW_USERS_FILE": str(state / "users"),
            "MLFLOW_ALLOWED_HOSTS": HOST,
        }
        env.pop("MLFLOW_BACKEND_STORE_URI", None)
        log = tempfile.TemporaryFile("w+")  # the server's output, shown if it fails to start
        proc = subprocess.Popen(
            [str(ROOT / "scripts/mlflow-server.sh")], env=env, stdout=log, stderr=log, start_new_session=True
        )
        url = f"http://{HOST}:{port}"
        try:
            try:
                wait_for_url(f"{url}/health", proc, timeout=120)
                deadline = time.monotonic() + 60  # the teammate's account, made once the server answers
                while "user alice created" not in (log.seek(0) or log.read()):
                    assert time.monotonic() < deadline and proc.poll() is None, "no user created"
                    time.sleep(0.5)
            except AssertionError:
                log.seek(0)
                raise AssertionError(log.read()[-3000:]) from None
            yield url, s3_url
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # MLflow exits; the script's trap stops PostgreSQL
            except ProcessLookupError:  # exited already (a failed start)
                pass
            proc.wait(timeout=60)
            log.close()
            pg_running = (pgdata / "postmaster.pid").exists()
            subprocess.run(["rm", "-rf", str(pgdata), str(state)], check=False)
            assert not pg_running, "PostgreSQL was left running"


def rest(url, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    login = base64.b64encode(":".join(TEAMMATE).encode()).decode()
    headers = {"Content-Type": "application/json", "Authorization": f"Basic {login}"}
    request = urllib.request.Request(f"{url}{path}", data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=20) as response:
        return json.loads(response.read())


def test_a_pipeline_logs_to_the_team_server_and_the_champion_resolves(server, tmp_path):
    url, s3_url = server
    write_idx_folder(tmp_path / "mirror")
    params = shrunk_params(tmp_path / "mirror")
    params["variants"] = {k: params["variants"][k] for k in ("vanilla", "mlp")}
    params["report"]["baseline"] = "vanilla"
    repo, env = make_project(tmp_path, params)
    # by host name and with a login; no S3 credentials: the server serves the artifacts
    env = login_env({**env, "MLFLOW_TRACKING_URI": url})
    run(["dvc", "repro"], repo, env)
    registered = run([sys.executable, "-m", "pipeline.register"], repo, env).stdout

    experiment = rest(url, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=lenet5-variants")["experiment"]
    runs = rest(url, "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    by_name = {r["info"]["run_name"]: r for r in runs}
    assert {"evaluate@vanilla", "train@vanilla-0", "train@mlp-1"} <= set(by_name)
    parent = by_name["evaluate@vanilla"]
    metrics = json.loads((repo / "metrics/vanilla.json").read_text())
    logged = {m["key"]: m["value"] for m in parent["data"]["metrics"]}
    assert logged["test_acc_mean"] == pytest.approx(metrics["test_acc_mean"])
    listed = rest(url, f"/api/2.0/mlflow/artifacts/list?run_id={parent['info']['run_id']}")
    assert {"params.yaml", "metrics", "history", "confusion", "per_class"} <= {f["path"] for f in listed["files"]}
    listed = rest(url, f"/api/2.0/mlflow/artifacts/list?run_id={parent['info']['run_id']}&path=metrics")
    assert [f["path"] for f in listed["files"]] == ["metrics/vanilla.json"]

    s3 = boto3.client(
        "s3",
        endpoint_url=s3_url,
        aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
    )
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="mlflow/").get("Contents", [])]
    assert any(k.endswith("/params.yaml") for k in keys) and any("MLmodel" in k for k in keys)

    best = registered.split()[1]
    alias = rest(url, "/api/2.0/mlflow/registered-models/alias?name=lenet5-fashion-mnist&alias=champion")
    version = alias["model_version"]
    assert {t["key"]: t["value"] for t in version["tags"]}["variant"] == best
    assert version["run_id"] == by_name[f"train@{best}-0"]["info"]["run_id"]


@pytest.mark.parametrize(
    "how, line",
    [
        ("no login", "asks for a login and got none (HTTP 401): set MLFLOW_TRACKING_USERNAME"),
        ("a wrong password", "asks for a login and got a wrong one (HTTP 401)"),
        ("an address it does not list", "does not accept the host name '127.0.0.1' (HTTP 403"),
    ],
)
def test_a_client_the_server_refuses_gets_one_line(server, split_dir, tmp_path, how, line):
    url, _ = server
    port = url.rsplit(":", 1)[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    if how == "a wrong password":
        env = {**login_env(env), "MLFLOW_TRACKING_PASSWORD": "not-the-password"}
    if how == "an address it does not list":
        env, url = login_env(env), f"http://127.0.0.1:{port}"
    env["MLFLOW_TRACKING_URI"] = url
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(shrunk_params("unused")))
    result = subprocess.run(train_cmd(params, split_dir, tmp_path), cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 2
    (error,) = result.stderr.strip().splitlines()
    assert error.startswith(f"error: MLflow store {url} ") and line in error, error
    assert not (tmp_path / "models").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user (the postgres user)")
def test_the_server_starts_from_a_clone_the_postgres_user_cannot_reach(tmp_path):
    """Root's home is mode 700, so the postgres user cannot reach a clone there: the script keeps the cluster in
    the postgres user's home, says where, and serves; stopped, it leaves PostgreSQL stopped."""
    home = tmp_path / "root-home"
    home.mkdir(mode=0o700)
    state = home / "clone/.mlflow-server"
    port = free_port()
    env = {
        **os.environ,
        "STATE": str(state),
        "PGPORT": str(free_port()),
        "MLFLOW_PORT": str(port),
        "MLFLOW_BIN": str(Path(sys.executable).parent / "mlflow"),
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"),
        "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-password-for-tests",
    }
    for name in ("PGDATA", "MLFLOW_BACKEND_STORE_URI", "MLFLOW_USERS_FILE"):
        env.pop(name, None)
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(
        [str(ROOT / "scripts/mlflow-server.sh")], env=env, stdout=log, stderr=log, start_new_session=True
    )
    pgdata = None
    try:
        try:
            wait_for_url(f"http://localhost:{port}/health", proc, timeout=120)
        finally:
            output = log.seek(0) or log.read()
        line = next(line for line in output.splitlines() if line.startswith("PostgreSQL's data: "))
        pgdata = Path(line.removeprefix("PostgreSQL's data: ").split(" (")[0])
        assert pgdata.parent == Path("/var/lib/postgresql") and (pgdata / "PG_VERSION").is_file(), output
        assert f"the postgres user cannot reach {state}" in line
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        proc.wait(timeout=60)
        log.close()
        if pgdata is not None:
            running = (pgdata / "postmaster.pid").exists()
            subprocess.run(["rm", "-rf", str(pgdata)], check=False)
            assert not running, "PostgreSQL was left running"
