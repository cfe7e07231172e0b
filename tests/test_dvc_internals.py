"""pipeline/dvc_internals.py against the real DVC: the version check, and each function on a real tiny project."""

import hashlib

import dvc
import pytest
import yaml
from helpers import make_project, run, shrunk_params, write_idx_folder

from pipeline import dvc_internals
from pipeline.errors import PipelineError


def test_another_dvc_version_is_one_line_before_any_internal_is_read(monkeypatch):
    dvc_internals.check_version()  # the pinned one passes
    monkeypatch.setattr(dvc, "__version__", "4.0.1")
    with pytest.raises(PipelineError) as error:
        dvc_internals.stage_graph(".")
    assert str(error.value).startswith(
        "pipeline/dvc_internals.py was written for DVC 3.67 and this is DVC 4.0.1: check its functions"
    )


@pytest.mark.slow
def test_each_internal_reads_a_real_project(tmp_path):
    write_idx_folder(tmp_path / "mirror")
    params = shrunk_params(tmp_path / "mirror", **{"tracking.enabled": False, "train.seeds": [0]})
    params["variants"] = {"vanilla": params["variants"]["vanilla"]}
    repo, env = make_project(tmp_path, params)
    graph = dvc_internals.stage_graph(repo)
    assert graph["split"] == {"check", "download"}  # dvc.yaml: split reads the raw files and the marker
    assert graph["train@vanilla-0"] >= {"check", "split"} and graph["check"] == set()
    assert graph["report"] >= {"evaluate@vanilla", "train@vanilla-0"}
    run(["dvc", "repro", "split"], repo, env)
    assert dvc_internals.stage_outputs(repo, ["split"]) == [repo / "data/split"]
    assert dvc_internals.cache_dir(repo) == repo / ".dvc/cache"
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    folder = next(o["md5"] for o in lock["split"]["outs"] if o["path"] == "data/split")
    listing = dvc_internals.cache_listing(repo, folder)
    meta = next(e for e in listing if e["relpath"] == "meta.json")
    assert meta["md5"] == hashlib.md5((repo / "data/split/meta.json").read_bytes()).hexdigest()
    assert dvc_internals.cache_has(repo, folder) and not dvc_internals.cache_has(repo, "0" * 32)
    dvc_internals.apply_overrides(repo / "params.yaml", ["train.lr=0.05", "+variants.vanilla.train.epochs=3"])
    written = yaml.safe_load((repo / "params.yaml").read_text())
    assert written["train"]["lr"] == 0.05 and written["variants"]["vanilla"]["train"] == {"epochs": 3}
