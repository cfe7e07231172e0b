"""Training one run config with one seed: what stage train and stage tune's trials share.

`prepare` builds the model, optimiser, schedule and in-memory data in a fixed
order (the seed's random draws depend on it: train@ stages reproduce bit for bit
only if it never changes); `fit` runs the epochs and keeps the best val-loss state;
`fit_seed` is both for one seed, from data in memory: what a train stage runs on
this machine or ships to a cluster node (pipeline/cluster.py).
"""

import copy
import math
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from pipeline.data import load_split, normalisation, to_model_input
from pipeline.engine import batches_per_epoch, loss_and_accuracy, predict, train_one_epoch
from pipeline.errors import PipelineError
from pipeline.models import build_model, count_parameters
from pipeline.optim import PER_BATCH, make_optimizer, make_scheduler
from pipeline.runtime import setup_torch

# A run is diverged, not a result, when its training loss is not finite or above EXPLODED (cross-entropy
# starts at ln(classes) ~ 2.3 and a run that learns stays below it; lr 1000 reached 1e28), or when, over
# AT_CHANCE_AFTER epochs or more, its validation accuracy never rose more than CHANCE_MARGIN above chance
# while its training loss stayed above ln(classes) + LOSS_MARGIN, worse than a uniform guess: it learned
# nothing. (Accuracy at chance alone is not enough: a few epochs on hard data can stay there while the
# loss falls.)
EXPLODED = 1e3
CHANCE_MARGIN = 0.02
LOSS_MARGIN = 0.1  # nats: a run that barely moves (a tiny lr) keeps its initial ~ln(classes) and is a result
AT_CHANCE_AFTER = 3


@dataclass
class Prepared:
    """One run, ready for `fit`: the model and its optimiser, and the data as model inputs."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    train_xy: tuple
    val_xy: tuple
    generator: torch.Generator
    normalisation: tuple  # (mean, std) of the training images: the checkpoint keeps them


def load_splits(split_dir):
    """{"train": (images, labels), "val": (images, labels)} of a split folder (stage split), in memory."""
    return {split: load_split(split_dir, split) for split in ("train", "val")}


def prepare(config, splits, seed):
    """Seed torch and build what `fit` needs for `config` (a RunConfig) from `splits` (load_splits)."""
    train_params = config.train
    device = setup_torch(train_params.threads)
    torch.manual_seed(seed)  # the initial weights (and dropout masks)
    (train_images, train_labels), (val_images, val_labels) = splits["train"], splits["val"]
    mean, std = normalisation(train_images)
    train_xy = (to_model_input(train_images, mean, std, device), train_labels.to(device))
    val_xy = (to_model_input(val_images, mean, std, device), val_labels.to(device))
    model = build_model(config.architecture, config.model).to(device, memory_format=torch.channels_last)
    weight_decay = config.model.weight_decay if config.architecture.weight_decay else 0.0
    optimizer = make_optimizer(model, train_params, weight_decay)
    steps = train_params.epochs * batches_per_epoch(len(train_labels), train_params.batch_size)
    scheduler = make_scheduler(optimizer, train_params, steps)
    generator = torch.Generator().manual_seed(seed)  # data order and augmentation
    return Prepared(model, optimizer, scheduler, train_xy, val_xy, generator, (mean, std))


def fit(prepared, train_params, name="model", on_epoch=lambda record: None):
    """Train a Prepared run until train.epochs or early stop; return (best state, best epoch, history).

    `train_params` is the run config's TrainSettings. `on_epoch` also gets the
    epoch's wall time (`seconds`), which the history, a DVC output, leaves out:
    it differs from run to run.
    """
    model, optimizer, scheduler, val_xy = prepared.model, prepared.optimizer, prepared.scheduler, prepared.val_xy
    best_loss, best_epoch, best_state, history = float("inf"), 0, None, []
    per_batch = scheduler if train_params.scheduler in PER_BATCH else None
    bar = tqdm(
        range(1, train_params.epochs + 1), desc=f"train {name}", unit="epoch", disable=None
    )  # None: a bar on a terminal, nothing in a log file
    for epoch in bar:
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_loss, train_acc = train_one_epoch(
            model, optimizer, prepared.train_xy, train_params, prepared.generator, per_batch
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
        if not math.isfinite(train_loss + val_loss) or train_loss > EXPLODED:
            how = f"train loss {train_loss:.3g}" if math.isfinite(train_loss + val_loss) else "not finite"
            raise PipelineError(
                f"{name}: the loss diverged ({how}) in epoch {epoch}; lower train.lr (now {train_params.lr})"
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
    classes = int(prepared.train_xy[1].max()) + 1
    best_acc = max(record["val_acc"] for record in history)
    best_train_loss = min(record["train_loss"] for record in history)
    if (
        len(history) >= AT_CHANCE_AFTER
        and best_acc <= 1 / classes + CHANCE_MARGIN
        and best_train_loss > math.log(classes) + LOSS_MARGIN  # worse than a uniform guess, in every epoch
    ):
        raise PipelineError(
            f"{name}: the run learned nothing: validation accuracy stayed at chance (at best {best_acc:.3f} with "
            f"{classes} classes) and the training loss above a uniform guess's (at best {best_train_loss:.3g}, "
            f"a guess {math.log(classes):.3g}) for {len(history)} epochs; lower train.lr (now {train_params.lr})"
        )
    return best_state, best_epoch, history


@dataclass
class Fitted:
    """What one seed's training gives the stage that records it (stage train)."""

    best_state: dict
    best_epoch: int
    history: list  # the epochs' records, as the checkpoint keeps them
    epochs: list  # the same records with each epoch's wall time (`seconds`): for MLflow, never for DVC
    normalisation: tuple
    parameters: int


def fit_seed(config, splits, seed, name="model", on_epoch=None):
    """Prepare and fit `config` with `seed` on `splits` (load_splits); return a Fitted.

    A pure function of its arguments (on one CPU kind and thread count), so it
    runs in the stage's own process or as a task on a cluster node
    (pipeline/cluster.py) with the same result. `on_epoch` sees each record as
    it lands (a node has no MLflow run: the stage replays `epochs` into it).
    """
    prepared = prepare(config, splits, seed)
    epochs = []

    def record(item):
        epochs.append(item)
        if on_epoch is not None:
            on_epoch(item)

    best_state, best_epoch, history = fit(prepared, config.train, name, on_epoch=record)
    return Fitted(best_state, best_epoch, history, epochs, prepared.normalisation, count_parameters(prepared.model))
