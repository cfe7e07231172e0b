"""Stage `report`: compare every variant with the baseline, in words, a table and five figures.

Reads params: variants (which, in params.yaml order), report.* (baseline,
              confidence, still_improving, margin, power, looks).
Reads:        <metrics>/<variant>.json, <test_correct>/<variant>.pt and
              <history>/<variant>.json (evaluate).
Writes:       <figures>/{accuracy_curves,loss_curves,val_accuracy,test_accuracy,differences}.png,
              <report> (markdown: verdicts, the table, flags, the figures) and
              <comparison> (each comparison's difference, p-values, verdict and
              seeds needed, as JSON: for `dvc metrics` and `make decide`).
Four verdicts (docs/comparing.md): better or worse when Welch's t-test over
the seeds, Holm-corrected for the number of variants compared, rejects "no
difference" at alpha = (1 - report.confidence) / len(report.looks) (the error
rate split over the looks `make decide` may take); else equivalent when two
one-sided tests, Holm-corrected the same way, put the difference within
±report.margin; else undecided, with the seeds per variant that would decide
it at report.power. The seed-only interval printed with a difference is at
the level Holm used, so it never disagrees with the verdict; beside it, one
that adds the finite test set's noise (a paired bootstrap over test images).
"""

import argparse
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from pipeline.errors import PipelineError, declare_outputs, run_stage
from pipeline.figures import curves_figure, differences_figure, test_accuracy_figure, val_overlay
from pipeline.io import atomic_path, per_seed, read_json, seed_key, write_json
from pipeline.params import load_params
from pipeline.stats import holm, holm_levels, image_noise_se, seeds_to_decide, tost, verdict, welch, with_test_set


def load_results(variants, metrics_dir, history_dir, correct_dir):
    results = {}
    for name in variants:
        paths = [Path(metrics_dir) / f"{name}.json", Path(history_dir) / f"{name}.json"]
        paths.append(Path(correct_dir) / f"{name}.pt")
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise PipelineError(f"report: {', '.join(missing)} not found (run train/evaluate@{name})")
        results[name] = {"metrics": read_json(paths[0]), "history": read_json(paths[1]), "correct": _correct(paths[2])}
    return results


def _correct(path):
    import torch

    return torch.load(path, weights_only=True)["correct"].numpy()


def _none(x):
    return None if x is None or pd.isna(x) else x


def comparisons(results, baseline, confidence, margin, power, looks=1, draws=2000):
    """One row per variant other than the baseline: the difference in test accuracy, its intervals, both
    families' p-values (raw and Holm-adjusted), the verdict and, if undecided, the seeds that would decide it.

    Everything is tested at alpha = (1 - confidence) / looks: Bonferroni over the `looks` times the
    verdicts may be read as seeds are added (make decide), Holm over the comparisons within one.
    """
    base = list(per_seed(results[baseline]["metrics"], "test_acc").values())
    seeds = {name: list(per_seed(r["metrics"], "test_acc").values()) for name, r in results.items() if name != baseline}
    alpha = (1 - confidence) / looks
    pvalues = [welch(values, base, confidence)["p"] for values in seeds.values()]
    # Each interval at the level Holm tested its difference at, so that it excludes 0 exactly when the verdict
    # is better/worse; with one comparison that is `confidence` itself.
    levels = holm_levels(pvalues, alpha)
    rows = []
    for (name, values), level in zip(seeds.items(), levels):
        level = alpha if level is None else level
        test_se = image_noise_se(results[name]["correct"], results[baseline]["correct"], draws)
        boot_low, boot_high = with_test_set(values, base, test_se, 1 - level)
        row = {"variant": name, **welch(values, base, 1 - level), "boot_low": boot_low, "boot_high": boot_high}
        for key in ("ci_low", "boot_low"):  # a difference of accuracies lies in [-1, 1]: so do its intervals
            row[key] = None if row[key] is None else max(row[key], -1.0)
        for key in ("ci_high", "boot_high"):
            row[key] = None if row[key] is None else min(row[key], 1.0)
        rows.append(row)
    table = pd.DataFrame(rows, columns=["variant", "diff", "ci_low", "ci_high", "p", "boot_low", "boot_high"])
    table["p_holm"] = holm(pvalues)
    table["p_tost"] = [tost(values, base, margin) for values in seeds.values()]
    table["p_tost_holm"] = holm([_none(p) for p in table["p_tost"]])
    table["verdict"] = [
        verdict(d, _none(p), _none(q), alpha) for d, p, q in zip(table["diff"], table["p_holm"], table["p_tost_holm"])
    ]
    # at alpha / m, Bonferroni's share of the Holm family: what each comparison is tested at in the worst case
    table["seeds_needed"] = [
        seeds_to_decide(values, base, margin, alpha / len(seeds), power) if v == "undecided" else None
        for values, v in zip(seeds.values(), table["verdict"])
    ]
    return table.set_index("variant")


def still_improving(results, threshold):
    """[(variant, seed, last epoch, relative drop)] of runs whose val loss fell by > threshold in their last epoch."""
    flagged = []
    for name, r in results.items():
        history = r["history"]
        for seed in per_seed(history[0], "val_loss"):
            losses = [row[seed_key("val_loss", seed)] for row in history if seed_key("val_loss", seed) in row]
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


def decide_note(row, power):
    """', N seeds per variant would decide it (80% power)' for an undecided comparison."""
    n = _none(row["seeds_needed"])
    if row["verdict"] != "undecided" or n is None:
        return ""
    n = int(n)
    return f"; {'more than 1000' if n > 1000 else n} seeds per variant would decide it ({power:.0%} power)"


def verdict_line(name, baseline, row, power):
    if pd.isna(row["p"]):
        return f"- {name} − {baseline}: {_pt(row['diff'])} pt, {row['verdict']}"
    return (
        f"- {name} − {baseline}: {_pt(row['diff'])} pt [{_pt(row['ci_low'])}, {_pt(row['ci_high'])}] over seeds, "
        f"[{_pt(row['boot_low'])}, {_pt(row['boot_high'])}] with the test set's noise too; difference: Welch p = "
        f"{row['p']:.3g}, Holm {row['p_holm']:.3g}; equivalence: TOST p = {row['p_tost']:.3g}, Holm "
        f"{row['p_tost_holm']:.3g}: **{row['verdict']}**{decide_note(row, power)}"
    )


def best_epochs_cell(metrics):
    """'19, 20, 20 of 20': each seed's best epoch and how many it ran (variants may differ in train.epochs)."""
    best, ran = per_seed(metrics, "best_epoch"), per_seed(metrics, "epochs_run")
    if len(set(ran.values())) == 1:
        return ", ".join(str(b) for b in best.values()) + f" of {next(iter(ran.values()))}"
    return ", ".join(f"{best[s]} of {ran[s]}" for s in best)


def table(results, compared, baseline, power):
    """The comparison as a pandas DataFrame, one row per variant in params order."""
    rows = []
    for name, r in results.items():
        m = r["metrics"]
        vs = "baseline"
        if name in compared.index:
            c = compared.loc[name]
            vs = f"{_pt(c['diff'])} pt" + ("" if pd.isna(c["p"]) else f", p = {c['p_holm']:.2g}, **{c['verdict']}**")
            if decide_note(c, power):
                vs += f": {decide_note(c, power).split(' per variant')[0].removeprefix('; ')} per variant would decide"
        rows.append(
            {
                "variant": name,
                "params": f"{m['parameters']:,}",
                "seeds": m["seeds"],
                "test acc mean ± std [CI]": _accuracy_cell(m, "test_acc"),
                "val acc": _accuracy_cell(m, "val_acc"),
                f"vs {baseline} (Holm)": vs,
                "best epochs": best_epochs_cell(m),
            }
        )
    return pd.DataFrame(rows)


def comparison_record(compared):
    """comparisons()' table as JSON: {variant: {diff, intervals, p-values, verdict, seeds_needed}}."""
    keys = ["diff", "ci_low", "ci_high", "boot_low", "boot_high", "p", "p_holm", "p_tost", "p_tost_holm"]
    return {
        name: {
            **{key: _none(row[key]) for key in keys},
            "verdict": row["verdict"],
            "seeds_needed": None if _none(row["seeds_needed"]) is None else int(row["seeds_needed"]),
        }
        for name, row in compared.iterrows()
    }


def report_text(results, settings, compared, rel_figures, figure_names):
    """The report's markdown: `compared` is comparisons()' table for these results and settings."""
    baseline, confidence, threshold = settings.baseline, settings.confidence, settings.still_improving
    alpha, looks = 1 - confidence, len(settings.looks)
    seeds = sorted({r["metrics"]["seeds"] for r in results.values()})
    lines = [
        "# Variants compared",
        "",
        f"Each variant trained with {' or '.join(map(str, seeds))} seed{'s' * (seeds != [1])} "
        "(`train.seeds`); each seed's "
        "checkpoint is the epoch with the lowest validation loss, scored once on the untouched test "
        f"set. Accuracies: mean ± std over seeds [{confidence:.0%} t interval]. Differences: Welch's "
        f"t-test against `{baseline}`, Holm-corrected for {len(compared)} comparison{'s' * (len(compared) != 1)} at "
        f"alpha = {alpha:.2g}"
        + (
            f" / {looks} looks = {alpha / looks:.3g} (`make decide` may read the verdicts at {looks} seed counts)"
            if looks > 1
            else ""
        )
        + ": better or worse; else two one-sided tests (TOST), Holm-corrected the same "
        f"way, against a margin of ±{settings.margin * 100:.2g} pt: equivalent; else undecided, with the seeds per "
        f"variant that would decide it at {settings.power:.0%} power if the observed difference and spreads hold. "
        "Each difference's seed interval is at the level Holm tested it at (the smallest p at alpha/m, the next "
        "at alpha/(m-1), ...), so it excludes 0 exactly when the verdict is better or worse; the second interval "
        "adds the finite test set's noise (its standard error from a bootstrap over test images, paired between the "
        "two variants) to the seeds'.",
        "",
        "## Verdicts",
        "",
    ]
    lines += [verdict_line(name, baseline, row, settings.power) for name, row in compared.iterrows()]
    lines += [
        "",
        "## Table",
        "",
        table(results, compared, baseline, settings.power).to_markdown(index=False, disable_numparse=True),
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


def write_report(results, settings, figures_dir, report_path, comparison_path):
    compared = comparisons(
        results, settings.baseline, settings.confidence, settings.margin, settings.power, len(settings.looks)
    )
    figures = {
        "accuracy_curves": lambda: curves_figure(results, "acc", "accuracy"),
        "loss_curves": lambda: curves_figure(results, "loss", "cross-entropy loss"),
        "val_accuracy": lambda: val_overlay(results),
        "test_accuracy": lambda: test_accuracy_figure(results, settings.confidence),
        "differences": lambda: differences_figure(compared, settings.baseline, settings.margin),
    }
    figures_dir = Path(figures_dir)
    for name, draw in figures.items():
        fig = draw()
        with atomic_path(figures_dir / f"{name}.png") as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
    rel = Path(os.path.relpath(figures_dir, Path(report_path).parent))
    text = report_text(results, settings, compared, rel, figures)
    with atomic_path(report_path) as tmp:
        tmp.write_text(text)
    write_json(comparison_path, comparison_record(compared))
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    parser.add_argument("--metrics", required=True, help="folder of <variant>.json metrics")
    parser.add_argument("--history", required=True, help="folder of <variant>.json histories")
    parser.add_argument("--test-correct", required=True, help="folder of <variant>.pt: each seed's test hits")
    parser.add_argument("--figures", required=True, help="folder to write the PNG figures to")
    parser.add_argument("--report", required=True, help="markdown file to write")
    parser.add_argument("--comparison", required=True, help="JSON file to write the verdicts to")
    args = parser.parse_args()
    declare_outputs(args.figures, args.report, args.comparison)
    params = load_params(args.params)
    results = load_results(params.variants, args.metrics, args.history, args.test_correct)
    text = write_report(results, params.report, args.figures, args.report, args.comparison)
    print(text.split("## Figures")[0])


if __name__ == "__main__":
    run_stage(main)
