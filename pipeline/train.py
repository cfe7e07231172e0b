"""Stage `train@<variant>-<seed>`: fit one variant with one seed; keep its best val-loss checkpoint.

Reads:        <config> (stage check: the variant's run config, params.RunConfig:
              everything training reads but the seed), <split>/{train,val}.pt
              (stage split). params.yaml only for tracking.*, never a result.
Writes:       <out>, the checkpoint: the best state_dict, what evaluate needs to
              rebuild the model, and the run's history (one record per epoch).
One stage per variant and seed (dvc.yaml's `matrix:`), so adding a seed trains
that seed only. DVC runs one stage at a time; scripts/repro.py runs as many
train stages at once as the cores allow (`make run`). A seed's result depends
only on its run config, its seed and the split, never on what else ran beside
it. Nothing of one run's own (timings, MLflow ids) goes into the output: those
go to MLflow and to observations/ (pipeline/tracking.py).
"""

import argparse
import copy
import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

from pipeline import tracking
from pipeline.data import load_split, normalisation, split_file, to_model_input
from pipeline.engine import batches_per_epoch, loss_and_accuracy, predict, train_one_epoch
from pipeline.errors import PipelineError, declare_outputs, run_stage
from pipeline.io import file_md5, read_json, save_torch
from pipeline.models import build_model, count_parameters
from pipeline.optim import PER_BATCH, make_optimizer, make_scheduler
from pipeline.params import ParamsError, RunConfig, load_params
from pipeline.runtime import setup_torch


def fit(
    model, optimizer, scheduler, train_xy, val_xy, train_params, generator, name="model", on_epoch=lambda record: None
):
    """Train until train.epochs or early stop; return (best state, best epoch, history).

    `on_epoch` also gets the epoch's wall time (`seconds`), which the history,
    a DVC output, leaves out: it differs from run to run.
    """
    best_loss, best_epoch, best_state, history = float("inf"), 0, None, []
    per_batch = scheduler if train_params.scheduler in PER_BATCH else None
    bar = tqdm(
        range(1, train_params.epochs + 1), desc=f"train {name}", unit="epoch", disable=None
    )  # None: a bar on a terminal, nothing in a log file
    for epoch in bar:
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_loss, train_acc = train_one_epoch(
            model,
            optimizer,
            *train_xy,
            train_params.batch_size,
            generator,
            train_params.hflip,
            train_params.shift,
            train_params.erase,
            per_batch,
        )
        val_loss, val_acc = loss_and_accuracy(predict(model, val_xy[0], 1024), val_xy[1])
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": lr,
        }
        seconds = time.perf_counter() - start
        if not math.isfinite(train_loss + val_loss):
            raise PipelineError(
                f"{name}: the loss diverged (not finite) in epoch {epoch}; lower train.lr (now {train_params.lr})"
            )
        history.append(record)
        on_epoch({**record, "seconds": seconds})
        if val_loss < best_loss:
            best_loss, best_epoch, best_state = val_loss, epoch, copy.deepcopy(model.state_dict())
        if bar.disable:
            print(
                f"{name} epoch {epoch:3d}  train loss {train_loss:.4f} acc {train_acc:.4f}  "
                f"val loss {val_loss:.4f} acc {val_acc:.4f}  lr {lr:.3g}  {seconds:.1f}s",
                flush=True,
            )
        else:
            bar.set_postfix(val_loss=f"{val_loss:.4f}", val_acc=f"{val_acc:.4f}")
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(val_loss)
        elif scheduler is not None and per_batch is None:
            scheduler.step()
        if epoch - best_epoch >= train_params.early_stopping_patience:
            print(f"{name}: early stop after epoch {epoch}, best epoch {best_epoch}", flush=True)
            break
    return best_state, best_epoch, history


def train_seed(config, split_dir, seed, tracked=None):
    """Build and train one variant (its RunConfig) with one seed; return the checkpoint dict.

    `tracked`: (params, dvc path of the checkpoint) to mirror the run into MLflow,
    or None. The seed's run is tagged with the checkpoint's MD5 (DVC's hash of
    the file) and its path: that tag, not an id inside the checkpoint, links the
    two. MLflow gets the model of train.seeds' first seed only, as a pyfunc that
    takes raw images (pipeline/serving.py): logging one takes seconds, and every
    seed's checkpoint is a DVC output anyway.
    """
    name, train_params = config.variant, config.train
    device = setup_torch(train_params.threads)
    torch.manual_seed(seed)  # the initial weights (and dropout masks)
    train_images, train_labels = load_split(split_dir, "train")
    val_images, val_labels = load_split(split_dir, "val")
    mean, std = normalisation(train_images)
    train_xy = (to_model_input(train_images, mean, std, device), train_labels.to(device))
    val_xy = (to_model_input(val_images, mean, std, device), val_labels.to(device))
    model = build_model(config.architecture, config.model).to(device, memory_format=torch.channels_last)
    weight_decay = config.model.weight_decay if config.architecture.weight_decay else 0.0
    optimizer = make_optimizer(model, train_params, weight_decay)
    steps = train_params.epochs * batches_per_epoch(len(train_labels), train_params.batch_size)
    scheduler = make_scheduler(optimizer, train_params, steps)
    generator = torch.Generator().manual_seed(seed)  # data order and augmentation
    label = f"{name}/seed{seed}"
    params, out_path = tracked or (None, None)
    with tracking.seed_run(params, config, seed) as run:
        if run.mlflow:
            for split, (images, labels) in {
                "train": (train_images, train_labels),
                "val": (val_images, val_labels),
            }.items():
                run.log_dataset(split_dir, split, images, labels, read_json(Path(split_dir) / "meta.json")["dataset"])
        seconds = []

        def on_epoch(record):
            seconds.append(record["seconds"])
            run.log_epoch(record)

        best_state, best_epoch, history = fit(
            model, optimizer, scheduler, train_xy, val_xy, train_params, generator, label, on_epoch=on_epoch
        )
        tracking.observe(
            f"train/{name}/seed{seed}.json",
            {"seconds_per_epoch": seconds, "threads": train_params.threads, "mlflow_run_id": run.run_id},
        )
        checkpoint = {
            "variant": name,
            "seed": seed,
            "variant_params": config.architecture.model_dump(),
            "model_params": config.model.model_dump(),
            "state_dict": best_state,
            "normalisation": [mean, std],
            "best_epoch": best_epoch,
            "epochs_run": len(history),
            "parameters": count_parameters(model),
            "classes": read_json(Path(split_dir) / "meta.json")["classes"],
            "history": history,
        }
        if out_path is not None:
            save_torch(out_path, checkpoint)
            run.link_checkpoint(file_md5(out_path), out_path)
            if seed == params.train.seeds[0]:  # MLflow keeps one model per variant: it takes raw images
                run.log_model(checkpoint)
    return checkpoint


def load_config(path):
    """The RunConfig stage check wrote; a damaged or outdated file is one line naming the way back."""
    try:
        return RunConfig.model_validate(read_json(path))
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ParamsError(
            f"{path} is not a run config ({type(e).__name__}); stage check writes it: dvc repro --force check"
        ) from None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="the params file, for tracking.* only")
    parser.add_argument("--config", required=True, help="the variant's run config (stage check)")
    parser.add_argument("--seed", required=True, type=int, help="the seed: weights, data order, augmentation")
    parser.add_argument("--split", required=True, help="folder written by stage split")
    parser.add_argument("--out", required=True, help="the checkpoint file to write (seed<k>.pt)")
    args = parser.parse_args()
    declare_outputs(args.out)
    params = load_params(args.params)
    config = load_config(args.config)
    for split in ("train", "val"):  # a missing input fails before any run is opened in MLflow
        if not split_file(args.split, split).is_file():
            raise FileNotFoundError(2, "No such file", str(split_file(args.split, split)))
    train_size, batch_size = len(load_split(args.split, "train")[1]), config.train.batch_size
    if train_size < batch_size:
        raise PipelineError(
            f"the training split holds {train_size} images, fewer than one batch (train.batch_size "
            f"{batch_size}): lower train.batch_size or data.val_size"
        )
    start = time.perf_counter()
    train_seed(config, args.split, args.seed, (params, args.out))
    print(f"train {config.variant}/seed{args.seed}: {time.perf_counter() - start:.0f} s (observations/train/)")


if __name__ == "__main__":
    run_stage(main)
