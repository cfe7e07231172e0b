"""The docs are tests: every shell block of README.md and docs/*.md runs, in order, as a reader types it, on a
shrunk project (tests/reader.py, tests/pages.py), and what a page shows a command printing is what it prints. A
block that cannot run here says so in its page (`<!-- skip: next "why" -->`); the count of those is checked below.
docs/extending.md, study.md and sweep.md are read in tests/test_docs_pipelines.py, on the other worker, from the
same reproduced project (conftest.py); docs/team.md in tests/test_docs_team.py, with its services."""

import json
import re
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pytest
import test_docs_pipelines
import test_docs_team
import torch
from helpers import ROOT, postgres, run, stop_queue_workers
from pages import EXPERIMENTED, copy_of, options, read, setup_experiments, setup_pipeline, setup_tuning
from reader import Reader
from sqlalchemy.engine import make_url

pytestmark = pytest.mark.slow

PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]


def test_every_shell_block_runs_or_says_why_not():
    """Every ```bash, ```console and ```diff block is read by a test, or is marked with its reason."""
    surveys = {page: Reader().read(ROOT / page) for page in PAGES}
    run_here = sum(len(s.ran) for s in surveys.values())
    marked = {where: why for s in surveys.values() for where, why in s.skipped}
    for page, survey in surveys.items():  # a page with a block to run has its test
        name = "test_readme" if page == "README.md" else f"test_{Path(page).stem}_page"
        tests = {*globals(), *vars(test_docs_pipelines), *vars(test_docs_team)}
        assert not survey.ran or name in tests, f"{page}: no {name}"
    summary = f"{run_here + len(marked)} shell blocks: {run_here} run, {len(marked)} marked not runnable here"
    reasons = Counter((where.split(":")[0], why) for where, why in marked.items())  # lines move; pages stay
    listing = "".join(f"- `{page}` ({n}): {why}\n" for (page, why), n in reasons.items())
    print(summary, listing, sep="\n")
    assert f"{summary}. Marked:\n{listing}" in (ROOT / "docs/tests.md").read_text()


def test_readme(reproduced):
    repo, _ = reproduced
    assert (repo / "report.md").is_file() and len(list((repo / "metrics").glob("*.json"))) == 5


def test_tests_page(reproduced, tmp_path):
    repo, env = copy_of(reproduced, tmp_path)
    reader = read("docs/tests.md", repo, env)
    assert len(reader.skipped) == 1 and (repo / ".git/hooks/pre-commit").is_file()  # make test(-fast): the suite


def test_pipeline_page(reproduced, tmp_path):
    repo, env = copy_of(reproduced, tmp_path)
    setup_pipeline(repo, env)
    read("docs/pipeline.md", repo, env, **options("docs/pipeline.md"))
    assert (repo / "dvc_plots/index.html").is_file()


# Every key a metrics file may hold: results, never observations of one run (seconds, latency, ids).
RESULT_KEY = re.compile(
    r"^((test|val|train)_(acc|loss)_(mean|std|ci_low|ci_high|seed\d+)|(best_epoch|epochs_run)_seed\d+|seeds|parameters)$"
)


def test_experiments_page(reproduced, tmp_path):
    repo, env = copy_of(reproduced, tmp_path)
    setup_experiments(repo, env)
    # MLflow's documented form of a local store, relative: a queued experiment runs in a temp copy, and its runs
    # must still land in the workspace's store (pipeline/mlflow_store.py resolves it against the repo)
    env = {**env, "MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"}
    try:
        reader = read("docs/experiments.md", repo, env, **options("docs/experiments.md"))
    finally:
        stop_queue_workers(repo)
    assert (repo / "sweep.png").is_file()

    # more seeds: each variant trains its new seed only, and the seeds it had keep their scores
    added = reader.printed_by("-n ten-seeds")
    trained = re.findall(r"^(train@\S+) done in", added, re.MULTILINE)
    assert sorted(trained) == sorted(f"train@{v}-2" for v in EXPERIMENTED), added
    assert "Running stage 'evaluate@vanilla'" in added and "Running stage 'report'" in added, added
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], repo, env).stdout.split()
    (ten,) = [ref for ref in refs if ref.endswith("/ten-seeds")]
    for name in EXPERIMENTED:
        old = json.loads(run(["git", "show", f"{ten}^:metrics/{name}.json"], repo, env).stdout)  # its baseline
        new = json.loads(run(["git", "show", f"{ten}:metrics/{name}.json"], repo, env).stdout)
        assert new["seeds"] == 3 and all(new[f"test_acc_seed{s}"] == old[f"test_acc_seed{s}"] for s in (0, 1))

    # the queued grid ran to its end: the page's wait loop waited for it (under `set -o pipefail`, `grep -q`
    # ended the loop at once: it exits at its first match, and `dvc queue status` then fails on the closed pipe)
    grid = [ref for ref in refs if ref.split("/")[-2] == ten.split("/")[-2]]
    grid = [ref for ref in grid if ref.rsplit("/", 1)[1] not in ("dropout-05", "ten-seeds")]
    assert len(grid) == 2, refs
    # its experiments differ in dropout's rate only: their metrics diff is that variant's and the verdicts',
    # and holds results only, no observation of a run (seconds, ids); nor does any metrics file
    low, high = grid
    diff = json.loads(run(["dvc", "metrics", "diff", low, high, "--json"], repo, env).stdout)
    assert set(diff) == {"metrics/dropout.json", "comparison.json"}, diff
    keys = set(diff["metrics/dropout.json"])
    assert keys and {k for k in keys if not RESULT_KEY.match(k)} == set(), keys
    for path in (repo / "metrics").glob("*.json"):
        assert {k for k in json.loads(path.read_text()) if not RESULT_KEY.match(k)} == set(), path
    # every queued experiment landed its MLflow runs and artifacts in the workspace's store, not its temp copy:
    # a run per seed it trained (a seed the run-cache restored trains nothing) and its variant's run, whose
    # artifacts keep the params file (the artifact root is the one the store was made with: the README
    # project's, copied here)
    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("lenet5-variants")
    trained_in_grid = 0
    for ref in grid:
        name = ref.rsplit("/", 1)[1]
        logs = run(["dvc", "queue", "logs", name], repo, env).stdout
        trained = re.findall(r"^Running stage '(train@dropout-\d+)'", logs, re.MULTILINE)
        trained_in_grid += len(trained)
        runs = client.search_runs([experiment.experiment_id], f"tags.dvc_exp_name = '{name}'")
        expected = [f"evaluate@dropout {name}", *trained]
        assert sorted(r.info.run_name for r in runs) == sorted(expected), name
        for r in runs:
            assert r.info.artifact_uri.startswith(experiment.artifact_location), r.info.artifact_uri
            assert ".dvc/tmp" not in r.info.artifact_uri, r.info.artifact_uri
            if r.info.run_name.startswith("evaluate@"):
                assert (Path(urlparse(r.info.artifact_uri).path) / "params.yaml").is_file()
    assert trained_in_grid, "the grid trained nothing: its runs were not checked"


def test_mlflow_page(reproduced, tmp_path):
    repo, env = copy_of(reproduced, tmp_path)
    read("docs/mlflow.md", repo, env, **options("docs/mlflow.md"))


def test_tuning_page(reproduced, tmp_path):
    repo, env = copy_of(reproduced, tmp_path)
    setup_tuning(repo, env)
    with postgres("scratch") as url:  # the team's PostgreSQL; the page creates its own database, optuna
        server = make_url(url)
        where = {"db-host": "127.0.0.1", "5432": str(server.port), "PASSWORD": server.password}
        env = {**env, "PGPASSWORD": server.password}  # what the reader types when createdb asks
        reader = read("docs/tuning.md", repo, env, substitutions=where)
    # `make tune`: each variant's search, then its best setting trained on the standard seeds, the report
    made = reader.printed_by("make tune")
    assert "tune@dropout done" in made and "Running stage 'tune_report'" in made, made
    for log in (repo / "tune/observations/repro").glob("*.log"):  # quiet logs: no third-party warning
        assert "Warning" not in log.read_text(), log.name
    tune = repo / "tune"
    summary = json.loads((tune / "trials/dropout.json").read_text())
    tuned = json.loads((tune / "data/config/dropout.json").read_text())
    assert {key: tuned[key.split(".")[0]][key.split(".")[1]] for key in summary["settings"]} == summary["settings"]
    checkpoint = torch.load(tune / "data/models/dropout/seed1.pt", weights_only=False)
    assert checkpoint["model_params"]["dropout"] == tuned["model"]["dropout"]  # trained with the tuned value
    text = (tune / "tuning.md").read_text()
    assert "## What the budget buys" in text and "| dropout |" in text and (tune / "plots/budget.png").is_file()
    # `dvc exp run -S` on dropout's own dimension re-runs dropout's stages only
    changed = reader.printed_by("dvc exp run -S 'tune.variants.dropout.model.dropout.high=0.7'")
    ran = sorted(line.split("'")[1] for line in changed.splitlines() if line.startswith("Running stage"))
    expected = ["check", "evaluate@dropout", "report", "train@dropout-0", "train@dropout-1", "tune@dropout"]
    assert [s for s in ran if s != "tune_report"] == expected, changed


def test_pages_of_records_and_clusters_are_marked(tmp_path):
    """docs/defaults.md's sweeps are records of commits of their own; docs/cluster.md's need a cluster's machines
    (tests/test_cluster.py runs the same on 127.0.0.x)."""
    for page in ("docs/defaults.md", "docs/cluster.md"):
        survey = Reader().read(ROOT / page)
        assert survey.skipped and not survey.ran, page
