"""Mirror the stages into MLflow; the DVC-tracked JSON stays the record.

Store: MLFLOW_TRACKING_URI when set (e.g. a team's `mlflow server`), else
sqlite:///<repo>/mlflow.db with artifacts under <repo>/mlruns. <repo> is
DVC_ROOT when DVC sets it: queued and --temp experiments run in a temp copy
under .dvc/tmp/exps/ that is deleted afterwards, so paths relative to the
working folder would lose their runs. The experiment is created once, under
a file lock, with an absolute artifact_location (SQLite stores created by
several processes at once fail; an experiment first created by a queue
worker would otherwise keep artifacts in its temp copy), and tagged as model
training so that `mlflow ui` opens on its runs, not the GenAI overview.

Runs: one parent run `train@<variant>` per training stage, with one child run
`train@<variant>/seed<k>` per seed (its curves, datasets and model). The
evaluate stage adds the test metrics to each child and the aggregated ones
(mean, std, interval over seeds) to the parent, so the UI's table shows one
row per variant with its seeds folded under it. Tracking off
(tracking.enabled: false) yields run objects that record nothing.
"""

import hashlib
import os
import subprocess
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock

from pipeline.errors import PipelineError

# Fail fast on an unreachable server instead of MLflow's minutes of retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")  # no network for pip here


class TrackingError(PipelineError):
    """The MLflow store cannot be reached or written."""


def repo_root():
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def tracking_uri():
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def flatten(prefix, value):
    """{'a': {'b': 1}} -> {'a.b': 1}: MLflow params are flat strings."""
    if isinstance(value, dict):
        out = {}
        for key, inner in value.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), inner))
        return out
    return {prefix: value}


def resolved_params(params, variant):
    """The config one variant's stages use: shared sections plus its own features."""
    used = params.model_dump(include={"data", "model", "train", "evaluate"})
    del used["data"]["sources"]
    used["variant"] = params.variants[variant].model_dump()
    return flatten("", used)


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=repo_root(), timeout=10)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


# The UI opens an experiment on its runs table only with this tag (MLflow 3).
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def _experiment_id(mlflow, name, artifact_location):
    """Create the experiment once, under a lock (several stages may start at once)."""
    with FileLock(repo_root() / ".mlflow.lock", timeout=120):
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            return mlflow.create_experiment(name, artifact_location=artifact_location, tags=EXPERIMENT_TAGS)
        if experiment.tags.get("mlflow.experimentKind") is None:  # made by an older version of this module
            for key, value in EXPERIMENT_TAGS.items():
                mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, key, value)
        return experiment.experiment_id


_OPENED = {}  # (uri, experiment) -> experiment id: a stage that logs to several runs opens the store once


def open_store(params):
    """(mlflow, experiment id) of the configured store, or None when tracking is off."""
    if not params.tracking.enabled:
        return None
    import mlflow

    uri = tracking_uri()
    key = (uri, params.tracking.experiment)
    if key in _OPENED:
        mlflow.set_tracking_uri(uri)
        return mlflow, _OPENED[key]
    # Our own store keeps artifacts beside it; a user's store (a server) decides itself.
    # Decide before set_tracking_uri(), which exports MLFLOW_TRACKING_URI itself.
    location = None if os.environ.get("MLFLOW_TRACKING_URI") else (repo_root() / "mlruns").as_uri()
    mlflow.set_tracking_uri(uri)
    try:
        _OPENED[key] = _experiment_id(mlflow, params.tracking.experiment, location)
        return mlflow, _OPENED[key]
    except Exception as e:
        raise TrackingError(
            f"MLflow store {uri} cannot be used ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200]}); set MLFLOW_TRACKING_URI to a "
            f"reachable store or tracking.enabled: false"
        ) from None


def _tags(params, variant, stage):
    tags = {
        "variant": variant,
        "dvc_stage": f"{stage}@{variant}",
        "git_commit": git_commit(),
        "dataset": params.data.dataset,
    }
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    return tags


class Run:
    """What the stages log into one run, by id; every method is a no-op when tracking is off."""

    def __init__(self, mlflow=None, run_id=None):
        self.mlflow, self.run_id = mlflow, run_id

    def log_epoch(self, record):
        self.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=record["epoch"])

    def log_metrics(self, metrics, step=0):
        if self.mlflow:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self.mlflow.MlflowClient().log_batch(
                self.run_id,
                metrics=[
                    Metric(k, float(v), now, step)
                    for k, v in metrics.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)
                ],
            )

    def log_artifact(self, path):
        if self.mlflow:
            self.mlflow.MlflowClient().log_artifact(self.run_id, str(path))

    def log_figure(self, figure, name):
        if self.mlflow:
            import matplotlib.pyplot as plt

            self.mlflow.MlflowClient().log_figure(self.run_id, figure, name)
            plt.close(figure)

    def log_dict(self, data, name):
        if self.mlflow:
            self.mlflow.MlflowClient().log_dict(self.run_id, data, name)

    def log_dataset(self, split_dir, split, images, labels, dataset):
        """The split as an MLflow input of the active run: its name, the split and a digest of its file."""
        if self.mlflow:
            import mlflow.data

            path = Path(split_dir) / f"{split}.pt"
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
            with warnings.catch_warnings():  # "source can be interpreted in multiple ways": both local
                warnings.simplefilter("ignore", UserWarning)
                data = mlflow.data.from_numpy(
                    images.reshape(len(images), -1).numpy(),
                    targets=labels.numpy(),
                    source=str(path.resolve()),
                    name=f"{dataset}-{split}",
                    digest=digest,
                )
            self.mlflow.log_input(data, context=split)

    def log_model(self, model, example):
        """The model (of the active run) with a signature; an example batch of >= 2 keeps the batch dim free."""
        if self.mlflow:
            import mlflow.pytorch
            import torch

            model = model.cpu().eval()
            # Naming the requirement skips MLflow's inference of it, which loads
            # the model in a subprocess: ~6 s per model on 2 cores.
            mlflow.pytorch.log_model(
                model,
                name="model",
                input_example=example.cpu().contiguous().numpy(),
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            )


@contextmanager
def variant_run(params, variant, stage, params_path):
    """The parent run of one variant's training, ended FINISHED, or FAILED when the stage raises."""
    store = open_store(params)
    if store is None:
        yield Run()
        return
    mlflow, experiment_id = store
    client = mlflow.MlflowClient()
    run = client.create_run(experiment_id, run_name=f"{stage}@{variant}", tags=_tags(params, variant, stage))
    try:
        for key, value in resolved_params(params, variant).items():
            client.log_param(run.info.run_id, key, value)
        client.log_artifact(run.info.run_id, str(params_path))
        yield Run(mlflow, run.info.run_id)
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id, "FINISHED")


@contextmanager
def seed_run(params, variant, seed, parent_run_id):
    """The active run of one seed's training (in a worker process), a child of the variant's run."""
    store = open_store(params) if parent_run_id else None
    if store is None:
        yield Run()
        return
    mlflow, experiment_id = store
    tags = {**_tags(params, variant, "train"), "seed": str(seed), "mlflow.parentRunId": parent_run_id}
    active = mlflow.start_run(experiment_id=experiment_id, run_name=f"train@{variant}/seed{seed}", tags=tags)
    try:
        mlflow.log_params({**resolved_params(params, variant), "seed": seed})
        yield Run(mlflow, active.info.run_id)
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    mlflow.end_run("FINISHED")


def existing_run(params, run_id):
    """A Run that adds to a run made earlier (evaluate adds the test metrics to training's runs)."""
    store = open_store(params) if run_id else None
    return Run() if store is None else Run(store[0], run_id)
