"""The team MLflow server started as root from a clone the postgres user cannot reach, and what its logins cost
it. The server as docs/team.md runs it, a pipeline logging to it by host name with a teammate's login, and its
refusals are tests/test_docs_team.py's. PostgreSQL comes from Debian's `postgresql` (`make test` installs it)."""

import base64
import os
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import ROOT, free_port, wait_for_url

pytestmark = pytest.mark.slow


def server_env(state, port, artifacts, **settings):
    """scripts/mlflow-server.sh's environment: its files in `state`, on `port`, the suite's mlflow, no job
    runner, no teammates file, and its own PostgreSQL cluster unless `settings` name a database."""
    env = {k: v for k, v in os.environ.items() if k not in ("PGDATA", "MLFLOW_BACKEND_STORE_URI", "MLFLOW_USERS_FILE")}
    return {
        **env,
        "STATE": str(state),
        "MLFLOW_PORT": str(port),
        "MLFLOW_BIN": str(Path(sys.executable).parent / "mlflow"),
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_ARTIFACTS_DESTINATION": str(artifacts),
        "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-password-for-tests",
        **settings,
    }


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user (the postgres user)")
def test_the_server_starts_from_a_clone_the_postgres_user_cannot_reach(tmp_path):
    """Root's home is mode 700, so the postgres user cannot reach a clone there: the script keeps the cluster in
    the postgres user's home, says where, and serves; stopped, it leaves PostgreSQL stopped."""
    home = tmp_path / "root-home"
    home.mkdir(mode=0o700)
    state = home / "clone/.mlflow-server"
    port = free_port()
    env = server_env(state, port, tmp_path / "artifacts", PGPORT=str(free_port()))
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


def session_cpu(session):
    """CPU-seconds, user + sys, of the live processes of a session (the server script and what it started)."""
    total = 0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[3]) == session:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def test_a_login_is_checked_once_not_on_every_request(tmp_path):
    """A login costs the server a scrypt hash (~70 ms of CPU by design) when it is checked: the script turns on
    MLflow's auth cache, so 40 requests with one login cost it about one check (without the cache, 5.7-6.3 s
    of the server's CPU here), and a wrong password is still refused."""
    port = free_port()
    env = server_env(
        tmp_path / "state",
        port,
        tmp_path / "artifacts",
        MLFLOW_BACKEND_STORE_URI=f"sqlite:///{tmp_path}/runs.db",  # the logins are the subject, not PostgreSQL
        MLFLOW_AUTH_DATABASE_URI=f"sqlite:///{tmp_path}/users.db",
    )
    proc = subprocess.Popen(
        [str(ROOT / "scripts/mlflow-server.sh")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def get(password):
        login = base64.b64encode(f"admin:{password}".encode()).decode()
        url = f"http://localhost:{port}/api/2.0/mlflow/experiments/get?experiment_id=0"
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Basic {login}"})) as r:
            return r.status

    try:
        wait_for_url(f"http://localhost:{port}/health", proc, timeout=120)
        assert get("admin-password-for-tests") == 200  # the first check, cached
        before = session_cpu(proc.pid)
        for _ in range(40):
            get("admin-password-for-tests")
        spent = session_cpu(proc.pid) - before
        assert spent < 1.5, f"40 requests cost the server {spent:.2f} s of CPU"
        with pytest.raises(urllib.error.HTTPError) as refused:
            get("not-the-password")
        assert refused.value.code == 401
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
