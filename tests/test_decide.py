"""`make decide` for real (scripts/decide.py) on a tiny project: rounds of seeds until decided or the last look."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml
from documented import documented
from helpers import make_project, run, shrunk_params, write_idx_folder

pytestmark = pytest.mark.slow


def test_decide_adds_seeds_until_the_last_look_then_stops_at_a_decided_look(tmp_path):
    write_idx_folder(tmp_path / "mirror", contrast=35)  # hard enough that seeds differ
    params = shrunk_params(tmp_path / "mirror", **{"tracking.enabled": False, "train.epochs": 1})
    params["variants"] = {name: params["variants"][name] for name in ("vanilla", "dropout")}
    params["report"].update(looks=[2, 3], margin=1e-6)  # no difference is within a millionth: never equivalent
    repo, env = make_project(tmp_path, params)
    run([sys.executable, "scripts/repro.py"], repo, env)
    assert json.loads((repo / "comparison.json").read_text())["dropout"]["verdict"] == "undecided"
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "two seeds"], repo, env)

    out = run([sys.executable, "scripts/decide.py"], repo, env).stdout
    assert "2 seeds: undecided: dropout" in out and "round: train.seeds=[0, 1, 2] (1 new seed(s) per variant)" in out
    assert out.rstrip().endswith("the last look (report.looks: [2, 3]) is reached: left undecided at 3 seeds"), out
    assert sorted(re.findall(r"(train@\S+) done in", out)) == ["train@dropout-2", "train@vanilla-2"]
    assert yaml.safe_load((repo / "params.yaml").read_text())["train"]["seeds"] == [0, 1, 2]
    assert json.loads((repo / "metrics/vanilla.json").read_text())["seeds"] == 3
    assert "decide-3seeds" in run(["dvc", "exp", "list", "--name-only"], repo, env).stdout
    report = (repo / "report.md").read_text()
    assert "alpha = 0.05 / 2 looks = 0.025" in report

    # a margin of 50 pt: equivalent at this look, so decide stops here and adds nothing
    edited = yaml.safe_load((repo / "params.yaml").read_text())
    edited["report"]["margin"] = 0.5
    (repo / "params.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
    out = run([sys.executable, "scripts/decide.py"], repo, env).stdout
    assert "decided at 3 seeds per variant" in out and "round:" not in out, out
    assert json.loads((repo / "comparison.json").read_text())["dropout"]["verdict"] == "equivalent"


def test_ctrl_c_on_make_decide_says_where_each_stage_and_the_seeds_stopped(tmp_path):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) in a round's training: the terminal gets
    repro.py's count of the stages stopped, each stage's own line, and decide's line naming the seeds params.yaml
    now holds and both ways on; no traceback, exit 130; `make decide` then resumes there."""
    write_idx_folder(tmp_path / "mirror")
    endless = {"train.epochs": 100000, "train.early_stopping_patience": 100000}  # until the interrupt
    params = shrunk_params(tmp_path / "mirror", **{"tracking.enabled": False, **endless})
    params["variants"] = {"vanilla": params["variants"]["vanilla"]}
    params["report"].update(looks=[3])  # two seeds: no look yet, so the first round (to 3 seeds) starts at once
    repo, env = make_project(tmp_path, params)
    decide = subprocess.Popen(
        [sys.executable, "scripts/decide.py"], cwd=repo, env={**env, "PIPELINE_WORKERS": "2"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    logs, deadline = repo / "observations/repro", time.monotonic() + 240
    while sum(" epoch " in log.read_text() for log in logs.glob("train@*.log")) < 2 if logs.is_dir() else True:
        if time.monotonic() > deadline or decide.poll() is not None:  # never two stages training: stop it all
            os.killpg(decide.pid, signal.SIGKILL)
            pytest.fail(f"two train stages never ran at once: {decide.communicate()}")
        time.sleep(0.2)
    os.killpg(decide.pid, signal.SIGINT)
    try:
        out, err = decide.communicate(timeout=120)
    finally:  # a failure leaves no endless training behind
        if decide.poll() is None:
            os.killpg(decide.pid, signal.SIGKILL)
    assert decide.returncode == 130 and "Traceback" not in out + err, out + err
    assert "interrupted: 2 train stage(s) were running, 1 not started" in out, out
    documented("train stage(s) were running", out)
    documented("  train@vanilla-0: interrupted: ", out)
    stopped = re.findall(r"^  (train@vanilla-\d): (.*)$", out, re.MULTILINE)
    assert len(stopped) == 2 and all(line.startswith("interrupted: the stage stopped") for _, line in stopped), out
    assert err.rstrip().splitlines()[-1] == (
        "interrupted: make decide stopped at train.seeds=[0, 1, 2] (params.yaml holds the interrupted round's "
        "seeds: `make decide` resumes there, `git checkout params.yaml` goes back)"
    )
    documented("make decide stopped at", err)
    edited = yaml.safe_load((repo / "params.yaml").read_text())
    edited["train"]["epochs"] = 1  # resume, quickly
    (repo / "params.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
    resumed = run([sys.executable, "scripts/decide.py"], repo, env).stdout
    assert "round:" not in resumed and json.loads((repo / "metrics/vanilla.json").read_text())["seeds"] == 3
