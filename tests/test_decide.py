"""`make decide` for real (scripts/decide.py) on a tiny project: rounds of seeds until decided or the last look."""

import json
import re
import sys

import pytest
import yaml
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
