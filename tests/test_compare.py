"""The compare command ranks known metrics correctly, by val accuracy, with the spread over seeds."""

import pytest

from pipeline.compare import markdown, pivot, rank
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
