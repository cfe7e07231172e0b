"""Mirror the stages into MLflow; the DVC-tracked files stay the record.

What the stages call (the store itself is pipeline/mlflow_store.py's). It copies what the stages computed
and wrote, and builds no result of its own. Runs: `train@<variant>-<seed>` (params, curves, the split as
inputs, the first seed's model); `evaluate@<variant>` (` <DVC experiment>` appended inside one), the
parent of its seeds' runs, which get their test metrics, with the aggregates and evaluate's output files;
`tune@<variant>` per search, with a child per trial and per re-scoring run. Tracking off: runs that record
nothing. A seed's run carries its checkpoint's MD5 (tag `checkpoint_md5`, DVC's hash): evaluate finds it so.

One API, MlflowClient by run id, so that a stage writes to several runs; the exception is the model, which
MLflow logs only into the active run (Run.log_model resumes the seed's run for that one call).

Failures: a store that cannot be opened or start the run fails the stage before it writes any output (one
line naming the URI; DVC runs it again later); any later failure is one warning, after which that run logs
nothing more; a final status or tag the store did not take is noted in observations/mlflow-pending/ and set
by the next command that opens the store.
"""

import hashlib
import os
import socket
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import first_line
from pipeline.io import file_md5, flatten, split_seed_key
from pipeline.mlflow_store import (
    TrackingError,
    git_commit,
    note_pending_status,
    observe,  # noqa: F401  (the stages' tracking.observe)
    open_store,
    tracking_uri,
)


def resolved_params(params, variant):
    """The config one variant's stages use: shared sections plus its own features."""
    used = params.model_dump(include={"data", "evaluate"})
    del used["data"]["sources"]
    used["model"] = params.model_for(variant).model_dump()  # with the variant's own overrides
    used["train"] = params.train_for(variant).model_dump()
    used["variant"] = params.variants[variant].model_dump(exclude={"train", "model"})
    return flatten("", used)


def warn(what, error):
    """One line on stderr: MLflow is a mirror, so its failures never cost a stage its outputs."""
    print(
        f"warning: MLflow: {what} not mirrored to {tracking_uri()} ({type(error).__name__}: {first_line(error)}); "
        "the DVC outputs are complete",
        file=sys.stderr,
        flush=True,
    )


def _tags(params, variant, stage, **extra):
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
    return {**tags, **{key: str(value) for key, value in extra.items()}}


class Run:
    """What the stages log into one run. Every method is a no-op when tracking is off, and a failure
    (a server gone, a full disk) is one warning, after which the run logs nothing more."""

    def __init__(self, client=None, run_id=None):
        self.client, self.run_id, self.failed = client, run_id, False
        self.pending_tags = {}  # tags the store did not take: noted with the run's status, set at its next open

    def _mirror(self, what, action):
        if not self.client:
            return
        try:
            action(self.client)
        except Exception as e:
            warn(what, e)
            self.client, self.failed = None, True  # a dead server would cost a timeout per call

    def set_tags(self, tags, what="tags", keep=False):
        """`keep`: a tag evaluate needs (the checkpoint's MD5): a store that is down gets it at its next open."""
        tags = {key: str(value) for key, value in tags.items()}
        self._mirror(what, lambda c: [c.set_tag(self.run_id, key, value) for key, value in tags.items()])
        if self.failed and keep:
            self.pending_tags.update(tags)

    def log_params(self, values):
        if not self.client:  # tracking off: not even MLflow's import (~1 s of every stage process)
            return
        from mlflow.entities import Param

        self._mirror("params", lambda c: c.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in values.items()]))

    def log_metrics(self, metrics, step=0):
        if not self.client:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        batch = [Metric(k, float(v), now, step) for k, v in numbers.items()]
        self._mirror("metrics", lambda c: c.log_batch(self.run_id, metrics=batch))

    def log_epoch(self, record):
        self.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=record["epoch"])

    def log_artifact(self, path, folder=None):
        self._mirror(f"artifact {path}", lambda c: c.log_artifact(self.run_id, str(path), folder))

    def log_dataset(self, split_dir, split, images, labels, dataset):
        """The split as an input of the run: its name, the split and a digest of its file."""

        def log(client):
            import mlflow.data
            from mlflow.entities import Dataset, DatasetInput, InputTag
            from mlflow.exceptions import MlflowException

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
            entity = Dataset(**data.to_dict())
            inputs = [DatasetInput(entity, [InputTag("mlflow.data.context", split)])]
            try:
                client.log_inputs(self.run_id, inputs)
            except MlflowException as e:
                # Two seeds that start at once both find the dataset missing from the experiment and both
                # insert it (MLflow 3.17's SQL store reads, then writes); the loser's unique-key error comes back
                # as BAD_REQUEST. Once the winner's row is committed, the same call finds it and succeeds.
                if e.error_code != "BAD_REQUEST":
                    raise
                client.log_inputs(self.run_id, inputs)

        self._mirror(f"the {split} dataset", log)

    def log_model(self, checkpoint):
        """The Checkpoint as a pyfunc that takes raw uint8 images (pipeline/serving.py)."""

        def log(client):
            import tempfile
            from importlib.metadata import version

            import mlflow
            import torch

            from pipeline import serving

            with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
                path = Path(tmp) / "checkpoint.pt"
                torch.save(checkpoint.to_file_dict(), path)
                # named requirements skip MLflow's inference (~6 s a model); the example warning is noise
                warnings.filterwarnings("ignore", ".*input example was not provided", UserWarning)
                # The only fluent call (see the docstring): it logs into the active run, so resume ours;
                # the stage ends it with its real status right after (record_checkpoint is its last step).
                with mlflow.start_run(run_id=self.run_id):
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

    def record_checkpoint(self, checkpoint, path, with_model):
        """After train wrote `path`: tag this run with its MD5 and DVC path (evaluate finds the run by them),
        and log the model when `with_model`."""
        if self.run_id:
            md5 = file_md5(path)
            self.set_tags({"checkpoint_md5": md5, "dvc_output": path}, "the checkpoint's tag", keep=True)
            self._mirror("the variant's run", lambda client: self._join_variant(client, md5))
        if with_model:
            self.log_model(checkpoint)

    def _join_variant(self, client, md5):
        """A run that trained a checkpoint a variant's run already holds (a proof re-run, `dvc repro --force
        --single-item train@...`) joins that variant's run, so the UI folds it under the variant too."""
        for run in runs_of_checkpoint(client, client.get_run(self.run_id).info.experiment_id, md5):
            parent = run.data.tags.get("mlflow.parentRunId")
            if run.info.run_id != self.run_id and parent:
                client.set_tag(self.run_id, "mlflow.parentRunId", parent)
                return

    def record_evaluation(self, params, files, metrics, outputs):
        """After evaluate wrote `outputs`: each seed's run (found by its checkpoint in `files`, {seed: path})
        made a child of this one, with its test metrics; the aggregates of `metrics` and the output files here."""
        if not self.client:
            return
        by_seed = {split_seed_key(key): value for key, value in metrics.items() if split_seed_key(key)}
        untracked = []
        for seed, path in files.items():
            runs = checkpoint_runs(params, file_md5(path))
            if not runs:
                untracked.append(seed)
                continue
            # test metrics only: the seed's run already has val/train curves per epoch under those names
            test = {name: value for (name, of), value in by_seed.items() if of == seed and name.startswith("test_")}
            # the newest run of the checkpoint, and every older one that no variant's run holds yet (a train
            # stage run without its evaluate after it): mlflow ui nests a run under its mlflow.parentRunId
            for i, run in enumerate(runs):
                if i == 0 or "mlflow.parentRunId" not in run.data.tags:
                    seed_run = attach(params, run.info.run_id)
                    seed_run.set_tags({"mlflow.parentRunId": self.run_id}, "the seed run's parent")
                    seed_run.log_metrics(test)
        if untracked:
            print(
                f"MLflow: no run of this store trained seed(s) {untracked} of {Path(files[untracked[0]]).parent} "
                "(restored by DVC, or trained against another store): their test metrics are on the variant's run only"
            )
        self.log_metrics({key: value for key, value in metrics.items() if split_seed_key(key) is None})
        for path in outputs:  # each output under its folder's name: metrics/<v>.json, history/<v>.json, ...
            self.log_artifact(path, Path(path).parent.name)

    def end(self, status):
        """End the run; a store that fails now or failed before gets the status at its next open_store."""
        if self.run_id and not self.failed:
            self._mirror(f"run status {status}", lambda c: c.set_terminated(self.run_id, status))
        if self.run_id and self.failed:
            note_pending_status(self.run_id, status, self.pending_tags)


def _start(params, name, tags, parent_id=None):
    """A new run in the store's experiment, or Run() when tracking is off. A store that cannot be opened or
    cannot start the run is TrackingError, one line naming the URI, before the stage writes any output."""
    store = open_store(params)
    if store is None:
        return Run()
    mlflow, experiment_id = store
    client = mlflow.MlflowClient()
    if parent_id:
        tags = {**tags, "mlflow.parentRunId": parent_id}
    try:
        return Run(client, client.create_run(experiment_id, run_name=name, tags=tags).info.run_id)
    except Exception as e:
        raise TrackingError(
            f"MLflow store {tracking_uri()} cannot start a run ({type(e).__name__}: {first_line(e)})"
        ) from None


@contextmanager
def _running(run):
    """Yield `run`, then end it FINISHED, or FAILED when the stage raises (Ctrl-C included)."""
    try:
        yield run
    except BaseException:
        run.end("FAILED")
        raise
    run.end("FINISHED")


@contextmanager
def variant_run(params, variant, stage, params_path):
    """The run of one variant's stage (evaluate: the parent of its seeds' runs), with its params."""
    # a DVC experiment's name in its runs' names: two experiments' variant runs differ in the table
    name = f"{stage}@{variant}" + (f" {os.environ['DVC_EXP_NAME']}" if os.environ.get("DVC_EXP_NAME") else "")
    run = _start(params, name, _tags(params, variant, stage))
    run.log_params(resolved_params(params, variant))
    run.log_artifact(params_path)
    with _running(run):
        yield run


@contextmanager
def seed_run(params, config, seed):
    """The run of one seed's training (stage train@<variant>-<seed>); evaluate later makes it a child of the
    variant's run. No params (a run on a cluster node): a run that records nothing."""
    if params is None:
        yield Run()
        return
    name = f"train@{config.variant}-{seed}"
    run = _start(params, name, _tags(params, config.variant, "train", dvc_stage=name, seed=seed))
    run.log_params({**flatten("", config.model_dump()), "seed": seed})
    with _running(run):
        yield run


def search_parent(params, variant, study_name):
    """The id of a new parent run for one variant's search (run `tune@<variant>`), or None when tracking
    is off. Every worker of the search logs its trials under it (the id is kept in the Optuna study)."""
    return _start(params, f"tune@{variant}", _tags(params, variant, "tune", optuna_study=study_name)).run_id


@contextmanager
def trial_run(params, parent_id, variant, number, values):
    """A child of the search's run for one trial, with its params; the caller logs its curve and tags its
    state. The store's failures are warnings here: the trial's result lives in Optuna."""
    run = Run()
    if parent_id:
        tags = _tags(params, variant, "tune", trial=number)
        try:
            run = _start(params, f"{variant} trial {number}", tags, parent_id)
        except TrackingError as e:
            warn("the trial's run", e)
    run.log_params(values)
    with _running(run):
        yield run


def runs_of_checkpoint(client, experiment_id, md5):
    """The runs of one experiment tagged with this checkpoint MD5, newest first."""
    newest_first = ["attributes.start_time DESC"]
    return client.search_runs([experiment_id], f"tags.checkpoint_md5 = '{md5}'", order_by=newest_first)


def checkpoint_runs(params, md5):
    """The runs tagged with this checkpoint MD5, newest first; none when tracking is off, or no run of this
    store trained that file (DVC restored it from its cache, or it was trained against another store)."""
    store = open_store(params)
    if store is None:
        return []
    mlflow, experiment_id = store
    return runs_of_checkpoint(mlflow.MlflowClient(), experiment_id, md5)


def checkpoint_run(params, md5):
    """The id of the newest run tagged with this checkpoint MD5, else None (see checkpoint_runs)."""
    runs = checkpoint_runs(params, md5)
    return runs[0].info.run_id if runs else None


def attach(params, run_id):
    """A Run that adds to a run made earlier, in this process or another (a seed's run, a search's parent).

    A store that cannot be opened fails the stage (TrackingError, one line), as in _start."""
    store = open_store(params) if run_id else None
    return Run() if store is None else Run(store[0].MlflowClient(), run_id)


def tag(run, key, value):
    """Set one tag on a Run (a warning, not a failure, when the store fails)."""
    run.set_tags({key: value}, f"tag {key}")
