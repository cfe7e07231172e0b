"""Optimisers and learning-rate schedules by name: the choices params.yaml accepts for train.optimizer and
train.scheduler are the keys of these dicts (pipeline/choices.py names them for the params schema)."""

import torch

OPTIMIZERS = {
    "sgd": lambda p, t, wd: torch.optim.SGD(p, lr=t.lr, momentum=t.momentum, weight_decay=wd),
    "adam": lambda p, t, wd: torch.optim.Adam(p, lr=t.lr, weight_decay=wd),
    "adamw": lambda p, t, wd: torch.optim.AdamW(p, lr=t.lr, weight_decay=wd),
    "rmsprop": lambda p, t, wd: torch.optim.RMSprop(p, lr=t.lr, momentum=t.momentum, weight_decay=wd),
}
# Per-batch schedules (onecycle, cosine) get the total step count and end at ~0 lr:
# a run ends trained whatever its epoch count, not cut off mid-descent.
SCHEDULERS = {
    "onecycle": lambda o, t, steps: torch.optim.lr_scheduler.OneCycleLR(
        o,
        max_lr=t.lr,
        total_steps=steps,
        pct_start=t.scheduler_warmup,
        cycle_momentum=t.optimizer in ("sgd", "rmsprop") and t.momentum > 0,
    ),
    "cosine": lambda o, t, steps: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=steps),
    "plateau": lambda o, t, steps: torch.optim.lr_scheduler.ReduceLROnPlateau(
        o, mode="min", factor=t.scheduler_factor, patience=t.scheduler_patience, eps=0.0
    ),
    "step": lambda o, t, steps: torch.optim.lr_scheduler.StepLR(
        o, step_size=t.scheduler_step_size, gamma=t.scheduler_factor
    ),
    "exponential": lambda o, t, steps: torch.optim.lr_scheduler.ExponentialLR(o, gamma=t.scheduler_factor),
    "none": lambda o, t, steps: None,
}
PER_BATCH = ("onecycle", "cosine")


def make_optimizer(model, train_params, weight_decay):
    return OPTIMIZERS[train_params.optimizer](model.parameters(), train_params, weight_decay)


def make_scheduler(optimizer, train_params, steps):
    """The schedule of train.scheduler; `steps` is the total number of batches (for per-batch ones)."""
    return SCHEDULERS[train_params.scheduler](optimizer, train_params, steps)
