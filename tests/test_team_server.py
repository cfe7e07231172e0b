"""The team MLflow server for real: scripts/mlflow-server.sh with PostgreSQL and artifacts on moto's S3.

A shrunk pipeline logs to it over HTTP; the runs, their metrics and artifacts
are read back through the REST API and from the bucket; the registry alias
resolves. PostgreSQL's binaries come from Debian's `postgresql` (`make test`
installs it when it can; where they are absent the test is skipped, saying so).
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import boto3
import pytest
from helpers import (
    ROOT,
    S3_CREDENTIALS,
    free_port,
    make_project,
    run,
    s3_server,
    shrunk_params,
    wait_for_url,
    write_idx_folder,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")),
        reason="PostgreSQL is not installed (apt-get install postgresql; `make test` does it when root)",
    ),
]
BUCKET = "team-mlflow"


@pytest.fixture(scope="module")
def server():
    """scripts/mlflow-server.sh on free ports, its PostgreSQL in a temp folder, artifacts on moto: the URL."""
    with s3_server(BUCKET) as s3_url:
        pgdata = Path(tempfile.mkdtemp(dir="/tmp", prefix="mlflow-pg-"))  # outside pytest's 0700 tree
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
        }
        env.pop("MLFLOW_BACKEND_STORE_URI", None)
        log = tempfile.TemporaryFile("w+")  # the server's output, shown if it fails to start
        proc = subprocess.Popen(
            [str(ROOT / "scripts/mlflow-server.sh")], env=env, stdout=log, stderr=log, start_new_session=True
        )
        url = f"http://127.0.0.1:{port}"
        try:
            try:
                wait_for_url(f"{url}/health", proc, timeout=120)
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
            subprocess.run(["rm", "-rf", str(pgdata)], check=False)
            assert not pg_running, "PostgreSQL was left running"


def rest(url, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}{path}", data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=20) as response:
        return json.loads(response.read())


def test_a_pipeline_logs_to_the_team_server_and_the_champion_resolves(server, tmp_path):
    url, s3_url = server
    write_idx_folder(tmp_path / "mirror")
    params = shrunk_params(tmp_path / "mirror")
    params["variants"] = {k: params["variants"][k] for k in ("vanilla", "mlp")}
    params["report"]["baseline"] = "vanilla"
    repo, env = make_project(tmp_path, params)
    env = {**env, "MLFLOW_TRACKING_URI": url}  # clients need no S3 credentials: the server serves artifacts
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
    assert {"params.yaml", "vanilla.json"} <= {f["path"] for f in listed["files"]}

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
