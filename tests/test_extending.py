"""docs/extending.md's recipes are true: every patch on the page applies to the current code, and the knob's
recipe, whose patch has landed, applied in reverse and again on a tiny project changes no run config and
retrains to the same bytes (the real dvc, in a temp git repo). The other recipes run as the page shows them, on
the docs' shrunk project, and are checked there (tests/test_docs_pipelines.py's test_extending_page)."""

import json
import re
import shlex
import subprocess

import pytest
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


def lock_outs(repo):
    return {
        name: stage.get("outs") for name, stage in yaml.safe_load((repo / "dvc.lock").read_text())["stages"].items()
    }


def test_add_a_knob_changes_no_run_config_and_retrains_to_the_same_bytes(tmp_path, idx_folder):
    patch, commands = recipe("Add a knob")
    *landing, experiment = commands
    params = shrunk_params(idx_folder[0], **{"train.seeds": [0, 1], "tracking.enabled": False})  # no MLflow here
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
