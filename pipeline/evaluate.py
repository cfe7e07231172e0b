"""Stage `evaluate@<variant>`: score every seed's checkpoint; the only stage that reads the test set.

Reads params: evaluate.*, report.confidence.
Reads:        <split>/{train,val,test}.pt, meta.json (stage split); <models>/seed<k>.pt
              and <history> (stage train).
Writes:       <metrics>    flat, for `dvc metrics show` and `dvc exp show`: for
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
"""

import argparse
import statistics
import time
from pathlib import Path

import torch

from pipeline import tracking
from pipeline.checkpoint import load_checkpoint
from pipeline.data import load_split, to_model_input
from pipeline.engine import loss_and_accuracy, predict
from pipeline.errors import PipelineError, declare_outputs, run_stage
from pipeline.figures import confusion_figure, curves_figure
from pipeline.io import file_md5, read_json, save_torch, write_json
from pipeline.params import load_params
from pipeline.runtime import setup_torch
from pipeline.stats import summary

SUMMARISED = ("test_acc", "val_acc", "train_acc", "test_loss", "val_loss", "train_loss")


def checkpoint_files(models_dir):
    """{seed: path} of the checkpoints stage train wrote."""
    files = {int(p.stem.removeprefix("seed")): p for p in Path(models_dir).glob("seed*.pt")}
    if not files:
        raise PipelineError(f"no seed<k>.pt checkpoint in {models_dir} (run stage train first)")
    return dict(sorted(files.items()))


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
        out.update({f"{key}_seed{seed}": value for key, value in m.items()})
    return out


def evaluate_variant(
    models_dir,
    split_dir,
    batch_size,
    latency_repeats,
    confidence,
    device,
    on_seed=lambda seed, path, metrics: None,
):
    """(metrics, confusion records, per-class records, confusion counts, test hits, latency ms) over every seed.

    test hits: bool [seeds, test images], whether each seed's model got each test image right.
    """
    classes = read_json(Path(split_dir) / "meta.json")["classes"]
    data = {split: load_split(split_dir, split) for split in ("test", "val", "train")}
    test_labels = data["test"][1]
    per_seed, confusion, counts, per_class_seed, latency, inputs, hits = {}, [], 0, {}, None, {}, []
    checkpoint = None
    for seed, path in checkpoint_files(models_dir).items():
        checkpoint, model = load_checkpoint(path, device)
        # every seed trained on the same split, so with the same normalisation: pad and normalise once
        key = tuple(checkpoint["normalisation"])
        if key not in inputs:
            inputs[key] = {
                split: (to_model_input(images, *key, device), labels) for split, (images, labels) in data.items()
            }
        metrics, predicted = evaluate_seed(model, inputs[key], batch_size)
        metrics.update(best_epoch=checkpoint["best_epoch"], epochs_run=checkpoint["epochs_run"])
        per_seed[seed] = metrics
        on_seed(seed, path, metrics)
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
    metrics.update(parameters=checkpoint["parameters"])
    per_class = [
        {
            "class": name,
            "accuracy": statistics.mean(acc[c] for acc in per_class_seed.values()),
            **{f"accuracy_seed{seed}": acc[c] for seed, acc in per_class_seed.items()},
        }
        for c, name in enumerate(classes)
    ]
    return metrics, confusion, per_class, counts, torch.stack(hits), latency


def metrics_seeds(metrics):
    """The seeds of a flat metrics dict, in the order evaluate scored them (sorted)."""
    return sorted(int(k.removeprefix("test_acc_seed")) for k in metrics if k.startswith("test_acc_seed"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    parser.add_argument("--variant", required=True, help="a name under variants: in the params file")
    parser.add_argument("--split", required=True, help="folder written by stage split")
    parser.add_argument("--models", required=True, help="folder of seed<k>.pt checkpoints (stage train)")
    parser.add_argument("--history", required=True, help="per-epoch JSON written by stage train")
    parser.add_argument("--metrics", required=True, help="metrics JSON to write")
    parser.add_argument("--confusion", required=True, help="confusion records JSON to write")
    parser.add_argument("--per-class", required=True, help="per-class accuracy JSON to write")
    parser.add_argument("--test-correct", required=True, help="file to write each seed's test hits to (.pt)")
    args = parser.parse_args()
    declare_outputs(args.metrics, args.confusion, args.per_class, args.test_correct)
    params = load_params(args.params)
    device = setup_torch(params.evaluate.threads)
    history = read_json(args.history)
    parent = {}

    def mirror_seed(seed, path, metrics):  # each seed's test metrics onto the MLflow run that trained it
        run_id, parent["run_id"] = tracking.checkpoint_runs(params, file_md5(path))
        # test metrics only: the child already has val/train curves per epoch under those names
        tracking.existing_run(params, run_id).log_metrics({k: v for k, v in metrics.items() if k.startswith("test_")})

    start = time.perf_counter()
    metrics, confusion, per_class, counts, hits, latency = evaluate_variant(
        args.models,
        args.split,
        params.evaluate.batch_size,
        params.evaluate.latency_repeats,
        params.report.confidence,
        device,
        mirror_seed,
    )
    write_json(args.metrics, metrics)
    write_json(args.confusion, confusion)
    write_json(args.per_class, per_class)
    save_torch(args.test_correct, {"seeds": list(metrics_seeds(metrics)), "correct": hits})
    seconds = time.perf_counter() - start
    observed = {"latency_ms_per_batch": latency, "batch_size": params.evaluate.batch_size, "seconds": seconds}
    tracking.observe(f"evaluate/{args.variant}.json", observed)
    if params.tracking.enabled and not parent.get("run_id"):
        print(f"MLflow: no run of this store trained {args.models} (restored by DVC?): test metrics not mirrored")
    run = tracking.existing_run(params, parent.get("run_id"))  # the variant's parent run: the aggregate
    run.log_metrics({**{k: v for k, v in metrics.items() if "_seed" not in k}, "latency_ms_per_batch": latency})
    run.log_artifact(args.metrics)
    if run.mlflow:
        classes = [record["class"] for record in per_class]
        run.log_figure(
            confusion_figure(counts, classes, f"{args.variant}: test confusion, summed over seeds"),
            "confusion_matrix.png",
        )
        results = {args.variant: {"history": history, "metrics": metrics}}
        for key, label in (("acc", "accuracy"), ("loss", "cross-entropy loss")):
            run.log_figure(curves_figure(results, key, label), f"{key}_curves.png")
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
