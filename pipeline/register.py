"""Register the best variant's model in MLflow's model registry and move an alias to it.

Run after `dvc repro` (not a DVC stage: it changes no result, only MLflow):
    python -m pipeline.register [--name lenet5-fashion-mnist] [--alias champion]
The best variant is the one with the highest mean *validation* accuracy over
its seeds (metrics/<variant>.json), never the test set. Its model is the one
the first seed's MLflow run logged: the run tagged with the MD5 of that
checkpoint (the checkpoint, a DVC output, holds no run id).
The new version gets the variant, its accuracies, the seeds and the git
commit as tags, and the alias moves to it, so a teammate loads it with
`mlflow.pyfunc.load_model("models:/<name>@<alias>")`, which takes raw 28x28 uint8 images.
"""

import argparse
from pathlib import Path

from pipeline import mlflow_store, tracking
from pipeline.errors import PipelineError, run_stage
from pipeline.io import file_md5, read_json
from pipeline.params import load_params


def best_variant(variants, metrics_dir):
    """(name, metrics) of the variant with the highest mean validation accuracy."""
    scored = {}
    for name in variants:
        path = Path(metrics_dir) / f"{name}.json"
        if not path.is_file():
            raise PipelineError(f"{path} not found: run `dvc repro` first")
        scored[name] = read_json(path)
    name = max(scored, key=lambda n: scored[n]["val_acc_mean"])
    return name, scored[name]


def logged_model_uri(mlflow, run_id):
    """models:/<model id> of the run's logged model.

    MLflow 3 keeps a logged model as a LoggedModel of its own, not under the
    run's artifacts: registering runs:/<id>/model still works, but MLflow then
    looks the model up itself and warns that the run "has no artifacts at
    artifact path 'model'".
    """
    experiment_id = mlflow.get_run(run_id).info.experiment_id
    found = mlflow.search_logged_models(
        experiment_ids=[experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = 'model'",
        output_format="list",
    )
    if not found:
        return f"runs:/{run_id}/model"
    return f"models:/{max(found, key=lambda m: m.creation_timestamp).model_id}"


def register(params, models_dir, metrics_dir, name, alias):
    """Register the best variant's logged model as a new version of `name`; return (variant, version)."""
    variant, metrics = best_variant(params.variants, metrics_dir)
    first_seed = params.train.seeds[0]  # the seed whose model train logs
    path = Path(models_dir) / variant / f"seed{first_seed}.pt"
    if not path.is_file():
        raise PipelineError(f"{path} not found: `dvc checkout {path}`, or `dvc repro` to train it")
    store = mlflow_store.open_store(params)
    run_id = tracking.checkpoint_run(params, file_md5(path)) if store else None
    if store is None or not run_id:
        raise PipelineError(
            f"no run in {mlflow_store.tracking_uri()}, experiment {mlflow_store.experiment_name(params)}, trained "
            f"{path} (tracking was off, DVC restored it from its cache, or it trained against another store or "
            f"experiment: MLFLOW_EXPERIMENT_NAME, if set, names the one searched): retrain it with "
            f"`dvc repro --force train@{variant}-{first_seed}`"
        )
    mlflow, _ = store
    client = mlflow.MlflowClient()
    version = mlflow.register_model(logged_model_uri(mlflow, run_id), name)
    tags = {
        "variant": variant,
        "seed": str(first_seed),
        "val_acc_mean": f"{metrics['val_acc_mean']:.4f}",
        "test_acc_mean": f"{metrics['test_acc_mean']:.4f}",
        "seeds": str(metrics["seeds"]),
        "git_commit": mlflow_store.git_commit(),
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version.version, key, value)
    client.set_registered_model_alias(name, alias, version.version)
    return variant, version.version


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    parser.add_argument("--models", default="data/models", help="folder of <variant>/seed<k>.pt (stage train)")
    parser.add_argument("--metrics", default="metrics", help="folder of <variant>.json (stage evaluate)")
    parser.add_argument("--name", default="lenet5-fashion-mnist", help="the registered model's name")
    parser.add_argument("--alias", default="champion", help="the alias to move to the new version")
    args = parser.parse_args()
    params = load_params(args.params)
    variant, version = register(params, args.models, args.metrics, args.name, args.alias)
    print(f"registered {variant} as {args.name} version {version}; models:/{args.name}@{args.alias} points to it")


if __name__ == "__main__":
    run_stage(main)
