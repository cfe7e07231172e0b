"""`mlflow ui` on the project's store, and the page to open: each experiment's training runs, with the accuracies.

    python scripts/mlflow-ui.py            # http://127.0.0.1:5000, or a free port when 5000 is taken; `make ui`
    python scripts/mlflow-ui.py --port 5001   # that port, or one line if it is taken; `make ui PORT=5001`

`mlflow ui` alone opens an experiment on its GenAI "Overview" and shows no metric
column (pipeline/mlflow_store.py, EXPERIMENT_TAGS, says why). The links printed here
open "Training runs" with the mean test and validation accuracy, the seeds and the
DVC experiment's name as columns, best validation first. In the UI, the sidebar's
workflow switch set to "Machine learning" once makes the browser remember it.
"""

import argparse
import errno
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # pipeline/, run from anywhere

from pipeline import mlflow_store  # noqa: E402
from pipeline.params import load_params  # noqa: E402

# the experiments of this repository's pipelines that exist in the store, main first
PROFILES = ("params.yaml", "study/params.yaml", "study/wide/params.yaml", "sweep/params.yaml")


def free_port(host, asked):
    """`asked` if it is free (one line and exit if not), else 5000 if free, else a port the system picks: the
    UI's server must not find its port taken after this printed a link (it would point at another server)."""
    for port in [asked] if asked else [5000, 0]:
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
                return probe.getsockname()[1]
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    raise
                if asked:
                    sys.exit(f"error: port {asked} on {host} is taken (another server?): choose another, --port N")
    raise AssertionError("unreachable: port 0 is always free")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="the port (default: 5000, or a free one when 5000 is taken)")
    args = parser.parse_args()
    args.port = free_port(args.host, args.port)
    root = Path(__file__).resolve().parents[1]
    os.chdir(root)
    uri = mlflow_store.tracking_uri()
    if mlflow_store.store_path(uri) is None:
        sys.exit(f"error: MLFLOW_TRACKING_URI is a server ({uri}): open it in a browser (this serves a local store)")
    import mlflow

    mlflow.set_tracking_uri(uri)
    names = [load_params(root / p).tracking.experiment for p in PROFILES if (root / p).is_file()]
    if (root / "tune/params.yaml").is_file():
        import yaml

        names.append(yaml.safe_load((root / "tune/params.yaml").read_text())["tune"]["experiment"])
    base = f"http://{args.host}:{args.port}"
    print(f"MLflow UI for {uri} at {base}; open:")
    for experiment in mlflow.search_experiments():
        if experiment.name in names:
            mlflow_store.tag_experiment(mlflow.MlflowClient(), experiment)  # a store made before the view existed
            print(f"  {experiment.name}: {mlflow_store.ui_url(base, experiment.experiment_id)}", flush=True)
    command = [  # this interpreter's MLflow, the one imported above, whether or not its venv is on PATH
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--workers",
        "1",
    ]
    # its own process group, stopped whole on Ctrl-C: `mlflow ui` itself outlived a Ctrl-C, and its job runner (off:
    # this UI starts no jobs) printed a traceback
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(command, env=env, start_new_session=True)
    # `kill` (SIGTERM) stops it as Ctrl-C does: else its server, in a group of its own, outlives it
    stopped_by = []

    def terminated(signum, frame):
        stopped_by.append(signum)
        signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminated)
    try:
        return server.wait()
    except KeyboardInterrupt:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        print(f"stopped the MLflow UI at {base}", flush=True)
        return 128 + (stopped_by[0] if stopped_by else signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
