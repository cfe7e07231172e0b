"""A train stage's training as a task on a Ray cluster, while DVC records the stage on the driver.

RAY_ADDRESS (Ray's own variable: `host:port` of the head, or `ray://host:10001`)
names the cluster; unset, nothing here imports Ray and every stage trains in its
own process, as before. Set, stage train still runs on the driver under DVC
(`dvc repro`, or scripts/repro.py's parallel `dvc repro --single-item`), but the
heavy part, `fitting.fit_seed`, runs as one Ray task on some node:

- in: the run config and the split's tensors travel through Ray's object store,
  the code (this package, uncommitted edits included) through the task's
  runtime environment; a node reads none of the driver's folders and needs no
  DVC remote, git checkout or MLflow login: only the project's venv;
- out: the best weights and the per-epoch records come back as the task's
  result; the stage writes the checkpoint and mirrors the run into MLflow on
  the driver, so dvc.lock, the run-cache and the checkpoint are what a local
  run writes (byte for byte where the node's CPU kind is the driver's);
- a node that dies mid-task: Ray runs the task again on another node
  (max_retries); the stage, and so DVC's record, happens once;
- Ctrl-C or SIGTERM on the driver: the stage cancels its task and closes its
  MLflow run as KILLED, as on one machine.
"""

import importlib
import os
import pickle
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.errors import PipelineError, first_line

PACKAGE = Path(__file__).resolve().parent
RETRIES = 3  # a task whose node or worker died runs again elsewhere, this many times at most
VENV_FIX = "start the node's Ray from the project's venv (`.venv/bin/ray start --address ...`, docs/cluster.md)"


def address():
    """The cluster's address (RAY_ADDRESS), or None: train on this machine."""
    return os.environ.get("RAY_ADDRESS", "").strip() or None


def host_port(address):
    """(host, port) of `host:port` or `ray://host[:port]` (Ray Client's default port is 10001)."""
    parts = urlsplit(address if "://" in address else f"gcs://{address}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or (port is None and parts.scheme != "ray"):
        raise PipelineError(f"RAY_ADDRESS {address!r} is not host:port or ray://host:port (docs/cluster.md)")
    return parts.hostname, port or 10001


def check_reachable(address, timeout=5.0):
    """One line, before anything starts, when nothing answers at the cluster's address."""
    host, port = host_port(address)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise PipelineError(
            f"no Ray cluster answers at {address} (RAY_ADDRESS: {e.strerror or first_line(e)}): start its head with "
            "`ray start --head` (docs/cluster.md), or unset RAY_ADDRESS to train on this machine"
        ) from None


def connect(address):
    """Join the cluster as a driver, shipping this package to the nodes; one line if it cannot."""
    import ray

    if ray.is_initialized():
        return ray
    check_reachable(address)
    # One task's failure is our one line; Ray would also log the other tasks' errors it was never asked for
    os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
    # The code a node runs: this package as it is now (uncommitted edits too), as the job's working_dir. Not
    # py_modules: without a working_dir Ray also puts the driver's working folder on the workers' sys.path,
    # and a node on the driver's machine would import the driver's copy. Uploaded once per content hash.
    staged = Path(tempfile.mkdtemp(prefix="pipeline-code-"))
    try:
        shutil.copytree(PACKAGE, staged / PACKAGE.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        ray.init(
            address=address,
            runtime_env={"working_dir": str(staged)},
            logging_level="ERROR",
            log_to_driver=False,  # a task's own lines would interleave across stages; the stage prints its own
        )
    except Exception as e:  # a wrong port, another Ray version, an address that is not a Ray head
        raise PipelineError(
            f"could not join the Ray cluster at {address} (RAY_ADDRESS: {type(e).__name__}: {first_line(e)}); "
            "docs/cluster.md says what the driver needs"
        ) from None
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return ray


def cpus():
    """The cluster's CPUs (all nodes), once connected."""
    import ray

    return int(ray.cluster_resources().get("CPU", 0))


def gpus_per_task():
    """GPUs a training task asks for: none on a cluster without GPUs, else PIPELINE_GPUS_PER_SEED (default 1;
    a fraction such as 0.25 lets four seeds share one GPU)."""
    import ray

    if not ray.cluster_resources().get("GPU"):
        return 0
    share = os.environ.get("PIPELINE_GPUS_PER_SEED", "1")
    try:
        value = float(share)
    except ValueError:
        value = -1
    if not 0 < value <= 1 and not (value > 1 and value.is_integer()):
        raise PipelineError(f"PIPELINE_GPUS_PER_SEED must be a fraction in (0, 1] or a whole number, got {share!r}")
    return value


def _on_node(target, payload):
    """Run `target` ('module:function') on the arguments pickled in `payload`, on the node Ray chose; return
    (the node, its result). Both are opened here, not by Ray, so that a node whose Python lacks the project's
    packages says which node it is (Ray's own unpickling error names no node)."""
    import ray

    node = f"{socket.gethostname()} ({ray.util.get_node_ip_address()})"
    try:
        module, name = target.split(":")
        function, args = getattr(importlib.import_module(module), name), pickle.loads(payload)
    except ImportError as e:
        raise PipelineError(f"node {node}: {first_line(e)}; {VENV_FIX}") from None
    return node, function(*args)


def run_on_node(function, *args, threads, name):
    """(node, function(*args)) run as a Ray task asking for `threads` CPUs (and a GPU where the cluster has
    them); every failure one line naming the node and the fix; Ctrl-C cancels the task."""
    return run_on_nodes(function, [args], threads=threads, name=name)[0]


def run_on_nodes(function, calls, threads, name, env=None):
    """[(node, function(*args)) for args in calls], each call a Ray task as in run_on_node, all at once;
    `env`: environment variables the tasks need (their runtime environment's env_vars)."""
    ray = connect(address())
    options = {"num_cpus": threads, "num_gpus": gpus_per_task(), "max_retries": RETRIES, "name": name}
    if env:
        options["runtime_env"] = {"env_vars": env}  # merged with the job's (its working_dir stays)
    module = function.__module__
    if module == "__main__":  # a stage run as `python -m pipeline.tune`: the node imports it by its real name
        module = sys.modules["__main__"].__spec__.name
    target = f"{module}:{function.__qualname__}"
    # each distinct argument tuple pickled and put in the object store once (a search's workers share one:
    # the split is 47 MB), then handed to as many tasks as use it
    payloads = {}
    for args in calls:
        if id(args) not in payloads:
            payloads[id(args)] = ray.put(pickle.dumps(args, protocol=5))
    refs = [ray.remote(_on_node).options(**options).remote(target, payloads[id(args)]) for args in calls]
    try:
        return ray.get(refs)
    except KeyboardInterrupt:  # the driver's Ctrl-C or SIGTERM (errors.Terminated): stop the nodes' work too
        for ref in refs:
            ray.cancel(ref, force=True)
        raise
    except ray.exceptions.RayTaskError as e:
        cause = e.cause if isinstance(e.cause, BaseException) else e
        if isinstance(cause, PipelineError):  # our own one line: a diverged loss, a node without the venv
            raise PipelineError(first_line(cause, limit=400)) from None
        where = f"node {e.ip}" if getattr(e, "ip", None) else "a node"
        raise PipelineError(f"{name} failed on {where}: {type(cause).__name__}: {first_line(cause)}") from None
    except ray.exceptions.RuntimeEnvSetupError as e:
        raise PipelineError(f"a node could not set up the code it was sent ({first_line(e)}); {VENV_FIX}") from None
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.RaySystemError) as e:
        raise PipelineError(
            f"{name}: its node or worker died {RETRIES + 1} times ({type(e).__name__}); check the cluster "
            "(`ray status`) and run the stage again"
        ) from None
