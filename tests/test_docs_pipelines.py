"""The docs are tests (tests/test_docs.py): docs/extending.md, study.md and sweep.md, read block
by block on a copy of the reproduced shrunk project (conftest.py builds it once for both files), and what each
page says its commands do checked on what they printed and wrote. None of the three is about MLflow: each copy
has tracking off (pages.without_tracking)."""

import hashlib
import json
import shutil
import sys

import pandas as pd
import pytest
import test_dependencies
import torch
import yaml
from helpers import ROOT, build, run
from pages import copy_of, options, read, setup_extending, setup_study, without_tracking

pytestmark = pytest.mark.slow


def test_extending_page(reproduced, tmp_path, monkeypatch):
    """Each recipe does what the page says (the knob's, which has landed, is tests/test_extending.py's)."""
    repo, env = copy_of(reproduced, tmp_path)
    setup_extending(repo, env)
    reader = read("docs/extending.md", repo, env, **options("docs/extending.md", repo))

    # a variant: its own stages train, no other's; the tune pipeline refuses a search without its entry
    said = reader.printed_under("Add a variant")
    assert "Running stage 'train@tanh-0'" in said and "Running stage 'train@vanilla-0'" not in said, said
    assert "test_acc_mean" in said and (repo / "metrics/tanh.json").is_file()
    shutil.copy(ROOT / "tune/params.yaml", tmp_path / "search.yaml")  # the search without the recipe's entry
    check = ["python", "-m", "pipeline.check", "--params", "params.yaml", "--search", str(tmp_path / "search.yaml")]
    refused = run([*check, "--out", str(tmp_path / "checked")], repo, env, check=False)
    assert refused.returncode != 0 and "missing: tanh" in refused.stderr, refused.stderr

    # a metric: every variant re-scored, nothing trained; the new keys with their interval and seeds
    said = reader.printed_under("Add a metric")
    assert "Running stage 'evaluate@vanilla'" in said and "Running stage 'train@" not in said, said
    for key in ("test_top2_acc_mean", "test_top2_acc_ci_low", "test_top2_acc_seed0", "test_top2_acc_seed1"):
        assert key in said, said  # dvc metrics show: the new keys with their interval and each seed's

    # a dataset: the split is MNIST's (the experiment ran in the workspace), and every variant trained on it
    assert json.loads((repo / "data/split/meta.json").read_text())["dataset"] == "MNIST"
    said = reader.printed_under("Add a dataset")
    trained = {line.split("'")[1] for line in said.splitlines() if line.startswith("Running stage 'train@")}
    assert trained == {f"train@{name}-0" for name in yaml.safe_load((repo / "params.yaml").read_text())["variants"]}

    # a stage: the most frequent confusion is the confusion matrix's, and dvc.yaml lists what it imports
    records = pd.DataFrame(json.loads((repo / "plots/confusion/vanilla.json").read_text()))
    wrong = records[records.actual != records.predicted].groupby(["actual", "predicted"])["count"].sum()
    wrong = wrong[wrong > 0]
    most = json.loads((repo / "confusions.json").read_text())["vanilla"]
    assert (most is None) == wrong.empty
    assert most is None or most["count"] == wrong.max() == wrong[most["actual"], most["predicted"]]
    monkeypatch.setattr(test_dependencies, "ROOT", repo)
    stage = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["confusions"]
    imported = {m.replace(".", "/") + ".py" for m in test_dependencies.closure("pipeline.confusions")}
    assert imported - set(test_dependencies.NOT_DEPS) == {d for d in stage["deps"] if d.startswith("pipeline/")}


def test_study_page(reproduced, tmp_path):
    """The study runs apart from the default pipeline, pushes with it, and a row is one `-S` away."""
    from pipeline.compare import exp_show, flat_rows, rank
    from pipeline.models import count_parameters
    from pipeline.params import load_params

    repo, env = copy_of(reproduced, tmp_path)
    without_tracking(repo, env)
    assert not (repo / "study/metrics").exists()  # `make run` never ran it
    first = setup_study(repo, env)
    assert "train@cnn2-0 done" in first and "Stage 'train@cnn2-0' didn't change" in first
    assert "Running stage 'train@vanilla" not in first and "Running stage 'split'" not in first
    assert "study" not in run(["dvc", "status"], repo, env).stdout  # the main project never sees the study
    written = load_params(repo / "study/params.yaml")
    for name in ("cnn2", "cnn4"):
        metrics = json.loads((repo / f"study/metrics/{name}.json").read_text())
        assert metrics["seeds"] == 2 and metrics["parameters"] == count_parameters(build(written, name))
    assert "cnn2 − cnn4" in (repo / "study/report.md").read_text()

    # `make push` sends the study's outputs too, to the main project's remote
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "--local", "-d", "storage", str(remote)], repo, env)
    for extra in ([], ["--project", "study"]):
        run([sys.executable, str(ROOT / "scripts/push_run_cache.py"), *extra], repo, env)
    checkpoint = hashlib.md5((repo / "study/data/models/cnn2/seed0.pt").read_bytes()).hexdigest()
    assert (remote / "files/md5" / checkpoint[:2] / checkpoint[2:]).is_file()
    assert "storage" in (repo / "study/.dvc/config.local").read_text()  # the main project's remote, lent
    (repo / ".dvc/config.local").unlink()
    (repo / "study/.dvc/config.local").unlink()

    reader = read("docs/study.md", repo, env)
    # the page's kernel-5 row: only cnn4 trains again, and the compare command ranks it (two params files)
    said = reader.printed_under("Running it")
    assert "Running stage 'train@cnn4-0'" in said and "Stage 'train@cnn2-0' didn't change" in said, said
    assert (
        torch.load(repo / "study/data/models/cnn4/seed0.pt", weights_only=True)["variant_params"]["cnn"]["kernel"] == 5
    )
    ranked, changed = rank(flat_rows(exp_show(repo / "study")))
    assert changed == ["variants.cnn4.cnn.kernel"], changed
    assert {r["params"]["variants.cnn4.cnn.kernel"] for r in ranked} == {3, 5}

    # `make exps STUDY=1` narrows the study's table to the changed param and the mean accuracies: the study's
    # params file by name (`dvc exp show` shows ../params.yaml's columns with the study file's values, a DVC quirk,
    # so `make exps` leaves them out)
    table = run(["make", "-o", "setup", "exps", "STUDY=1"], repo, env).stdout.splitlines()
    header = [cell.strip() for cell in next(line for line in table if line.startswith("| Experiment")).split("|")]
    kernel = "params.yaml:variants.cnn4.cnn.kernel"
    means = {f"metrics/cnn4.json:{m}_acc_mean" for m in ("test", "val")}  # shown where they differ
    verdicts = {h for h in header if h.startswith("comparison.json:") and h.endswith(".verdict")}
    assert kernel in header and set(header) <= {"", "Experiment", kernel} | means | verdicts, header

    # a study checkpoint feeds predict like any other
    run(["python", "-m", "pipeline.predict", "study/data/models/cnn2/seed1.pt", "--out", "p.csv"], repo, env)
    assert len((repo / "p.csv").read_text().splitlines()) == 1 + 200


def test_sweep_page(reproduced, tmp_path):
    repo, env = copy_of(reproduced, tmp_path)
    without_tracking(repo, env)
    read("docs/sweep.md", repo, env)
    assert (repo / "sweep/report.md").is_file()
