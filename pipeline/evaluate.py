"""Stage `evaluate@<variant>`: score every seed's checkpoint; the only stage that reads the test set.

Reads params: train.seeds (which checkpoints), evaluate.*, report.confidence.
Reads:        <split>/{train,val,test}.pt, meta.json (stage split); <models>/seed<k>.pt
              for each seed (stages train@<variant>-<seed>).
Writes:       <history>    one record per epoch: the mean over seeds of each
                           curve (what DVC plots draws) and every seed's own
                           value (`val_acc_seed<k>`), from the checkpoints;
              <metrics>    flat, for `dvc metrics show` and `dvc exp show`: for
                           test/val/train accuracy and loss the mean, std and
                           interval over the seeds (`test_acc_mean`, `_std`,
                           `_ci_low`, `_ci_high`) and each seed's value
                           (`test_acc_seed<k>`); the seed count, parameter count
                           and best epochs;
              <confusion>  one {seed, actual, predicted, count} record per cell
                           and seed, for .dvc/plots/confusion_counts.json (DVC's
                           confusion template summing `count`: one record per
                           test image made `dvc plots show` write 41 MB of HTML);
              <per_class>  test accuracy of each class, mean and per seed;
              <test_correct> {seeds, correct: bool [seeds, test images]}, for
                           the report's bootstrap over seeds and test images.
With one seed there is no spread: std and the interval are left out, and the
report says so. Latency is an observation of this run, not a result: it goes
to MLflow and observations/evaluate/<variant>.json, never into <metrics>.
In MLflow this stage's run is the variant's: the seeds' training runs become
its children, and it holds the aggregate metrics and figures.
"""

import argparse
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline import tracking
from pipeline.checkpoint import load_checkpoint
from pipeline.data import load_split, to_model_input
from pipeline.engine import loss_and_accuracy, predict
from pipeline.errors import PipelineError, declare_outputs, run_stage
from pipeline.interval import summary
from pipeline.io import per_seed, read_json, save_torch, seed_key, write_json
from pipeline.params import load_params
from pipeline.runtime import setup_torch

SUMMARISED = ("test_acc", "val_acc", "train_acc", "test_loss", "val_loss", "train_loss")
CURVES = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")


def checkpoint_files(models_dir, seeds):
    """{seed: path} of the checkpoints of `seeds` (train.seeds), in that order; a missing one is an error."""
    files = {seed: Path(models_dir) / f"seed{seed}.pt" for seed in seeds}
    missing = [seed for seed, path in files.items() if not path.is_file()]
    if missing:
        stages = " ".join(f"train@{Path(models_dir).name}-{seed}" for seed in missing)
        raise PipelineError(f"no checkpoint {files[missing[0]]}: run `dvc repro {stages}` first")
    return files


def wide_history(histories):
    """{seed: [records]} -> one record per epoch: the mean over the seeds that ran it, and each seed's value."""
    last = max(len(h) for h in histories.values())
    rows = []
    for i in range(last):
        records = {seed: h[i] for seed, h in histories.items() if i < len(h)}
        row = {"epoch": i + 1}
        for key in CURVES:
            row[key] = sum(r[key] for r in records.values()) / len(records)
        for seed, record in records.items():
            row.update({seed_key(key, seed): record[key] for key in CURVES})
        rows.append(row)
    return rows


@torch.no_grad()
def latency_ms(model, batch, repeats):
    """Median milliseconds of one forward pass over `batch`, after a warm-up."""
    model.eval()
    times = []
    for i in range(repeats + 3):
        if batch.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(batch)
        if batch.is_cuda:
            torch.cuda.synchronize()
        if i >= 3:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def evaluate_seed(model, inputs, batch_size):
    """({split_loss, split_acc}, test predictions) of one model on `inputs`: {split: (model input, labels)}."""
    metrics, predicted = {}, None
    for split, (x, labels) in inputs.items():
        logits = predict(model, x, batch_size).cpu()
        metrics[f"{split}_loss"], metrics[f"{split}_acc"] = loss_and_accuracy(logits, labels)
        if split == "test":
            predicted = logits.argmax(1)
    return metrics, predicted


def aggregate(per_seed, confidence):
    """Flat metrics: mean/std/interval over the seeds of each summarised metric, and every seed's values."""
    out = {"seeds": len(per_seed)}
    for key in SUMMARISED:  # an accuracy lies in [0, 1], a loss in [0, inf): so do their intervals
        bounds = (0.0, 1.0) if key.endswith("_acc") else (0.0, float("inf"))
        stats = summary([m[key] for m in per_seed.values()], confidence, bounds)
        out.update(
            {f"{key}_{name}": stats[name] for name in ("mean", "std", "ci_low", "ci_high") if stats[name] is not None}
        )
    for seed, m in per_seed.items():
        out.update({seed_key(key, seed): value for key, value in m.items()})
    return out


@dataclass
class Scores:
    """What evaluate_variant computes for one variant, over its seeds."""

    metrics: dict  # flat, as written to <metrics>
    confusion: list  # {seed, actual, predicted, count} records
    per_class: list  # {class, accuracy, accuracy_seed<k>} records
    counts: torch.Tensor  # [classes, classes], summed over seeds
    hits: torch.Tensor  # bool [seeds, test images]: whether each seed's model got each test image right
    history: list  # wide_history of the checkpoints
    latency: float  # ms per batch, of the first seed's model


def evaluate_variant(files, split_dir, settings, confidence, device):
    """Scores of the checkpoints `files` ({seed: path}) with `settings` (params.Evaluate: batch size, latency
    repeats) and intervals at `confidence`."""
    batch_size, latency_repeats = settings.batch_size, settings.latency_repeats
    classes = read_json(Path(split_dir) / "meta.json")["classes"]
    data = {split: load_split(split_dir, split) for split in ("test", "val", "train")}
    test_labels = data["test"][1]
    per_seed, confusion, counts, per_class_seed, latency, inputs, hits = {}, [], 0, {}, None, {}, []
    checkpoint, histories = None, {}
    for seed, path in files.items():
        checkpoint, model = load_checkpoint(path, device)
        histories[seed] = checkpoint.history
        # every seed trained on the same split, so with the same normalisation: pad and normalise once
        key = checkpoint.normalisation
        if key not in inputs:
            inputs[key] = {
                split: (to_model_input(images, *key, device), labels) for split, (images, labels) in data.items()
            }
        metrics, predicted = evaluate_seed(model, inputs[key], batch_size)
        metrics.update(best_epoch=checkpoint.best_epoch, epochs_run=checkpoint.epochs_run)
        per_seed[seed] = metrics
        hits.append(predicted == test_labels)
        # confusion counts by bincount over (actual, predicted) pairs: no Python loop over images
        pairs = torch.bincount(test_labels * len(classes) + predicted, minlength=len(classes) ** 2)
        counts = counts + pairs.view(len(classes), len(classes))
        confusion += [
            {"seed": seed, "actual": classes[i // len(classes)], "predicted": classes[i % len(classes)], "count": n}
            for i, n in enumerate(pairs.tolist())
            if n
        ]
        per_class_seed[seed] = (
            pairs.view(len(classes), -1).diagonal() / torch.bincount(test_labels, minlength=len(classes))
        ).tolist()
        if latency is None:
            latency = latency_ms(model, inputs[key]["test"][0][:batch_size], latency_repeats)
    metrics = aggregate(per_seed, confidence)
    metrics.update(parameters=checkpoint.parameters)
    per_class = [
        {
            "class": name,
            "accuracy": statistics.mean(acc[c] for acc in per_class_seed.values()),
            **{seed_key("accuracy", seed): acc[c] for seed, acc in per_class_seed.items()},
        }
        for c, name in enumerate(classes)
    ]
    return Scores(metrics, confusion, per_class, counts, torch.stack(hits), wide_history(histories), latency)


def metrics_seeds(metrics):
    """The seeds of a flat metrics dict, in the order evaluate scored them (sorted)."""
    return list(per_seed(metrics, "test_acc"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    parser.add_argument("--variant", required=True, help="a name under variants: in the params file")
    parser.add_argument("--split", required=True, help="folder written by stage split")
    parser.add_argument("--models", required=True, help="folder of seed<k>.pt checkpoints (stages train@)")
    parser.add_argument("--history", required=True, help="per-epoch JSON to write (mean and each seed)")
    parser.add_argument("--metrics", required=True, help="metrics JSON to write")
    parser.add_argument("--confusion", required=True, help="confusion records JSON to write")
    parser.add_argument("--per-class", required=True, help="per-class accuracy JSON to write")
    parser.add_argument("--test-correct", required=True, help="file to write each seed's test hits to (.pt)")
    args = parser.parse_args()
    declare_outputs(args.history, args.metrics, args.confusion, args.per_class, args.test_correct)
    params = load_params(args.params)
    params.variant(args.variant)
    files = checkpoint_files(args.models, params.train.seeds)
    device = setup_torch(params.evaluate.threads)
    start = time.perf_counter()
    with tracking.variant_run(params, args.variant, "evaluate", args.params) as run:
        scores = evaluate_variant(files, args.split, params.evaluate, params.report.confidence, device)
        metrics = scores.metrics
        write_json(args.history, scores.history)
        write_json(args.metrics, metrics)
        write_json(args.confusion, scores.confusion)
        write_json(args.per_class, scores.per_class)
        save_torch(args.test_correct, {"seeds": list(metrics_seeds(metrics)), "correct": scores.hits})
        seconds = time.perf_counter() - start
        observed = {
            "latency_ms_per_batch": scores.latency,
            "batch_size": params.evaluate.batch_size,
            "seconds": seconds,
        }
        tracking.observe(f"evaluate/{args.variant}.json", observed)
        outputs = (args.metrics, args.history, args.confusion, args.per_class)
        run.record_evaluation(params, files, {**metrics, "latency_ms_per_batch": scores.latency}, outputs)
    ci = (
        f" [{metrics['test_acc_ci_low']:.4f}, {metrics['test_acc_ci_high']:.4f}]"
        if "test_acc_ci_low" in metrics
        else " (one seed: no interval)"
    )
    print(
        f"evaluate {args.variant}: test acc {metrics['test_acc_mean']:.4f}{ci} over {metrics['seeds']} "
        f"seed(s), val acc {metrics['val_acc_mean']:.4f}"
    )


if __name__ == "__main__":
    run_stage(main)
