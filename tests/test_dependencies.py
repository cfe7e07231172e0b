"""dvc.yaml lists exactly the pipeline modules each stage imports, and no stage imports another.

A module a stage imports but does not depend on is a stale-result bug: change
it and `dvc status` still says "up to date". The import closure is computed
from the source (ast), so it cannot drift from the code.
"""

import ast
import re

import pytest
import yaml
from helpers import ROOT

from pipeline.params import OWN_KEYS

STAGES = ("check", "download", "split", "train", "evaluate", "report", "tune", "tune_report")
# Imported by stages, but never change a result, so that changing them re-runs nothing:
NOT_DEPS = {
    "pipeline/tracking.py": "mirrors the DVC outputs into MLflow; tracking.* is not a DVC param either",
    "pipeline/mlflow_store.py": "which MLflow store and experiment the mirror writes to",
    "pipeline/errors.py": "how a stage fails (its message, its exit code), never what a finished stage wrote",
    "pipeline/cluster.py": "where a train stage's fit_seed runs (its own process or a Ray node), never what it returns",
    "pipeline/__init__.py": "empty",
}


def imports_of(module):
    """The pipeline modules `module` (e.g. 'pipeline.train') imports directly."""
    tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "pipeline":
                found |= {f"pipeline.{alias.name}" for alias in node.names}
            elif node.module.startswith("pipeline."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("pipeline.")}
    return found


def closure(module):
    """What `module` imports, directly or not; not through NOT_DEPS modules (what only they use cannot change
    a result either: tracking's pipeline/serving.py, the model MLflow keeps)."""
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            if current.replace(".", "/") + ".py" not in NOT_DEPS:
                todo += imports_of(current)
    return seen


def stage_definitions():
    """Every pipeline's: dvc.yaml, the small-CNN study's study/dvc.yaml and the tune pipeline's tune/dvc.yaml."""
    for dvcfile in ("dvc.yaml", "study/dvc.yaml", "study/wide/dvc.yaml", "sweep/dvc.yaml", "tune/dvc.yaml"):
        stages = yaml.safe_load((ROOT / dvcfile).read_text())["stages"]
        for name, stage in stages.items():
            body = stage.get("do", stage)
            module = re.search(r"python -m (pipeline\.\w+)", body["cmd"])[1]
            # the study and tune (DVC projects of their own) name the main project's code from there: ../pipeline/
            up = "../" * dvcfile.count("/")
            deps = {str(d).removeprefix(up) for d in body["deps"] if "pipeline/" in str(d)}
            yield f"{dvcfile}:{name}", module, deps


@pytest.mark.parametrize(
    "stage, module, deps", [pytest.param(*d, id=d[0]) for d in stage_definitions()]
)  # ids by stage: a set's order differs between processes (pytest-xdist's workers must agree)
def test_stage_deps_are_its_import_closure(stage, module, deps):
    imported = {m.replace(".", "/") + ".py" for m in closure(module)} - set(NOT_DEPS)
    assert not imported - deps, f"stage {stage}: dvc.yaml misses {sorted(imported - deps)}"
    assert not deps - imported, f"stage {stage}: dvc.yaml lists {sorted(deps - imported)}, never imported"


@pytest.mark.parametrize("stage", STAGES)
def test_no_stage_imports_another(stage):
    others = {f"pipeline.{s}" for s in STAGES} - {f"pipeline.{stage}"}
    assert not closure(f"pipeline.{stage}") & others


def test_the_closure_finds_what_is_there():
    """An oracle for the walker itself: train reaches the pool kernel only through models."""
    assert "pipeline.pool" not in imports_of("pipeline.train")
    assert "pipeline.pool" in closure("pipeline.train")


def own_and_base(main_params, up="../"):
    """A main stage's params deps as a second pipeline lists them: each key from the file that holds it
    (pipeline/params.py: OWN_KEYS), the whole of both files where the main stage reads the whole file."""
    own, base = [], []
    for entry in main_params:
        if isinstance(entry, dict):  # `params.yaml:`: all of it
            return [{"params.yaml": None}, {f"{up}params.yaml": None}]
        section, _, key = entry.partition(".")
        mine = section in OWN_KEYS and (OWN_KEYS[section] is None or key in OWN_KEYS[section])
        own += [entry] if mine else [f"{section}.{k}" for k in OWN_KEYS.get(section) or [] if not key]
        base += [] if mine else [entry]
    return [{"params.yaml": own}, {f"{up}params.yaml": base}]


@pytest.mark.parametrize("project", ["study", "study/wide", "sweep"])
def test_a_second_pipeline_runs_the_main_pipelines_stages(project):
    """study/dvc.yaml and sweep/dvc.yaml repeat the main train, evaluate and report stages (DVC has no
    include): the same commands, deps and outputs, run from their folder (a DVC project of its own) with the
    main project's code (PYTHONPATH=.., deps under ../pipeline/) and split (../data/split), each params key
    from the file that holds it."""
    main = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    sub = yaml.safe_load((ROOT / project / "dvc.yaml").read_text())
    up = "../" * (project.count("/") + 1)  # study/wide/ is one level deeper
    assert set(sub["vars"][0]["paths"]) <= set(main["vars"][0]["paths"])  # the same names, other places
    assert sub["vars"][0]["paths"]["split"] == up + main["vars"][0]["paths"]["split"]
    for name in ("check", "train", "evaluate", "report"):
        ours, theirs = main["stages"][name], sub["stages"][name]
        ours, theirs = ours.get("do", ours), theirs.get("do", theirs)
        assert theirs["cmd"] == f"PYTHONPATH={up.rstrip('/')} " + ours["cmd"], name
        relative = [f"{up}{d}" if str(d).startswith("pipeline/") else d for d in ours["deps"]]
        assert theirs["deps"] == [d for d in relative if not str(d).startswith("${paths.raw}")], name
        if "params" in ours:
            assert theirs["params"] == own_and_base(ours["params"], up), name
        for kind in ("outs", "metrics", "plots"):
            assert theirs.get(kind) == ours.get(kind), (name, kind)
        assert "wdir" not in theirs
    assert set(sub.get("stages")) == {"check", "train", "evaluate", "report"}
