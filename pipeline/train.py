"""Stage `train@<variant>`: fit one variant once per seed; keep each run's best val-loss checkpoint.

Reads params: train.*, variants.<variant>, model.activation, and the key the
              variant's `uses` names (model.dropout, model.weight_decay, ...).
Reads:        <split>/{train,val}.pt (stage split).
Writes:       <models>/seed<k>.pt, one per seed in train.seeds (best state_dict
              + what evaluate needs to rebuild it), and <history>: one record
              per epoch with the mean over seeds of each curve (what DVC plots
              draws) and every seed's own value (`val_acc_seed<k>`).
The seeds train in separate processes at once (how many: `workers()`, from
the cores, not a param), each with train.threads torch threads: one seed's
result depends only on its seed and the thread count, never on which worker
ran it or in what order. DVC runs one stage at a time, so a stage that holds
all of a variant's seeds is the only place where both cores can train at once
(docs/speed.md). Nothing of one run's own (timings, MLflow ids) goes into the
outputs: they go to MLflow and to observations/ (pipeline/tracking.py).
"""

import argparse
import copy
import ctypes
import math
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import torch
from tqdm import tqdm

from pipeline import tracking
from pipeline.data import load_split, normalisation, split_file, to_model_input
from pipeline.engine import batches_per_epoch, loss_and_accuracy, predict, train_one_epoch
from pipeline.errors import PipelineError, declare_outputs, run_stage
from pipeline.io import atomic_folder, file_md5, read_json, save_torch, write_json
from pipeline.models import build_model, count_parameters
from pipeline.optim import PER_BATCH, make_optimizer, make_scheduler
from pipeline.params import load_params
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


def train_seed(params, name, split_dir, seed, parent_run_id=None, out_dir=None, dvc_path=None):
    """Build and train one variant with one seed; return (checkpoint dict, history).

    With `out_dir`, the checkpoint is written there as seed<k>.pt, and its MD5
    (DVC's hash of the file) and `dvc_path` (where DVC will keep it) are
    tagged on the seed's MLflow run: that tag, not
    an id inside the checkpoint, links the two. MLflow gets the model of the
    first seed only, as a pyfunc that takes raw images (pipeline/serving.py):
    logging one takes seconds, and every seed's checkpoint is a DVC output anyway.
    """
    variant, model_params, train_params = params.variant(name), params.model, params.train_for(name)
    device = setup_torch(train_params.threads)
    torch.manual_seed(seed)  # the initial weights (and dropout masks)
    train_images, train_labels = load_split(split_dir, "train")
    val_images, val_labels = load_split(split_dir, "val")
    mean, std = normalisation(train_images)
    train_xy = (to_model_input(train_images, mean, std, device), train_labels.to(device))
    val_xy = (to_model_input(val_images, mean, std, device), val_labels.to(device))
    model = build_model(variant, model_params).to(device, memory_format=torch.channels_last)
    weight_decay = model_params.weight_decay if variant.weight_decay else 0.0
    optimizer = make_optimizer(model, train_params, weight_decay)
    steps = train_params.epochs * batches_per_epoch(len(train_labels), train_params.batch_size)
    scheduler = make_scheduler(optimizer, train_params, steps)
    generator = torch.Generator().manual_seed(seed)  # data order and augmentation
    label = f"{name}/seed{seed}"
    with tracking.seed_run(params, name, seed, parent_run_id) as run:
        if run.mlflow:
            for split, (images, labels) in {
                "train": (train_images, train_labels),
                "val": (val_images, val_labels),
            }.items():
                run.log_dataset(split_dir, split, images, labels, params.data.dataset)
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
            "variant_params": variant.model_dump(),
            "model_params": model_params.model_dump(),
            "state_dict": best_state,
            "normalisation": [mean, std],
            "best_epoch": best_epoch,
            "epochs_run": len(history),
            "parameters": count_parameters(model),
            "classes": read_json(Path(split_dir) / "meta.json")["classes"],
        }
        if out_dir is not None:
            path = Path(out_dir) / f"seed{seed}.pt"
            save_torch(path, checkpoint)
            run.link_checkpoint(file_md5(path), dvc_path and f"{dvc_path}/seed{seed}.pt")
        if seed == train_params.seeds[0]:  # MLflow keeps one model per variant: it takes raw images
            run.log_model(checkpoint)
    return checkpoint, history


def _seed_job(params, name, split_dir, seed, parent_run_id, out_dir, dvc_path):
    """A worker's job: train one seed, write its checkpoint, return its history."""
    return train_seed(params, name, split_dir, seed, parent_run_id, out_dir, dvc_path)[1]


def workers(seeds, threads):
    """How many seeds train at once: PIPELINE_WORKERS, else every seed up to twice the cores' share.

    Not a param: it changes no result (each seed's numbers depend on its seed and
    train.threads only), so the same params give the same DVC cache on any machine.
    Oversubscribing is deliberate: with 3 seeds on 2 cores, 3 processes at once
    finish in 1.5 seed-times where 2 workers take 2 (docs/speed.md).
    """
    chosen = os.environ.get("PIPELINE_WORKERS")
    if chosen:
        if not chosen.isdigit() or int(chosen) < 1:
            raise PipelineError(f"PIPELINE_WORKERS must be a whole number >= 1, got {chosen!r}")
        return min(int(chosen), seeds)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(seeds, 2 * max(1, cores // threads)))


def _in_workers(function, jobs, count):
    """[function(*job) for job in jobs], run by `count` spawned processes; any failure stops them all."""
    # spawn, not fork: a forked child inherits torch's thread pools mid-state
    with multiprocessing.get_context("spawn").Pool(count, initializer=_worker_setup) as pool:
        pending = [pool.apply_async(function, job) for job in jobs]
        return [result.get() for result in pending]  # leaving `with` early terminates the workers


def _worker_setup():
    """Ctrl-C goes to the stage's own process, which stops the workers: one message, not one per worker.

    A worker also dies with that process (Linux's PR_SET_PDEATHSIG): when it is
    SIGKILLed nothing else would stop the workers, which trained on for minutes.
    tqdm's default lock is a multiprocessing semaphore; a worker stopped mid-run
    never releases it, and the resource tracker then warns of a "leak" at exit.
    The workers print no bars that could interleave, so a thread lock will do.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG, from linux/prctl.h
    except (AttributeError, OSError):  # not Linux
        pass
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)
    tqdm.set_lock(threading.RLock())


CURVES = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")


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
            row.update({f"{key}_seed{seed}": record[key] for key in CURVES})
        rows.append(row)
    return rows


def train_variant(params, name, split_dir, models_dir, params_path="params.yaml"):
    """Train every seed of one variant into models_dir (whole or not at all); return {seed: history}."""
    train_params = params.train_for(name)
    seeds = train_params.seeds
    count = workers(len(seeds), train_params.threads)
    start = time.perf_counter()
    with tracking.variant_run(params, name, "train", params_path) as run, atomic_folder(models_dir) as tmp:
        jobs = [(params, name, str(split_dir), seed, run.run_id, str(tmp), str(models_dir)) for seed in seeds]
        if count == 1:
            histories = dict(zip(seeds, (_seed_job(*job) for job in jobs)))
        else:
            histories = dict(zip(seeds, _in_workers(_seed_job, jobs, count)))
        if run.mlflow:
            run.log_dict(wide_history(histories), "history.json")
    seconds = time.perf_counter() - start
    tracking.observe(f"train/{name}/stage.json", {"seconds": seconds, "seeds": seeds, "processes": count})
    print(f"train {name}: {len(seeds)} seed(s) in {seconds:.0f} s, {count} at once (observations/train/{name}/)")
    return histories


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    parser.add_argument("--variant", required=True, help="a name under variants: in the params file")
    parser.add_argument("--split", required=True, help="folder written by stage split")
    parser.add_argument("--models", required=True, help="folder to write seed<k>.pt checkpoints to")
    parser.add_argument("--history", required=True, help="per-epoch JSON to write (mean and each seed)")
    args = parser.parse_args()
    declare_outputs(args.models, args.history)
    params = load_params(args.params)
    params.variant(args.variant)  # fail on an unknown variant before loading data
    for split in ("train", "val"):  # a missing input fails before any run is opened in MLflow
        if not split_file(args.split, split).is_file():
            raise FileNotFoundError(2, "No such file", str(split_file(args.split, split)))
    train_size, batch_size = len(load_split(args.split, "train")[1]), params.train_for(args.variant).batch_size
    if train_size < batch_size:
        raise PipelineError(
            f"the training split holds {train_size} images, fewer than one batch (train.batch_size "
            f"{batch_size}): lower train.batch_size or data.val_size ({params.data.val_size})"
        )
    histories = train_variant(params, args.variant, args.split, args.models, args.params)
    write_json(args.history, wide_history(histories))


if __name__ == "__main__":
    run_stage(main)
