"""The record is a pure function of code, params and data: the real `dvc` on tiny data, twice.

What DVC and git track (checkpoints, metrics, histories, plots, figures,
report.md, dvc.lock) must come out byte for byte the same from the same
inputs on the same CPU and thread count; timings and MLflow ids live in
MLflow and observations/, which neither tracks.
"""

import json
import sys

import pytest
from helpers import make_project, run, shrunk_params, write_idx_folder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A committed tiny project (two variants) after one `dvc repro`, MLflow tracking on."""
    tmp = tmp_path_factory.mktemp("reproducible")
    write_idx_folder(tmp / "mirror", contrast=35)
    params = shrunk_params(tmp / "mirror", **{"tracking.enabled": True})
    params["variants"] = {name: params["variants"][name] for name in ("vanilla", "dropout")}
    repo, env = make_project(tmp, params)
    run(["dvc", "repro"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "results"], repo, env)
    return repo, env


def tracked_outputs(repo):
    """{path: bytes} of every file git or dvc.lock tracks under the outputs' folders."""
    folders = ("data/models", "data/split", "metrics", "plots")
    files = [p for folder in folders for p in (repo / folder).rglob("*") if p.is_file() and p.name != ".gitignore"]
    return {str(p.relative_to(repo)): p.read_bytes() for p in files + [repo / "report.md", repo / "dvc.lock"]}


def test_a_clone_reproduces_every_byte_with_two_stages_at_once(project, tmp_path):
    """`make run` in a fresh clone (no DVC cache: every stage runs), two train stages at once where the
    committed record ran one at a time: the same bytes, and a clean `git status`."""
    repo, env = project
    before = tracked_outputs(repo)
    assert any(k.startswith("plots/figures/") for k in before) and "data/models/vanilla/seed1.pt" in before
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    ran = run([sys.executable, "scripts/repro.py"], clone, {**env, "PIPELINE_WORKERS": "2"}).stdout
    assert ran.count(" done in ") == 2 * 2 and "train stages" not in ran  # no bar in a log
    assert run(["git", "status", "--porcelain"], clone, env).stdout == ""
    after = tracked_outputs(clone)
    assert sorted(after) == sorted(before) and [k for k in before if before[k] != after[k]] == []
    # the observations of each run went where neither git nor DVC looks
    observed = json.loads((clone / "observations/train/vanilla/seed0.json").read_text())
    assert len(observed["seconds_per_epoch"]) == 2 and observed["mlflow_run_id"]
    assert "observations" in (repo / ".gitignore").read_text()


def test_a_clone_that_never_ran_the_study_is_quiet_and_green(tmp_path):
    """The study is a DVC project of its own (study/.dvc): the main project's commands never touch it."""
    write_idx_folder(tmp_path / "mirror")
    quick = {"train.epochs": 1, "tracking.enabled": False}
    params = shrunk_params(tmp_path / "mirror", **quick)
    params["variants"] = {"vanilla": params["variants"]["vanilla"]}
    study = shrunk_params(tmp_path / "mirror", "study/params.yaml", **quick)
    repo, env = make_project(tmp_path, params, study)
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-d", "storage", str(remote)], repo, env)
    run(["dvc", "repro"], repo, env)
    run(["dvc", "push"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "results"], repo, env)
    run(["dvc", "exp", "run", "-n", "slower", "-S", "train.lr=0.05"], repo, env)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    for command in (["dvc", "pull"], ["dvc", "status"], ["dvc", "checkout"]):
        result = run(command, clone, env, check=False)
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        assert "study" not in result.stdout + result.stderr and "cnn" not in result.stdout + result.stderr
    assert (clone / "data/models/vanilla/seed0.pt").is_file()
    applied = run(["dvc", "exp", "apply", "slower"], repo, env, check=False)
    assert applied.returncode == 0 and "study" not in applied.stdout + applied.stderr, applied.stderr
