"""Stage `report`: compare the variants in one markdown table and four figures.

Reads params: variants (which variants to report, in params.yaml order).
Reads:        <metrics>/<variant>.json (evaluate), <history>/<variant>.json (train).
Writes:       <figures>/{accuracy_curves,loss_curves,val_accuracy,test_accuracy}.png
              and <report> (markdown: the table, then the figures).
"""
import argparse
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display here or in CI
import matplotlib.pyplot as plt  # noqa: E402

from pipeline.errors import PipelineError, run_stage  # noqa: E402
from pipeline.io import atomic_path, read_json  # noqa: E402
from pipeline.params import load_params  # noqa: E402

COLUMNS = ("variant", "params", "train acc", "val acc", "test acc", "best epoch", "s/epoch")


def load_results(variants, metrics_dir, history_dir):
    results = {}
    for name in variants:
        paths = (Path(metrics_dir) / f"{name}.json", Path(history_dir) / f"{name}.json")
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise PipelineError(f"report: {', '.join(missing)} not found (run train/evaluate@{name})")
        results[name] = {"metrics": read_json(paths[0]), "history": read_json(paths[1])}
    return results


def table(results):
    """The comparison as markdown rows, in the order given."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for name, r in results.items():
        m = r["metrics"]
        lines.append(f"| {name} | {m['parameters']:,} | {m['train_acc']:.2%} | {m['val_acc']:.2%} | "
                     f"{m['test_acc']:.2%} | {m['best_epoch']} | {m['seconds_per_epoch']:.2f} |")
    return "\n".join(lines)


def curves_figure(results, key, ylabel):
    """One panel per variant: train and val `key` per epoch, best epoch marked."""
    fig, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 3), sharey=True, squeeze=False)
    for ax, (name, r) in zip(axes[0], results.items()):
        epochs = [h["epoch"] for h in r["history"]]
        ax.plot(epochs, [h[f"train_{key}"] for h in r["history"]], label="train")
        ax.plot(epochs, [h[f"val_{key}"] for h in r["history"]], label="val")
        ax.axvline(r["metrics"]["best_epoch"], color="grey", linestyle="--", label="best epoch")
        ax.set_title(name)
        ax.set_xlabel("epoch")
    axes[0][0].set_ylabel(ylabel)
    axes[0][0].legend()
    fig.tight_layout()
    return fig


def _val_overlay(results):
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results.items():
        ax.plot([h["epoch"] for h in r["history"]], [h["val_acc"] for h in r["history"]], label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.legend()
    fig.tight_layout()
    return fig


def _test_bars(results):
    fig, ax = plt.subplots(figsize=(6, 4))
    names = list(results)
    accs = [results[n]["metrics"]["test_acc"] * 100 for n in names]
    bars = ax.bar(names, accs, color="tab:blue")
    ax.bar_label(bars, fmt="%.2f")
    ax.set_ylim(min(accs) - 2, 100)
    ax.set_ylabel("test accuracy (%)")
    fig.tight_layout()
    return fig


FIGURES = {
    "accuracy_curves": lambda r: curves_figure(r, "acc", "accuracy"),
    "loss_curves": lambda r: curves_figure(r, "loss", "cross-entropy loss"),
    "val_accuracy": _val_overlay,
    "test_accuracy": _test_bars,
}


def write_report(results, figures_dir, report_path):
    figures_dir = Path(figures_dir)
    for name, draw in FIGURES.items():
        fig = draw(results)
        with atomic_path(figures_dir / f"{name}.png") as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
    rel = Path(os.path.relpath(figures_dir, Path(report_path).parent))
    text = "\n".join(["# Variants compared", "", "Accuracies of the checkpoint with the lowest "
                      "validation loss; test accuracy on the untouched test set.", "", table(results), ""]
                     + [f"![{name}]({(rel / f'{name}.png').as_posix()})" for name in FIGURES]) + "\n"
    with atomic_path(report_path) as tmp:
        tmp.write_text(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--metrics", required=True, help="folder of <variant>.json metrics")
    parser.add_argument("--history", required=True, help="folder of <variant>.json histories")
    parser.add_argument("--figures", required=True)
    parser.add_argument("--report", required=True)
    args = parser.parse_args()
    variants = load_params(args.params)["variants"]
    results = load_results(variants, args.metrics, args.history)
    write_report(results, args.figures, args.report)
    print(table(results))


if __name__ == "__main__":
    run_stage(main)
