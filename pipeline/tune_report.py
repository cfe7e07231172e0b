"""Stage `tune_report`: what the tuning budget buys, and the tuned comparison beside the shared-setting one.

Reads:   <trials>/<variant>.csv and .json (stages tune@<variant>); <metrics>/<variant>.json
         and <comparison> (this pipeline's evaluate and report: each variant's best setting
         trained on the standard seeds); <shared-metrics>/<variant>.json and
         <shared-comparison> (the main pipeline's: the one shared setting).
Writes:  <figure>, the expected best validation accuracy after k = 1..budget trials with a
         bootstrap band, one line per variant (pipeline/budget.py: Dodge et al. 2019);
         <out>, tuning.md: the budget in words, the compute pruning saved, and the two
         tables side by side. Trials are scored on validation; the test set only scores
         the final models, once each.
A pruned trial counts with the last validation accuracy it reached: the pruner stopped
it because it was below the earlier trials, so it is not the best of any draw it is in.
"""

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pipeline.budget import expected_max, expected_max_band, ranking_changes  # noqa: E402
from pipeline.errors import declare_outputs, run_stage  # noqa: E402
from pipeline.io import atomic_path, read_json  # noqa: E402
from pipeline.params import load_params  # noqa: E402


def trial_scores(path):
    """Each trial's validation accuracy (a pruned one: its last); failed trials (diverged) count as 0.1,
    chance, the accuracy of a model that learned nothing: they are part of what the budget bought."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    scores = []
    for row in rows:
        value = row["val_acc"] or row["last_val_acc"]
        scores.append(float(value) if value and row["state"] != "FAIL" else 0.1)
    return scores


def budget_figure(curves, bands, budget):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ks = range(1, budget + 1)
    for name, curve in curves.items():
        (line,) = ax.plot(ks, curve * 100, marker="o", markersize=3, label=name)
        ax.fill_between(ks, bands[name][0] * 100, bands[name][1] * 100, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("trials (k)")
    ax.set_ylabel("expected best validation accuracy (%)")
    ax.set_title("What the tuning budget buys (Dodge et al. 2019), 95% bootstrap bands")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def accuracy_cell(metrics, key):
    """'mean [CI]' of a metrics file's `key` (test_acc, val_acc); one seed has no interval (stage evaluate leaves
    it out), so its cell says so."""
    mean = f"{metrics[f'{key}_mean']:.2%}"
    if f"{key}_ci_low" not in metrics:
        return f"{mean} (one seed)"
    return f"{mean} [{metrics[f'{key}_ci_low'] * 100:.2f}, {metrics[f'{key}_ci_high'] * 100:.2f}]"


def _verdict(comparison, name, baseline):
    return "baseline" if name == baseline else comparison[name]["verdict"]


def _settings(settings):
    return ", ".join(
        f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}" for key, value in settings.items()
    )


def report_text(params, searches, curves, bands, tuned, shared, tuned_cmp, shared_cmp, figure):
    names, budget = list(params.variants), len(next(iter(curves.values())))
    baseline = params.report.baseline
    lines = [
        "# Tuned comparison",
        "",
        f"Each variant searched its own space (tune/params.yaml) with the same budget, {budget} trials, scored on "
        "validation only; trial 0 is the shared setting of the main pipeline. "
        + _rescoring(searches[names[0]])
        + f"The chosen setting then trained on the standard seeds ({tuned[names[0]]['seeds']} per variant, "
        "train.seeds), scored once on the test set, and compared as in the main report (report.md).",
        "",
        "## What the budget buys",
        "",
        f"![expected best validation accuracy]({figure})",
        "",
        "| variant | " + " | ".join(f"k = {k}" for k in _budgets(budget)) + " |",
        "|:--|" + "--:|" * len(_budgets(budget)),
    ]
    for name in names:
        cells = [
            f"{curves[name][k - 1]:.2%} [{bands[name][0][k - 1] * 100:.2f}, {bands[name][1][k - 1] * 100:.2f}]"
            for k in _budgets(budget)
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    changes = ranking_changes(curves)
    lines.append("")
    if len(changes) == 1:
        lines.append(
            f"The ranking by expected best validation accuracy is the same at every budget from 1 to {budget} "
            f"trials: {' > '.join(changes[0][1])}."
        )
    else:
        steps = "; ".join(f"from k = {k}: {' > '.join(order)}" for k, order in changes)
        lines.append(f"The ranking depends on the budget: {steps}.")
    lines += [
        "",
        "## The searches",
        "",
        "| variant | trials | pruned | failed | trial-epochs run / budget | one seed's best trial | chosen trial | "
        "its val acc | shared setting's val acc | chosen setting |",
        "|:--|--:|--:|--:|--:|--:|--:|--:|--:|:--|",
    ]
    for name in names:
        s = searches[name]
        lines.append(
            f"| {name} | {s['trials']} | {s['pruned']} | {s['failed']} | {s['epochs_run']} / {s['epochs_budget']} "
            f"| {s['one_seed_best_trial']} | {s['best_trial']} | {s['best_val_acc']:.2%} | {s['shared_val_acc']:.2%} "
            f"| {_settings(s['settings'])} |"
        )
    run = sum(s["epochs_run"] for s in searches.values())
    unpruned = sum(s["epochs_unpruned"] for s in searches.values())
    seeds = len(searches[names[0]]["seeds"])
    lines += [
        "",
        f"Pruning ran {run} of the {unpruned} trial-epochs the same trials would have run unpruned "
        f"({1 - run / unpruned:.0%} saved). The val acc columns are means over {seeds} seed(s) "
        f"({', '.join(map(str, searches[names[0]]['seeds']))}), none of them a final run's.",
        "",
        f"## Tuned vs shared setting (test accuracy, mean over seeds [{params.report.confidence:.0%} CI])",
        "",
        f"| variant | shared: test acc | shared: val acc | vs {baseline} | tuned: test acc | tuned: val acc | "
        f"vs {baseline} |",
        "|:--|--:|--:|:--|--:|--:|:--|",
    ]
    for name in names:
        lines.append(
            f"| {name} | {accuracy_cell(shared[name], 'test_acc')} | {accuracy_cell(shared[name], 'val_acc')} | "
            f"{_verdict(shared_cmp, name, baseline)} | {accuracy_cell(tuned[name], 'test_acc')} | "
            f"{accuracy_cell(tuned[name], 'val_acc')} | {_verdict(tuned_cmp, name, baseline)} |"
        )
    lower = [n for n in names if tuned[n]["val_acc_mean"] < shared[n]["val_acc_mean"]]
    lines += [
        "",
        "Every tuned variant's mean validation accuracy is at least its shared setting's."
        if not lower
        else f"Tuned below the shared setting on mean validation accuracy over the final seeds: {', '.join(lower)} "
        "(the winner of a search is flattered by the noise of the seeds it was chosen on).",
        "",
    ]
    return "\n".join(lines)


def _rescoring(search):
    """The sentence on re-scoring and the budget in trial-epochs, from one search's summary."""
    seeds, rescored = search["seeds"], len(search["rescored"])
    if len(seeds) == 1:
        return f"The best trial by its one seed was chosen; the budget is {search['epochs_budget']} trial-epochs. "
    return (
        f"Then the shared setting and the {rescored - 1} best other trials trained again on seeds "
        f"{', '.join(map(str, seeds[1:]))}, and the best mean over {len(seeds)} seeds was chosen (one seed's best is "
        f"partly that seed's luck); the budget, re-scoring included, is {search['epochs_budget']} trial-epochs per "
        "variant. "
    )


def _budgets(budget):
    return sorted(k for k in {1, 2, 5, budget // 2, budget} if 1 <= k <= budget)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="../params.yaml", help="the main params file (variants, report.*)")
    parser.add_argument("--trials", required=True, help="folder of <variant>.csv and .json (stages tune@)")
    parser.add_argument("--metrics", required=True, help="folder of the tuned runs' <variant>.json metrics")
    parser.add_argument("--comparison", required=True, help="the tuned comparison's verdicts (comparison.json)")
    parser.add_argument("--shared-metrics", required=True, help="the main pipeline's metrics folder")
    parser.add_argument("--shared-comparison", required=True, help="the main pipeline's comparison.json")
    parser.add_argument("--figure", required=True, help="the PNG to write")
    parser.add_argument("--out", required=True, help="the markdown file to write")
    args = parser.parse_args()
    declare_outputs(args.figure, args.out)
    params = load_params(args.params)
    trials = Path(args.trials)
    searches = {name: read_json(trials / f"{name}.json") for name in params.variants}
    scores = {name: trial_scores(trials / f"{name}.csv") for name in params.variants}
    budget = max(len(s) for s in scores.values())
    ks = range(1, budget + 1)
    curves = {name: expected_max(s, ks) for name, s in scores.items()}
    bands = {name: expected_max_band(s, ks, params.report.confidence) for name, s in scores.items()}
    fig = budget_figure(curves, bands, budget)
    with atomic_path(args.figure) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    tuned = {name: read_json(Path(args.metrics) / f"{name}.json") for name in params.variants}
    shared = {name: read_json(Path(args.shared_metrics) / f"{name}.json") for name in params.variants}
    figure = (
        Path(args.figure).relative_to(Path(args.out).parent) if not Path(args.figure).is_absolute() else args.figure
    )
    text = report_text(
        params,
        searches,
        curves,
        bands,
        tuned,
        shared,
        read_json(args.comparison),
        read_json(args.shared_comparison),
        figure,
    )
    with atomic_path(args.out) as tmp:
        tmp.write_text(text)
    print(text)


if __name__ == "__main__":
    run_stage(main)
