"""Mirror the stages into MLflow; the DVC-tracked JSON stays the record.

The store (which one, its experiment, cleaning up after dead processes) is
pipeline/mlflow_store.py's business; this module is what the stages call.

Runs: one run `train@<variant>-<seed>` per train stage (its params, per-epoch
curves, and, for the first seed, its model), then one run `evaluate@<variant>`
per evaluate stage (with ` <DVC experiment>` appended inside a DVC
experiment), which makes the variant's seed runs its children (tag
`mlflow.parentRunId`), adds the test metrics to each seed's run and the
aggregated ones (mean, std, interval over seeds), figures and history to its
own. The tune pipeline adds a parent run `tune@<variant>` per search, with a
child `<variant> trial <n>` per trial and `<variant> trial <n> seed <k>` per
re-scoring run. Tracking off (tracking.enabled: false) yields run objects that
record nothing.

Nothing here writes into a DVC output: a seed's run carries the MD5 of its
checkpoint (tag `checkpoint_md5`, DVC's hash of the file) and its path
(`dvc_output`), and evaluate finds the run by that tag. Observations of one
run, which differ every time (seconds per epoch, latency, run ids, host),
go to MLflow and to observations/<stage>/<variant>*.json under the repo root:
neither git nor DVC tracks that folder, and no stage reads it.

What the stages call: one context manager per stage's run (`seed_run`,
`variant_run`, `trial_run`), whose Run takes a per-epoch record (`log_epoch`)
and, once the stage has written its DVC outputs, one per-stage record
(`record_checkpoint`, `record_evaluation`). Everything else here serves those.

Failure policy, the same for every stage:
- a store that cannot be opened or cannot start the run fails the stage at
  once, before any output is written (one line naming the URI and the way
  out); DVC then runs the stage again once the store is back;
- any later failure (a server gone, a full disk) is one warning on stderr,
  after which that run logs nothing more: the DVC outputs are the record, so
  the mirror never costs a stage its outputs;
- a run's final status the store did not take is noted in
  observations/mlflow-pending/ and set by the next command that opens the
  store, which also ends as KILLED the runs of this host's dead processes.
"""

import hashlib
import os
import socket
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import first_line
from pipeline.io import file_md5
from pipeline.mlflow_store import (
    TrackingError,
    note_pending_status,
    observe,  # noqa: F401  (the stages' tracking.observe)
    open_store,
    repo_root,
    tracking_uri,
)


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
    used = params.model_dump(include={"data", "evaluate"})
    del used["data"]["sources"]
    used["model"] = params.model_for(variant).model_dump()  # with the variant's own overrides
    used["train"] = params.train_for(variant).model_dump()
    used["variant"] = params.variants[variant].model_dump(exclude={"train", "model"})
    return flatten("", used)


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=repo_root(), timeout=10)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def warn(what, error):
    """One line on stderr: MLflow is a mirror, so its failures never cost a stage its outputs."""
    print(
        f"warning: MLflow: {what} not mirrored to {tracking_uri()} ({type(error).__name__}: {first_line(error)}); "
        "the DVC outputs are complete",
        file=sys.stderr,
        flush=True,
    )


def _tags(params, variant, stage):
    tags = {
        "variant": variant,
        "dvc_stage": f"{stage}@{variant}",
        "git_commit": git_commit(),
        "dataset": params.data.dataset,
        "host": socket.gethostname(),  # with pid: a later stage can tell a dead run from a live one
        "pid": str(os.getpid()),
    }
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    return tags


class Run:
    """What the stages log into one run, by id. Every method is a no-op when tracking is off, and a
    failure (a server gone, a full disk) is one warning, after which the run logs nothing more."""

    def __init__(self, mlflow=None, run_id=None):
        self.mlflow, self.run_id, self.failed = mlflow, run_id, False
        self.pending_tags = {}  # tags the store did not take: noted with the run's status, set at its next open

    def _mirror(self, what, action):
        if not self.mlflow:
            return
        try:
            action(self.mlflow)
        except Exception as e:
            warn(what, e)
            self.mlflow, self.failed = None, True  # a dead server would cost a timeout per call

    def link_checkpoint(self, md5, path=None):
        """Tag the run with the MD5 (and DVC path) of the checkpoint it trained: evaluate finds it by that."""

        tags = {"checkpoint_md5": md5, **({"dvc_output": str(path)} if path else {})}

        def tag(mlflow):
            client = mlflow.MlflowClient()
            for key, value in tags.items():
                client.set_tag(self.run_id, key, value)

        self._mirror("the checkpoint's tag", tag)
        if self.failed:  # evaluate finds the run by this tag: a store that was down gets it later
            self.pending_tags.update(tags)

    def record_checkpoint(self, checkpoint, path, with_model):
        """After train wrote `path`: tag this run with its MD5 and path, and log the model when `with_model`."""
        if self.run_id:  # a store that failed earlier in the run gets the tag at its next open
            self.link_checkpoint(file_md5(path), path)
        if self.mlflow and with_model:
            self.log_model(checkpoint)

    def record_evaluation(self, params, variant, files, scores, metrics_path):
        """After evaluate wrote its outputs: each seed's test metrics onto the run that trained it (made a
        child of this one), the variant's aggregates, its metrics file, figures and history onto this run."""
        if not self.mlflow:
            return
        from pipeline.figures import confusion_figure, curves_figure

        metrics, untracked = scores.metrics, []
        for seed, path in files.items():
            seed_run = checkpoint_run(params, file_md5(path))
            if seed_run is None:
                untracked.append(seed)
                continue
            self.adopt(seed_run)
            # test metrics only: the seed's run already has val/train curves per epoch under those names
            suffix = f"_seed{seed}"
            test = {
                k.removesuffix(suffix): v for k, v in metrics.items() if k.startswith("test_") and k.endswith(suffix)
            }
            existing_run(params, seed_run).log_metrics(test)
        if untracked:
            print(
                f"MLflow: no run of this store trained seed(s) {untracked} of {Path(files[untracked[0]]).parent} "
                "(restored by DVC, or trained against another store): their test metrics are on the variant's run only"
            )
        self.log_metrics(
            {**{k: v for k, v in metrics.items() if "_seed" not in k}, "latency_ms_per_batch": scores.latency}
        )
        self.log_artifact(metrics_path)
        classes = [record["class"] for record in scores.per_class]
        title = f"{variant}: test confusion, summed over seeds"
        self.log_figure(confusion_figure(scores.counts, classes, title), "confusion_matrix.png")
        self.log_dict(scores.history, "history.json")
        results = {variant: {"history": scores.history, "metrics": metrics}}
        for key, label in (("acc", "accuracy"), ("loss", "cross-entropy loss")):
            self.log_figure(curves_figure(results, key, label), f"{key}_curves.png")

    def adopt(self, child_run_id):
        """Make a seed's run a child of this one, so that `mlflow ui` nests the seeds under their variant."""
        self._mirror(
            "the seed run's parent",
            lambda m: m.MlflowClient().set_tag(child_run_id, "mlflow.parentRunId", self.run_id),
        )

    def log_epoch(self, record):
        self.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=record["epoch"])

    def log_metrics(self, metrics, step=0):
        def log(mlflow):
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            mlflow.MlflowClient().log_batch(
                self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in numbers.items()]
            )

        self._mirror("metrics", log)

    def log_artifact(self, path):
        self._mirror(f"artifact {path}", lambda mlflow: mlflow.MlflowClient().log_artifact(self.run_id, str(path)))

    def log_figure(self, figure, name):
        import matplotlib.pyplot as plt

        self._mirror(f"figure {name}", lambda mlflow: mlflow.MlflowClient().log_figure(self.run_id, figure, name))
        plt.close(figure)

    def log_dict(self, data, name):
        self._mirror(name, lambda mlflow: mlflow.MlflowClient().log_dict(self.run_id, data, name))

    def log_dataset(self, split_dir, split, images, labels, dataset):
        """The split as an MLflow input of the active run: its name, the split and a digest of its file."""

        def log(mlflow):
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
            mlflow.log_input(data, context=split)

        self._mirror(f"the {split} dataset", log)

    def log_model(self, checkpoint):
        """The Checkpoint as a pyfunc that takes raw uint8 images (pipeline/serving.py), on the active run."""

        def log(mlflow):
            import tempfile
            from importlib.metadata import version

            import torch

            from pipeline import serving

            with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
                path = Path(tmp) / "checkpoint.pt"
                torch.save(checkpoint.to_file_dict(), path)
                # Naming the requirements skips MLflow's inference of them, which loads
                # the model in a subprocess: ~6 s per model on 2 cores. The signature is
                # given, so the "input example was not provided" warning only adds noise
                # to every train stage's log (an example would be run through the model).
                warnings.filterwarnings("ignore", ".*input example was not provided", UserWarning)
                mlflow.pyfunc.log_model(
                    name="model",
                    # a model from code (serving.py ends with set_model), not a pickled object:
                    # loading it runs our reviewed file, not CloudPickle's bytes (MLflow warns)
                    python_model=str(serving.SOURCE),
                    artifacts={"checkpoint": str(path)},
                    code_paths=[str(serving.PIPELINE)],
                    signature=serving.signature(checkpoint.classes),
                    pip_requirements=[
                        f"{package}=={version(package)}"
                        for package in ("torch", "numpy", "pandas", "numba", "pydantic", "pyyaml", "filelock")
                    ],
                )

        self._mirror("the model", log)

    def end(self, status):
        """End the run; a store that fails now or failed before gets the status at its next open_store."""
        if self.run_id and not self.failed:
            self._mirror(f"run status {status}", lambda m: m.MlflowClient().set_terminated(self.run_id, status))
        if self.run_id and self.failed:
            note_pending_status(self.run_id, status, self.pending_tags)


@contextmanager
def variant_run(params, variant, stage, params_path):
    """The run of one variant's stage (evaluate: the parent of its seeds' runs), ended FINISHED,
    or FAILED when the stage raises.

    An unusable store fails the stage here, before any output is written; later failures are warnings.
    """
    store = open_store(params)
    if store is None:
        yield Run()
        return
    mlflow, experiment_id = store
    client = mlflow.MlflowClient()
    try:
        # a DVC experiment's name in its runs' names: two experiments' variant runs differ in the table
        name = f"{stage}@{variant}" + (f" {os.environ['DVC_EXP_NAME']}" if os.environ.get("DVC_EXP_NAME") else "")
        run = client.create_run(experiment_id, run_name=name, tags=_tags(params, variant, stage))
    except Exception as e:
        raise TrackingError(
            f"MLflow store {tracking_uri()} cannot start a run ({type(e).__name__}: {first_line(e)})"
        ) from None
    parent = Run(mlflow, run.info.run_id)
    parent._mirror(
        "params",
        lambda m: [client.log_param(run.info.run_id, k, v) for k, v in resolved_params(params, variant).items()],
    )
    parent.log_artifact(params_path)
    try:
        yield parent
    except BaseException:
        parent.end("FAILED")
        raise
    parent.end("FINISHED")


@contextmanager
def seed_run(params, config, seed):
    """The active run of one seed's training (stage train@<variant>-<seed>), ended FINISHED or FAILED.

    As in variant_run, an unusable store fails the stage here, before any training.
    evaluate@<variant> later makes it a child of the variant's run.
    """
    store = open_store(params) if params is not None else None
    if store is None:
        yield Run()
        return
    mlflow, experiment_id = store
    name = f"train@{config.variant}-{seed}"
    tags = {**_tags(params, config.variant, "train"), "dvc_stage": name, "seed": str(seed)}
    try:
        active = mlflow.start_run(experiment_id=experiment_id, run_name=name, tags=tags)
    except Exception as e:
        raise TrackingError(
            f"MLflow store {tracking_uri()} cannot start a run ({type(e).__name__}: {first_line(e)})"
        ) from None
    run, status = Run(mlflow, active.info.run_id), "FINISHED"
    run._mirror("params", lambda m: m.log_params({**flatten("", config.model_dump()), "seed": seed}))
    try:
        yield run
    except BaseException:
        status = "FAILED"
        raise
    finally:
        if run.mlflow:  # else a warning said so already, and the store would only time out again
            try:
                mlflow.end_run(status)
            except Exception as e:
                warn(f"seed {seed}'s run status", e)
                run.failed = True
        if run.failed:
            note_pending_status(run.run_id, status, run.pending_tags)


def checkpoint_run(params, md5):
    """The id of the newest run tagged with this checkpoint MD5, else None.

    None when tracking is off, and when no run of this store trained that file:
    DVC restored it from its cache, or a teammate trained it against another store.
    """
    store = open_store(params)
    if store is None:
        return None
    mlflow, experiment_id = store
    runs = mlflow.MlflowClient().search_runs(
        [experiment_id], f"tags.checkpoint_md5 = '{md5}'", order_by=["attributes.start_time DESC"], max_results=1
    )
    return runs[0].info.run_id if runs else None


def existing_run(params, run_id):
    """A Run that adds to a run made earlier (evaluate adds the test metrics to training's runs).

    As in variant_run, a store that cannot be opened fails the stage (TrackingError,
    one line naming the URI), before it writes any output: DVC then runs it again
    once the store is back. Failures after that are warnings.
    """
    store = open_store(params) if run_id else None
    return Run() if store is None else Run(store[0], run_id)


def search_parent(params, variant, study_name):
    """The id of a new parent run for one variant's search (run `tune@<variant>`), or None when tracking
    is off. Every worker of the search logs its trials under it (the id is kept in the Optuna study)."""
    store = open_store(params)
    if store is None:
        return None
    mlflow, experiment_id = store
    tags = {**_tags(params, variant, "tune"), "optuna_study": study_name}
    try:
        return mlflow.MlflowClient().create_run(experiment_id, run_name=f"tune@{variant}", tags=tags).info.run_id
    except Exception as e:
        raise TrackingError(
            f"MLflow store {tracking_uri()} cannot start a run ({type(e).__name__}: {first_line(e)})"
        ) from None


@contextmanager
def trial_run(params, parent_id, variant, number, values):
    """A child run of the search's parent for one trial: its params, then (logged by the caller) its
    per-epoch validation curve. The caller tags its state (COMPLETE, PRUNED, FAIL) and a failure
    ends it FAILED. Failures of the store are warnings: the trial's result lives in Optuna."""
    store = open_store(params) if parent_id else None
    if store is None:
        yield Run()
        return
    mlflow, experiment_id = store
    tags = {
        **_tags(params, variant, "tune"),
        "mlflow.parentRunId": parent_id,
        "trial": str(number),
        "dvc_stage": f"tune@{variant}",
    }
    run = Run(mlflow)
    run._mirror(
        "the trial's run",
        lambda m: setattr(
            run,
            "run_id",
            m.MlflowClient().create_run(experiment_id, run_name=f"{variant} trial {number}", tags=tags).info.run_id,
        ),
    )
    run._mirror(
        "the trial's params", lambda m: [m.MlflowClient().log_param(run.run_id, k, v) for k, v in values.items()]
    )
    try:
        yield run
    except BaseException:
        run.end("FAILED")
        raise
    run.end("FINISHED")


def tag(run, key, value):
    """Set one tag on a Run (a warning, not a failure, when the store fails)."""
    run._mirror(f"tag {key}", lambda m: m.MlflowClient().set_tag(run.run_id, key, str(value)))


def parent_run(params, run_id):
    """A Run for the search's parent made by search_parent (in this or another worker)."""
    store = open_store(params) if run_id else None
    return Run() if store is None else Run(store[0], run_id)
