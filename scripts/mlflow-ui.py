"""`mlflow ui` on the project's store, and the page to open: each experiment's training runs, with the accuracies.

    python scripts/mlflow-ui.py            # http://127.0.0.1:5000; `make ui`
    python scripts/mlflow-ui.py --port 5001

`mlflow ui` alone opens an experiment on its GenAI "Overview" and shows no metric
column (pipeline/mlflow_store.py, EXPERIMENT_TAGS, says why). The links printed here
open "Training runs" with the mean test and validation accuracy, the seeds and the
DVC experiment's name as columns, best validation first. In the UI, the sidebar's
workflow switch set to "Machine learning" once makes the browser remember it.
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # pipeline/, run from anywhere

from pipeline import mlflow_store  # noqa: E402
from pipeline.params import load_params  # noqa: E402

# the experiments of this repository's pipelines that exist in the store, main first
PROFILES = ("params.yaml", "study/params.yaml", "sweep/params.yaml")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="the port (default: 5000)")
    args = parser.parse_args()
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
    os.execvp(
        "mlflow",
        ["mlflow", "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port), "--workers", "1"],
    )


if __name__ == "__main__":
    main()
