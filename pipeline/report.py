"""Stage `report`: compare every variant with the baseline, in words, a table and four figures.

Reads params: variants (which, in params.yaml order), report.* (baseline,
              confidence, still_improving).
Reads:        <metrics>/<variant>.json (evaluate), <history>/<variant>.json (train).
Writes:       <figures>/{accuracy_curves,loss_curves,val_accuracy,test_accuracy}.png
              and <report> (markdown: verdicts, the table, flags, the figures).
A difference is called better or worse only when Welch's t-test over the
seeds, Holm-corrected for the number of variants compared, rejects "no
difference" at alpha = 1 - report.confidence; the interval printed with it
is at the level Holm used, so the two never disagree (see pipeline/stats.py).
"""

import argparse
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from pipeline.errors import PipelineError, run_stage
from pipeline.figures import curves_figure, per_seed, test_accuracy_figure, val_overlay
from pipeline.io import atomic_path, read_json
from pipeline.params import load_params
from pipeline.stats import holm, holm_levels, verdict, welch


def load_results(variants, metrics_dir, history_dir):
    results = {}
    for name in variants:
        paths = (Path(metrics_dir) / f"{name}.json", Path(history_dir) / f"{name}.json")
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise PipelineError(f"report: {', '.join(missing)} not found (run train/evaluate@{name})")
        results[name] = {"metrics": read_json(paths[0]), "history": read_json(paths[1])}
    return results


def comparisons(results, baseline, confidence):
    """One row per variant other than the baseline: difference in test accuracy, interval, p, Holm, verdict."""
    base = list(per_seed(results[baseline]["metrics"], "test_acc").values())
    seeds = {name: list(per_seed(r["metrics"], "test_acc").values()) for name, r in results.items() if name != baseline}
    pvalues = [welch(values, base, confidence)["p"] for values in seeds.values()]
    # Each interval at the level Holm tested its difference at, so that it excludes 0 exactly when the verdict
    # is better/worse; with one comparison that is `confidence` itself.
    levels = holm_levels(pvalues, 1 - confidence)
    rows = [
        {"variant": name, **welch(values, base, confidence if level is None else 1 - level)}
        for (name, values), level in zip(seeds.items(), levels)
    ]
    table = pd.DataFrame(rows, columns=["variant", "diff", "ci_low", "ci_high", "p"])
    table["p_holm"] = holm(pvalues)
    table["verdict"] = [
        verdict(d, None if pd.isna(p) else p, 1 - confidence) for d, p in zip(table["diff"], table["p_holm"])
    ]
    return table.set_index("variant")


def still_improving(results, threshold):
    """[(variant, seed, last epoch, relative drop)] of runs whose val loss fell by > threshold in their last epoch."""
    flagged = []
    for name, r in results.items():
        history = r["history"]
        for seed in per_seed(history[0], "val_loss"):
            losses = [row[f"val_loss_seed{seed}"] for row in history if f"val_loss_seed{seed}" in row]
            if len(losses) > 1 and losses[-1] < min(losses[:-1]) * (1 - threshold):
                flagged.append((name, seed, len(losses), 1 - losses[-1] / min(losses[:-1])))
    return flagged


def _pt(x, sign=True):
    return f"{x * 100:+.2f}" if sign else f"{x * 100:.2f}"


def _accuracy_cell(m, key):
    text = f"{m[f'{key}_mean']:.2%}"
    if f"{key}_ci_low" in m:
        text += f" ± {m[f'{key}_std'] * 100:.2f} [{_pt(m[f'{key}_ci_low'], False)}, {_pt(m[f'{key}_ci_high'], False)}]"
    return text


def verdict_line(name, baseline, row):
    if pd.isna(row["p"]):
        return f"- {name} − {baseline}: {_pt(row['diff'])} pt, {row['verdict']}"
    return (
        f"- {name} − {baseline}: {_pt(row['diff'])} pt [{_pt(row['ci_low'])}, {_pt(row['ci_high'])}], "
        f"p = {row['p']:.3g} (Welch), Holm-adjusted p = {row['p_holm']:.3g}: **{row['verdict']}**"
    )


def best_epochs_cell(metrics):
    """'19, 20, 20 of 20': each seed's best epoch and how many it ran (variants may differ in train.epochs)."""
    best, ran = per_seed(metrics, "best_epoch"), per_seed(metrics, "epochs_run")
    if len(set(ran.values())) == 1:
        return ", ".join(str(b) for b in best.values()) + f" of {next(iter(ran.values()))}"
    return ", ".join(f"{best[s]} of {ran[s]}" for s in best)


def table(results, compared, baseline):
    """The comparison as a pandas DataFrame, one row per variant in params order."""
    rows = []
    for name, r in results.items():
        m = r["metrics"]
        vs = "baseline"
        if name in compared.index:
            c = compared.loc[name]
            vs = f"{_pt(c['diff'])} pt" + ("" if pd.isna(c["p"]) else f", p = {c['p_holm']:.2g}, {c['verdict']}")
        rows.append(
            {
                "variant": name,
                "params": f"{m['parameters']:,}",
                "seeds": m["seeds"],
                "test acc mean ± std [CI]": _accuracy_cell(m, "test_acc"),
                "val acc": _accuracy_cell(m, "val_acc"),
                f"vs {baseline} (Holm)": vs,
                "best epochs": best_epochs_cell(m),
                "s/epoch": f"{m['seconds_per_epoch']:.2f}",
            }
        )
    return pd.DataFrame(rows)


def report_text(results, baseline, confidence, threshold, rel_figures, figure_names):
    compared = comparisons(results, baseline, confidence)
    seeds = sorted({r["metrics"]["seeds"] for r in results.values()})
    lines = [
        "# Variants compared",
        "",
        f"Each variant trained with {' or '.join(map(str, seeds))} seed{'s' * (seeds != [1])} "
        "(`train.seeds`); each seed's "
        "checkpoint is the epoch with the lowest validation loss, scored once on the untouched test "
        f"set. Accuracies: mean ± std over seeds [{confidence:.0%} t interval]. Differences: Welch's "
        f"t-test against `{baseline}`, Holm-corrected for {len(compared)} comparison{'s' * (len(compared) != 1)} at "
        f"alpha = {1 - confidence:.2g}; each difference's interval is at the level Holm tested it at "
        "(the smallest p at alpha/m, the next at alpha/(m-1), ...), so it excludes 0 exactly when the verdict "
        "is better or worse.",
        "",
        "## Verdicts",
        "",
    ]
    lines += [verdict_line(name, baseline, row) for name, row in compared.iterrows()]
    lines += [
        "",
        "## Table",
        "",
        table(results, compared, baseline).to_markdown(index=False, disable_numparse=True),
        "",
    ]
    single = [name for name, r in results.items() if r["metrics"]["seeds"] < 2]
    if single:
        lines += [
            f"Note: {', '.join(single)} had one seed: no spread, so no interval and no test; "
            "list more seeds in `train.seeds`.",
            "",
        ]
    flagged = still_improving(results, threshold)
    lines += ["## Runs still improving at their last epoch", ""]
    lines += [
        f"- {name} seed {seed}: val loss fell {drop:.1%} in epoch {epoch}, its last: more epochs may help"
        for name, seed, epoch, drop in flagged
    ] or [f"None: no run's validation loss fell by more than {threshold:.1%} in its last epoch."]
    lines += ["", "## Figures", ""] + [
        f"![{name}]({(rel_figures / f'{name}.png').as_posix()})" for name in figure_names
    ]
    return "\n".join(lines) + "\n"


def write_report(results, baseline, confidence, threshold, figures_dir, report_path):
    figures = {
        "accuracy_curves": lambda: curves_figure(results, "acc", "accuracy"),
        "loss_curves": lambda: curves_figure(results, "loss", "cross-entropy loss"),
        "val_accuracy": lambda: val_overlay(results),
        "test_accuracy": lambda: test_accuracy_figure(results, confidence),
    }
    figures_dir = Path(figures_dir)
    for name, draw in figures.items():
        fig = draw()
        with atomic_path(figures_dir / f"{name}.png") as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
    rel = Path(os.path.relpath(figures_dir, Path(report_path).parent))
    text = report_text(results, baseline, confidence, threshold, rel, figures)
    with atomic_path(report_path) as tmp:
        tmp.write_text(text)
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    parser.add_argument("--metrics", required=True, help="folder of <variant>.json metrics")
    parser.add_argument("--history", required=True, help="folder of <variant>.json histories")
    parser.add_argument("--figures", required=True, help="folder to write the PNG figures to")
    parser.add_argument("--report", required=True, help="markdown file to write")
    args = parser.parse_args()
    params = load_params(args.params)
    results = load_results(params.variants, args.metrics, args.history)
    settings = params.report
    text = write_report(
        results, settings.baseline, settings.confidence, settings.still_improving, args.figures, args.report
    )
    print(text.split("## Figures")[0])


if __name__ == "__main__":
    run_stage(main)
