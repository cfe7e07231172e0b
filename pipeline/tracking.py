"""Mirror each train/evaluate execution into MLflow; the DVC-tracked JSON stays the record.

Store: MLFLOW_TRACKING_URI when set (e.g. a team's `mlflow server`), else
sqlite:///<repo>/mlflow.db with artifacts under <repo>/mlruns. <repo> is
DVC_ROOT when DVC sets it: queued and --temp experiments run in a temp copy
under .dvc/tmp/exps/ that is deleted afterwards, so paths relative to the
working folder would lose their runs. The experiment is created once, under
a file lock, with an absolute artifact_location: SQLite stores created by
several processes at once fail (see ../shared notes), and an experiment first
created by a queue worker would otherwise keep artifacts in its temp copy.

One run per stage execution; an evaluate run is a child of its variant's
train run (the train run id travels inside the checkpoint, a DVC output), so
the UI shows the two together. Tracking off (tracking.enabled: false) yields
a run object that records nothing.
"""
import fcntl
import hashlib
import os
import subprocess
import warnings
from contextlib import contextmanager
from pathlib import Path

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
    used = {k: params[k] for k in ("seed", "data", "model", "train", "evaluate")}
    used["data"] = {k: v for k, v in params["data"].items() if k != "sources"}
    used["variant"] = params["variants"][variant]
    return flatten("", used)


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=repo_root(), timeout=10)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _experiment_id(mlflow, name, artifact_location):
    """Create the experiment once, under a lock (several stages may start at once)."""
    with open(repo_root() / ".mlflow.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        return mlflow.create_experiment(name, artifact_location=artifact_location)


class Run:
    """What the stages log; every method is a no-op when tracking is off."""

    def __init__(self, mlflow=None, run_id=None):
        self.mlflow, self.run_id = mlflow, run_id

    def log_epoch(self, record):
        if self.mlflow:
            metrics = {k: v for k, v in record.items() if k != "epoch"}
            self.mlflow.log_metrics(metrics, step=record["epoch"])

    def log_metrics(self, metrics):
        if self.mlflow:
            self.mlflow.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})

    def log_artifact(self, path):
        if self.mlflow:
            self.mlflow.log_artifact(str(path))

    def log_figure(self, figure, name):
        if self.mlflow:
            import matplotlib.pyplot as plt

            self.mlflow.log_figure(figure, name)
            plt.close(figure)

    def log_dict(self, data, name):
        if self.mlflow:
            self.mlflow.log_dict(data, name)

    def log_dataset(self, split_dir, split, images, labels, dataset):
        """The split as an MLflow input: its name, the split and a digest of its file."""
        if self.mlflow:
            import mlflow.data

            path = Path(split_dir) / f"{split}.pt"
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
            with warnings.catch_warnings():  # "source can be interpreted in multiple ways": both local
                warnings.simplefilter("ignore", UserWarning)
                data = mlflow.data.from_numpy(images.reshape(len(images), -1).numpy(),
                                              targets=labels.numpy(), source=str(path.resolve()),
                                              name=f"{dataset}-{split}", digest=digest)
            self.mlflow.log_input(data, context=split)

    def log_model(self, model, example):
        """The model with a signature; an example batch of >= 2 keeps the batch dim free."""
        if self.mlflow:
            import mlflow.pytorch

            import torch

            model = model.cpu().eval()
            # Naming the requirement skips MLflow's inference of it, which loads
            # the model in a subprocess: ~6 s per model on 2 cores.
            mlflow.pytorch.log_model(model, name="model",
                                     input_example=example.cpu().contiguous().numpy(),
                                     pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])


@contextmanager
def stage_run(params, variant, stage, params_path, parent_run_id=None):
    """A run for one stage execution, ended FINISHED, or FAILED when the stage raises."""
    if not params["tracking"]["enabled"]:
        yield Run()
        return
    import mlflow

    uri = tracking_uri()
    # Our own store keeps artifacts beside it; a user's store (a server) decides itself.
    # Decide before set_tracking_uri(), which exports MLFLOW_TRACKING_URI itself.
    location = None if os.environ.get("MLFLOW_TRACKING_URI") else (repo_root() / "mlruns").as_uri()
    mlflow.set_tracking_uri(uri)
    try:
        experiment_id = _experiment_id(mlflow, params["tracking"]["experiment"], location)
    except Exception as e:
        raise TrackingError(f"MLflow store {uri} cannot be used ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:200]}); set MLFLOW_TRACKING_URI to a "
                            f"reachable store or tracking.enabled: false") from None
    tags = {"variant": variant, "dvc_stage": f"{stage}@{variant}", "git_commit": git_commit(),
            "dataset": params["data"]["dataset"]}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    active = mlflow.start_run(experiment_id=experiment_id, run_name=f"{stage}@{variant}", tags=tags)
    try:
        mlflow.log_params(resolved_params(params, variant))
        mlflow.log_artifact(str(params_path))
        yield Run(mlflow, active.info.run_id)
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    mlflow.end_run("FINISHED")
