"""The team MLflow server started as root from a clone the postgres user cannot reach. The server as
docs/team.md runs it, a pipeline logging to it by host name with a teammate's login, and its refusals are
tests/test_docs_team.py's. PostgreSQL comes from Debian's `postgresql` (`make test` installs it)."""

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers import ROOT, free_port, wait_for_url

pytestmark = pytest.mark.slow


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
