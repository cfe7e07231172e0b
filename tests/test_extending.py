"""docs/extending.md's recipes are true: every patch on the page applies to the current code, and each recipe,
applied to a tiny project, does what the page says when its commands run (the real dvc, in a temp git repo)."""

import json
import re
import shlex
import shutil
import subprocess

import pytest
import test_dependencies
import yaml
from helpers import ROOT, make_project, run, shrunk_params

DOC = (ROOT / "docs/extending.md").read_text()
pytestmark = pytest.mark.slow


def recipe(title):
    """(patch, [command lines]) of the `## <title>` section: its diff blocks joined, its bash lines."""
    section = DOC.split(f"\n## {title}\n")[1].split("\n## ")[0]
    patch = "".join(re.findall(r"```diff\n(.*?)```", section, re.S))
    lines = [
        line.split("#")[0].strip()
        for block in re.findall(r"```bash\n(.*?)```", section, re.S)
        for line in block.splitlines()
    ]
    return patch, [shlex.split(line) for line in lines if line]


def apply(patch, folder, *options):
    subprocess.run(["git", "apply", *options, "-"], cwd=folder, input=patch, text=True, check=True)


def test_the_page_has_five_recipes_and_every_patch_applies_to_the_current_code():
    titles = ["Add a knob", "Add a variant", "Add a metric", "Add a dataset", "Add a stage"]
    assert re.findall(r"^## (.+)$", DOC, re.M) == titles
    for title, landed in (
        ("Add a knob", True),
        ("Add a variant", False),
        ("Add a metric", False),
        ("Add a stage", False),
    ):
        patch, _ = recipe(title)
        assert patch
        check = ["git", "apply", "--check", *(["-R"] if landed else []), "-"]  # the knob's patch is in the code
        result = subprocess.run(check, cwd=ROOT, input=patch, text=True, capture_output=True)
        assert result.returncode == 0, f"{title}: {result.stderr}"


def commit_and_run(repo, env, commands):
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "recipe"], repo, env)
    return "".join(run(command, repo, env).stdout for command in commands)


def test_add_a_variant(tmp_path, idx_folder):
    patch, commands = recipe("Add a variant")
    patched = tmp_path / "patched"
    for name in ("params.yaml", "tune/params.yaml", "dvc.yaml"):
        (patched / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, patched / name)
    apply(patch, patched)
    params = shrunk_params(idx_folder[0], patched / "params.yaml", **{"train.seeds": [0]})
    assert params["variants"]["tanh"]["model"] == {"activation": "tanh"}
    repo, env = make_project(tmp_path, params)
    shutil.copy(patched / "dvc.yaml", repo / "dvc.yaml")
    output = commit_and_run(repo, env, commands)
    assert "Running stage 'train@tanh-0'" in output and "train@vanilla-0" not in output
    assert "test_acc_mean" in output and (repo / "metrics/tanh.json").is_file()
    # the tune pipeline takes the variant with its entry, and refuses it without
    (repo / "tune").mkdir()
    check = ["python", "-m", "pipeline.check", "--params", "../params.yaml", "--search", "params.yaml"]
    for search, ok in ((ROOT / "tune/params.yaml", False), (patched / "tune/params.yaml", True)):
        shutil.copy(search, repo / "tune/params.yaml")
        result = run(
            [*check, "--out", str(tmp_path / "checked")], repo / "tune", {**env, "PYTHONPATH": str(repo)}, False
        )
        assert (result.returncode == 0) == ok, result.stderr
        assert ok or "missing: tanh" in result.stderr


def tiny_vanilla(tmp_path, idx_folder, **overrides):
    params = shrunk_params(idx_folder[0], **{"train.seeds": [0, 1], **overrides})
    params["variants"] = {"vanilla": params["variants"]["vanilla"]}
    return make_project(tmp_path, params)


def test_add_a_metric_re_scores_and_trains_nothing(tmp_path, idx_folder):
    patch, commands = recipe("Add a metric")
    repo, env = tiny_vanilla(tmp_path, idx_folder)
    run(["dvc", "repro"], repo, env)
    apply(patch, repo)
    output = commit_and_run(repo, env, commands)
    assert "Running stage 'evaluate@vanilla'" in output and "Running stage 'train@" not in output
    metrics = json.loads((repo / "metrics/vanilla.json").read_text())
    assert metrics["test_acc_mean"] <= metrics["test_top2_acc_mean"] <= 1
    assert {"test_top2_acc_ci_low", "test_top2_acc_seed0", "test_top2_acc_seed1"} <= set(metrics)
    assert "test_top2_acc_mean" in output  # dvc metrics show


def test_add_a_dataset_from_a_local_folder(tmp_path, idx_folder):
    _, commands = recipe("Add a dataset")
    repo, env = tiny_vanilla(tmp_path, idx_folder, **{"train.seeds": [0]})
    (command,) = commands  # dvc exp run in the workspace: its outputs stay there
    assert command[:5] == ["dvc", "exp", "run", "-S", "data.dataset=MNIST"]
    run([arg.replace("/path/to/mnist-idx-folder", str(idx_folder[0])) for arg in command], repo, env)
    assert json.loads((repo / "data/split/meta.json").read_text())["dataset"] == "MNIST"


def test_add_a_stage(tmp_path, idx_folder, monkeypatch):
    patch, commands = recipe("Add a stage")
    repo, env = tiny_vanilla(tmp_path, idx_folder)
    apply(patch, repo, "--exclude=tests/*")  # the project copy has no tests; the page's patch applies to ROOT's
    output = commit_and_run(repo, env, commands)
    import pandas as pd

    records = pd.DataFrame(json.loads((repo / "plots/confusion/vanilla.json").read_text()))
    wrong = records[records.actual != records.predicted].groupby(["actual", "predicted"])["count"].sum()
    wrong = wrong[wrong > 0]
    most = json.loads((repo / "confusions.json").read_text())["vanilla"]
    assert (most is None) == wrong.empty and "vanilla" in output
    assert most is None or most["count"] == wrong.max() == wrong[most["actual"], most["predicted"]]
    monkeypatch.setattr(test_dependencies, "ROOT", repo)
    stage = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["confusions"]
    imported = {m.replace(".", "/") + ".py" for m in test_dependencies.closure("pipeline.confusions")}
    assert imported - set(test_dependencies.NOT_DEPS) == {d for d in stage["deps"] if d.startswith("pipeline/")}


def lock_outs(repo):
    return {
        name: stage.get("outs") for name, stage in yaml.safe_load((repo / "dvc.lock").read_text())["stages"].items()
    }


def test_add_a_knob_changes_no_run_config_and_retrains_to_the_same_bytes(tmp_path, idx_folder):
    patch, commands = recipe("Add a knob")
    *landing, experiment = commands
    params = shrunk_params(idx_folder[0], **{"train.seeds": [0, 1]})
    params["variants"] = {"vanilla": params["variants"]["vanilla"]}
    del params["train"]["label_smoothing"]
    repo, env = make_project(tmp_path, params)
    apply(patch, repo, "-R", "--exclude=params.yaml")  # the code before the knob (params.yaml: written here)
    commit_and_run(repo, env, [["dvc", "repro"]])
    configs, before = (repo / "data/config/vanilla.json").read_bytes(), lock_outs(repo)
    apply(patch, repo, "--exclude=params.yaml")  # the knob lands
    params["train"]["label_smoothing"] = 0.0
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit_and_run(repo, env, [landing[0]])  # dvc repro check
    assert (repo / "data/config/vanilla.json").read_bytes() == configs
    status = run(["dvc", "status"], repo, env).stdout
    assert "pipeline/engine.py" in status and "pipeline/params.py" in status
    assert "data/config" not in status and "params.yaml" not in status  # no run's settings changed
    output = "".join(run(command, repo, env).stdout for command in landing[1:])
    assert output.endswith("Data and pipelines are up to date.\n")
    assert lock_outs(repo) == before  # the retrained seed's checkpoint and every other output as they were
    run(experiment, repo, env)  # the knob on: the vanilla seeds train again, to other weights
    assert json.loads((repo / "data/config/vanilla.json").read_text())["train"]["label_smoothing"] == 0.1
    assert lock_outs(repo)["train@vanilla-0"] != before["train@vanilla-0"]
