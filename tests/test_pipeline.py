"""The real `dvc repro` and `dvc exp run` in a temp git repo, on synthetic IDX files."""

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import free_port, run, wait_for_url
from pages import copy_of
from scipy import stats as scipy_stats

pytestmark = pytest.mark.slow
VARIANTS = ["vanilla", "batchnorm", "dropout", "weight_decay", "mlp"]


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory, reproduced):
    """A copy of the session's shrunk `make run` (conftest.py: README.md read on a fresh project, two train stages
    at once, the data from a loopback HTTP mirror after a local folder that is missing), shared by the tests
    below: (repo, env, what `make run` printed)."""
    repo, env = copy_of(reproduced, tmp_path_factory.mktemp("pipeline"))
    return repo, env, (repo / "observations/readme-make-run.log").read_text()


def epochs(repo):
    return yaml.safe_load((repo / "params.yaml").read_text())["train"]["epochs"]


def run_of(repo, checkpoint):
    """The MLflow run that trained a checkpoint: tagged with the file's MD5 (the checkpoint holds no run id)."""
    import hashlib

    import mlflow

    md5 = hashlib.md5((repo / checkpoint).read_bytes()).hexdigest()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    (run,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], f"tags.checkpoint_md5 = '{md5}'"
    )
    assert run.data.tags["dvc_output"] == checkpoint
    return run.info.run_id


def test_repro_writes_every_output(reproduced):
    repo, _, _ = reproduced
    for split, size in (("train", 500), ("val", 100), ("test", 200)):
        blob = torch.load(repo / f"data/split/{split}.pt", weights_only=True)
        assert blob["images"].shape == (size, 28, 28) and blob["images"].dtype == torch.uint8
    for name in VARIANTS:
        assert sorted(p.name for p in (repo / f"data/models/{name}").glob("*.pt")) == ["seed0.pt", "seed1.pt"]
        metrics = json.loads((repo / f"metrics/{name}.json").read_text())
        assert metrics["seeds"] == 2
        for key in ("test_acc", "val_acc", "test_loss", "val_loss", "train_acc"):
            seeds = [metrics[f"{key}_seed0"], metrics[f"{key}_seed1"]]
            assert metrics[f"{key}_mean"] == pytest.approx(statistics.mean(seeds))
            assert metrics[f"{key}_std"] == pytest.approx(statistics.stdev(seeds))
            if metrics[f"{key}_std"] > 0:  # the interval: scipy's t with n - 1 = 1 degree of freedom
                low, high = scipy_stats.t.interval(
                    0.95, 1, loc=statistics.mean(seeds), scale=statistics.stdev(seeds) / 2**0.5
                )
                low, high = max(low, 0.0), min(high, 1.0) if key.endswith("acc") else high  # what it can be
                assert (metrics[f"{key}_ci_low"], metrics[f"{key}_ci_high"]) == pytest.approx((low, high))
        assert set(metrics) >= {"parameters", "best_epoch_seed0", "epochs_run_seed0"}
        assert not [k for k in metrics if "latency" in k or "seconds" in k], "timings are observations, not results"
        assert metrics["test_acc_mean"] > 0.15, "the synthetic blocks' classes are learnt: better than chance (0.1)"
        history = json.loads((repo / f"plots/history/{name}.json").read_text())
        assert [h["epoch"] for h in history] == list(range(1, epochs(repo) + 1))
        assert history[-1]["val_acc"] == pytest.approx(
            (history[-1]["val_acc_seed0"] + history[-1]["val_acc_seed1"]) / 2
        )
        confusion = json.loads((repo / f"plots/confusion/{name}.json").read_text())
        assert sum(r["count"] for r in confusion) == 2 * 200 and {r["seed"] for r in confusion} == {0, 1}
        assert len(confusion) <= 2 * 10 * 10  # counts per cell, not a record per image
        assert len(json.loads((repo / f"plots/per_class/{name}.json").read_text())) == 10
    report = (repo / "report.md").read_text()
    assert all(re.search(rf"^\| {name} +\| ", report, re.M) for name in VARIANTS)
    for name in set(VARIANTS) - {"vanilla"}:
        line = re.search(rf"^- {name} − vanilla: [+-]\d+\.\d\d pt \[(.*?)\] over seeds, .* \*\*(\w+)\*\*", report, re.M)
        assert line and line[2] in ("better", "worse", "equivalent", "undecided"), report
        low, high = (float(x) for x in line[1].split(", "))
        assert -100 <= low <= high <= 100  # a difference of accuracies, in points: its interval stays inside
    assert sorted(p.name for p in (repo / "plots/figures").iterdir()) == [
        "accuracy_curves.png",
        "differences.png",
        "loss_curves.png",
        "test_accuracy.png",
        "val_accuracy.png",
    ]


def test_a_whole_run_logs_no_python_warning(reproduced):
    """A non-interactive log stays quiet: no library warning or progress bar in any stage (MLflow's pyfunc and
    artifact downloads, torch, numba)."""
    repo, _, result = reproduced
    stages = sorted((repo / "observations/repro").glob("train@*.log"))  # the train stages' own logs
    assert len(stages) == 2 * len(VARIANTS)
    log = result + "".join(path.read_text() for path in stages)
    assert "Running stage 'train@" in log, log
    # no Python warning, no library's WARNING log line (MLflow's CloudPickle notice), no progress bar
    assert not re.search(r"\w+Warning\b|\bWARNING\b|Downloading artifacts|\d+it/s\]", log), log


def test_metrics_show_has_one_row_per_variant(reproduced):
    repo, env, _ = reproduced
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo, env).stdout)
    files = shown[""]["data"]
    assert sorted(files) == sorted([f"metrics/{name}.json" for name in VARIANTS] + ["comparison.json"])


def test_repro_again_does_nothing(reproduced):
    repo, env, _ = reproduced
    assert "Running stage" not in run(["dvc", "repro"], repo, env).stdout


def changed_stages(repo, env):
    return set(json.loads(run(["dvc", "status", "--json"], repo, env).stdout))


def test_a_kernel_edit_reruns_training_and_scoring_only(reproduced):
    """The params schema imports no model code (pipeline/choices.py): editing the pooling kernel leaves
    check, download, split and report as they were; editing download's code, download alone (then split
    runs only if the raw files changed)."""
    repo, env, _ = reproduced
    trained = {f"evaluate@{v}" for v in VARIANTS} | {f"train@{v}-{seed}" for v in VARIANTS for seed in (0, 1)}
    for module, expected in (("pipeline/pool.py", trained), ("pipeline/download.py", {"download"})):
        original = (repo / module).read_text()
        (repo / module).write_text(original + "\n# an edit\n")
        try:
            assert changed_stages(repo, env) == expected, module
        finally:
            (repo / module).write_text(original)
    assert changed_stages(repo, env) == set()


def test_changing_dropout_reruns_only_the_dropout_variant(reproduced):
    repo, env, _ = reproduced  # its results committed
    out = run(["dvc", "exp", "run", "-S", "variants.dropout.model.dropout=0.5"], repo, env).stdout
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    # check reads every param; dropout's run config changed, no other
    assert ran == {"check", "train@dropout-0", "train@dropout-1", "evaluate@dropout", "report"}, out
    for name in set(VARIANTS) - {"dropout"}:
        assert f"Stage 'train@{name}-0' didn't change, skipping" in out
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], repo, env).stdout)
    assert set(diff) == {"metrics/dropout.json", "comparison.json"}
    assert set(diff["comparison.json"]) <= {
        f"dropout.{key}"
        for key in (
            "diff",
            "ci_low",
            "ci_high",
            "boot_low",
            "boot_high",
            "p",
            "p_holm",
            "p_tost",
            "p_tost_holm",
            "seeds_needed",
        )
    } | {f"{v}.p_holm" for v in VARIANTS} | {
        f"{v}.p_tost_holm" for v in VARIANTS
    }  # Holm's adjustment moves the others' adjusted p-values only


def test_mlflow_has_a_run_per_variant_and_a_child_per_seed(reproduced):
    import mlflow
    import mlflow.pyfunc

    from pipeline.data import load_split

    repo, _, _ = reproduced
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("lenet5-variants")
    # beside the store that made it (this copy's original: the store keeps absolute locations)
    artifacts = Path(experiment.artifact_location.removeprefix("file://"))
    assert artifacts.name == "mlruns" and (artifacts.parent / "mlflow.db").is_file(), artifacts
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on runs
    runs = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'")
    # newest first: keep the newest per stage (the workspace's outputs are the dvc exp run's above)
    by_name = {r.info.run_name.split(" ")[0]: r for r in reversed(runs)}
    expected = [f"evaluate@{v}" for v in VARIANTS] + [f"train@{v}-{s}" for v in VARIANTS for s in (0, 1)]
    assert sorted(by_name) == sorted(expected)
    # a DVC experiment's variant run carries its name: two experiments' rows differ in the runs table
    for r in runs:  # those of test_changing_dropout_reruns_only_the_dropout_variant's `dvc exp run`
        if "dvc_exp_name" in r.data.tags and r.info.run_name.startswith("evaluate@"):
            assert r.info.run_name == f"evaluate@{r.data.tags['variant']} {r.data.tags['dvc_exp_name']}"
    for name in VARIANTS:
        parent = by_name[f"evaluate@{name}"]  # the variant's run: evaluate adopts the seeds' training runs
        metrics = json.loads((repo / f"metrics/{name}.json").read_text())
        assert parent.data.tags["dvc_stage"] == f"evaluate@{name}"
        assert re.fullmatch(r"[0-9a-f]{40}", parent.data.tags["git_commit"])
        assert parent.data.params["variant.arch"] == ("mlp" if name == "mlp" else "lenet5")
        assert parent.data.metrics["test_acc_mean"] == pytest.approx(metrics["test_acc_mean"])
        assert parent.data.metrics["test_acc_ci_high"] == pytest.approx(metrics["test_acc_ci_high"])
        assert {"params.yaml", "metrics", "history", "confusion", "per_class"} <= {
            a.path for a in client.list_artifacts(parent.info.run_id)
        }
        for seed in (0, 1):
            child = by_name[f"train@{name}-{seed}"]
            assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
            assert child.data.params["seed"] == str(seed) and child.data.params["train.epochs"] == str(epochs(repo))
            assert child.data.metrics["test_acc"] == pytest.approx(metrics[f"test_acc_seed{seed}"])
            history = client.get_metric_history(child.info.run_id, "val_acc")
            assert [m.step for m in history] == list(range(1, metrics[f"epochs_run_seed{seed}"] + 1))
            assert {i.dataset.name for i in child.inputs.dataset_inputs} == {"FashionMNIST-train", "FashionMNIST-val"}
    # the first seed's logged model takes raw uint8 images and scores what DVC recorded
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(f"runs:/{by_name['train@dropout-0'].info.run_id}/model")
    assert model.metadata.get_input_schema().inputs[0].shape == (-1, 28, 28)
    images, labels = load_split(repo / "data/split", "test")
    table = model.predict(images.numpy())
    classes = json.loads((repo / "data/split/meta.json").read_text())["classes"]
    assert list(table.columns) == ["class", *(f"p_{c}" for c in classes)]
    accuracy = (table["class"].to_numpy() == np.array(classes)[labels.numpy()]).mean()
    assert accuracy == pytest.approx(json.loads((repo / "metrics/dropout.json").read_text())["test_acc_seed0"])


def test_mlflow_models_serve_answers_with_a_class_name(reproduced):
    """`mlflow models serve` of the logged model, for real: raw pixels in, the class name out."""
    import mlflow

    from pipeline.data import load_split

    repo, env, _ = reproduced
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("lenet5-variants")
    (child,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'train@vanilla-0'")[:1]
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"runs:/{child.info.run_id}/model"]
        + ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
        cwd=repo,
        env={**env, "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_url(f"http://127.0.0.1:{port}/ping", server, timeout=120)
        images, labels = load_split(repo / "data/split", "test")
        body = json.dumps({"inputs": images[:3].tolist()}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())["predictions"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    local = mlflow.pyfunc.load_model(f"runs:/{child.info.run_id}/model").predict(images[:3].numpy())
    assert [row["class"] for row in answer] == local["class"].tolist()
    assert answer[0]["p_" + answer[0]["class"]] == pytest.approx(local.iloc[0]["p_" + answer[0]["class"]])


def test_predict_takes_an_mlflow_model_uri_and_agrees_with_the_checkpoint(reproduced):
    """runs:/<id>/model through the logged pyfunc (raw pixels in) = the seed's checkpoint through the engine."""
    import pandas as pd

    repo, env, _ = reproduced
    uri = f"runs:/{run_of(repo, 'data/models/dropout/seed0.pt')}/model"
    out = run([sys.executable, "-m", "pipeline.predict", uri, "--out", "uri.csv"], repo, env).stdout
    lines = out.splitlines()  # the first 20 images, the summary, then the accuracy and confusion matrix
    assert lines[20] == f"200 predictions by {uri} -> uri.csv (180 more in the CSV)", out
    assert all(re.fullmatch(r"test:\d+: .+ \(\d+\.\d\d%\)", line) for line in lines[:20]), out
    run([sys.executable, "-m", "pipeline.predict", "data/models/dropout/seed0.pt", "--out", "ckpt.csv"], repo, env)
    by_uri, by_checkpoint = pd.read_csv(repo / "uri.csv"), pd.read_csv(repo / "ckpt.csv")
    pd.testing.assert_frame_equal(by_uri, by_checkpoint, atol=2e-6)

    bad = run([sys.executable, "-m", "pipeline.predict", "models:/nosuch@champion"], repo, env, check=False)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        f"error: models:/nosuch@champion: cannot load it from sqlite:///{repo / 'mlflow.db'} "
        "(Registered Model with name=nosuch not found)"
    ]


def test_register_moves_the_champion_alias_to_the_best_validation_variant(reproduced):
    import mlflow

    repo, env, _ = reproduced
    result = run([sys.executable, "-m", "pipeline.register"], repo, env)
    out = result.stdout
    assert "WARNING" not in result.stderr, result.stderr  # registers the LoggedModel, not runs:/<id>/model
    val = {name: json.loads((repo / f"metrics/{name}.json").read_text())["val_acc_mean"] for name in VARIANTS}
    best = max(val, key=val.get)  # by validation accuracy, never test
    assert out.startswith(f"registered {best} as lenet5-fashion-mnist version 1;")
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    version = client.get_model_version_by_alias("lenet5-fashion-mnist", "champion")
    assert version.tags["variant"] == best and re.fullmatch(r"[0-9a-f]{40}", version.tags["git_commit"])
    assert version.run_id == run_of(repo, f"data/models/{best}/seed0.pt")
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/lenet5-fashion-mnist@champion")
    assert len(model.predict(np.zeros((2, 28, 28), dtype=np.uint8))) == 2
    out = run([sys.executable, "-m", "pipeline.predict", "models:/lenet5-fashion-mnist@champion"], repo, env).stdout
    assert "200 predictions by models:/lenet5-fashion-mnist@champion" in out and "accuracy" in out
    run([sys.executable, "-m", "pipeline.register"], repo, env)  # again: version 2, and the alias follows
    assert client.get_model_version_by_alias("lenet5-fashion-mnist", "champion").version in (2, "2")


def test_mlflow_ui_opens_on_the_runs_with_the_accuracy_columns(reproduced, tmp_path):
    """scripts/mlflow-ui.py (`make ui`) and the page it prints, in a real headless Chromium: "Training runs"
    (not the GenAI overview), the variants' runs, and the mean accuracies as columns, read from the DOM."""
    repo, env, _ = reproduced
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "scripts/mlflow-ui.py", "--port", str(port)],
        cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        lines = []
        while len(lines) < 40 and not lines[-1:] == [""]:  # MLflow's store set-up logs may come first
            lines.append(server.stdout.readline())
            if lines[-1].startswith("  lenet5-variants: "):
                break
        assert lines[-1].startswith("  lenet5-variants: "), lines
        url = lines[-1].split(": ", 1)[1].strip()
        assert url.endswith("/runs?workflowType=machine_learning&viewStateShareKey=variants"), lines
        wait_for_url(f"http://127.0.0.1:{port}/health", server)
        chromium = [
            "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
            "--disable-background-networking", "--disable-component-update", f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1600,1000", "--virtual-time-budget=25000",
        ]  # fmt: skip
        dom = subprocess.run([*chromium, "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
        subprocess.run([*chromium, f"--screenshot={tmp_path / 'landing.png'}", url], capture_output=True, timeout=180)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert (tmp_path / "landing.png").stat().st_size > 10_000  # what a person sees, kept with the test's files
    # the runs table, with our columns and the variants' runs; not the GenAI overview
    for text in ("Run Name", "test_acc_mean", "val_acc_mean", "seeds", "evaluate@batchnorm"):
        assert f">{text}<" in dom, f"{text!r} not on the landing page"
    assert re.search(r">0\.\d+", dom)  # accuracies shown in the cells
    assert ">Usage<" not in dom and "Token usage" not in dom  # the GenAI overview's tabs


def test_every_seed_run_of_a_variant_is_folded_under_it(reproduced):
    """A train stage forced again on a checkpoint a variant's run holds (a proof re-run: the same bytes) joins
    that variant's run as it ends; a variant's evaluate adopts every parentless run of its checkpoints, not only
    the newest, so mlflow ui shows no seed run as a flat row (issue 31). Last in this module: it adds runs."""
    import mlflow

    repo, env, _ = reproduced
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("lenet5-variants").experiment_id

    def seed_runs():
        newest_first = ["attributes.start_time DESC"]
        return client.search_runs([experiment], "attributes.run_name = 'train@vanilla-0'", order_by=newest_first)

    held = next(r for r in seed_runs() if "mlflow.parentRunId" in r.data.tags)
    run(["dvc", "repro", "--force", "--single-item", "train@vanilla-0"], repo, env)
    proof = seed_runs()[0]
    assert proof.info.run_id != held.info.run_id
    assert proof.data.tags["checkpoint_md5"] == held.data.tags["checkpoint_md5"]  # the same checkpoint
    assert proof.data.tags["mlflow.parentRunId"] == held.data.tags["mlflow.parentRunId"]

    for r in (proof, held):  # two parentless runs of one checkpoint, as proof re-runs made before this change
        client.delete_tag(r.info.run_id, "mlflow.parentRunId")
    run(["dvc", "repro", "--force", "--single-item", "evaluate@vanilla"], repo, env)
    newest = {"order_by": ["attributes.start_time DESC"], "max_results": 1}
    (variant,) = client.search_runs([experiment], "attributes.run_name = 'evaluate@vanilla'", **newest)
    for r in (proof, held):
        adopted = client.get_run(r.info.run_id)
        assert adopted.data.tags["mlflow.parentRunId"] == variant.info.run_id
        assert "test_acc" in adopted.data.metrics
