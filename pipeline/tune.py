"""Stage `tune@<variant>`: search one variant's hyperparameters with Optuna, scored on validation only.

Reads:   <config>, the variant's run config in the main pipeline (the shared setting:
         the search's first trial); <split>/{train,val}.pt; <search> (tune/params.yaml:
         the space, the budget `trials`, sampler and pruner); <params> for tracking.* only.
Writes:  <out-config>, the tuned run config (the best trial's values set), which the tune
         pipeline's train@<variant>-<seed> stages train on the standard seeds;
         <trials>.csv, one row per trial (state, validation accuracy, epochs run, values),
         and <trials>.json, the search's summary (a DVC metric). The test set is never read.
A trial trains the run config with tune.seed and reports its validation accuracy after
each epoch; the pruner stops a trial that falls below the earlier trials (search.Pruner).
Its score is the validation accuracy of the checkpoint train would keep (best val loss).
Then the re-scoring (tune.rescore): the shared setting and the `top` best other trials train
again on each re-scoring seed, and the best mean over a candidate's seeds (tune.seed's
included) is the tuned setting: one seed's best is partly luck (docs/tuning.md).

Where the search lives: a fresh local SQLite file (observations/optuna/<variant>.db) by
default, so a stage run is one worker and reproducible; with --storage or TUNE_STORAGE (a
database URL, e.g. postgresql://...) every process given the same URL and the same inputs
joins one search: the budget is queued once, each worker takes the next queued trial, and a
worker that dies is noticed by its missed heartbeats, its trial failed and queued again.
    python -m pipeline.tune --variant dropout --storage postgresql://user@host/optuna
"""

import argparse
import csv
import hashlib
import json
import os
import threading
import time
from pathlib import Path

from pipeline import cluster, tracking
from pipeline.data import split_file
from pipeline.errors import PipelineError, declare_outputs, first_line, run_stage
from pipeline.fitting import fit, fit_seed, load_splits, prepare
from pipeline.io import atomic_path, file_md5, read_json, seed_key, write_json
from pipeline.params import ParamsError, RunConfig, load_params
from pipeline.search import apply, base_values, load_search, space_of, suggest

QUEUED = "queued"  # the study's user attribute: the budget was queued (by the worker that created it)
PARENT = "mlflow_parent_run"  # the study's user attribute: the MLflow run of the search


def study_name(base, space, search, split_dir):
    """`<variant>-<digest>` of everything that decides the search: a changed input is a new search."""
    definition = {
        "base": base.model_dump(),
        "space": {key: dimension.model_dump() for key, dimension in space.items()},
        "search": search.model_dump(include={"trials", "sampler", "random_trials", "seed", "pruner"}),
        "split": [file_md5(split_file(split_dir, split)) for split in ("train", "val")],
    }
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:12]
    return f"{base.variant}-{digest}"


def make_sampler(search, seed):
    import optuna

    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar: with several workers, a running trial counts as a poor one, so two workers
    # do not sample the same point (Optuna's advice for distributed TPE)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=search.random_trials, constant_liar=True)


def make_pruner(pruner):
    """Optuna's PercentilePruner, whose `percentile` is the share of trials it KEEPS (its docs: "when
    given 25.0, top of 25th percentile trials are kept"): keep_top 75 stops a trial whose validation
    accuracy is in the bottom quarter of the finished trials' at the same epoch. It judges at
    warmup_epochs and every interval_epochs after, never before startup_trials finished: early in a
    one-cycle schedule curves of good and bad settings still cross, and each extra look is one more
    chance to stop a trial for noise (measured: docs/tuning.md)."""
    import optuna

    if pruner.kind == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.PercentilePruner(
        pruner.keep_top,
        n_startup_trials=pruner.startup_trials,
        n_warmup_steps=pruner.warmup_epochs,
        interval_steps=pruner.interval_epochs,
    )


def open_storage(url, heartbeat):
    """Optuna's RDBStorage with heartbeats; a storage that cannot be used is one line (password hidden)."""
    import optuna
    import sqlalchemy

    shown = sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=heartbeat,
                grace_period=3 * heartbeat,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(),
            )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as e:
            # workers starting together on an empty database both create Optuna's tables; one loses
            if attempt == 4:
                raise PipelineError(f"Optuna storage {shown}: could not create its tables ({first_line(e)})") from None
            time.sleep(1 + attempt)
        except Exception as e:
            raise PipelineError(
                f"Optuna storage {shown} cannot be used ({type(e).__name__}: {first_line(e)})"
            ) from None


def open_search(url, name, search, first, heartbeat, params, variant):
    """(study, storage, created): create the study and queue its budget, or join it once its creator queued it.
    The storage is returned too: the worker loop pops queued trials and records heartbeats through its public
    methods (Study exposes neither)."""
    import optuna

    storage = open_storage(url, heartbeat)
    try:
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            direction="maximize",
            sampler=make_sampler(search, search.seed),
            pruner=make_pruner(search.pruner),
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = None
    if study is not None:
        study.enqueue_trial(first)  # the shared setting: a tuned variant is never worse on validation
        for _ in range(search.trials - 1):
            study.enqueue_trial({})  # the sampler fills each in when a worker takes it
        study.set_user_attr(PARENT, tracking.search_parent(params, variant, name))
        study.set_user_attr(QUEUED, search.trials)
        return study, storage, True
    # a joining worker: its own random seed (two workers with one seed would sample alike)
    seed = int.from_bytes(os.urandom(4), "little")
    study = optuna.load_study(
        study_name=name, storage=storage, sampler=make_sampler(search, seed), pruner=make_pruner(search.pruner)
    )
    deadline = time.monotonic() + 60
    while QUEUED not in study.user_attrs:  # its creator is queueing the budget right now
        if time.monotonic() > deadline:
            raise PipelineError(f"Optuna study {name} in {url} was never queued: its creator died; delete it")
        time.sleep(0.5)
    return study, storage, False


def pop_waiting_trial(study, storage):
    """The id of the next queued (WAITING) trial, now RUNNING for this worker, or None when the queue is empty.

    What Optuna 5.0's private Study._pop_waiting_trial_id does (optuna/study/study.py, lines 1071-1092), with
    the storage's public methods: the state change is atomic, so two workers never take one trial. Not
    Study.ask() (study.py, lines 590-592: `trial_id = self._pop_waiting_trial_id()`, and when it is None,
    `self._storage.create_new_trial(...)`): once the queue is empty it makes a new trial, past the budget,
    while another worker's last trial still runs; and not Study.optimize with MaxTrialsCallback
    (optuna/_callbacks.py, lines 59-63: `study.stop()` once the finished trials reach n_trials): it counts
    finished trials, so a worker asks for more while others run theirs, and the retry of a dead worker's
    trial (a FAIL then a WAITING copy) would count twice.
    """
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                return trial_id
        except UpdateFinishedTrialError:  # another worker took and finished it meanwhile
            continue
    return None


class Heartbeat:
    """Record a trial's heartbeat every `interval` seconds while it runs, as Study.optimize does."""

    def __init__(self, storage, trial_id, interval):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self):
        while not self.stop.is_set():
            self.storage.record_heartbeat(self.trial_id)
            self.stop.wait(self.interval)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def run_trial(trial, base, space, splits, search, params, parent_id):
    """Train one trial; return (state, value): COMPLETE with its validation accuracy, PRUNED, or
    FAIL when its loss diverged (a learning rate too high for the variant: a result, not an error)."""
    import optuna
    from optuna.trial import TrialState

    first = base_values(base, space)
    values = {key: suggest(trial, key, dimension, first[key]) for key, dimension in space.items()}
    config = apply(base, values)
    epochs = []
    with tracking.trial_run(params, parent_id, base.variant, trial.number, values) as run:
        prepared = prepare(config, splits, search.seed)

        def on_epoch(record):
            epochs.append(record["epoch"])
            run.log_epoch(record)
            trial.report(record["val_acc"], record["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned()

        label = f"{base.variant} trial {trial.number}"
        try:
            _, best_epoch, history = fit(prepared, config.train, label, on_epoch=on_epoch)
            state, value = TrialState.COMPLETE, history[best_epoch - 1]["val_acc"]
            trial.set_user_attr("best_epoch", best_epoch)
        except optuna.TrialPruned:
            state, value = TrialState.PRUNED, None
            print(f"{label}: pruned after epoch {epochs[-1]}", flush=True)
        except PipelineError as e:  # fit's "the loss diverged"
            state, value = TrialState.FAIL, None
            trial.set_user_attr("failure", str(e))
            print(f"{label}: failed: {e}", flush=True)
        trial.set_user_attr("epochs", len(epochs))
        tracking.tag(run, "state", state.name)
    return state, value


def work(study, storage, base, space, splits, search, params, heartbeat):
    """Run queued trials until none is left and no other worker's trial is running; `splits`: load_splits'.
    Return how many trials this worker ran."""
    import optuna
    from optuna.trial import TrialState

    parent_id = study.user_attrs.get(PARENT)
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback()
    ran = 0
    while True:
        optuna.storages.fail_stale_trials(study)  # a dead worker's trial: failed, and queued again
        trial_id = pop_waiting_trial(study, storage)
        if trial_id is not None:  # the study reads through Optuna's cache of the storage: bring it up to date
            study.get_trials(deepcopy=False)  # (a worker that joined has never read this trial: KeyError in Trial)
        if trial_id is None:
            if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                return ran
            time.sleep(heartbeat)  # another worker's trial: wait for it, or for its heartbeat to stop
            continue
        trial = optuna.Trial(study, trial_id)
        ran += 1
        start = time.perf_counter()
        try:
            with Heartbeat(storage, trial_id, heartbeat):
                state, value = run_trial(trial, base, space, splits, search, params, parent_id)
            trial.set_user_attr("seconds", time.perf_counter() - start)  # Optuna's only, never the outputs
        except BaseException:  # Ctrl-C, SIGTERM, a bug: the trial goes back to the queue for another worker
            study.tell(trial, state=TrialState.FAIL)
            retry(study, study.get_trials(deepcopy=False)[trial.number])
            raise
        if state == TrialState.COMPLETE:
            study.tell(trial, value)
        else:  # Optuna keeps a pruned trial's last reported value as its value
            study.tell(trial, state=state)


def node_worker(url, name, search, base, space, splits, params, heartbeat):
    """One more worker of a shared search, as a task on a cluster node: join the study the stage created in the
    shared storage, work until the queue is empty; return how many trials this worker ran."""
    quiet_optuna()
    study, storage, _ = open_search(url, name, search, None, heartbeat, params, base.variant)
    return work(study, storage, base, space, splits, search, params, heartbeat)


def quiet_optuna():
    import logging
    import warnings

    import optuna

    optuna.logging.set_verbosity(logging.WARNING)  # our own line per trial says what happened
    # heartbeats and their retry are "experimental" in Optuna 5.0 (pinned): tests/test_tune.py checks them
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def check_store_for_nodes(params):
    """Trials on the cluster's nodes log to the driver's MLflow store: one line, before the search is created,
    when that store is a local file they cannot reach."""
    from pipeline.mlflow_store import store_path, tracking_uri

    uri = tracking_uri()
    if params.tracking.enabled and store_path(uri) is not None:
        raise PipelineError(
            f"the trials' MLflow runs would go to {uri}, a file the cluster's nodes cannot reach: set "
            "MLFLOW_TRACKING_URI to the team's server (docs/team.md) or tracking.enabled: false"
        )


def work_on_cluster(url, name, search, base, space, splits, params, heartbeat):
    """The search's workers as tasks on the cluster's nodes, as many as its CPUs allow (over train.threads),
    each joining the shared storage at `url`; their trials' MLflow runs go to the driver's store, which must
    then be a server the nodes reach."""
    threads = base.train.threads
    count = max(1, cluster.cpus() // threads)
    env = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}  # the store, its login, the experiment
    print(f"tune {base.variant}: {count} worker(s) on the cluster", flush=True)
    calls = [(url, name, search, base, space, splits, params, heartbeat)] * count
    done = cluster.run_on_nodes(node_worker, calls, threads=threads, name=f"tune@{base.variant}", env=env)
    for node, trials in done:
        print(f"tune {base.variant}: {trials} trial(s) on node {node}", flush=True)


def trial_rows(study, space):
    """One row per trial of a finished search: state, score (COMPLETE only), last reported score, epochs, values."""
    from optuna.trial import TrialState

    # a trial whose worker died or was stopped went back to the queue: its retry is its row
    trials = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.FAIL or "failure" in t.user_attrs]
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name,
                "val_acc": t.value if t.state == TrialState.COMPLETE else None,
                "last_val_acc": last,
                "epochs": t.user_attrs.get("epochs"),
                **{key: t.params.get(key) for key in space},
            }
        )
    return rows


def shared_trial(rows, base, space):
    """The trial of the shared setting (the first queued)."""
    first = base_values(base, space)
    return next(r["trial"] for r in rows if all(r[key] == first[key] for key in space))


def candidates(rows, shared, top):
    """The trials to re-score: the shared setting's, then the `top` best other COMPLETE trials by their one-seed
    score (ties: the earlier trial). The shared setting is always one, so a search can keep it."""
    others = [r for r in rows if r["state"] == "COMPLETE" and r["trial"] != shared]
    return [shared] + [r["trial"] for r in sorted(others, key=lambda r: (-r["val_acc"], r["trial"]))[:top]]


def pick(rows, scores):
    """(the chosen trial, {trial: mean score}) from `scores` ({trial: [score per re-scoring seed, None where the
    run diverged]}): each candidate's mean over its search score and its re-scoring seeds; a candidate with a
    missing score is out. Without re-scoring (no scores), the best one-seed score. Ties: the earlier trial."""
    search = {r["trial"]: r["val_acc"] for r in rows}
    if not scores:
        scores = {r["trial"]: [] for r in rows if r["state"] == "COMPLETE"}
    means = {}
    for trial, seeds in scores.items():
        all_seeds = [search[trial], *seeds]
        means[trial] = None if None in all_seeds else sum(all_seeds) / len(all_seeds)
    scored = [(mean, -trial) for trial, mean in means.items() if mean is not None]
    if not scored:
        return None, means
    return -max(scored)[1], means


def rescore_one(config, splits, seed, name):
    """One candidate's validation score with one more seed: the score of the checkpoint train would keep; None
    when the run diverged (fit's one line, printed)."""
    try:
        fitted = fit_seed(config, splits, seed, name)
    except PipelineError as e:
        print(f"{name}: {e}", flush=True)
        return None
    return fitted.history[fitted.best_epoch - 1]["val_acc"]


def rescore(rows, base, space, search, splits, params, parent_id):
    """{trial: [its score with each of tune.rescore.seeds]} for the candidates; on the cluster's nodes when
    RAY_ADDRESS is set, else here one after another (the variants' searches run side by side)."""
    chosen = candidates(rows, shared_trial(rows, base, space), search.rescore.top)
    by_trial = {r["trial"]: r for r in rows}
    work = [(trial, seed) for trial in chosen for seed in search.rescore.seeds]
    if not work:
        return {}
    configs = {trial: apply(base, {key: by_trial[trial][key] for key in space}) for trial in chosen}
    names = {(trial, seed): f"{base.variant} trial {trial} seed {seed}" for trial, seed in work}
    print(f"tune {base.variant}: re-scoring trials {chosen} on seeds {search.rescore.seeds}", flush=True)
    if cluster.address():
        calls = [(configs[trial], splits, seed, names[trial, seed]) for trial, seed in work]
        done = cluster.run_on_nodes(rescore_one, calls, threads=base.train.threads, name=f"tune@{base.variant}")
        results = [score for _, score in done]
    else:
        results = [rescore_one(configs[trial], splits, seed, names[trial, seed]) for trial, seed in work]
    scores = {trial: [] for trial in chosen}
    for (trial, seed), score in zip(work, results, strict=True):
        scores[trial].append(score)
        values = {key: by_trial[trial][key] for key in space}
        with tracking.trial_run(params, parent_id, base.variant, f"{trial} seed {seed}", values) as run:
            tracking.tag(run, "rescore_seed", seed)
            run.log_metrics({"val_acc": score} if score is not None else {})
    return scores


def summary(study, rows, base, space, search, scores):
    """(the summary dict, the tuned RunConfig) of a finished search and its re-scoring (`scores`: rescore's)."""
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    best, means = pick(rows, scores)
    if best is None:
        raise PipelineError(f"{base.variant}: every re-scored trial diverged on a re-scoring seed; see above")
    by_trial = {r["trial"]: r for r in rows}
    settings = {key: by_trial[best][key] for key in space}
    shared = shared_trial(rows, base, space)
    one_seed = max(complete, key=lambda r: (r["val_acc"], -r["trial"]))
    epochs = base.train.epochs
    result = {
        "trials": len(rows),
        "complete": len(complete),
        "pruned": sum(r["state"] == "PRUNED" for r in rows),
        "failed": sum(r["state"] == "FAIL" for r in rows),
        "retried": len(study.get_trials(deepcopy=False)) - len(rows),
        "seeds": [search.seed, *search.rescore.seeds] if scores else [search.seed],
        "best_trial": best,
        "best_val_acc": means[best],  # its mean over `seeds`
        "shared_val_acc": means.get(shared, by_trial[shared]["val_acc"]),  # the first queued trial, the same way
        "one_seed_best_trial": one_seed["trial"],  # what the search alone would have named
        "rescored": {str(trial): means[trial] for trial in scores},
        "epochs_run": sum(r["epochs"] or 0 for r in rows) + sum(len(s) for s in scores.values()) * epochs,
        "epochs_unpruned": sum(apply(base, {k: r[k] for k in space}).train.epochs for r in rows)
        + sum(len(s) for s in scores.values()) * epochs,
        "epochs_budget": search.epochs_budget(epochs),
        "settings": settings,
    }
    return result, apply(base, settings)


def write_trials(path, rows):
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)


def default_storage(variant):
    """A fresh SQLite file per stage run: one worker, so the same inputs give the same trials."""
    path = Path("observations/optuna") / f"{variant}.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    return f"sqlite:///{path.resolve()}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", required=True, help="the variant to tune (a key of params.yaml's variants)")
    parser.add_argument("--params", default="params.yaml", help="the main params file: variants, tracking.*")
    parser.add_argument("--search", default="tune/params.yaml", help="the search: tune.space, tune.trials, ...")
    parser.add_argument("--config", help="the variant's shared run config (default: data/config/<variant>.json)")
    parser.add_argument("--split", default="data/split", help="folder written by stage split")
    parser.add_argument(
        "--storage", help="Optuna storage URL to share the search (default: TUNE_STORAGE, else a fresh local file)"
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=10.0,
        help="seconds between a running trial's heartbeats; a trial silent for 3 of them is failed and queued again",
    )
    parser.add_argument("--out-config", help="the tuned run config to write (a worker alone: omit)")
    parser.add_argument("--trials", help="the trials table to write, <trials>.csv and <trials>.json")
    args = parser.parse_args()
    outputs = [
        p for p in (args.out_config, args.trials and f"{args.trials}.csv", args.trials and f"{args.trials}.json") if p
    ]
    declare_outputs(*outputs)
    params = load_params(args.params)
    if args.variant not in params.variants:
        raise ParamsError(f"--variant {args.variant}: not a variant of {args.params} ({', '.join(params.variants)})")
    search = load_search(args.search, {name: params.run_config(name) for name in params.variants}, params.train.seeds)
    base = RunConfig.model_validate(read_json(args.config or f"data/config/{args.variant}.json"))
    space = space_of(search, args.variant)
    url = args.storage or os.environ.get("TUNE_STORAGE") or default_storage(args.variant)
    name = study_name(base, space, search, args.split)
    quiet_optuna()
    shared = not url.startswith("sqlite:")  # a database server, which other machines' workers can join
    if cluster.address() and shared:  # an unreachable cluster or store is one line before the search is created
        check_store_for_nodes(params)
        cluster.connect(cluster.address())
    study, storage, created = open_search(
        url, name, search, base_values(base, space), args.heartbeat, params, args.variant
    )
    print(f"tune {args.variant}: {'created' if created else 'joined'} Optuna study {name}", flush=True)
    start = time.perf_counter()
    splits = load_splits(args.split)
    if cluster.address() and shared:
        work_on_cluster(url, name, search, base, space, splits, params, args.heartbeat)
    else:
        if cluster.address():
            print(
                f"tune {args.variant}: the search's storage is a local file, so its trials run here; set "
                "TUNE_STORAGE to a PostgreSQL URL to spread them over the cluster (docs/cluster.md)",
                flush=True,
            )
        ran = work(study, storage, base, space, splits, search, params, args.heartbeat)
        print(f"tune {args.variant}: this worker ran {ran} trial(s); the search's queue is empty", flush=True)
    if not outputs:  # a worker alone: the stage's run, which writes the outputs, re-scores and names the best
        print(f"tune {args.variant}: the stage's run (make tune) re-scores the leaders and writes the tuned setting")
        return
    rows = trial_rows(study, space)
    if not any(r["state"] == "COMPLETE" for r in rows):
        raise PipelineError(f"{args.variant}: no trial of the search completed; see the trials above")
    scores = rescore(rows, base, space, search, splits, params, study.user_attrs.get(PARENT))
    result, tuned = summary(study, rows, base, space, search, scores)
    for trial, per_seed in scores.items():  # the trials table: each candidate's score with each re-scoring seed
        row = next(r for r in rows if r["trial"] == trial)
        row.update({seed_key("val_acc", s): score for s, score in zip(search.rescore.seeds, per_seed, strict=True)})
    columns = {key: None for r in rows for key in r}
    rows = [{**columns, **r} for r in rows]
    tracking.observe(  # this run's timings: observations/, never a DVC output
        f"tune/{args.variant}.json",
        {
            "seconds": time.perf_counter() - start,
            "study": name,
            "trials": [
                {"trial": t.number, "state": t.state.name, **{k: t.user_attrs.get(k) for k in ("epochs", "seconds")}}
                for t in study.get_trials(deepcopy=False)
            ],
        },
    )
    parent = tracking.attach(params, study.user_attrs.get(PARENT))
    parent.log_metrics({"best_val_acc": result["best_val_acc"], "pruned": result["pruned"]})
    parent.end("FINISHED")
    if args.trials:
        write_trials(f"{args.trials}.csv", rows)
        write_json(f"{args.trials}.json", result)
    if args.out_config:
        write_json(args.out_config, tuned.model_dump())
    shared = "failed" if result["shared_val_acc"] is None else f"{result['shared_val_acc']:.4f}"
    over = f" over seeds {result['seeds']}" if len(result["seeds"]) > 1 else ""
    print(
        f"tune {args.variant}: best trial {result['best_trial']} val acc {result['best_val_acc']:.4f}{over} "
        f"(shared setting {shared}); {result['pruned']} pruned; {time.perf_counter() - start:.0f} s",
        flush=True,
    )


if __name__ == "__main__":
    run_stage(main)
