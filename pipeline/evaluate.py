"""Stage `evaluate@<variant>`: score the selected checkpoint; the only stage that reads the test set.

Reads params: evaluate.*, train.threads.
Reads:        <split>/{train,val,test}.pt, meta.json (stage split); <model> and
              <history> (stage train).
Writes:       <metrics>    test/val/train loss and accuracy, parameter count,
                           latency, best epoch, seconds per epoch (one flat row
                           per variant for `dvc metrics show`);
              <confusion>  one {actual, predicted} record per test image, for
                           DVC's confusion template;
              <per_class>  test accuracy of each class.
"""
import argparse
import statistics
import time
from pathlib import Path

import torch

from pipeline import tracking
from pipeline.data import load_split, to_model_input
from pipeline.engine import loss_and_accuracy, predict
from pipeline.errors import PipelineError, run_stage
from pipeline.io import read_json, write_json
from pipeline.models import build_model
from pipeline.params import load_params
from pipeline.runtime import setup_torch


def load_checkpoint(path, device):
    if not Path(path).is_file():
        raise PipelineError(f"model checkpoint {path} not found (run stage train first)")
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    model = build_model(checkpoint["variant_params"], checkpoint["model_params"])
    model.load_state_dict(checkpoint["state_dict"])
    return checkpoint, model.to(device, memory_format=torch.channels_last).eval()


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


def evaluate_variant(checkpoint, model, split_dir, history, batch_size, latency_repeats, device):
    """(metrics dict, confusion records, per-class records) for one model."""
    mean, std = checkpoint["normalisation"]
    classes = read_json(Path(split_dir) / "meta.json")["classes"]
    metrics, test_logits, test_labels = {}, None, None
    for split in ("test", "val", "train"):
        images, labels = load_split(split_dir, split)
        x = to_model_input(images, mean, std, device)
        logits = predict(model, x, batch_size).cpu()
        metrics[f"{split}_loss"], metrics[f"{split}_acc"] = loss_and_accuracy(logits, labels)
        if split == "test":
            test_logits, test_labels = logits, labels
            metrics["latency_ms_per_batch"] = latency_ms(model, x[:batch_size], latency_repeats)
    predicted = test_logits.argmax(1)
    metrics.update(parameters=checkpoint["parameters"], best_epoch=checkpoint["best_epoch"],
                   epochs_run=checkpoint["epochs_run"],
                   seconds_per_epoch=statistics.median(r["seconds"] for r in history))
    confusion = [{"actual": classes[a], "predicted": classes[p]}
                 for a, p in zip(test_labels.tolist(), predicted.tolist())]
    per_class = [{"class": name, "accuracy": (predicted[test_labels == c] == c).float().mean().item()}
                 for c, name in enumerate(classes)]
    return metrics, confusion, per_class


def confusion_figure(confusion, classes, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = {name: i for i, name in enumerate(classes)}
    counts = torch.zeros(len(classes), len(classes), dtype=torch.long)
    for record in confusion:
        counts[index[record["actual"]], index[record["predicted"]]] += 1
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(counts, cmap="Blues")
    for (i, j), n in zip(torch.cartesian_prod(torch.arange(10), torch.arange(10)).tolist(), counts.flatten()):
        ax.text(j, i, int(n), ha="center", va="center", fontsize=7,
                color="white" if n > counts.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--variant", required=True)
    parser.add_argument("--split", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--history", required=True)
    parser.add_argument("--metrics", required=True)
    parser.add_argument("--confusion", required=True)
    parser.add_argument("--per-class", required=True)
    args = parser.parse_args()
    params = load_params(args.params)
    device = setup_torch(params["train"]["threads"])
    checkpoint, model = load_checkpoint(args.model, device)
    history = read_json(args.history)
    with tracking.stage_run(params, args.variant, "evaluate", args.params,
                            checkpoint["mlflow_run_id"]) as run:
        metrics, confusion, per_class = evaluate_variant(
            checkpoint, model, args.split, history, params["evaluate"]["batch_size"],
            params["evaluate"]["latency_repeats"], device)
        write_json(args.metrics, metrics)
        write_json(args.confusion, confusion)
        write_json(args.per_class, per_class)
        run.log_metrics(metrics)
        run.log_artifact(args.metrics)
        if run.mlflow:
            test_images, test_labels = load_split(args.split, "test")
            run.log_dataset(args.split, "test", test_images, test_labels, params["data"]["dataset"])
            classes = [record["class"] for record in per_class]
            run.log_figure(confusion_figure(confusion, classes, f"{args.variant}: test confusion"),
                           "confusion_matrix.png")
    print(f"evaluate {args.variant}: test acc {metrics['test_acc']:.4f}, val acc {metrics['val_acc']:.4f}")


if __name__ == "__main__":
    run_stage(main)
