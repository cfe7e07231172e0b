"""docs/team.md read as a team reads it (tests/reader.py), on real services on loopback: moto's S3 for the DVC
remote and the MLflow artifacts, a bare git repository as the team's, scripts/mlflow-server.sh with its own
PostgreSQL (scram-sha-256) and basic auth, Optuna's storage in that PostgreSQL. Your clone `lenet5/` and a
teammate's `../teammate` each follow the page; the page's server stays up for the checks of what its prose and
tables promise: the runs on the server, a checkpoint pulled back bit-identical, the registry's champion, each
refusal one line, an unreachable remote or bucket failing with DVC's message. PostgreSQL comes from Debian's
`postgresql` (`make test` installs it): without it these tests fail.
"""

import base64
import contextlib
import hashlib
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import boto3
import pytest
import yaml
from helpers import ROOT, S3_CREDENTIALS, free_port, run, s3_server, shrunk_params, shrunk_search, train_cmd
from pages import docs_project, read

pytestmark = pytest.mark.slow
TEAMMATE = ("alice", "wonderland-rabbit")  # the page's login
# The page's `vm`: a host name that resolves to this machine's loopback (the hosts file names the machine). The
# server lists it; 127.0.0.1 it does not list, so a client using that is refused (HTTP 403).
HOST = socket.gethostname()


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """The page read to its end, its server still up: (reader, tmp folder, moto's URL, the server's URL)."""
    assert socket.gethostbyname(HOST).startswith("127."), f"the hosts file should map {HOST} to 127.0.0.1"
    tmp = tmp_path_factory.mktemp("team")
    # one seed: every run the page makes (yours, the teammate's, make tune's final ones) trains one stage per
    # variant; the seeds' stages are the same code path, read on two seeds by the other pages
    build, env = docs_project(tmp / "build", variants=("vanilla", "dropout"), **{"train.seeds": [0]})
    repo = tmp / "lenet5"  # your clone, as the page names it, before anything records an absolute path
    shutil.move(build, repo)
    env = _without_aws(env)
    search = shrunk_search(("vanilla", "dropout"))  # the search's variants are the project's
    (repo / "tune/params.yaml").write_text(yaml.safe_dump(search, sort_keys=False))
    run(["make", "run"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "results, a shrunk search"], repo, env)
    origin = tmp / "origin.git"  # the team's git repository
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp, env)
    run(["git", "remote", "add", "origin", str(origin)], repo, env)
    run(["git", "push", "-q", "-u", "origin", "main"], repo, env)

    port, pgport = free_port(), free_port()
    pgdata = Path(tempfile.mkdtemp(dir="/tmp", prefix="mlflow-pg-"))  # outside pytest's 0700 tree
    venv = Path(sys.executable).parent.parent
    with contextlib.ExitStack() as stack:
        s3_url = stack.enter_context(s3_server("not-the-teams"))  # the page makes the team's bucket
        substitutions = {
            "AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...": "AWS_ACCESS_KEY_ID={AWS_ACCESS_KEY_ID} "
            "AWS_SECRET_ACCESS_KEY={AWS_SECRET_ACCESS_KEY}".format(**S3_CREDENTIALS),
            "http://127.0.0.1:5555": s3_url,
            "<the team's git URL>": str(origin),
            # the teammate's `make setup` finds the suite's venv installed (as pages.docs_project's)
            "make setup && ": f"ln -sfn {venv} .venv && touch -d @0 requirements.txt && make setup && ",
            "MLFLOW_AUTH_ADMIN_PASSWORD=...": "MLFLOW_AUTH_ADMIN_PASSWORD=admin-password-for-tests",
            "MLFLOW_ALLOWED_HOSTS=vm": f"MLFLOW_ALLOWED_HOSTS={HOST}",
            # loopback only, on free ports; the cluster outside pytest's 0700 tree (the root case is
            # test_team_server.py's)
            "MLFLOW_HOST=0.0.0.0": f"MLFLOW_HOST=127.0.0.1 MLFLOW_PORT={port} PGPORT={pgport} PGDATA={pgdata}",
            "http://vm:5000": f"http://{HOST}:{port}",
            "5433": str(pgport),
        }
        env = {**env, "AWS_DEFAULT_REGION": S3_CREDENTIALS["AWS_DEFAULT_REGION"]}
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # MLflow 3's job runner: not used, slow to start
        masks = [(re.escape(HOST), "vm")]
        reader = read("docs/team.md", repo, env, substitutions=substitutions, masks=masks, stop=False)
        try:
            yield reader, tmp, s3_url, f"http://{HOST}:{port}"
        finally:
            reader.stop()
            pg_running = (pgdata / "postmaster.pid").exists()
            subprocess.run(["rm", "-rf", str(pgdata)], check=False)
            assert not pg_running, "Ctrl-C left the server's PostgreSQL running"


def _without_aws(environ):
    return {k: v for k, v in environ.items() if not k.startswith("AWS_")}


def rest(url, path, body=None, login=TEAMMATE):
    data = None if body is None else json.dumps(body).encode()
    token = base64.b64encode(":".join(login).encode()).decode()
    headers = {"Content-Type": "application/json", "Authorization": f"Basic {token}"}
    with urllib.request.urlopen(urllib.request.Request(f"{url}{path}", data=data, headers=headers), timeout=20) as r:
        return json.loads(r.read())


def runs_in(url, experiment):
    found = rest(url, f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={experiment}")["experiment"]
    return rest(url, "/api/2.0/mlflow/runs/search", {"experiment_ids": [found["experiment_id"]], "max_results": 500})[
        "runs"
    ]


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_team_page(team):
    """Every block ran as shown; the teammate's runs are on the server, and the shared search's trials too."""
    reader, tmp, s3_url, url = team
    assert len(reader.ran) >= 8 and not reader.skipped
    mine, theirs = tmp / "lenet5", tmp / "teammate"
    # the experiment and the cached run reached the teammate with their results, nothing retrained
    assert (theirs / "tune/tuning.md").is_file()
    assert "team-users" not in run(["git", "status", "--porcelain"], mine, reader.env).stdout  # passwords: ignored
    # the teammate's experiment (dropout 0.4), by their login: its variant's run (named with the experiment)
    # and its seed's run
    runs = runs_in(url, "lenet5-variants")
    names = sorted(r["info"]["run_name"] for r in runs)
    (evaluated,) = [r for r in runs if r["info"]["run_name"].startswith("evaluate@dropout ")]
    assert {p["key"]: p["value"] for p in evaluated["data"]["params"]}["model.dropout"] == "0.4"
    assert "train@dropout-0" in names, names
    tuned = sorted(r["info"]["run_name"] for r in runs_in(url, "lenet5-tuned"))
    assert "tune@dropout" in tuned and "dropout trial 0" in tuned, tuned
    s3 = boto3.client("s3", endpoint_url=s3_url, **{k.lower(): v for k, v in S3_CREDENTIALS.items() if "KEY" in k})
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="team-dvc", Prefix="mlflow/").get("Contents", [])]
    assert any(k.endswith("/params.yaml") for k in keys), keys[:20]


def test_a_lost_checkpoint_comes_back_bit_identical_from_the_remote(team):
    reader, tmp, _, _ = team
    mine, theirs = tmp / "lenet5", tmp / "teammate"
    checkpoint = "data/models/vanilla/seed0.pt"
    (theirs / checkpoint).unlink()
    run(["dvc", "pull", checkpoint], theirs, reader.env)
    assert digest(theirs / checkpoint) == digest(mine / checkpoint)


def test_the_champion_registered_by_a_teammate_resolves_on_the_server(team):
    reader, tmp, _, url = team
    env = {k: v for k, v in reader.env.items() if k != "MLFLOW_EXPERIMENT_NAME"}  # the page's workers' setting
    registered = run([sys.executable, "-m", "pipeline.register"], tmp / "teammate", env).stdout
    best = registered.split()[1]
    version = rest(url, "/api/2.0/mlflow/registered-models/alias?name=lenet5-fashion-mnist&alias=champion")
    assert {t["key"]: t["value"] for t in version["model_version"]["tags"]}["variant"] == best


@pytest.mark.parametrize(
    "how, line",
    [
        ("no login", "asks for a login and got none (HTTP 401): set MLFLOW_TRACKING_USERNAME"),
        ("a wrong password", "asks for a login and got a wrong one (HTTP 401)"),
        ("an address it does not list", "does not accept the host name '127.0.0.1' (HTTP 403"),
    ],
)
def test_a_client_the_server_refuses_gets_one_line(team, tmp_path, how, line):
    """docs/team.md's table of refusals: each is one line from the first stage that opens the store."""
    reader, tmp, _, url = team
    env = {k: v for k, v in reader.env.items() if not k.startswith("MLFLOW_TRACKING_")}
    login = {"MLFLOW_TRACKING_USERNAME": TEAMMATE[0], "MLFLOW_TRACKING_PASSWORD": TEAMMATE[1]}
    if how == "a wrong password":
        env.update(login, MLFLOW_TRACKING_PASSWORD="not-the-password")
    if how == "an address it does not list":
        env.update(login)
        url = url.replace(HOST, "127.0.0.1")
    env["MLFLOW_TRACKING_URI"] = url
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(shrunk_params("unused")))
    result = subprocess.run(
        train_cmd(params, tmp / "teammate/data/split", tmp_path), cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    (error,) = result.stderr.strip().splitlines()
    assert error.startswith(f"error: MLflow store {url} ") and line in error, error
    assert not (tmp_path / "models").exists()


def test_an_unreachable_remote_fails_with_dvcs_message_and_loses_nothing(team):
    reader, tmp, _, _ = team
    mine = tmp / "lenet5"
    before = digest(mine / "data/models/vanilla/seed0.pt")
    run(["dvc", "remote", "modify", "--local", "storage", "endpointurl", "http://127.0.0.1:9"], mine, reader.env)
    try:
        result = run(["dvc", "push"], mine, reader.env, check=False)
        assert result.returncode != 0 and "ERROR" in result.stderr + result.stdout
    finally:
        (mine / ".dvc/config.local").unlink()
    assert digest(mine / "data/models/vanilla/seed0.pt") == before


@pytest.mark.parametrize(
    "bucket, credentials, dvc_says",
    [
        ("no-such-bucket", True, "NoSuchBucket"),  # the page's first step not taken: the bucket
        ("team-dvc", False, "Unable to locate credentials"),  # no AWS_* in the environment
    ],
    ids=["no-bucket", "no-credentials"],
)
def test_make_push_failing_is_dvcs_message_and_one_line(team, bucket, credentials, dvc_says):
    """docs/team.md's table under 'The remote': DVC says why, the script adds one line."""
    reader, tmp, s3_url, _ = team
    mine = tmp / "lenet5"
    env = reader.env if credentials else _without_aws(reader.env)
    env = {**env, "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "none"), "AWS_CONFIG_FILE": str(tmp / "none")}
    run(["dvc", "remote", "add", "--local", "elsewhere", f"s3://{bucket}/store"], mine, env)
    run(["dvc", "remote", "modify", "--local", "elsewhere", "endpointurl", s3_url], mine, env)
    try:
        result = run(
            [sys.executable, str(ROOT / "scripts/push_run_cache.py"), "-r", "elsewhere"], mine, env, check=False
        )
    finally:
        run(["dvc", "remote", "remove", "--local", "elsewhere"], mine, env)
    text = result.stdout + result.stderr
    assert result.returncode == 1 and dvc_says in text and "Traceback" not in text, text
    assert result.stderr.rstrip().splitlines()[-1] == (
        "error: `dvc push --run-cache` failed (its message above); see docs/team.md, 'The remote'"
    )
