"""The small-CNN study: its params profile, and its own pipeline (study/dvc.yaml) run by the real dvc."""

import hashlib
import json
import shutil
import sys

import pytest
import torch
import yaml
from helpers import ROOT, make_project, run, shrunk_params, write_idx_folder

from pipeline.compare import exp_show, flat_rows, rank
from pipeline.models import build_model, count_parameters
from pipeline.params import load_params

STUDY = load_params(ROOT / "study/params.yaml")


def test_the_study_profile_holds_the_studys_rows():
    """2 and 4 conv blocks of 3x3 from 32 channels, batch norm and dropout; flip and erasing rows."""
    sizes = {name: count_parameters(build_model(v, STUDY.run_config(name).model)) for name, v in STUDY.variants.items()}
    assert sizes["cnn2"] == 50378 and sizes["cnn4"] == sizes["cnn4_flip"] == sizes["cnn4_erase"] == 391370
    assert all(v.arch == "cnn" and v.batchnorm and v.dropout for v in STUDY.variants.values())
    assert STUDY.train_for("cnn4_flip").hflip and not STUDY.train_for("cnn4").hflip
    assert STUDY.train_for("cnn4_erase").erase > 0 and STUDY.train_for("cnn4").erase == 0
    assert STUDY.report.baseline == "cnn4" and {STUDY.run_config(v).model.dropout for v in STUDY.variants} == {0.2}


def test_the_study_reads_the_shared_settings_from_the_main_params_file():
    """study/params.yaml holds its seeds, rows and names; the rest is ../params.yaml's, written once."""
    main = load_params(ROOT / "params.yaml")
    assert STUDY.data == main.data and STUDY.evaluate == main.evaluate and STUDY.model == main.model
    assert STUDY.train.model_dump(exclude={"seeds"}) == main.train.model_dump(exclude={"seeds"})
    assert STUDY.report.model_dump(exclude={"baseline"}) == main.report.model_dump(exclude={"baseline"})
    assert set(yaml.safe_load((ROOT / "study/params.yaml").read_text())) == {
        "base",
        "train",
        "report",
        "tracking",
        "variants",
    }


def test_a_variants_train_overrides_change_that_variant_only():
    """The train stage depends on variants.<name>, so an override re-runs that variant alone (see below)."""
    assert STUDY.train_for("cnn4_flip").model_dump(exclude={"hflip"}) == STUDY.train.model_dump(exclude={"hflip"})


@pytest.mark.slow
def test_the_study_runs_apart_from_the_default_pipeline_and_a_row_is_one_set_away(tmp_path):
    write_idx_folder(tmp_path / "mirror")
    quick = {"train.epochs": 1, "tracking.enabled": False}
    params = shrunk_params(tmp_path / "mirror", **quick)
    params["variants"] = {"vanilla": params["variants"]["vanilla"]}
    study = shrunk_params(tmp_path / "mirror", "study/params.yaml", **{"tracking.enabled": False})
    study["variants"] = {name: study["variants"][name] for name in ("cnn2", "cnn4_flip")}
    study["report"]["baseline"] = "cnn4_flip"
    for variant in study["variants"].values():
        variant["cnn"]["width"] = 4  # the real shapes are counted above; here only the pipeline matters
    repo, env = make_project(tmp_path, params, study)

    default = run(["dvc", "repro"], repo, env).stdout
    assert "Running stage 'train@vanilla-0'" in default and "cnn" not in default
    assert not (repo / "study/metrics").exists()
    assert "study" not in run(["dvc", "status"], repo, env).stdout  # the main project never sees the study

    study_dir = repo / "study"
    first = run([sys.executable, "scripts/repro.py", "--cd", "study"], repo, env).stdout  # what `make study` runs
    assert "train@cnn2-0 done" in first and "Stage 'train@cnn2-0' didn't change" in first
    assert "Running stage 'train@vanilla" not in first and "Running stage 'split'" not in first
    written = load_params(study_dir / "params.yaml")
    for name in ("cnn2", "cnn4_flip"):
        metrics = json.loads((repo / f"study/metrics/{name}.json").read_text())
        assert metrics["seeds"] == 2
        assert metrics["parameters"] == count_parameters(
            build_model(written.variants[name], written.run_config(name).model)
        )
    report = (repo / "study/report.md").read_text()
    assert "cnn2 − cnn4_flip" in report

    # `make push` sends the study's outputs too, to the main project's remote
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-d", "storage", str(remote)], repo, env)
    for extra in ([], ["--project", "study"]):
        run([sys.executable, str(ROOT / "scripts/push_run_cache.py"), *extra], repo, env)
    checkpoint = hashlib.md5((study_dir / "data/models/cnn2/seed0.pt").read_bytes()).hexdigest()
    assert (remote / "files/md5" / checkpoint[:2] / checkpoint[2:]).is_file()
    assert "storage" in (study_dir / ".dvc/config.local").read_text()  # the main project's remote, lent

    # the study's kernel-5 row: only cnn2 trains again, and the compare command ranks it (two params files)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "study"], repo, env)
    row = run(["dvc", "exp", "run", "-S", "variants.cnn2.cnn.kernel=5"], study_dir, env).stdout
    assert "Running stage 'train@cnn2-0'" in row
    assert "Stage 'train@cnn4_flip-0' didn't change" in row
    checkpoint = torch.load(study_dir / "data/models/cnn2/seed0.pt", weights_only=True)
    assert checkpoint["variant_params"]["cnn"]["kernel"] == 5

    ranked, changed = rank(flat_rows(exp_show(study_dir)))
    assert changed == ["variants.cnn2.cnn.kernel"]
    assert sorted((r["variant"], r["params"]["variants.cnn2.cnn.kernel"]) for r in ranked) == [
        ("cnn2", 3),
        ("cnn2", 5),
        ("cnn4_flip", 3),
        ("cnn4_flip", 5),
    ]
    ranked, changed = rank(flat_rows(exp_show(repo)))  # the main pipeline's: nothing changed there
    assert changed == [] and {r["variant"] for r in ranked} == {"vanilla"}

    # `make exps STUDY=1` narrows the study's table to the changed param and the mean accuracies
    shutil.copy(ROOT / "Makefile", repo / "Makefile")
    table = run(["make", "-o", "setup", "exps", "STUDY=1"], repo, env).stdout.splitlines()
    header = [cell.strip() for cell in next(line for line in table if line.startswith("| Experiment")).split("|")]
    # the study's params file by name: its stages read two (`dvc exp show` shows ../params.yaml's columns with
    # the study file's values, a DVC quirk, so `make exps` leaves them out)
    kernel = "params.yaml:variants.cnn2.cnn.kernel"
    means = {f"metrics/cnn2.json:{m}_acc_mean" for m in ("test", "val")}  # shown where they differ
    verdicts = {h for h in header if h.startswith("comparison.json:") and h.endswith(".verdict")}
    assert kernel in header and set(header) <= {"", "Experiment", kernel} | means | verdicts, header

    # a study checkpoint feeds predict like any other
    run(["python", "-m", "pipeline.predict", "study/data/models/cnn4_flip/seed1.pt", "--out", "p.csv"], repo, env)
    assert len((repo / "p.csv").read_text().splitlines()) == 1 + 200
