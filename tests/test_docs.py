"""The docs are tests: every shell block of README.md and docs/*.md runs, in order, as a reader types it, on a
shrunk project (tests/reader.py), and what a page shows a command printing is what it prints. A block that
cannot run here says so in its page (`<!-- skip: next "why" -->`); the count of those is checked below."""

import os
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, free_port, make_project, run, shrunk_params, stop_queue_workers, write_idx_folder
from PIL import Image
from reader import Reader

pytestmark = pytest.mark.slow

PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
# Pages whose blocks no test reads yet: issue 31's harness covers them page by page (docs/tests.md).
NOT_YET_READ = {
    "docs/extending.md",
    "docs/study.md",
    "docs/sweep.md",
    "docs/team.md",
    "docs/tuning.md",
}
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
# A shrunk project's predictions are of synthetic blocks: a class is a value like a number.
CLASS_MASK = [("|".join(re.escape(c) for c in CLASSES), "<class>")]


def docs_project(tmp_path, variants=("vanilla", "batchnorm", "dropout", "weight_decay", "mlp"), **overrides):
    """A shrunk project a reader can type the README's commands in: the Makefile, the scripts, the venv."""
    mirror = tmp_path / "mirror"
    write_idx_folder(mirror)
    params = shrunk_params(mirror, **{"train.epochs": 1, **overrides})
    params["variants"] = {name: params["variants"][name] for name in variants}
    repo, env = make_project(tmp_path, params)
    for name in ("Makefile", "requirements.txt", "scripts", "pyproject.toml", ".pre-commit-config.yaml"):
        source, target = ROOT / name, repo / name
        shutil.copytree(source, target, dirs_exist_ok=True) if source.is_dir() else shutil.copy(source, target)
    # The venv is the suite's own (make's setup finds it installed: its requirements are older than the venv).
    (repo / ".venv").symlink_to(Path(env["PATH"].split(os.pathsep)[0]).parent)
    os.utime(repo / "requirements.txt", (0, 0))
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "the Makefile and scripts"], repo, env)
    return repo, env


def read(page, repo, env, **options):
    reader = Reader(repo, env, **options).read(ROOT / page)
    assert reader.ran, f"{page}: no block ran"
    return reader


def test_every_shell_block_runs_or_says_why_not():
    """Every ```bash, ```console and ```diff block is read by a test below, or is marked with its reason."""
    surveys = {page: Reader().read(ROOT / page) for page in PAGES}
    run_here = sum(len(s.ran) for page, s in surveys.items() if page not in NOT_YET_READ)
    not_yet = sum(len(s.ran) for page, s in surveys.items() if page in NOT_YET_READ)
    marked = {where: why for s in surveys.values() for where, why in s.skipped}
    assert set(NOT_YET_READ) <= set(PAGES)
    for page, survey in surveys.items():  # a page with a block to run has its test here
        name = "test_readme" if page == "README.md" else f"test_{Path(page).stem}_page"
        assert page in NOT_YET_READ or not survey.ran or name in globals(), f"{page}: no {name}"
    summary = (
        f"{run_here + not_yet + len(marked)} shell blocks: {run_here} run, {len(marked)} marked not runnable "
        f"here, {not_yet} on pages not yet read ({', '.join(sorted(NOT_YET_READ))})"
    )
    reasons = Counter((where.split(":")[0], why) for where, why in marked.items())  # lines move; pages stay
    listing = "".join(f"- `{page}` ({n}): {why}\n" for (page, why), n in reasons.items())
    print(summary, listing, sep="\n")
    assert f"{summary}. Marked:\n{listing}" in (ROOT / "docs/tests.md").read_text()


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    """README.md read on a fresh shrunk project: `make run` (the suite itself is marked); its results committed."""
    tmp = tmp_path_factory.mktemp("readme")
    repo, env = docs_project(tmp)
    reader = read("README.md", repo, env)
    assert [where for where, _ in reader.skipped] == ["README.md:13"]
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "results"], repo, env)
    return repo, env


def copy_of(project, tmp_path):
    repo, env = project
    copy = tmp_path / "project"
    shutil.copytree(repo, copy, symlinks=True)
    return copy, env


def test_readme(reproduced):
    repo, _ = reproduced
    assert (repo / "report.md").is_file() and len(list((repo / "metrics").glob("*.json"))) == 5


def test_tests_page(reproduced, tmp_path):
    repo, env = copy_of(reproduced, tmp_path)
    reader = read("docs/tests.md", repo, env)
    assert len(reader.skipped) == 1 and (repo / ".git/hooks/pre-commit").is_file()  # make test(-fast): the suite


def setup_pipeline(repo):
    """The page's images, made as it says: a dark test-set sneaker on white, 168x112; a pullover with margins, 40x52."""
    from pipeline.data import load_split

    images, labels = load_split(repo / "data/split", "test")
    sneaker = images[int((labels == 7).nonzero()[0])].numpy()
    Image.fromarray(255 - sneaker).resize((168, 112)).save(repo / "dark-sneaker.png")
    pullover = images[int((labels == 2).nonzero()[0])].numpy()
    Image.fromarray(np.pad(pullover, ((12, 12), (6, 6)))).save(repo / "pullover-with-margins.png")


def options(page):
    """How a page is read on a shrunk project: its masks, and what a reader there types instead."""
    port = str(free_port())
    return {
        "docs/pipeline.md": {"masks": CLASS_MASK},
        # Shrunk as the project is: 3 seeds for the page's 10, a grid of 3 experiments for its 6; the experiment
        # a reader picks from the ranking is one of the grid's.
        "docs/experiments.md": {
            "substitutions": {
                "'train.seeds=[0,1,2,3,4,5,6,7,8,9]'": "'train.seeds=[0,1,2]'",
                "'model.activation=relu,tanh'": "'model.activation=relu'",
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
    }.get(page, {})


def test_pipeline_page(reproduced, tmp_path):
    repo, env = copy_of(reproduced, tmp_path)
    setup_pipeline(repo)
    read("docs/pipeline.md", repo, env, **options("docs/pipeline.md"))
    assert (repo / "dvc_plots/index.html").is_file()


def test_experiments_page(reproduced, tmp_path):
    repo, env = copy_of(reproduced, tmp_path)
    try:
        read("docs/experiments.md", repo, env, **options("docs/experiments.md"))
    finally:
        stop_queue_workers(repo)
    assert (repo / "sweep.png").is_file()


def test_mlflow_page(reproduced, tmp_path):
    repo, env = copy_of(reproduced, tmp_path)
    read("docs/mlflow.md", repo, env, **options("docs/mlflow.md"))


def test_pages_of_records_and_clusters_are_marked(tmp_path):
    """docs/defaults.md's sweeps are records of commits of their own; docs/cluster.md's need a cluster's machines
    (tests/test_cluster.py runs the same on 127.0.0.x)."""
    for page in ("docs/defaults.md", "docs/cluster.md"):
        survey = Reader().read(ROOT / page)
        assert survey.skipped and not survey.ran, page
