"""`python -m pipeline.compare`: rank the experiments of a sweep, one row per configuration.

Reads:  DVC's experiments (`dvc exp show --json`: the HEAD commit and the
        experiments derived from it), one entry per (experiment, variant):
        the params of one params file (`params.yaml`, or the study's
        `study/params.yaml`) and the per-seed metrics beside it (`metrics/`,
        `study/metrics/`).
Writes: a ranked markdown table to stdout (and to --md), a bar chart with the
        spread over seeds (--figure).
Every experiment trains each variant with the seeds in train.seeds; the
seeds of experiments that differ only in train.seeds are pooled into one
configuration, shown as mean ± std over all its seeds. The ranking is by mean validation accuracy: the model is
chosen on validation data, and the test accuracy is only reported beside it.
"""

import argparse
import json
import math
import re
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import PurePosixPath

from pipeline.errors import PipelineError, run_stage
from pipeline.io import flatten, split_seed_key
from pipeline.params import Params

# never a knob of the comparison: which seeds, where data and runs come from, how fast
IGNORED = re.compile(
    r"^(train\.seeds$|evaluate\.threads$|tracking\.|report\.|"
    r"data\.sources\.|data\.verify_checksums$)"
)


def _is_param(column):
    return ":" not in column and column.split(".")[0] in Params.model_fields


def _metrics_folder(params_file):
    """metrics/ beside params.yaml, study/metrics/ beside study/params.yaml."""
    return PurePosixPath(params_file).parent / "metrics"


def _metric_column(params_file):
    folder = re.escape(str(_metrics_folder(params_file)))
    return re.compile(rf"^{folder}/(?P<variant>\w+)\.json:(?P<key>\w+)$")


def _flatten(data):
    """{"train": {"lr": 0.1}} -> {"train.lr": 0.1}; a list becomes its string, as in `dvc exp show`."""
    return {k: str(v) if isinstance(v, list) else v for k, v in flatten("", data or {}).items()}


def flat_rows(states, params_file="params.yaml"):
    """`dvc exp show --json` as rows: Experiment, rev, State, params_file's params by dotted name, `<file>:<metric>`.

    Not dvc.api.exp_show: its flat table names a param `train.lr` when one
    params file has it and `params.yaml:train.lr` when two do (this repo has
    two, the study's), so there a bare name cannot say which file it is from.
    """

    def row(name, rev, state, data):
        data = data or {}
        params = data.get("params", {}).get(params_file, {}).get("data")
        metrics = {
            f"{path}:{key}": value
            for path, item in (data.get("metrics") or {}).items()
            for key, value in _flatten(item.get("data")).items()
        }
        return {"Experiment": name, "rev": rev, "State": state, **_flatten(params), **metrics}

    found = {file for commit in states for file in ((commit.get("data") or {}).get("params") or {})}
    if params_file not in found:
        raise PipelineError(
            f"--params {params_file}: not a params file of these experiments; one of: {', '.join(sorted(found))}"
        )
    rows = []
    for commit in states:
        if commit["rev"] == "workspace":
            continue
        rows.append(row(commit.get("name") or commit["rev"][:7], commit["rev"][:7], None, commit.get("data")))
        for experiment in commit.get("experiments") or []:
            state = experiment["revs"][0]
            status = (experiment.get("executor") or {}).get("state") or ("failed" if state.get("error") else None)
            rows.append(row(experiment["name"], state["rev"][:7], status and status.capitalize(), state.get("data")))
    return rows


def exp_show(repo=".", rev=None):
    """`dvc exp show --json` of the experiments derived from rev (default HEAD), parsed."""
    command = [sys.executable, "-m", "dvc", "exp", "show", "--json", *(["--rev", rev] if rev else [])]
    result = subprocess.run(command, cwd=repo, capture_output=True, text=True)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
        raise PipelineError(f"dvc exp show failed in {repo}: {lines[-1]}")
    return json.loads(result.stdout)


def _present(value):
    """A number; exp_show fills a metric that a row lacks with None, NaN or the string 'None'."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def entries(rows, params_file="params.yaml"):
    """[(experiment name, variant, {param: value}, {val_acc: {seed: value}, test_acc: {...}})] of finished ones."""
    metric_column = _metric_column(params_file)
    out = []
    for row in rows:
        if row.get("rev") == "workspace" or row.get("State") in ("Queued", "Running", "Failed"):
            continue
        name = row.get("Experiment") or row.get("rev")
        params = {k: v for k, v in row.items() if _is_param(k)}
        by_variant = defaultdict(lambda: {"val_acc": {}, "test_acc": {}})
        for column, value in row.items():
            match = metric_column.match(column)
            metric, seed = (match and split_seed_key(match["key"])) or (None, None)
            if metric in ("val_acc", "test_acc") and _present(value):
                by_variant[match["variant"]][metric][seed] = value
        for variant, metrics in by_variant.items():
            seeds = sorted(set(metrics["val_acc"]) & set(metrics["test_acc"]))
            if seeds:
                out.append((name, variant, params, {k: {s: metrics[k][s] for s in seeds} for k in metrics}))
    return out


def rank(rows, variant=None, params_file="params.yaml"):
    """Configurations, best mean val accuracy first: dicts with the changed params and stats."""
    found = [e for e in entries(rows, params_file) if variant is None or e[1] == variant]
    if not found:
        raise PipelineError(
            f"no finished experiment with per-seed val_acc and test_acc metrics in {_metrics_folder(params_file)}/"
            + (f" for variant {variant!r}" if variant else "")
        )
    columns = sorted({k for _, _, p, _ in found for k in p if not IGNORED.match(k)})
    changed = [k for k in columns if len({repr(p.get(k)) for _, _, p, _ in found}) > 1]
    groups = defaultdict(list)
    for name, var, params, metrics in found:
        groups[(var, tuple(params.get(k) for k in changed))].append((name, metrics))
    ranked = []
    for (var, values), members in groups.items():
        # a seed in two experiments of one configuration is one run (the same
        # seed retrains bit for bit): count it once
        val = list({s: v for _, m in members for s, v in m["val_acc"].items()}.values())
        test = list({s: v for _, m in members for s, v in m["test_acc"].items()}.values())
        ranked.append(
            {
                "variant": var,
                "params": dict(zip(changed, values)),
                "seeds": len(val),
                "val_acc": statistics.mean(val),
                "val_std": statistics.stdev(val) if len(val) > 1 else 0.0,
                "test_acc": statistics.mean(test),
                "test_std": statistics.stdev(test) if len(test) > 1 else 0.0,
                "experiments": [name for name, _ in members],
            }
        )
    ranked.sort(key=lambda r: (-r["val_acc"], r["variant"]))
    return ranked, changed


def _spread(mean, std, seeds):
    return f"{mean:.2%} ± {std:.2%}" if seeds > 1 else f"{mean:.2%}"


def _shown(value):
    """A key one experiment added (-S '+key=...') is unset in the others: shown so, a row of its own, not dropped."""
    return "unset" if value is None else value


def markdown(ranked, changed):
    head = ["rank", "variant", *changed, "seeds", "val acc", "test acc", "experiments"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(ranked, 1):
        cells = [
            str(i),
            r["variant"],
            *(str(_shown(r["params"][k])) for k in changed),
            str(r["seeds"]),
            _spread(r["val_acc"], r["val_std"], r["seeds"]),
            _spread(r["test_acc"], r["test_std"], r["seeds"]),
            ", ".join(r["experiments"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pivot(ranked, changed):
    """Configurations x variants of mean val accuracy, best mean over the variants first (a DataFrame).

    For choosing a setting every variant shares (lr, schedule, augmentation):
    the rows are ranked by the unweighted mean of the variants' val accuracies.
    """
    import pandas as pd

    frame = pd.DataFrame(
        [
            {**{k: _shown(v) for k, v in r["params"].items()}, "variant": r["variant"], "val_acc": r["val_acc"]}
            for r in ranked
        ]
    )
    table = frame.pivot_table(index=changed, columns="variant", values="val_acc", sort=False)
    table["mean over variants"] = table.mean(axis=1)
    return table.sort_values("mean over variants", ascending=False)


def figure(ranked, changed, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [" ".join([r["variant"], *(f"{k.split('.')[-1]}={r['params'][k]}" for k in changed)]) for r in ranked]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(ranked) + 1.5))
    ax.barh(
        labels[::-1],
        [r["test_acc"] * 100 for r in ranked][::-1],
        xerr=[r["test_std"] * 100 for r in ranked][::-1],
        color="tab:blue",
        capsize=3,
    )
    ax.set_xlabel("test accuracy (%), mean ± std over seeds; ranked by val accuracy")
    low = min(r["test_acc"] for r in ranked) * 100
    ax.set_xlim(max(0, low - 3), 100)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=".", help="the DVC project (default: here; study for the small-CNN study)")
    parser.add_argument(
        "--params",
        default="params.yaml",
        help="the pipeline's params file, relative to --repo (default: params.yaml); "
        "the small-CNN study's experiments: --repo study",
    )
    parser.add_argument("--variant", help="only this variant (default: all)")
    parser.add_argument("--rev", help="baseline commit of the sweep (default: HEAD)")
    parser.add_argument("--md", help="also write the table to this markdown file")
    parser.add_argument("--figure", help="write a bar chart (PNG) to this file")
    parser.add_argument(
        "--pivot",
        action="store_true",
        help="one row per configuration, one column per variant (mean val accuracy), "
        "ranked by the mean over the variants",
    )
    args = parser.parse_args()
    rows = flat_rows(exp_show(args.repo, args.rev), args.params)
    ranked, changed = rank(rows, args.variant, args.params)
    if args.pivot and not changed:
        raise PipelineError("--pivot needs experiments that differ in some param")
    table = (
        pivot(ranked, changed).map(lambda v: f"{v:.2%}").reset_index().to_markdown(index=False, disable_numparse=True)
        if args.pivot
        else markdown(ranked, changed)
    )
    print(table)
    if args.md:
        from pipeline.io import atomic_path

        with atomic_path(args.md) as tmp:
            tmp.write_text(table + "\n")
    if args.figure:
        figure(ranked, changed, args.figure)


if __name__ == "__main__":
    run_stage(main)
