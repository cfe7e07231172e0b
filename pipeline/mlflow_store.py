"""Where the MLflow mirror lives: the store, its experiment, and what dead processes left there.

Store: MLFLOW_TRACKING_URI when set (e.g. a team's `mlflow server`), else
sqlite:///<repo>/mlflow.db with artifacts under <repo>/mlruns. <repo> is
DVC_ROOT when DVC sets it: queued and --temp experiments run in a temp copy
under .dvc/tmp/exps/ that is deleted afterwards, so paths relative to the
working folder would lose their runs. The experiment is created once, under
a file lock, with an absolute artifact_location (SQLite stores created by
several processes at once fail; an experiment first created by a queue
worker would otherwise keep artifacts in its temp copy), and tagged so that
`mlflow ui` opens on its runs with our columns (ui_url), not the GenAI overview.

Every command that opens the store first closes what dead processes left
behind: runs still RUNNING whose process on this host is gone are ended
KILLED, unless the process had finished them while the store was unreachable
(it then noted the status, and the tags it could not set, in observations/mlflow-pending/, replayed here).
Observations of one run (timings, ids) go to observations/ (`observe`),
tracked by neither git nor DVC. pipeline/tracking.py is what the stages call.
"""

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

from filelock import FileLock

from pipeline.errors import PipelineError, first_line
from pipeline.io import process_alive  # the test that tells a stale temp folder

# Fail fast on an unreachable server instead of MLflow's minutes of retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")  # no network for pip here


class TrackingError(PipelineError):
    """The MLflow store cannot be reached or written."""


def repo_root():
    """DVC_ROOT (else the working folder), or the project above it when that is a DVC project inside it.

    The small-CNN study is a DVC project in study/ (study/.dvc): its runs go to the
    main project's store, not to a second one in study/.
    """
    start = Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()
    outer = [p for p in (start, *start.parents) if (p / ".dvc").is_dir()]
    return outer[-1] if outer else start


def git_commit():
    """The commit a run's code came from (tag git_commit), or 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=repo_root(), timeout=10)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def tracking_uri():
    """MLFLOW_TRACKING_URI with a relative local path made absolute against the repo root, else our default.

    A queued experiment runs in a temp copy that DVC deletes afterwards: a path
    relative to the working folder (`sqlite:///mlflow.db`, MLflow's own example)
    would put its runs there and lose them.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"
    path = store_path(uri)
    return uri if path is None else uri.replace(uri.split("?")[0], _with_path(uri.split("?")[0], path), 1)


def store_path(uri):
    """The local file or folder a sqlite:// or file store URI names (absolute), or None for a server."""
    base = uri.split("?")[0]
    if base.startswith("sqlite:///"):
        path = base.removeprefix("sqlite:///")
    elif base.startswith("file://"):
        path = base.removeprefix("file://")
    elif base.startswith("file:"):
        path = base.removeprefix("file:")
    elif "://" not in base:  # a bare path: MLflow's file store
        path = base
    else:
        return None
    return (repo_root() / path).resolve() if path else None  # an absolute path stays as it is


def _with_path(base, path):
    return f"sqlite:///{path}" if base.startswith("sqlite:") else path.as_uri()


# What `mlflow ui` (3.17) opens an experiment on. Its landing tab follows the workflow type: the URL's
# `?workflowType=`, else the choice the browser stored, by default GenAI, whose "Overview" shows traces
# (mlflow/server/js: useWorkflowType, useExperimentKind; the experiment's kind tag is read only when the
# workflow switch is off). Its runs table shows no metric until columns are chosen; a view shared through
# an experiment tag (`mlflow.sharedViewState.<key>`, what the UI's Share button writes) chooses them and
# the order. ui_url() is the landing page with both: "Training runs", mean accuracies, best first.
VIEW_KEY = "variants"


_VIEW_COLUMNS = ["metrics.`test_acc_mean`", "metrics.`val_acc_mean`", "metrics.`seeds`", "tags.`dvc_exp_name`"]


SHARED_VIEW = {
    "searchFilter": "",
    "orderByKey": "metrics.`val_acc_mean`",
    "orderByAsc": False,
    # the UI state as the UI builds it (ExperimentPageUIState's defaults), with our columns
    "selectedColumns": _VIEW_COLUMNS,
    "columnOrder": [],
    "columnWidths": {},
    "runsExpanded": {},
    "runsPinned": [],
    "runsHidden": [],
    "runsVisibilityMap": {},
    "runsHiddenMode": "FIRST_10_RUNS",
    "viewMaximized": False,
    "runListHidden": False,
    "isAccordionReordered": False,
    "useGroupedValuesInCharts": True,
    "hideEmptyCharts": True,
    "groupBy": None,
    "groupsExpanded": {},
    "autoRefreshEnabled": True,
    "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""},
}


EXPERIMENT_TAGS = {
    "mlflow.experimentKind": "custom_model_development",  # the kind, for a UI with the workflow switch off
    f"mlflow.sharedViewState.{VIEW_KEY}": json.dumps(SHARED_VIEW),
}


def ui_url(base, experiment_id):
    """The page of `mlflow ui` at `base` to open an experiment on: its runs, our columns, best first."""
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"


def _experiment_id(mlflow, name, uri):
    """Create the experiment once: under a lock beside a local store, which every clone and queue worker
    sharing that store also takes (a new SQLite store initialised by two processes at once fails)."""
    path = store_path(uri)
    lock = FileLock(f"{path}.lock", timeout=120) if path else contextlib.nullcontext()
    # A local store keeps artifacts beside it, wherever it is used from; a server decides itself.
    location = (path.parent / "mlruns").as_uri() if path and uri.startswith("sqlite:") else None
    with lock:
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            try:
                return mlflow.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS)
            except Exception:  # made meanwhile by another client of the same server
                experiment = mlflow.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            raise TrackingError(
                f"MLflow experiment {name!r} in {uri} is deleted: restore it with `mlflow experiments restore "
                f"--experiment-id {experiment.experiment_id}` or set tracking.experiment to a new name"
            )
        tag_experiment(mlflow.MlflowClient(), experiment)
        return experiment.experiment_id


def tag_experiment(client, experiment):
    """Set EXPERIMENT_TAGS on an experiment made by an older version of this module (or without it)."""
    for key, value in EXPERIMENT_TAGS.items():
        if experiment.tags.get(key) != value:
            client.set_experiment_tag(experiment.experiment_id, key, value)


_OPENED = {}  # (uri, experiment) -> experiment id: a stage that logs to several runs opens the store once


def experiment_name(params):
    """MLFLOW_EXPERIMENT_NAME (MLflow's own variable: tune/dvc.yaml sets it), else tracking.experiment."""
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or params.tracking.experiment


def open_store(params):
    """(mlflow, experiment id) of the configured store, or None when tracking is off."""
    if not params.tracking.enabled:
        return None
    # MLflow's artifact progress bars, like ours (tqdm's disable=None), only on a terminal
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", str(sys.stderr.isatty()).lower())
    import mlflow

    uri = tracking_uri()
    key = (uri, experiment_name(params))
    mlflow.set_tracking_uri(uri)
    if key not in _OPENED:
        try:
            _OPENED[key] = _experiment_id(mlflow, key[1], uri)
            close_dead_runs(mlflow.MlflowClient(), [_OPENED[key]])
        except TrackingError:
            raise
        except Exception as e:
            raise TrackingError(unusable_store(uri, e)) from None
    return mlflow, _OPENED[key]


def unusable_store(uri, error):
    """The one line for a store that cannot be used: what the server said, and the way out for it."""
    text = str(error)
    if "error code 401" in text:  # MLflow's basic-auth app: no login, or a wrong one
        given = "a wrong one" if os.environ.get("MLFLOW_TRACKING_USERNAME") else "none"
        return (
            f"MLflow store {uri} asks for a login and got {given} (HTTP 401): set MLFLOW_TRACKING_USERNAME "
            "and MLFLOW_TRACKING_PASSWORD to your account on that server (docs/team.md)"
        )
    if "Invalid Host header" in text:  # MLflow's guard against DNS rebinding
        host = urllib.parse.urlparse(uri).hostname
        return (
            f"MLflow store {uri} does not accept the host name {host!r} (HTTP 403, its guard against DNS "
            "rebinding): use a name the server lists, or add this one to its MLFLOW_ALLOWED_HOSTS (docs/team.md)"
        )
    return (
        f"MLflow store {uri} cannot be used ({type(error).__name__}: {first_line(error)}); set "
        f"MLFLOW_TRACKING_URI to a reachable store or tracking.enabled: false"
    )


def observations_dir():
    """observations/ under the repo root: one run's timings and ids, tracked by neither git nor DVC."""
    return repo_root() / "observations"


def observe(relative, data):
    """Write one run's observations (a JSON file under observations/); never fails the stage."""
    path = observations_dir() / relative
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n")
    except OSError as e:
        print(f"warning: {path} not written ({e.strerror}); MLflow has the same numbers", file=sys.stderr)


def _pending_dir():
    """observations/mlflow-pending/<store>/: one folder per store, so that no store replays another's notes."""
    return observations_dir() / "mlflow-pending" / hashlib.sha256(tracking_uri().encode()).hexdigest()[:12]


def note_pending_status(run_id, status, tags=None):
    """A run's final status (and the tags it could not set, e.g. the checkpoint's MD5 that evaluate finds the run
    by) that the store did not take (server down): the next open_store sets them."""
    note = {"run_id": run_id, "status": status, "end_time": int(time.time() * 1000), "store": tracking_uri()}
    note["tags"] = tags or {}
    observe((_pending_dir() / f"{run_id}.json").relative_to(observations_dir()), note)


def tidy_store(mlflow):
    """close_dead_runs over every experiment, for commands that open the store without one of their own."""
    try:
        client = mlflow.MlflowClient()
        close_dead_runs(client, [e.experiment_id for e in client.search_experiments()])
    except Exception:  # the command says itself if the store cannot be used
        pass


def close_dead_runs(client, experiment_ids):
    """Set the statuses noted while the store was unreachable; end as KILLED this host's runs of dead processes."""
    for note in sorted(_pending_dir().glob("*.json")) if _pending_dir().is_dir() else []:
        try:
            pending = json.loads(note.read_text())
            for key, value in pending.get("tags", {}).items():
                client.set_tag(pending["run_id"], key, value)
            client.set_terminated(pending["run_id"], pending["status"], pending["end_time"])
            note.unlink()
        except Exception as e:  # a run of another store, or this one still failing: leave the note
            if "RESOURCE_DOES_NOT_EXIST" in str(e) or "not found" in str(e).lower():  # deleted since
                note.unlink()
    host = socket.gethostname()
    stale = client.search_runs(
        list(experiment_ids), f"attributes.status = 'RUNNING' and tags.host = '{host}'", max_results=1000
    )
    for run in stale:
        pid = int(run.data.tags.get("pid", "0"))
        if pid and not process_alive(pid):
            client.set_terminated(run.info.run_id, "KILLED")
            print(
                f"MLflow: run {run.info.run_name} ({run.info.run_id}) was left RUNNING by a dead process: marked KILLED"
            )
