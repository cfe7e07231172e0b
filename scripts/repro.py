"""`dvc repro` (or `dvc exp run`) with the train (and tune) stages run as many at once as the cores allow.

DVC runs one stage at a time, and one seed's training uses one core (train.threads:
a param, since it changes the numerics). So this script first brings the stages
that train@ stages depend on up to date (`dvc repro <them>`), then runs every
train@<variant>-<seed> stage that `dvc status` calls changed (in tune/, every
tune@<variant> search first, the same way), each as its own
`dvc --wait-for-lock repro --single-item <stage>`, several at once: DVC releases its
repository lock while a stage's command runs (dvc/stage/run.py, `unlocked_repo`)
and takes it again to record the result, so each stage is recorded in dvc.lock and
in the run-cache exactly as a plain `dvc repro` would. Last, the plain command runs
what is left (evaluate, report), finding every train stage up to date.

    python scripts/repro.py                          # = dvc repro, in parallel
    python scripts/repro.py --pull                   # = dvc repro --pull
    python scripts/repro.py --exp -S train.seeds=[0,1,2,3,4] [-n NAME]   # = dvc exp run -S ...
    python scripts/repro.py --cd study               # the study's project
    python scripts/repro.py --cd tune                # the tune pipeline: its tune@ stages first, in parallel
    python scripts/repro.py --address 10.0.0.5:6379  # train stages' training on a Ray cluster (= RAY_ADDRESS)

How many at once: PIPELINE_WORKERS, else the cores (their affinity) divided by the
largest train.threads; on a Ray cluster (--address or RAY_ADDRESS), the train
stages count the cluster's CPUs instead: each stage still runs here under DVC,
which records it, and ships its training to a node (pipeline/cluster.py,
docs/cluster.md). Each stage's output goes to observations/repro/<stage>.log
(git-ignored); a failed stage's one-line error is printed (once: another stage that
failed with the same line says "failed the same way"; a stage without one shows
the end of its log), the stages already running
finish (their results are valid and recorded), no new one starts, and the exit
status is DVC's. Ctrl-C stops every stage and prints each one's last line.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, wait
from concurrent.futures.thread import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm


def dvc(*args, cwd, capture=False):
    """Run a dvc command in the project at `cwd`; its exit status, or (status, stdout) with capture."""
    result = subprocess.run(["dvc", *args], cwd=cwd, capture_output=capture, text=True)
    return (result.returncode, result.stdout) if capture else result.returncode


def dvc_shown(*args, cwd):
    """Run a dvc command with its output on the terminal, as it comes; return its exit status after saying in
    one line what a full DVC cache left (DVC's own lines name a temp path and no figure)."""
    proc = subprocess.Popen(["dvc", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:
        print(line, end="", flush=True)
        seen.append(line)
    code = proc.wait()
    said = full_cache(cwd, "".join(seen))
    if said:
        print(said, file=sys.stderr, flush=True)
        return code or 1
    return code


def stages_out_of_space(text):
    """The stages whose output DVC could not cache: 'No space left' under a `Running stage 'x'` heading, or in
    `failed to reproduce 'x'`."""
    found, current = [], None
    for line in text.splitlines():
        heading = re.match(r"Running stage '([^']+)'", line)
        current = heading[1] if heading else current
        if "[Errno 28]" in line:
            failed = re.search(r"failed to reproduce '([^']+)'", line)
            stage = failed[1] if failed else current
            if stage and stage not in found:
                found.append(stage)
    return found


def full_cache(project, text, stages=None):
    """One line for DVC's `[Errno 28] No space left on device` while caching: the cache folder, its free space,
    what the stages' outputs need and how to keep them without training again; the temp files DVC left in the
    cache are removed first. None when `text` shows no full device."""
    if "[Errno 28]" not in text:
        return None
    from pipeline.dvc_internals import cache_dir, stage_outputs

    stages = stages or stages_out_of_space(text)
    cache, outs = cache_dir(project), stage_outputs(project, stages)
    need = sum(f.stat().st_size for o in outs for f in ([o] if o.is_file() else o.rglob("*")) if f.is_file())
    left = [f for f in cache.rglob(".*.tmp") if f.is_file()]  # DVC's own partial copies, never an object
    for f in left:
        f.unlink()
    free = shutil.disk_usage(cache).free
    names = " ".join(stages) or "<stage>"
    return (
        f"error: the DVC cache {cache} is full ({free / 2**20:.1f} MB free; the outputs of {names} take "
        f"{need / 2**20:.1f} MB): DVC could not keep them in the cache; they are in the workspace. Free space there "
        f"or move the cache (`dvc cache dir <folder>`), then `dvc commit --force {names}` caches and records them "
        "without running them again"
        + (f"; the {len(left)} temp file(s) DVC left in the cache were removed" if left else "")
    )


def apply_overrides(project, overrides):
    """`-S [file:]key=value` into the params files, as `dvc exp run -S` does (DVC's own Hydra code)."""
    from pipeline.dvc_internals import apply_overrides as apply

    by_file = {}
    for override in overrides:
        head, sep, rest = override.partition(":")
        path, override = (head, rest) if sep and (project / head).is_file() else ("params.yaml", override)
        by_file.setdefault(path, []).append(override)
    for path, items in by_file.items():
        apply(project / path, items)


# Stages of one kind never depend on each other; in pipeline order (tune/dvc.yaml's searches come first).
PARALLEL = ("tune@", "train@")


def stage_groups(project):
    """[(one kind's stage names, the names of the other stages they depend on, transitively)], in order."""
    from pipeline.dvc_internals import stage_graph

    graph = stage_graph(project)
    groups = []
    for prefix in PARALLEL:
        members = [name for name in graph if name.startswith(prefix)]
        upstream = {u for name in members for u in graph[name]}
        if members:
            groups.append((members, sorted(u for u in upstream if not u.startswith(PARALLEL))))
    return groups


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # pipeline/, from any working folder


def checked_params(project):
    """The project's params as its stage check reads them (the study's and the sweep's files over their base; for
    tune/, ../params.yaml and its search checked too): ParamsError (one line) on any bad value."""
    from pipeline.params import load_params, read_yaml
    from pipeline.search import load_search

    path = Path(os.path.relpath(project / "params.yaml"))  # as the user names it in a message
    raw = read_yaml(path)  # one line naming the file when it is missing or not YAML
    if isinstance(raw, dict) and "variants" not in raw and "base" not in raw and "tune" in raw:  # tune/params.yaml
        params = load_params(project.parent / "params.yaml")
        load_search(path, {name: params.run_config(name) for name in params.variants}, params.train.seeds)
        return params
    return load_params(path)


def prune_lock(project):
    """Drop the dvc.lock entries of stages the project no longer has (a variant or seed taken out of params.yaml,
    a stage renamed): DVC keeps them, and what reads dvc.lock (a failed stage's restore advice, `dvc status`)
    would reason from them. The other entries stay byte for byte. Returns the names dropped."""
    from pipeline.dvc_internals import stage_graph

    lock = project / "dvc.lock"
    if not lock.is_file():
        return []
    names = set(stage_graph(project))
    head, marker, body = lock.read_text().partition("\nstages:\n")
    blocks = re.split(r"(?m)^(?=  \S)", body)  # one block per stage: its name at two spaces' indent
    stale = [b for b in blocks if b.strip() and b.split(":", 1)[0].strip().strip("'\"") not in names]
    if marker and stale:
        lock.write_text(head + marker + "".join(b for b in blocks if b not in stale))
    return [b.split(":", 1)[0].strip() for b in stale]


def workers(project, cluster_cpus=None):
    """PIPELINE_WORKERS, else the cores this process may use (or `cluster_cpus`, a Ray cluster's) divided by
    the largest train.threads."""
    chosen = os.environ.get("PIPELINE_WORKERS")
    if chosen:
        if not chosen.isdigit() or int(chosen) < 1:
            sys.exit(f"error: PIPELINE_WORKERS must be a whole number >= 1, got {chosen!r}")
        return int(chosen)
    params = checked_params(project)
    threads = max(params.train_for(name).threads for name in params.variants)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, (cluster_cpus or cores) // threads)


def validate_first(project, overrides):
    """Apply `-S` overrides and check every params file before DVC touches anything: a bad value (one that
    would change which stages exist, too: train.seeds, variants) is one line, and the files are put back as
    they were. Plain `dvc exp run -S` checks in stage check, after DVC has laid out the stages."""
    from pipeline.params import ParamsError

    files = [project / "params.yaml", *(project / f for f in {o.partition(":")[0] for o in overrides if ":" in o})]
    before = {f: f.read_bytes() for f in files if f.is_file()}
    try:
        if overrides:
            apply_overrides(project, overrides)
        checked_params(project)
    except Exception as e:  # ours (ParamsError), DVC's on a -S it cannot apply (a typo: its cause says which)
        for f, data in before.items():
            f.write_bytes(data)
        cause = e.__cause__ or e.__context__
        said = " ".join(str(e if isinstance(e, ParamsError) or cause is None else cause).split())
        kept = " (the -S values were not applied: the params files are as they were)" if overrides else ""
        sys.exit(f"error: {said}{kept}; nothing ran")


def cluster_cpus(address):
    """The CPUs of the Ray cluster at `address`, all nodes together; one line and exit 2 if it cannot be joined."""
    from pipeline import cluster
    from pipeline.errors import PipelineError

    try:
        ray = cluster.connect(address)
        count = cluster.cpus()
        ray.shutdown()  # each stage joins as a driver of its own
        return count
    except PipelineError as e:
        sys.exit(f"error: {e}")


NODE = re.compile(r"trained on node (.+)$", re.MULTILINE)


def where(logs, stages):
    """'3 on vm (10.0.0.5), 2 on gpu1 (10.0.0.6)': the nodes the stages' logs name, or '' (none trained on one)."""
    counts = {}
    for stage in stages:
        log = logs / f"{stage}.log"
        for node in NODE.findall(log.read_text(errors="replace")) if log.is_file() else ():
            counts[node] = counts.get(node, 0) + 1
    return ", ".join(f"{n} on {node}" for node, n in sorted(counts.items()))


def last_line(log):
    """A stage's own last word: its one-line failure or interruption (with its restore command), else the last
    line it printed (how far it got)."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()] if log.is_file() else []
    own = [line for line in lines if line.startswith(("error: ", "interrupted: "))]
    return (own or lines or ["(nothing printed yet)"])[-1]


def failure(stage, log, said):
    """What a failed stage said: its own one line (once: stages that failed alike, a store that refused every
    one of them, say "the same way"), else the end of its log (a traceback, DVC's own error)."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    own = [line for line in lines if line.startswith("error: ")]
    if not own:
        return f"{stage} failed; the end of {log}:\n" + "\n".join(f"  {line}" for line in lines[-6:])
    if own[-1] in said:
        return f"{stage} failed the same way ({log})"
    said.add(own[-1])
    return f"{stage} failed ({log}):\n  {own[-1]}"


def run_parallel(project, stages, count, pull, kind="train"):
    """Run `stages` (each `dvc repro -s`) with `count` at once; return the first failure's status, else 0."""
    logs = project / "observations" / "repro"
    logs.mkdir(parents=True, exist_ok=True)
    pending, running, failed, no_space, said = list(stages), {}, 0, [], set()

    def one(stage):
        start = time.perf_counter()
        with open(logs / f"{stage}.log", "w") as log:
            args = ["dvc", "--wait-for-lock", "repro", *(["--pull"] if pull else []), "--single-item", stage]
            code = subprocess.run(args, cwd=project, stdout=log, stderr=subprocess.STDOUT).returncode
        return stage, code, time.perf_counter() - start

    start = time.perf_counter()
    bar = tqdm(total=len(stages), desc=f"{kind} stages, {count} at once", unit="stage", disable=None)
    pool = ThreadPoolExecutor(count)
    try:
        while pending or running:
            while pending and len(running) < count and not failed:
                stage = pending.pop(0)
                running[pool.submit(one, stage)] = stage
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                del running[future]
                stage, code, seconds = future.result()
                bar.update()
                if code:
                    text = (logs / f"{stage}.log").read_text()
                    tqdm.write(failure(stage, logs / f"{stage}.log", said))
                    no_space += [stage] if "[Errno 28]" in text else []
                    failed = failed or code
                elif bar.disable:
                    print(f"{stage} done in {seconds:.0f} s", flush=True)
    except KeyboardInterrupt:  # Ctrl-C reached every stage too (one process group): say where each one stopped
        bar.close()
        pool.shutdown(wait=True, cancel_futures=True)  # each stage's clean-up (its restore line) lands in its log
        print(f"interrupted: {len(running)} {kind} stage(s) were running, {len(pending)} not started", flush=True)
        for stage in sorted(running.values()):
            print(f"  {stage}: {last_line(logs / f'{stage}.log')}", flush=True)
        raise
    pool.shutdown()
    bar.close()
    if no_space:  # said once every stage has stopped: no DVC process is writing to the cache any more
        print(full_cache(project, "[Errno 28]", no_space), file=sys.stderr, flush=True)
    nodes = where(logs, stages)
    print(
        f"{len(stages)} {kind} stage(s) in {time.perf_counter() - start:.0f} s, {count} at once"
        + (f": {nodes}" if nodes else ""),
        flush=True,
    )
    return failed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cd", default=".", help="the DVC project's folder (default: here; the study: study)")
    parser.add_argument("--pull", action="store_true", help="pull what a remote holds instead of training it")
    parser.add_argument("--exp", action="store_true", help="end with `dvc exp run` (an experiment), not `dvc repro`")
    parser.add_argument("-S", "--set-param", action="append", default=[], help="[file:]key=value, as dvc exp run -S")
    parser.add_argument("-n", "--name", help="the experiment's name (with --exp)")
    parser.add_argument(
        "--address", help="a Ray cluster (host:port or ray://host:10001) to train on; default RAY_ADDRESS, else here"
    )
    args = parser.parse_args()
    project = Path(args.cd).resolve()
    if args.address:
        os.environ["RAY_ADDRESS"] = args.address  # the stages DVC starts read it (pipeline/cluster.py)
    address = os.environ.get("RAY_ADDRESS", "").strip()
    cpus = cluster_cpus(address) if address else None
    if (args.set_param or args.name) and not args.exp:
        parser.error("-S and -n make an experiment: add --exp (or use `dvc exp run`)")
    pull = ["--pull"] if args.pull else []
    validate_first(project, args.set_param)
    pruned = prune_lock(project)
    if pruned:
        print(f"dvc.lock: dropped {len(pruned)} entry(ies) of stages that no longer exist: {', '.join(pruned)}")
    try:
        for members, upstream in stage_groups(project):
            if upstream and dvc_shown("repro", *pull, *upstream, cwd=project):
                return 1
            code, out = dvc("status", "--json", *members, cwd=project, capture=True)
            if code:
                return code
            stale = [stage for stage in members if stage in json.loads(out or "{}")]
            # tune@ searches run here: only the train stages' training goes to the cluster
            count = min(workers(project, cpus if members[0].startswith("train@") else None), max(1, len(stale)))
            if stale and run_parallel(project, stale, count, args.pull, members[0].split("@")[0]):
                return 1
        if args.exp:
            return dvc_shown("exp", "run", *(["-n", args.name] if args.name else []), cwd=project)
        return dvc_shown("repro", *pull, cwd=project)
    except KeyboardInterrupt:  # Ctrl-C reached every stage too: each said what it left (run_parallel printed it)
        return 130


if __name__ == "__main__":
    sys.exit(main())
