"""The tune pipeline: Dodge's estimator by hand, the search's checks, real Optuna searches on shrunk data
(SQLite; PostgreSQL for two workers and a killed one; a Ray cluster's workers). tune/dvc.yaml run by the real dvc
is docs/tuning.md's, read in tests/test_docs.py (test_tuning_page)."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import mlflow
import optuna
import pytest
import torch
import yaml
from helpers import (
    ROOT,
    RayCluster,
    free_port,
    markdown_table,
    postgres,
    run,
    shrunk_params,
    shrunk_search,
    start_mlflow_server,
    stop_server,
    synthetic_images,
)

from pipeline.budget import expected_max, expected_max_band, ranking_changes
from pipeline.params import ParamsError, load_params
from pipeline.search import load_search
from pipeline.tune_report import accuracy_cell

PARAMS = load_params(ROOT / "params.yaml")
CONFIGS = {name: PARAMS.run_config(name) for name in PARAMS.variants}


def test_expected_max_matches_a_hand_computation():
    """Scores 0.80, 0.85, 0.90: k=1 the mean; k=2 weights 1/9, 3/9, 5/9; k=3 weights 1/27, 7/27, 19/27."""
    got = expected_max([0.90, 0.80, 0.85], [1, 2, 3])
    assert got[0] == pytest.approx(0.85)
    assert got[1] == pytest.approx((0.80 * 1 + 0.85 * 3 + 0.90 * 5) / 9)
    assert got[2] == pytest.approx((0.80 * 1 + 0.85 * 7 + 0.90 * 19) / 27)
    assert expected_max([0.7, 0.9], [200])[0] == pytest.approx(0.9)  # many draws: the best
    low, high = expected_max_band([0.5] * 4, [1, 3])
    assert list(low) == list(high) == [0.5, 0.5]  # nothing to resample from equal scores
    low, high = expected_max_band([0.80, 0.85, 0.90, 0.95], [1, 2])
    assert (low <= expected_max([0.80, 0.85, 0.90, 0.95], [1, 2])).all() and (high >= low).all()


def test_ranking_changes_name_the_budgets_where_the_order_flips():
    curves = {"a": [0.80, 0.85, 0.86], "b": [0.82, 0.84, 0.88]}
    assert ranking_changes(curves) == [(1, ("b", "a")), (2, ("a", "b")), (3, ("b", "a"))]
    assert ranking_changes({"a": [0.9, 0.95], "b": [0.8, 0.85]}) == [(1, ("a", "b"))]


def test_the_pruner_stops_the_bottom_quarter_after_the_warmup():
    """keep_top 75 on four finished trials whose epoch-8 scores are 0.80, 0.85, 0.90, 0.95: the cut is their
    25th percentile, 0.8375 (numpy's linear rule, by hand: 0.80 + 0.75 * 0.05); before epoch 8 nothing stops."""
    from pipeline.search import Pruner
    from pipeline.tune import make_pruner

    pruner = make_pruner(Pruner(kind="percentile", keep_top=75, startup_trials=4, warmup_epochs=8, interval_epochs=4))
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for score in (0.80, 0.85, 0.90, 0.95):
        trial = study.ask()
        for epoch in range(1, 13):
            trial.report(score, epoch)
        study.tell(trial, score)

    def pruned(score, epoch):  # a trial that reported `score` after each epoch up to `epoch`
        trial = study.ask()
        for each in range(1, epoch + 1):
            trial.report(score, each)
        verdict = trial.should_prune()
        study.tell(trial, state=optuna.trial.TrialState.PRUNED if verdict else optuna.trial.TrialState.FAIL)
        return verdict

    assert pruned(0.83, 8) and not pruned(0.84, 8)  # either side of 0.8375
    assert not pruned(0.50, 7) and not pruned(0.50, 9) and pruned(0.50, 12)  # the warmup, then every 4 epochs
    assert (
        make_pruner(Pruner(kind="none", keep_top=75, startup_trials=0, warmup_epochs=0, interval_epochs=1)).prune(
            study, None
        )
        is False
    )


def _search_file(tmp_path, edit):
    search = yaml.safe_load((ROOT / "tune/params.yaml").read_text())
    edit(search["tune"])
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(search))
    return path


@pytest.mark.parametrize(
    "edit, line",
    [
        (lambda t: t["space"]["train"].update(lrr={"low": 0.1, "high": 0.2}), "tune.space.train.lrr: train has no"),
        (lambda t: t["space"]["train"].update(lr={"low": 0.2, "high": 0.4}), "train.lr=0.1 (vanilla) lies outside"),
        (lambda t: t["space"]["train"].update(lr={"low": 0.2}), "tune.space.train.lr: needs low and high"),
        (lambda t: t["space"]["train"].update(momentum={"low": 0.5, "high": 1.5}), "1.5 is not a valid train.momentum"),
        (lambda t: t["space"]["train"].update(threads={"choices": [1]}), "no searchable key 'threads'"),
        (
            lambda t: t["variants"]["vanilla"].update(model={"dropout": {"low": 0, "high": 1}}),
            "vanilla does not read model.dropout (its rate is 0: off)",
        ),
        (lambda t: t["variants"].pop("mlp"), "tune.variants must list every variant"),
        (lambda t: t.update(trials=0), "tune.trials: Input should be greater than or equal to 1"),
        (lambda t: t["pruner"].update(kind="median"), "tune.pruner.kind: Input should be 'percentile' or 'none'"),
        (lambda t: t["pruner"].update(keep_top=100), "tune.pruner.keep_top: Input should be less than 100"),
        (lambda t: t["rescore"].update(seeds=[5, 3]), "tune.rescore.seeds must not hold train.seeds [3, 5]"),
        (lambda t: t["rescore"].update(seeds=[100, 100]), "tune.rescore: seeds must list each seed once"),
        (lambda t: t["rescore"].update(seeds=[t["seed"]]), "yaml: tune.rescore.seeds must not hold tune.seed (0)"),
        (lambda t: t["rescore"].update(top=-1), "tune.rescore.top: Input should be greater than or equal to 0"),
    ],
)
def test_a_bad_search_entry_is_one_line_naming_the_key(tmp_path, edit, line):
    path = _search_file(tmp_path, edit)
    with pytest.raises(ParamsError) as error:
        load_search(path, CONFIGS, PARAMS.train.seeds)
    assert line in str(error.value) and "\n" not in str(error.value)


# A trials table by hand: the shared setting is trial 0; trials 3 and 5 lead on their one seed.
TRIALS = [
    {"trial": 0, "state": "COMPLETE", "val_acc": 0.900},
    {"trial": 1, "state": "PRUNED", "val_acc": None},
    {"trial": 2, "state": "COMPLETE", "val_acc": 0.880},
    {"trial": 3, "state": "COMPLETE", "val_acc": 0.920},
    {"trial": 4, "state": "FAIL", "val_acc": None},
    {"trial": 5, "state": "COMPLETE", "val_acc": 0.910},
    {"trial": 6, "state": "COMPLETE", "val_acc": 0.910},
]


def test_re_scoring_takes_the_shared_setting_and_the_leaders_and_picks_the_best_mean():
    """Candidates: the shared trial, then the `top` best others (a tie: the earlier). Scores by hand: trial 3's
    one-seed 0.92 was luck (mean (0.92 + 0.89 + 0.89) / 3 = 0.9), trial 5 holds (0.91 + 0.905 + 0.905) / 3 =
    0.9067, the shared setting (0.9 + 0.9 + 0.9) / 3 = 0.9: trial 5 wins. A candidate that diverged on a seed
    is out; without re-scoring the one-seed best wins."""
    from pipeline.tune import candidates, pick

    assert candidates(TRIALS, 0, 2) == [0, 3, 5]
    assert candidates(TRIALS, 0, 0) == [0]
    assert candidates(TRIALS, 5, 2) == [5, 3, 6]  # the shared setting counts once, as itself
    scores = {0: [0.9, 0.9], 3: [0.89, 0.89], 5: [0.905, 0.905]}
    best, means = pick(TRIALS, scores)
    assert best == 5 and means == pytest.approx({0: 0.9, 3: 0.9, 5: 0.906667}, abs=1e-6)
    assert pick(TRIALS, {0: [0.9, 0.9], 5: [0.95, None]})[0] == 0  # trial 5 diverged on its second seed
    tie = [{"trial": 0, "state": "COMPLETE", "val_acc": 0.5}, {"trial": 1, "state": "COMPLETE", "val_acc": 0.5}]
    assert pick(tie, {1: [0.75], 0: [0.75]})[0] == 0  # a tie (exact in binary): the earlier trial
    assert pick(TRIALS, {})[0] == 3
    assert pick(TRIALS, {0: [None], 3: [None]}) == (None, {0: None, 3: None})


def test_the_committed_search_is_valid_and_holds_the_shared_setting():
    search = load_search(ROOT / "tune/params.yaml", CONFIGS, PARAMS.train.seeds)
    assert search.epochs_budget(20) == (16 + 3 * 3) * 20  # 16 trials, then 3 candidates on 3 more seeds
    assert set(search.variants) == set(PARAMS.variants) and search.trials >= 10


@pytest.fixture
def hard_split(tmp_path):
    """A split of faint blocks in noise: trials differ, so the pruner has something to prune."""
    from pipeline.split import write_split

    train_images, train_labels = synthetic_images(600, seed=1, contrast=12)
    test_images, test_labels = synthetic_images(200, seed=2, contrast=12)
    folder = tmp_path / "split"
    folder.mkdir()
    to_tensor = torch.from_numpy
    write_split(
        folder, to_tensor(train_images), to_tensor(train_labels).long(), to_tensor(test_images),
        to_tensor(test_labels).long(), [str(c) for c in range(10)], "FashionMNIST", val_size=100, seed=0,
    )  # fmt: skip
    return folder


def tune_setup(tmp_path, split, epochs=3, **search_overrides):
    """params.yaml (shrunk, vanilla and dropout), its run configs and a search file in tmp_path."""
    from pipeline.check import write_configs

    params = shrunk_params(tmp_path, **{"train.epochs": epochs, "tracking.enabled": True})
    params["variants"] = {name: params["variants"][name] for name in ("vanilla", "dropout")}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    search = shrunk_search(("vanilla", "dropout"), **search_overrides)
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(search))
    write_configs(load_params(tmp_path / "params.yaml"), tmp_path / "config")
    return search


def tune_cmd(tmp_path, split, variant="dropout", out=None, storage=None, heartbeat=None):
    cmd = [sys.executable, "-m", "pipeline.tune", "--variant", variant, "--params", "params.yaml"]
    cmd += ["--search", "search.yaml", "--config", f"config/{variant}.json", "--split", str(split)]
    cmd += ["--out-config", f"{out}/config/{variant}.json", "--trials", f"{out}/trials/{variant}"] if out else []
    cmd += ["--storage", storage] if storage else []
    cmd += ["--heartbeat", str(heartbeat)] if heartbeat else []
    return cmd


def tune_env(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    env.pop("DVC_ROOT", None)
    return env


def chosen_by_hand(rows, top):
    """From a trials table (CSV rows): the shared trial 0 and the `top` best others by val_acc, each scored by
    the mean of its val_acc and its val_acc_seed<k> columns; the best mean and {trial: mean}."""
    complete = [r for r in rows if r["state"] == "COMPLETE" and r["trial"] != "0"]
    leaders = sorted(complete, key=lambda r: (-float(r["val_acc"]), int(r["trial"])))[:top]
    means = {}
    for row in [rows[0], *leaders]:
        scores = [float(row[key]) for key in row if key == "val_acc" or key.startswith("val_acc_seed")]
        means[int(row["trial"])] = sum(scores) / len(scores)
    return max(means, key=lambda n: (means[n], -n)), means


@pytest.mark.slow
def test_one_worker_repeats_its_search_and_a_pruned_trial_is_recorded_as_pruned(tmp_path, hard_split):
    """Same seed, one worker: the same trials and best. Pruning from epoch 1 on (the bottom quarter of the
    trials before): the pruned trials are PRUNED in Optuna, in MLflow and in the trials table."""
    pruner = {"kind": "percentile", "keep_top": 75, "startup_trials": 1, "warmup_epochs": 0, "interval_epochs": 1}
    tune_setup(tmp_path, hard_split, epochs=3, trials=6, pruner=pruner, **{"space.train.lr": {"low": 0.001,
               "high": 0.3, "log": True}})  # fmt: skip
    env = tune_env(tmp_path)
    first = run(tune_cmd(tmp_path, hard_split, out="first"), tmp_path, env).stdout
    assert "created Optuna study dropout-" in first
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{tmp_path / 'observations/optuna/dropout.db'}")
    states = {t.number: t.state.name for t in study.trials}
    env.pop("MLFLOW_TRACKING_URI")
    run(tune_cmd(tmp_path, hard_split, out="second"), tmp_path, {**env, "MLFLOW_TRACKING_URI": "sqlite:///second.db"})
    for name in ("trials/dropout.csv", "trials/dropout.json", "config/dropout.json"):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes()

    table = (tmp_path / "first/trials/dropout.csv").read_text().splitlines()
    rows = [dict(zip(table[0].split(","), line.split(","), strict=True)) for line in table[1:]]
    assert [r["state"] for r in rows] == [states[int(r["trial"])] for r in rows] and len(rows) == 6
    pruned = [r for r in rows if r["state"] == "PRUNED"]
    assert pruned and all(int(r["epochs"]) < 3 and r["val_acc"] == "" for r in pruned)
    summary = json.loads((tmp_path / "first/trials/dropout.json").read_text())
    chosen, means = chosen_by_hand(rows, top=1)
    assert summary["best_trial"] == chosen and summary["best_val_acc"] == pytest.approx(means[chosen])
    assert summary["shared_val_acc"] == pytest.approx(means[0]) and summary["pruned"] == len(pruned)
    assert summary["seeds"] == [0, 100] and len(means) == 2  # the shared setting and the leader, re-scored
    assert summary["epochs_run"] < summary["epochs_unpruned"] == 6 * 3 + 2 * 3 == summary["epochs_budget"]
    tuned = json.loads((tmp_path / "config/dropout.json").read_text())  # the shared setting ...
    for key, value in summary["settings"].items():  # ... with the best trial's values
        section, name = key.split(".")
        tuned[section][name] = value
    assert json.loads((tmp_path / "first/config/dropout.json").read_text()) == tuned

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(PARAMS.tracking.experiment)
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.info.run_name == "tune@dropout")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    trials = {int(r.data.tags["trial"]): r for r in children if "rescore_seed" not in r.data.tags}
    assert {n: r.data.tags["state"] for n, r in trials.items()} == states
    rescored = {r.data.tags["trial"]: r.data.metrics["val_acc"] for r in children if "rescore_seed" in r.data.tags}
    assert rescored == {f"{n} seed 100": pytest.approx(2 * means[n] - float(rows[n]["val_acc"])) for n in means}
    assert all(r.info.status == "FINISHED" for r in [parent, *children])
    some_pruned = trials[int(pruned[0]["trial"])]
    curve = client.get_metric_history(some_pruned.info.run_id, "val_acc")
    assert len(curve) == int(pruned[0]["epochs"])  # the per-epoch validation curve, up to the pruning


@pytest.fixture(scope="module")
def database():
    """A PostgreSQL of its own on 127.0.0.1, with a password: the storage a team's workers share."""
    with postgres("optuna") as url:
        yield url


def _trials(url, variant="dropout"):
    (summary,) = [s for s in optuna.get_all_study_summaries(url) if s.study_name.startswith(f"{variant}-")]
    return optuna.load_study(study_name=summary.study_name, storage=url).trials


@pytest.mark.slow
def test_two_workers_share_one_search_in_postgresql(tmp_path, hard_split, database):
    """Two processes, one search: each budgeted trial runs exactly once, none is lost, none is left
    RUNNING; a third call (the DVC stage's) joins the finished search and writes its outputs."""
    tune_setup(tmp_path, hard_split, epochs=2, trials=6)
    env = {**tune_env(tmp_path), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    workers = [
        subprocess.Popen(tune_cmd(tmp_path, hard_split, storage=database), cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]  # fmt: skip
    logs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], logs
    assert sorted("created" in log for log in logs) == [False, True]  # one made the study, one joined it
    assert all(" trial " in log for log in logs), logs  # both trained
    trials = _trials(database)
    assert sorted(t.number for t in trials) == list(range(6))
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    ran = [log.count("epoch   1 ") for log in logs]
    assert sum(ran) == 6, logs  # each trial's first epoch once: none ran twice

    out = run(tune_cmd(tmp_path, hard_split, out="stage", storage=database), tmp_path, env).stdout
    assert "joined Optuna study" in out and "the stage's run (make tune) re-scores the leaders" in logs[0]
    trained = {line.split(" epoch ")[0] for line in out.splitlines() if " epoch " in line}
    assert trained and all(" seed 100" in name for name in trained)  # no trial left: only the re-scoring
    table = (tmp_path / "stage/trials/dropout.csv").read_text().splitlines()
    rows = [dict(zip(table[0].split(","), line.split(","), strict=True)) for line in table[1:]]
    chosen, means = chosen_by_hand(rows, top=1)
    summary = json.loads((tmp_path / "stage/trials/dropout.json").read_text())
    assert summary["best_trial"] == chosen and summary["best_val_acc"] == pytest.approx(means[chosen])
    assert {float(r["val_acc"]) for r in rows if r["state"] == "COMPLETE"} == {
        t.value for t in trials if t.state.name == "COMPLETE"
    }


@pytest.mark.slow
def test_a_killed_workers_trial_is_failed_and_queued_again_while_the_other_carries_on(tmp_path, hard_split, database):
    """SIGKILL one of two workers mid-trial: its heartbeat stops, the other fails that trial, runs it
    again from the queue (same values) and finishes the budget; nothing stays RUNNING or WAITING."""
    tune_setup(tmp_path, hard_split, epochs=40, trials=4)
    env = tune_env(tmp_path)
    cmd = tune_cmd(tmp_path, hard_split, variant="vanilla", storage=database, heartbeat=1)
    victim = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in victim.stdout:  # it created the study and is training its first trial
        if "epoch   2 " in line:
            break
    other = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    out = other.communicate(timeout=300)[0]
    assert other.returncode == 0, out
    trials = _trials(database, "vanilla")
    states = sorted(t.state.name for t in trials)
    assert states == ["COMPLETE"] * 4 + ["FAIL"], out  # the killed one failed; its retry completed
    (killed,) = [t for t in trials if t.state.name == "FAIL"]
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert retry.params == killed.params and retry.state.name == "COMPLETE"
    assert f"vanilla trial {retry.number} epoch  40" in out  # the other worker ran it to the end


@pytest.mark.slow
def test_a_shared_search_runs_its_workers_on_a_ray_cluster(tmp_path, hard_split, database):
    """RAY_ADDRESS and a PostgreSQL storage: the stage runs one worker per cluster CPU, each a task on a node
    joining the one search; every budgeted trial runs once, and each is a child run on the team's MLflow
    server. A store the nodes cannot reach (a local file) is one line before the search is created."""
    tune_setup(tmp_path, hard_split, epochs=2, trials=4)
    nodes = RayCluster()
    port = free_port()
    server = start_mlflow_server(tmp_path, port)
    try:
        env = {**tune_env(tmp_path), "RAY_ADDRESS": nodes.address}
        cmd = tune_cmd(tmp_path, hard_split, variant="vanilla", out="stage", storage=database)
        studies = {s.study_name for s in optuna.get_all_study_summaries(database)}  # the other tests' too
        refused = run(cmd, tmp_path, env, check=False)
        assert refused.returncode == 2 and refused.stderr.startswith(
            f"error: the trials' MLflow runs would go to sqlite:///{tmp_path / 'mlflow.db'}, a file the cluster's "
            "nodes cannot reach: set MLFLOW_TRACKING_URI to the team's server (docs/team.md)"
        ), refused.stderr
        assert {s.study_name for s in optuna.get_all_study_summaries(database)} == studies  # none created
        env.update(MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}", MLFLOW_EXPERIMENT_NAME="lenet5-tuned")
        out = run(cmd, tmp_path, env).stdout
        client = mlflow.MlflowClient(f"http://127.0.0.1:{port}")
        experiment = client.get_experiment_by_name("lenet5-tuned")
        (parent,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'tune@vanilla'")
        children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    finally:
        stop_server(server)
        nodes.stop()
    assert "tune vanilla: 2 worker(s) on the cluster" in out, out
    ran = re.findall(r"tune vanilla: (\d+) trial\(s\) on node \S+ \((127\.0\.0\.[34])\)", out)
    assert sum(int(n) for n, _ in ran) == 4, out
    (name,) = re.findall(r"created Optuna study (vanilla-\w+)", out)
    trials = optuna.load_study(study_name=name, storage=database).trials
    assert sorted(t.number for t in trials) == list(range(4)) and {t.state.name for t in trials} == {"COMPLETE"}
    rows = (tmp_path / "stage/trials/vanilla.csv").read_text().splitlines()[1:]
    assert len(rows) == 4
    trial_runs = [r for r in children if "rescore_seed" not in r.data.tags]
    assert sorted(r.data.tags["trial"] for r in trial_runs) == ["0", "1", "2", "3"]
    rescored = [r.data.tags["trial"] for r in children if "rescore_seed" in r.data.tags]  # on the nodes too
    assert len(rescored) == 2 and all(t.endswith(" seed 100") for t in rescored)
    assert all(r.data.params and "val_acc" in r.data.metrics for r in children)


def test_the_tuned_tables_cell_of_a_one_seed_run_has_no_interval():
    """stage evaluate leaves the interval out of a one-seed metrics file (no spread): the tuned table says so
    instead of failing (`make tune` with train.seeds: [0] did, on a KeyError)."""
    one_seed = {"test_acc_mean": 0.405, "val_acc_mean": 0.4, "test_acc_seed0": 0.405, "seeds": 1}
    assert accuracy_cell(one_seed, "test_acc") == "40.50% (one seed)"
    three = {"val_acc_mean": 0.9123, "val_acc_ci_low": 0.90004, "val_acc_ci_high": 0.92456}
    assert accuracy_cell(three, "val_acc") == "91.23% [90.00, 92.46]"


def test_the_tuned_verdicts_in_the_docs_are_the_committed_comparison():
    """docs/tuning.md's verdicts against tuned vanilla, and docs/results.md's seed estimates, as
    tune/comparison.json (tune/report.md) holds them."""
    comparison = json.loads((ROOT / "tune/comparison.json").read_text())
    rows = markdown_table((ROOT / "docs/tuning.md").read_text(), "| tuned variant − tuned vanilla |")
    assert [row[0] for row in rows] == list(comparison)
    for name, shown, verdict in rows:
        compared = comparison[name]
        expected = [f"{compared[k] * 100:+.2f}".replace("-", "−") for k in ("diff", "ci_low", "ci_high")]
        assert shown == "{} pt [{}, {}]".format(*expected), (name, shown)
        assert re.match(r"\**(\w+)", verdict)[1] == compared["verdict"], (name, verdict)
        if compared["seeds_needed"]:
            assert f"~{compared['seeds_needed']} seeds per variant would decide" in verdict, (name, verdict)
    needed = [f"~{compared['seeds_needed']}" for compared in comparison.values() if compared["seeds_needed"]]
    assert f"{' and '.join(needed)} seeds per variant would decide" in (ROOT / "docs/results.md").read_text()
