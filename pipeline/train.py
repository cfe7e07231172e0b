"""Stage `train@<variant>`: fit one variant, keep the checkpoint with the best val loss.

Reads params: seed, model.activation, train.*, variants.<variant>, and the key
              the variant's `uses` names (model.dropout, model.weight_decay, ...).
Reads:        <split>/{train,val}.pt (stage split).
Writes:       <model> (best state_dict + what evaluate needs to rebuild it) and
              <history> (one record per epoch: losses, accuracies, lr, seconds).
The learning rate is reduced on plateau of the val loss (or on a fixed
schedule, per train.scheduler) and training stops early when the val loss has
not improved for train.early_stopping_patience epochs.
"""
import argparse
import copy
import math
import time

import torch
from tqdm import tqdm

from pipeline import tracking
from pipeline.data import load_split, normalisation, to_model_input
from pipeline.engine import loss_and_accuracy, predict, train_one_epoch
from pipeline.errors import PipelineError, run_stage
from pipeline.io import save_torch, write_json
from pipeline.models import build_model, count_parameters
from pipeline.params import load_params, variant_params
from pipeline.runtime import seed_everything, setup_torch

OPTIMIZERS = {
    "sgd": lambda p, t, wd: torch.optim.SGD(p, lr=t["lr"], momentum=t["momentum"], weight_decay=wd),
    "adam": lambda p, t, wd: torch.optim.Adam(p, lr=t["lr"], weight_decay=wd),
    "adamw": lambda p, t, wd: torch.optim.AdamW(p, lr=t["lr"], weight_decay=wd),
    "rmsprop": lambda p, t, wd: torch.optim.RMSprop(p, lr=t["lr"], momentum=t["momentum"], weight_decay=wd),
}
SCHEDULERS = {
    "plateau": lambda o, t: torch.optim.lr_scheduler.ReduceLROnPlateau(
        o, mode="min", factor=t["scheduler_factor"], patience=t["scheduler_patience"], eps=0.0),
    "step": lambda o, t: torch.optim.lr_scheduler.StepLR(
        o, step_size=t["scheduler_step_size"], gamma=t["scheduler_factor"]),
    "exponential": lambda o, t: torch.optim.lr_scheduler.ExponentialLR(o, gamma=t["scheduler_factor"]),
    "none": lambda o, t: None,
}


def make_optimizer(model, train_params, weight_decay):
    return OPTIMIZERS[train_params["optimizer"]](model.parameters(), train_params, weight_decay)


def fit(model, optimizer, scheduler, train_xy, val_xy, train_params, generator,
        name="model", on_epoch=lambda record: None):
    """Train until train.epochs or early stop; return (best state, best epoch, history)."""
    best_loss, best_epoch, best_state, history = float("inf"), 0, None, []
    bar = tqdm(range(1, train_params["epochs"] + 1), desc=f"train {name}", unit="epoch",
               disable=None)  # None: a bar on a terminal, nothing in a log file
    for epoch in bar:
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_loss, train_acc = train_one_epoch(model, optimizer, *train_xy, train_params["batch_size"],
                                                generator, train_params["hflip"], train_params["shift"])
        val_loss, val_acc = loss_and_accuracy(predict(model, val_xy[0], 1024), val_xy[1])
        record = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
                  "val_acc": val_acc, "lr": lr, "seconds": time.perf_counter() - start}
        if not math.isfinite(train_loss + val_loss):
            raise PipelineError(f"{name}: the loss diverged (not finite) in epoch {epoch}; "
                                f"lower train.lr (now {train_params['lr']})")
        history.append(record)
        on_epoch(record)
        if val_loss < best_loss:
            best_loss, best_epoch, best_state = val_loss, epoch, copy.deepcopy(model.state_dict())
        if bar.disable:
            print(f"{name} epoch {epoch:3d}  train loss {train_loss:.4f} acc {train_acc:.4f}  "
                  f"val loss {val_loss:.4f} acc {val_acc:.4f}  lr {lr:.3g}  {record['seconds']:.1f}s",
                  flush=True)
        else:
            bar.set_postfix(val_loss=f"{val_loss:.4f}", val_acc=f"{val_acc:.4f}")
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(val_loss)
        elif scheduler is not None:
            scheduler.step()
        if epoch - best_epoch >= train_params["early_stopping_patience"]:
            print(f"{name}: early stop after epoch {epoch}, best epoch {best_epoch}", flush=True)
            break
    return best_state, best_epoch, history


def log_training(run, name, split_dir, data, dataset, history, best_epoch):
    """Mirror a finished training into MLflow: its inputs, its curves, its history."""
    from pipeline.report import curves_figure

    for split, (images, labels) in data.items():
        run.log_dataset(split_dir, split, images, labels, dataset)
    results = {name: {"history": history, "metrics": {"best_epoch": best_epoch}}}
    for key, label in (("acc", "accuracy"), ("loss", "cross-entropy loss")):
        run.log_figure(curves_figure(results, key, label), f"{key}_curves.png")
    run.log_dict(history, "history.json")


def train_variant(params, name, split_dir, params_path="params.yaml"):
    """Build, train and return (checkpoint dict, history) for one variant."""
    variant, model_params, train_params = variant_params(params, name), params["model"], params["train"]
    device = setup_torch(train_params["threads"])
    seed_everything(params["seed"])
    train_images, train_labels = load_split(split_dir, "train")
    val_images, val_labels = load_split(split_dir, "val")
    mean, std = normalisation(train_images)
    train_xy = (to_model_input(train_images, mean, std, device), train_labels.to(device))
    val_xy = (to_model_input(val_images, mean, std, device), val_labels.to(device))
    model = build_model(variant, model_params).to(device, memory_format=torch.channels_last)
    weight_decay = model_params["weight_decay"] if variant["weight_decay"] else 0.0
    optimizer = make_optimizer(model, train_params, weight_decay)
    scheduler = SCHEDULERS[train_params["scheduler"]](optimizer, train_params)
    generator = torch.Generator().manual_seed(params["seed"])
    with tracking.stage_run(params, name, "train", params_path) as run:
        best_state, best_epoch, history = fit(model, optimizer, scheduler, train_xy, val_xy, train_params,
                                              generator, name, on_epoch=run.log_epoch)
        checkpoint = {
            "variant": name, "variant_params": variant, "model_params": model_params,
            "state_dict": best_state, "normalisation": [mean, std], "best_epoch": best_epoch,
            "epochs_run": len(history), "parameters": count_parameters(model),
            "mlflow_run_id": run.run_id,
        }
        model.load_state_dict(best_state)
        if run.mlflow:
            log_training(run, name, split_dir, {"train": (train_images, train_labels),
                                                "val": (val_images, val_labels)},
                         params["data"]["dataset"], history, best_epoch)
            run.log_model(model, val_xy[0][:2])
    return checkpoint, history


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--variant", required=True)
    parser.add_argument("--split", required=True, help="folder written by stage split")
    parser.add_argument("--model", required=True, help="checkpoint to write")
    parser.add_argument("--history", required=True, help="per-epoch JSON to write")
    args = parser.parse_args()
    params = load_params(args.params)
    variant_params(params, args.variant)  # fail on an unknown variant before loading data
    checkpoint, history = train_variant(params, args.variant, args.split, args.params)
    save_torch(args.model, checkpoint)
    write_json(args.history, history)


if __name__ == "__main__":
    run_stage(main)
