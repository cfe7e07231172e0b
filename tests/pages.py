"""The shrunk project the docs' pages are read on (tests/reader.py reads them), and how each page is read there:
its set-up, masks and what a reader on a shrunk project types instead. Used by tests/test_docs.py and
tests/test_docs_pipelines.py; conftest.py builds the project once per test session (`reproduced`)."""

import io
import os
import re
import shutil
from pathlib import Path

import numpy as np
import yaml
from helpers import (
    ROOT,
    TUNE_FILES,
    free_port,
    make_project,
    run,
    serve_folder,
    shrunk_params,
    shrunk_search,
    write_idx_folder,
)
from PIL import Image
from reader import Reader
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedSeq

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
# A shrunk project's predictions are of synthetic blocks: a class is a value like a number.
CLASS_MASK = [("|".join(re.escape(c) for c in CLASSES), "<class>")]


SUB_PROJECTS = {"study": ("cnn2", "cnn4"), "sweep": ("relu", "tanh_d05")}


def shrink_in_place(text, shrunk):
    """`text` (the real params.yaml) with the values that differ in `shrunk` replaced and the keys it lacks (the
    variants a page does not use) dropped, its layout and comments kept (ruamel's round trip), so that a patch a
    page shows applies to it as to the real file."""
    yaml = YAML()
    document = yaml.load(text)

    def update(node, values):
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(node.get(key), dict):
                update(node[key], value)
            elif node.get(key) != value:
                if isinstance(value, list):
                    value = CommentedSeq(value)
                    value.fa.set_flow_style()
                node[key] = value
        for key in [key for key in node if key not in values]:
            del node[key]

    update(document, shrunk)
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue()


def docs_project(tmp_path, variants=None, sources=None, **overrides):
    """A shrunk project a reader can type the pages' commands in: params.yaml as the real file with the shrunk
    values (and only `variants`, and the data's `sources`, if given), the Makefile, the scripts, the tune
    pipeline's params, the venv."""
    mirror = tmp_path / "mirror"
    write_idx_folder(mirror)
    params = shrunk_params(mirror, **{"train.epochs": 1, **overrides})
    if sources:
        params["data"]["sources"]["FashionMNIST"] = sources
    if variants:
        params["variants"] = {name: params["variants"][name] for name in variants}
    repo, env = make_project(tmp_path, params)
    (repo / "params.yaml").write_text(shrink_in_place((ROOT / "params.yaml").read_text(), params))
    names = ("Makefile", "requirements.txt", "scripts", "pyproject.toml", ".pre-commit-config.yaml", "tune/params.yaml")
    for name in (*names, *TUNE_FILES, "tests/test_dependencies.py"):  # a page's patch may touch a test
        source, target = ROOT / name, repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source, target, dirs_exist_ok=True) if source.is_dir() else shutil.copy(source, target)
    for folder, rows in SUB_PROJECTS.items():  # the study and the sweep, with the rows their pages name
        for name in ("dvc.yaml", ".dvc/config", ".dvc/.gitignore", ".dvc/plots", ".dvcignore"):
            source, target = ROOT / folder / name, repo / folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(source, target) if source.is_dir() else shutil.copy(source, target)
        sub = shrunk_params(mirror, f"{folder}/params.yaml")
        sub["variants"] = {row: sub["variants"][row] for row in rows}
        (repo / folder / "params.yaml").write_text(yaml.safe_dump(sub, sort_keys=False))
    # The venv is the suite's own (make's setup finds it installed: its requirements are older than the venv).
    (repo / ".venv").symlink_to(Path(env["PATH"].split(os.pathsep)[0]).parent)
    os.utime(repo / "requirements.txt", (0, 0))
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "the Makefile and scripts"], repo, env)
    return repo, env


def read(page, repo, env, stop=True, **options):
    reader = Reader(repo, env, **options).read(ROOT / page, stop=stop)
    assert reader.ran, f"{page}: no block ran"
    return reader


def reproduce_readme(tmp):
    """README.md read on a fresh shrunk project in `tmp`: `make run` (the suite itself is marked), two train
    stages at once, the data from a loopback HTTP mirror after a local folder that is missing; what it printed
    in observations/readme-make-run.log (git ignores observations/); its results committed. (repo, env).

    The mirror's folder is the last source: a page's `dvc repro --force` fetches again after the HTTP server
    has gone (download tries the sources in order)."""
    write_idx_folder(tmp / "mirror")
    with serve_folder(tmp / "mirror") as url:
        repo, env = docs_project(tmp, sources=[str(tmp / "absent"), url, str(tmp / "mirror")])
        reader = read("README.md", repo, {**env, "PIPELINE_WORKERS": "2"})  # as on this machine's 2 cores
    assert [where for where, _ in reader.skipped] == ["README.md:13"]
    (repo / "observations/readme-make-run.log").write_text(reader.printed_by("make run"))
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "results"], repo, env)
    return repo, env


def copy_of(project, tmp_path, name="project"):
    repo, env = project
    copy = tmp_path / name
    shutil.copytree(repo, copy, symlinks=True)
    return copy, env


def without_tracking(repo, env):
    """tracking.enabled: false in the project's params.yaml (its layout kept), `check` re-run, committed: for the
    tests whose checks and shown outputs involve no MLflow. A stage with tracking off never imports MLflow: on a
    shrunk project that is about half of a stage process's CPU (a train stage, 2026-12-06, beside two real-data
    train stages: 5.2-6.5 s with tracking, 3.2-3.5 s without). MLflow is read where it is the subject:
    docs/mlflow.md, experiments.md's queued grid, team.md, tests/test_tracking.py, tests/test_pipeline.py."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["tracking"]["enabled"] = False
    (repo / "params.yaml").write_text(shrink_in_place((repo / "params.yaml").read_text(), params))
    run(["dvc", "repro"], repo, env)  # check re-runs (tracking is in no run config); report too if variants were cut
    run(["git", "commit", "-qam", "tracking off"], repo, env)


def setup_pipeline(repo, env):
    """The page's images, made as it says: a dark test-set sneaker on white, 168x112; a pullover with margins, 40x52."""
    from pipeline.data import load_split

    images, labels = load_split(repo / "data/split", "test")
    sneaker = images[int((labels == 7).nonzero()[0])].numpy()
    Image.fromarray(255 - sneaker).resize((168, 112)).save(repo / "dark-sneaker.png")
    pullover = images[int((labels == 2).nonzero()[0])].numpy()
    Image.fromarray(np.pad(pullover, ((12, 12), (6, 6)))).save(repo / "pullover-with-margins.png")


def options(page, repo=None):
    """How a page is read on a shrunk project (`repo`): its masks, and what a reader there types instead."""
    port = str(free_port())
    return {
        "docs/pipeline.md": {"masks": CLASS_MASK},
        # Shrunk as the project is: 3 seeds for the page's 10, a grid of 2 experiments for its 6; the experiment
        # a reader applies: the last one `dvc exp ls` lists (on synthetic data the ranking is noise).
        "docs/experiments.md": {
            "substitutions": {
                "'train.seeds=[0,1,2,3,4,5,6,7,8,9]'": "'train.seeds=[0,1,2]'",
                "'model.activation=relu,tanh'": "'model.activation=relu'",
                "'variants.dropout.model.dropout=0.0,0.1,0.5'": "'variants.dropout.model.dropout=0.1,0.5'",
                "<best-exp>": "$(dvc exp ls --name-only | tail -n 1)",
            }
        },
        # The seed run a reader copies from the UI: batchnorm seed 0's (its observations name it); a free port.
        "docs/mlflow.md": {
            "masks": CLASS_MASK,
            "substitutions": {
                "<seed run id>": '$(python -c "import json; print(json.load(open('
                "'observations/train/batchnorm/seed0.json'))['mlflow_run_id'])\")",
                "5011": port,
            },
        },
        # The MNIST files a reader has: synthetic ones, named as MNIST's (setup_extending); the new dataset's
        # run on one seed of the two (a whole pipeline again: every variant's seeds train on the new split).
        "docs/extending.md": {
            "substitutions": {
                "/path/to/mnist-idx-folder]'": f"{repo}/../mnist]' -S 'train.seeds=[0]'",
            }
        },
    }.get(page, {})


# The baseline (the knob's recipe trains it) and the last two variants, which the context lines of the page's
# params.yaml patch name: "Add a metric" and "Add a dataset" re-run every variant, the same work per variant.
EXTENDED = ("vanilla", "weight_decay", "mlp")


def setup_extending(repo, env):
    """The page's MNIST files (synthetic, named as MNIST's), and the project cut to the variants of `EXTENDED`,
    tracking off (the page is not about MLflow), committed."""
    write_idx_folder(repo / "../mnist")
    keep_variants(repo, EXTENDED)
    without_tracking(repo, env)


def setup_study(repo, env):
    """The study's results committed, as the repository's are (the page compares an experiment with them): what
    `make study` printed."""
    printed = run(["make", "study"], repo, env).stdout
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "the study's results"], repo, env)
    return printed


TUNED = ("vanilla", "dropout")  # the baseline, and the variant tuning.md's commands name


def keep_variants(repo, names):
    """params.yaml with only the variants `names` (the file's layout and comments kept); not committed."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["variants"] = {name: params["variants"][name] for name in names}
    (repo / "params.yaml").write_text(shrink_in_place((repo / "params.yaml").read_text(), params))


def setup_tuning(repo, env):
    """The search shrunk (3 trials, one re-scoring seed) and the project to the variants of `TUNED` (each
    variant's search, final seeds and scoring is the same work again), committed: `make tune`'s stages are
    the same per variant, and the page names dropout alone."""
    (repo / "tune/params.yaml").write_text(yaml.safe_dump(shrunk_search(TUNED), sort_keys=False))
    keep_variants(repo, TUNED)
    run(["git", "commit", "-qam", "a shrunk search, on two variants"], repo, env)


EXPERIMENTED = ("vanilla", "dropout")  # the baseline, and the variant experiments.md's commands change


def setup_experiments(repo, env):
    """The project cut to the variants of `EXPERIMENTED`, reproduced and committed as the repository's results
    are (the page diffs its experiments against them): every command of the page re-runs, per variant, what it
    runs for dropout or vanilla, and each variant's stages cost a `dvc exp run` in every queued copy. The cut
    variants' files stay, as they would in a reader's project (dvc.yaml's plots still name their curves)."""
    keep_variants(repo, EXPERIMENTED)
    run(["dvc", "repro"], repo, env)  # check rewrites the run configs (the same bytes), report the verdicts
    run(["git", "commit", "-qam", "the project on two variants"], repo, env)
