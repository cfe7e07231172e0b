"""The compare command ranks known metrics correctly, by val accuracy, with the spread over seeds."""

import sys

import pytest

from pipeline.compare import flat_rows, markdown, pivot, rank
from pipeline.errors import PipelineError


def row(name, dropout, seed, val, test, state=None, rev=None):
    """One row as dvc.api.exp_show gives it (values as DVC reports them)."""
    return {
        "Experiment": name,
        "rev": rev or (name or "HEAD")[:7],
        "typ": "branch_commit",
        "State": state,
        "train.seeds": f"[{seed}]",
        "model.dropout": dropout,
        "model.activation": "relu",
        "tracking.experiment": "x",
        "data/split": "abc.dir",
        f"metrics/dropout.json:val_acc_seed{seed}": val,
        f"metrics/dropout.json:test_acc_seed{seed}": test,
        "metrics/dropout.json:test_acc_mean": test,  # not a per-seed column: not read
        f"metrics/vanilla.json:val_acc_seed{seed}": 0.5,
        f"metrics/vanilla.json:test_acc_seed{seed}": 0.5,
    }


ROWS = [
    {**row(None, 0.3, 0, 0.80, 0.79), "rev": "workspace", "typ": "baseline"},  # a copy: skipped
    row("low-a", 0.1, 0, 0.90, 0.91),
    row("low-b", 0.1, 1, 0.92, 0.89),  # mean val 0.91
    row("mid-a", 0.3, 0, 0.93, 0.88),
    row("mid-b", 0.3, 1, 0.95, 0.90),  # mean val 0.94: best
    row("high", 0.5, 0, 0.925, 0.99),  # best test: not chosen
    row("queued", 0.7, 0, float("nan"), None, state="Queued"),
]


def test_seeds_of_one_experiment_are_pooled_with_other_experiments():
    two = {
        **row("two", 0.9, 0, 0.80, 0.70),
        "metrics/dropout.json:val_acc_seed1": 0.82,
        "metrics/dropout.json:test_acc_seed1": 0.72,
        "train.seeds": "[0, 1]",
    }
    again = row("again", 0.9, 0, 0.80, 0.70)  # seed 0 of the same configuration: counted once
    again["metrics/dropout.json:val_acc_seed9"] = "None"  # how exp_show fills a seed this row lacks
    ranked, _ = rank([two, row("one", 0.9, 5, 0.84, 0.74), again], variant="dropout")
    assert len(ranked) == 1 and ranked[0]["seeds"] == 3
    assert ranked[0]["val_acc"] == pytest.approx(0.82) and ranked[0]["test_acc"] == pytest.approx(0.72)


def test_ranks_by_mean_val_accuracy_not_test():
    ranked, changed = rank(ROWS, variant="dropout")
    assert changed == ["model.dropout"]
    assert [r["params"]["model.dropout"] for r in ranked] == [0.3, 0.5, 0.1]
    best = ranked[0]
    assert best["seeds"] == 2 and best["experiments"] == ["mid-a", "mid-b"]
    assert best["val_acc"] == pytest.approx(0.94) and best["test_acc"] == pytest.approx(0.89)
    assert best["test_std"] == pytest.approx(0.0141421, rel=1e-4)  # stdev of 0.88, 0.90
    assert ranked[1]["seeds"] == 1 and ranked[1]["test_std"] == 0.0


def test_all_variants_and_markdown():
    ranked, changed = rank(ROWS)
    assert {r["variant"] for r in ranked} == {"dropout", "vanilla"}
    table = markdown(ranked, changed).splitlines()
    assert table[0] == "| rank | variant | model.dropout | seeds | val acc | test acc | experiments |"
    assert table[2] == "| 1 | dropout | 0.3 | 2 | 94.00% ± 1.41% | 89.00% ± 1.41% | mid-a, mid-b |"


def test_no_finished_experiment_is_a_clear_error():
    with pytest.raises(PipelineError, match="no finished experiment .* for variant 'mlp'"):
        rank(ROWS, variant="mlp")


def test_pivot_ranks_configurations_by_the_mean_over_variants():
    ranked, changed = rank(ROWS)
    table = pivot(ranked, changed)
    assert list(table.columns) == ["dropout", "vanilla", "mean over variants"]
    # dropout 0.3: (0.94 + 0.5) / 2 = 0.72 first; 0.5: (0.925 + 0.5) / 2; 0.1: (0.91 + 0.5) / 2
    assert list(table.index) == [0.3, 0.5, 0.1]
    assert table.loc[0.3, "mean over variants"] == pytest.approx(0.72)


def state(rev, dropout, study_dropout, val, study_val):
    """One revision's data as `dvc exp show --json` writes it, in a repo with two params files (this one's)."""
    return {
        "rev": rev,
        "params": {
            "params.yaml": {"data": {"model": {"dropout": dropout}, "train": {"seeds": [0]}}},
            "study/params.yaml": {"data": {"model": {"dropout": study_dropout}, "variants": {"cnn2": {"x": 1}}}},
        },
        "metrics": {
            "metrics/dropout.json": {"data": {"val_acc_seed0": val, "test_acc_seed0": 0.5}},
            "study/metrics/cnn2.json": {"data": {"val_acc_seed0": study_val, "test_acc_seed0": 0.5}},
        },
    }


def experiment(name, data, executor_state="success", error=None):
    return {
        "name": name,
        "executor": executor_state and {"state": executor_state},
        "revs": [{"rev": data["rev"], "name": name, "data": data, "error": error, "experiments": None}],
    }


STATES = [
    {"rev": "workspace", "name": None, "data": state("workspace", 0.9, 0.9, 0.99, 0.99), "experiments": None},
    {
        "rev": "a" * 40,
        "name": "main",
        "data": state("a" * 40, 0.1, 0.2, 0.90, 0.80),
        "experiments": [
            experiment("dropout-03", state("b" * 40, 0.3, 0.2, 0.92, 0.80)),
            experiment("study-05", state("c" * 40, 0.1, 0.5, 0.90, 0.85)),
            experiment("queued", state("d" * 40, 0.7, 0.7, 0.99, 0.99), executor_state="queued"),
            experiment("failed", {"rev": "e" * 40}, executor_state=None, error={"msg": "boom"}),
        ],
    },
]


def test_each_params_file_ranks_its_own_experiments():
    """The study's params and metrics do not leak into the main pipeline's ranking, nor the other way."""
    rows = flat_rows(STATES)
    assert [r["Experiment"] for r in rows] == ["main", "dropout-03", "study-05", "queued", "failed"]
    assert rows[0]["train.seeds"] == "[0]" and "variants.cnn2.x" not in rows[0]
    ranked, changed = rank(rows)
    assert changed == ["model.dropout"]
    assert [(r["params"]["model.dropout"], r["experiments"]) for r in ranked] == [
        (0.3, ["dropout-03"]),
        (0.1, ["main", "study-05"]),
    ]
    study = "study/params.yaml"
    ranked, changed = rank(flat_rows(STATES, study), params_file=study)
    assert changed == ["model.dropout"] and {r["variant"] for r in ranked} == {"cnn2"}
    assert [(r["params"]["model.dropout"], r["val_acc"]) for r in ranked] == [(0.5, 0.85), (0.2, 0.80)]


def test_a_params_file_the_experiments_lack_is_a_clear_error():
    with pytest.raises(PipelineError, match=r"^--params other/params.yaml: .* one of: params.yaml, study/params.yaml$"):
        flat_rows(STATES, "other/params.yaml")


def test_a_key_one_experiment_added_is_unset_in_the_others():
    added = state("f" * 40, 0.1, 0.2, 0.95, 0.8)
    added["params"]["params.yaml"]["data"]["train"]["epochs"] = 40  # -S '+train.epochs=40'
    states = [{**STATES[1], "experiments": [experiment("ep40", added)]}]
    ranked, changed = rank(flat_rows(states))
    assert changed == ["train.epochs"]
    assert markdown(ranked, changed).splitlines()[2:] == [
        "| 1 | dropout | 40 | 1 | 95.00% | 50.00% | ep40 |",
        "| 2 | dropout | unset | 1 | 90.00% | 50.00% | main |",
    ]
    assert list(pivot(ranked, changed).index) == [40, "unset"]


WRITE_METRICS = """
import json, pathlib, yaml
dropout = yaml.safe_load(open("params.yaml"))["model"]["dropout"]
pathlib.Path("metrics").mkdir(exist_ok=True)
for seed in (0, 1):  # val: 0.3 best, then 0.1, then 0.5; test the other way (never what ranks)
    val, test = 0.9 - abs(dropout - 0.25) / 10 + seed / 100, 0.8 + dropout / 10 + seed / 100
    for variant, shift in (("dropout", 0.0), ("vanilla", -0.05)):
        path = pathlib.Path(f"metrics/{variant}.json")
        old = json.loads(path.read_text()) if seed else {}
        path.write_text(json.dumps({**old, f"val_acc_seed{seed}": val + shift, f"test_acc_seed{seed}": test + shift}))
"""


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A real DVC project whose stage turns model.dropout into per-seed metrics, with three experiments."""
    from helpers import project_env, run

    repo = tmp_path_factory.mktemp("compare") / "project"
    repo.mkdir()
    env = project_env(repo)
    (repo / "write.py").write_text(WRITE_METRICS)
    (repo / "params.yaml").write_text("model:\n  dropout: 0.3\ntrain:\n  seeds: [0, 1]\n")
    (repo / "dvc.yaml").write_text(
        "stages:\n  score:\n    cmd: python write.py\n    deps: [write.py]\n    params: [model.dropout]\n"
        "    metrics:\n      - metrics/dropout.json:\n          cache: false\n"
        "      - metrics/vanilla.json:\n          cache: false\n"
    )
    for command in (["git", "init", "-q", "-b", "main"], ["dvc", "init", "-q"], ["dvc", "repro"]):
        run(command, repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "sweep"], repo, env)
    first = run(["git", "rev-parse", "HEAD"], repo, env).stdout.strip()
    for dropout in (0.1, 0.5):
        run(["dvc", "exp", "run", "-S", f"model.dropout={dropout}", "-n", f"d{dropout}"], repo, env)
    (repo / "notes.txt").write_text("a later commit: its experiments are none of the above\n")
    run(["git", "add", "notes.txt"], repo, env)
    run(["git", "commit", "-qm", "later"], repo, env)
    return repo, env, first


def compare(repo, env, *args, check=True):
    """`python -m pipeline.compare --repo <the project>`, run from this checkout (where pipeline/ is)."""
    from helpers import ROOT, run

    return run([sys.executable, "-m", "pipeline.compare", "--repo", str(repo), *args], ROOT, env, check=check)


@pytest.mark.slow
def test_the_command_ranks_an_older_commits_experiments_and_writes_its_files(sweep, tmp_path):
    repo, env, first = sweep
    out = compare(repo, env, "--rev", first, "--md", str(tmp_path / "t.md"), "--figure", str(tmp_path / "f.png"))
    table = out.stdout.strip()
    assert (tmp_path / "t.md").read_text() == table + "\n"
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = table.splitlines()
    assert lines[0] == "| rank | variant | model.dropout | seeds | val acc | test acc | experiments |"
    # mean val 0.900 at dropout 0.3, 0.890 at 0.1, 0.880 at 0.5; vanilla 0.05 below each
    assert [line.split(" | ")[1:3] for line in lines[2:]] == [
        ["dropout", "0.3"],
        ["dropout", "0.1"],
        ["dropout", "0.5"],
        ["vanilla", "0.3"],
        ["vanilla", "0.1"],
        ["vanilla", "0.5"],
    ]
    assert "| 2 | 90.00% ± 0.71% | 83.50% ± 0.71% |" in lines[2]
    only = compare(repo, env, "--rev", first, "--variant", "vanilla").stdout
    assert "| dropout |" not in only and only.count("| vanilla |") == 3


@pytest.mark.slow
def test_the_pivot_and_its_errors_from_the_command_line(sweep):
    repo, env, first = sweep
    table = compare(repo, env, "--rev", first, "--pivot").stdout.splitlines()
    assert [cell.strip() for cell in table[0].split("|")[1:-1]] == [
        "model.dropout",
        "dropout",
        "vanilla",
        "mean over variants",
    ]
    assert table[2].split("|")[1].strip() == "0.3" and "87.50%" in table[2]  # (0.900 + 0.850) / 2
    head = compare(repo, env, "--pivot", check=False)  # HEAD: the later commit, with no experiments
    assert head.returncode != 0
    assert head.stderr.strip().splitlines()[-1] == "error: --pivot needs experiments that differ in some param"
    wrong = compare(repo, env, "--params", "study/params.yaml", check=False)
    assert (
        wrong.returncode != 0
        and "--params study/params.yaml: not a params file of these experiments; one of: params.yaml" in wrong.stderr
    )
