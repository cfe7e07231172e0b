"""Test helpers: tiny synthetic IDX files, the real params shrunk, a temp DVC project, a command runner.

Synthetic images are learnable on purpose: class c lights a 6x6 block at a
position of its own, plus noise, so one epoch on a few hundred images already
beats chance and a broken training loop shows.
"""

import functools
import gzip
import hashlib
import http.server
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = [
    "pipeline",
    "scripts/repro.py",
    "scripts/decide.py",
    "scripts/mlflow-ui.py",
    "dvc.yaml",
    "params.yaml",
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvc/plots",
    ".dvcignore",
    ".gitignore",
]
STUDY_FILES = ["study/dvc.yaml", "study/.dvc/config", "study/.dvc/.gitignore", "study/.dvc/plots", "study/.dvcignore"]
TUNE_FILES = ["tune/dvc.yaml", "tune/.dvc/config", "tune/.dvc/.gitignore", "tune/.dvc/plots", "tune/.dvcignore"]
IDX_NAMES = {  # the file names of FashionMNIST, MNIST and KMNIST
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def synthetic_images(n, seed, contrast=None):
    """Class c lights block c: at 200 (unmistakable), or `contrast` above the noise (hard to learn)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
    for i, c in enumerate(labels):
        r, col = 2 + 6 * (c // 4), 2 + 6 * (c % 4)
        block = images[i, r : r + 6, col : col + 6]
        block[...] = 200 if contrast is None else block + contrast
    return images, labels.astype(np.uint8)


def markdown_table(text, header_start):
    """The rows (lists of cells) of the Markdown table in `text` whose header line starts with `header_start`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def idx_bytes(array):
    """The IDX format: magic (0, 0, type 0x08 = ubyte, ndim), big-endian sizes, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx_folder(folder, n_train=600, n_test=200, gz=True, contrast=None):
    """Write the four IDX files; return {raw name: sha256 of the decompressed bytes}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sums = {}
    for split, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        images, labels = synthetic_images(n, seed, contrast)
        for kind, array in (("images", images), ("labels", labels)):
            name, data = IDX_NAMES[(split, kind)], idx_bytes(array)
            sums[name] = hashlib.sha256(data).hexdigest()
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return sums


@contextmanager
def serve_folder(folder):
    """Serve `folder` over HTTP on 127.0.0.1 at a free port; yield its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def build(params, name):
    """The network of variant `name` of `params` (params.Params) as its train stage builds it: from its run config."""
    from pipeline.models import build_model

    config = params.run_config(name)
    return build_model(config.architecture, config.model)


def write_params(tmp_path, **overrides):
    """The shrunk real params (see shrunk_params) as tmp_path/params.yaml: its path."""
    path = Path(tmp_path) / "params.yaml"
    path.write_text(yaml.safe_dump(shrunk_params("unused", **overrides)))
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_url(url, process, timeout=90):
    """Poll `url` until it answers; fail early if `process` exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:  # it answers, with an error page: it is up
            return
        except OSError:
            if process.poll() is not None:  # it has exited: what it printed, where a pipe holds it, says why
                said = [pipe.read() for pipe in (process.stdout, process.stderr) if pipe is not None]
                said = "".join(s.decode(errors="replace") if isinstance(s, bytes) else s for s in said)
                raise AssertionError(f"{process.args} exited {process.returncode}\n{said[-3000:]}") from None
            assert time.monotonic() < deadline, f"{url} did not answer in {timeout} s"
            time.sleep(0.3)


S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "team", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_DEFAULT_REGION": "us-east-1"}


@contextmanager
def s3_server(bucket):
    """moto's S3-compatible server as its own process on a free loopback port, with one bucket: its URL."""
    import boto3

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_url(url, server, timeout=60)
        boto3.client(
            "s3",
            endpoint_url=url,
            aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
        ).create_bucket(Bucket=bucket)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)


def shrunk_params(source, profile="params.yaml", **overrides):
    """The project's real params.yaml (or a second pipeline's file, study/params.yaml: its own keys), shrunk to
    seconds on synthetic data."""
    params = yaml.safe_load((ROOT / profile).read_text())
    if "base" in params:  # a second pipeline's file (the study's): its base, the shrunk params.yaml, does the rest
        params["train"]["seeds"] = [0, 1]
    else:
        params["data"]["sources"]["FashionMNIST"] = [str(source)]
        params["data"]["verify_checksums"] = False  # synthetic files have no pinned sums
        params["data"]["val_size"] = 100
        params["train"].update(epochs=2, batch_size=64, seeds=[0, 1], threads=1)
        params["evaluate"].update(latency_repeats=2, threads=1)
    for dotted, value in overrides.items():
        *path, last = dotted.split(".")
        node = params
        for key in path:
            node = node[key]
        node[last] = value
    for variant in params["variants"].values():  # a variant's own schedule (the study's cnn2: 60) shrinks too
        if "epochs" in variant.get("train", {}):
            if "base" in params:
                del variant["train"]["epochs"]  # the base's shrunk train.epochs
            else:
                variant["train"]["epochs"] = params["train"]["epochs"]
    return params


def run(cmd, cwd, env=None, check=True, timeout=540):
    """Run a command; on failure or after `timeout` seconds, show its output in the assertion.

    Output goes to files, not pipes: `dvc queue start` forks helpers that keep
    its stdout open as long as their queue workers live, so reading a pipe to
    its end waits on the workers too; a worker that hung at shutdown (seen
    once, all its tasks done) kept a CI run waiting 90 minutes.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True)
        try:
            proc.wait(timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: what it started goes too
            proc.wait()
            timed_out = True
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())
    if check and result.returncode != 0:
        what = f"timed out after {timeout} s" if timed_out else f"exited {result.returncode}"
        raise AssertionError(
            f"{' '.join(map(str, cmd))} {what}\nstdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
        )
    return result


def stop_queue_workers(repo):
    """Kill the DVC queue workers of `repo` still alive (each leads its own process group)."""
    wdir = Path(repo) / ".dvc" / "tmp" / "exps" / "celery"
    node = f"dvc-exp-{hashlib.sha256(str(wdir).encode()).hexdigest()[:6]}-".encode()  # as DVC names them
    for pid_file in wdir.glob("dvc-exp-worker-*.pid"):
        pid = int(pid_file.read_text())
        try:  # the pid may have been reused since: kill only if it still is this repo's worker
            if node in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.killpg(os.getpgid(pid), signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError):
            pass


def project_env(repo):
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("DVC_ROOT", None)  # conftest's, for stages run from the checkout: DVC sets the project's own
    venv_bin = str(Path(sys.executable).parent)
    env.update(
        PATH=f"{venv_bin}{os.pathsep}{env['PATH']}",
        DVC_NO_ANALYTICS="1",
        PIPELINE_WORKERS="1",  # one process per stage: the tests run two files at once on 2 cores
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@example.com",
    )
    return env


def compile_kernels_once():
    """Run pipeline.pool's and pipeline.norm's kernels, serial and parallel builds, so numba caches them."""
    import torch

    from pipeline.models import LeNet5

    previous = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            model = LeNet5("relu", batchnorm=True).to(memory_format=torch.channels_last)
            model(torch.randn(4, 1, 32, 32).contiguous(memory_format=torch.channels_last)).sum().backward()
    finally:
        torch.set_num_threads(previous)


def make_project(tmp_path, params, study_params=None, tune_params=None):
    """A temp git repo holding the project's files and `params`, committed; with `study_params`, the study
    too, and with `tune_params`, the tune pipeline."""
    repo = tmp_path / "project"
    repo.mkdir()
    for name in PROJECT_FILES:
        src, dst = ROOT / name, repo / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            # numba's compiled kernels come along (their cache is keyed by the source's hash, not
            # its path): else each temp project's first stage spends ~5-10 s compiling them
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.pyc"))
        else:
            shutil.copy(src, dst)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for folder, files, sub_params in (("study", STUDY_FILES, study_params), ("tune", TUNE_FILES, tune_params)):
        if sub_params is not None:  # a DVC project of its own, in study/ or tune/
            for name in files:
                src, dst = ROOT / name, repo / name
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copytree(src, dst) if src.is_dir() else shutil.copy(src, dst)
            (repo / folder / "params.yaml").write_text(yaml.safe_dump(sub_params, sort_keys=False))
    env = project_env(repo)
    run(["git", "init", "-q", "-b", "main"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "project"], repo, env)
    return repo, env


def train_cmd(params, split_dir, tmp_path, variant="mlp", seed=0):
    """The command line of stage train@<variant>-<seed>: its run config written by check's own code
    into tmp_path/config (unless the params are invalid: the stage reports that), its checkpoint
    into tmp_path/models/seed<seed>.pt."""
    from pipeline.check import write_configs
    from pipeline.params import ParamsError, load_params

    try:
        write_configs(load_params(params), tmp_path / "config")
    except ParamsError:
        pass
    return [
        sys.executable,
        "-m",
        "pipeline.train",
        "--params",
        str(params),
        "--config",
        str(tmp_path / "config" / f"{variant}.json"),
        "--seed",
        str(seed),
        "--split",
        str(split_dir),
        "--out",
        str(tmp_path / "models" / f"seed{seed}.pt"),
    ]


def train_one(params, variant, split_dir, seed, out=None):
    """(checkpoint, history) of one seed trained in this process, as stage train@<variant>-<seed> would."""
    from pipeline.train import train_seed

    checkpoint = train_seed(params.run_config(variant), split_dir, seed, (params, out) if out else None)
    return checkpoint, checkpoint.history


def shrunk_search(variants=None, **overrides):
    """tune/params.yaml's search, shrunk: 3 trials, the leader and the shared setting re-scored on one more seed,
    no pruning unless asked; with `variants`, the spaces of those alone (a project of those variants)."""
    search = yaml.safe_load((ROOT / "tune/params.yaml").read_text())
    if variants:
        search["tune"]["variants"] = {name: search["tune"]["variants"][name] for name in variants}
    search["tune"].update(trials=3, random_trials=2, rescore={"top": 1, "seeds": [100]})
    search["tune"]["pruner"].update(kind="none")
    for dotted, value in overrides.items():
        *path, last = dotted.split(".")
        node = search["tune"]
        for key in path:
            node = node[key]
        node[last] = value
    return search


@contextmanager
def postgres(db="optuna"):
    """A PostgreSQL cluster of its own in a temp folder, on 127.0.0.1 with a password: its URL for `db`."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    assert bins, "PostgreSQL is not installed (make test installs Debian's postgresql)"
    bin_dir = bins[-1]
    as_owner = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
    pgdata = Path(tempfile.mkdtemp(dir="/tmp", prefix="optuna-pg-"))
    password = "test-password"
    pwfile = pgdata.with_suffix(".pw")
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o644)
    if as_owner:
        shutil.chown(pgdata, "postgres")
    port = free_port()
    env = {**os.environ, "PGPASSWORD": password}
    try:
        subprocess.run(
            [
                *as_owner,
                str(bin_dir / "initdb"),
                "-D",
                str(pgdata),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                *as_owner,
                str(bin_dir / "pg_ctl"),
                "-D",
                str(pgdata),
                "-l",
                str(pgdata / "log"),
                "-w",
                "-o",
                f"-p {port} -k {pgdata} -c listen_addresses=127.0.0.1",
                "start",
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", db],
            check=True,
            capture_output=True,
            env=env,
        )
        yield f"postgresql+psycopg2://postgres:{password}@127.0.0.1:{port}/{db}"
    finally:
        subprocess.run(
            [*as_owner, str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(pgdata, ignore_errors=True)
        pwfile.unlink(missing_ok=True)


def start_mlflow_server(tmp_path, port):
    """A real `mlflow server` on 127.0.0.1:port, small (1 worker, no job runner), its store in tmp_path: its Popen."""
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_url(f"http://127.0.0.1:{port}/health", server, timeout=60)
    except AssertionError:
        stop_server(server)
        raise
    return server


def stop_server(server):
    try:
        os.killpg(server.pid, signal.SIGTERM)  # its own process group: the worker goes too
        server.wait(timeout=20)
    except ProcessLookupError:  # stopped already, by the test
        pass
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


RAY_READY = "Ray runtime started"


class RayCluster:
    """A real Ray cluster on this machine: a head without CPUs (the driver's node) and worker nodes of one CPU
    each, every node in a temp folder of its own (its --temp-dir and working folder), none with the driver's
    PYTHONPATH. Ray 2.60 maps --node-ip-address 127.0.0.1 to the machine's network address
    (services.resolve_ip_for_localhost), so the nodes take 127.0.0.2, .3, ...: loopback addresses it keeps.
    Each node is a `ray start --block` in a process group of its own, stopped by that group, never `ray stop`
    (which stops every Ray on the machine)."""

    def __init__(self, workers=2):
        # a short root: a node's sockets live under it, and a Unix socket's path is at most 107 bytes
        self.tmp, self.port = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp")), free_port()
        self.address = f"127.0.0.2:{self.port}"
        self.nodes = {}  # ip -> Popen
        self.ray = str(Path(sys.executable).with_name("ray"))
        self.start("127.0.0.2", ["--head", "--port", str(self.port), "--num-cpus", "0", "--include-dashboard=false"])
        for i in range(workers):
            self.add_node(f"127.0.0.{3 + i}")

    def add_node(self, ip, ray=None):
        """One more worker node of one CPU; `ray`: the `ray` command it starts from (another venv's)."""
        self.start(ip, ["--address", self.address, "--num-cpus", "1"], ray=ray)

    def start(self, ip, args, timeout=90, ray=None):
        folder = self.tmp / ip
        folder.mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
        # the head notices a dead node after 3 missed 1-s health checks, not Ray's default 5 missed 3-s ones
        # (~30 s measured here): the killed-node test waits that long before its task runs again
        env.update(
            RAY_USAGE_STATS_ENABLED="0",
            RAY_health_check_period_ms="1000",
            RAY_health_check_timeout_ms="1000",
            RAY_health_check_failure_threshold="3",
        )
        log = folder / "ray-start.log"
        with open(log, "w") as out:
            node = subprocess.Popen(
                [ray or self.ray, "start", "--block", "--node-ip-address", ip, "--temp-dir", f"{folder}/tmp", *args],
                cwd=folder,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.nodes[ip] = node
        deadline = time.monotonic() + timeout
        while RAY_READY not in log.read_text():
            if node.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"ray start for {ip} failed:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)

    def workers_of(self, ip):
        """PIDs of the task workers running on node `ip` now: their working folder is in the node's folder."""
        folder, found = str(self.tmp / ip), []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                title = (proc / "cmdline").read_bytes()  # a busy worker's title: ray::<task name>
                if title.startswith(b"ray::train@") and os.readlink(proc / "cwd").startswith(folder):
                    found.append(int(proc.name))
            except (FileNotFoundError, PermissionError, ProcessLookupError):
                pass
        return found

    def kill(self, ip):
        """SIGKILL node `ip` as a machine dies: its Ray processes (one process group) and its task workers."""
        workers, node = self.workers_of(ip), self.nodes.pop(ip)
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(node.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        node.wait()

    def stop(self):
        """SIGKILL every node (workers first, the head last) and remove their folders: test nodes keep nothing."""
        for ip in list(self.nodes)[::-1]:
            self.kill(ip)
        shutil.rmtree(self.tmp, ignore_errors=True)
