"""The figures of the report and of MLflow: every seed shown, the mean on top, intervals as error bars.

Inputs are what the stages write: a variant's wide history (one record per
epoch, the mean under `val_acc` and each seed under `val_acc_seed<k>`) and
its flat metrics (`test_acc_mean`, `test_acc_ci_low`, `test_acc_seed<k>`, ...).
"""

import matplotlib

matplotlib.use("Agg")  # files only; no display here or in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pipeline.io import per_seed  # noqa: E402


def seed_curves(history, key):
    """{seed: (epochs, values)} from a wide history; seeds that stopped early have shorter curves."""
    curves = {}
    for row in history:
        for seed, value in per_seed(row, key).items():
            epochs, values = curves.setdefault(seed, ([], []))
            epochs.append(row["epoch"])
            values.append(value)
    return curves


def curves_figure(results, key, ylabel):
    """One panel per variant: each seed thin, the mean thick, train and val; each seed's best epoch marked."""
    fig, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 3), sharey=True, squeeze=False)
    for ax, (name, r) in zip(axes[0], results.items()):
        best = per_seed(r["metrics"], "best_epoch")
        for split, color in (("train", "tab:blue"), ("val", "tab:orange")):
            for seed, (epochs, values) in seed_curves(r["history"], f"{split}_{key}").items():
                ax.plot(epochs, values, color=color, linewidth=0.6, alpha=0.5)
                if split == "val" and seed in best:
                    ax.plot(best[seed], values[epochs.index(best[seed])], "v", color="black", markersize=4)
            ax.plot(
                [h["epoch"] for h in r["history"]],
                [h[f"{split}_{key}"] for h in r["history"]],
                color=color,
                linewidth=2,
                label=f"{split} (mean)",
            )
        ax.set_title(name)
        ax.set_xlabel("epoch")
    axes[0][0].set_ylabel(ylabel)
    axes[0][0].plot([], [], "v", color="black", label="best epoch (a seed)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def val_overlay(results):
    """Mean validation accuracy per epoch of every variant, on one axis."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results.items():
        ax.plot([h["epoch"] for h in r["history"]], [h["val_acc"] for h in r["history"]], label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (mean over seeds)")
    ax.legend()
    fig.tight_layout()
    return fig


def test_accuracy_figure(results, confidence):
    """Mean test accuracy per variant with its interval, and every seed as a dot."""
    fig, ax = plt.subplots(figsize=(6, 4))
    names = list(results)
    for i, name in enumerate(names):
        m = results[name]["metrics"]
        seeds = np.array(list(per_seed(m, "test_acc").values())) * 100
        mean = m["test_acc_mean"] * 100
        if "test_acc_ci_low" in m:
            err = [[mean - m["test_acc_ci_low"] * 100], [m["test_acc_ci_high"] * 100 - mean]]
            ax.errorbar(i, mean, yerr=err, fmt="none", ecolor="black", capsize=6)
        ax.bar(i, mean, color="tab:blue", alpha=0.35, width=0.6)
        ax.scatter(
            np.full(len(seeds), i) + np.linspace(-0.12, 0.12, len(seeds)), seeds, s=14, color="tab:blue", zorder=3
        )
        ax.annotate(f"{mean:.2f}", (i, mean), textcoords="offset points", xytext=(14, 0), fontsize=8, va="center")
    ax.set_xticks(range(len(names)), names)
    lows = [min(per_seed(results[n]["metrics"], "test_acc").values()) * 100 for n in names]
    highs = [max(per_seed(results[n]["metrics"], "test_acc").values()) * 100 for n in names]
    ax.set_ylim(min(lows) - 1, max(highs) + 1)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"mean, {confidence:.0%} interval, and each seed", fontsize=9)
    fig.tight_layout()
    return fig


def confusion_figure(counts, classes, title):
    """A confusion matrix of counts (rows: actual, columns: predicted)."""
    counts = np.asarray(counts)
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(counts, cmap="Blues")
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, int(n), ha="center", va="center", fontsize=7, color="white" if n > counts.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    fig.tight_layout()
    return fig


COLOURS = {"better": "tab:green", "worse": "tab:red", "equivalent": "tab:blue", "undecided": "tab:gray"}


def differences_figure(compared, baseline, margin):
    """A forest plot: each variant's difference from the baseline in test accuracy (points), its seed
    interval (thick) and its interval with the test set's noise too (thin), the margin as a band."""
    rows = list(compared.iterrows())
    fig, ax = plt.subplots(figsize=(7, 0.7 * len(rows) + 1.4))
    ax.axvspan(-margin * 100, margin * 100, color="tab:blue", alpha=0.12, label=f"±{margin * 100:.2g} pt margin")
    ax.axvline(0, color="black", linewidth=0.8)
    for y, (_, row) in enumerate(reversed(rows)):
        colour = COLOURS.get(row["verdict"], "black")
        if not pd.isna(row["boot_low"]):
            ax.plot([row["boot_low"] * 100, row["boot_high"] * 100], [y, y], color=colour, linewidth=1)
        if not pd.isna(row["ci_low"]):
            ax.plot([row["ci_low"] * 100, row["ci_high"] * 100], [y, y], color=colour, linewidth=4, alpha=0.6)
        ax.plot(row["diff"] * 100, y, "o", color=colour)
        ax.annotate(row["verdict"], (1.01, y), xycoords=("axes fraction", "data"), fontsize=8, va="center")
    ax.set_yticks(range(len(rows)), [name for name, _ in reversed(rows)])
    ax.set_xlabel(f"test accuracy − {baseline} (pt)")
    ax.set_title("difference: over seeds (thick), with the test set's noise too (thin)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig
