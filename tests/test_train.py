"""Training on tiny synthetic data: augmentation against torch's own ops, learning, determinism."""

import math
import os
import re
from pathlib import Path

import pytest
import torch
import yaml
from documented import documented
from helpers import shrunk_params, train_one

from pipeline.data import load_split
from pipeline.engine import ERASE_SCALE, erasing_boxes, random_erasing, random_shift
from pipeline.errors import PipelineError
from pipeline.evaluate import checkpoint_files, evaluate_variant, wide_history
from pipeline.optim import OPTIMIZERS, make_optimizer
from pipeline.params import validate


def test_random_shift_equals_torch_roll_per_image():
    x = torch.zeros(16, 1, 32, 32)
    x[:, :, 2:30, 2:30] = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    shifted = random_shift(x, 2, torch.Generator().manual_seed(3))
    dy, dx = torch.randint(-2, 3, (2, 16), generator=torch.Generator().manual_seed(3))
    for i in range(16):
        assert torch.equal(shifted[i], torch.roll(x[i], (int(dy[i]), int(dx[i])), dims=(1, 2)))
    assert (dy != 0).any() and (dx != 0).any()


def test_random_erasing_equals_torchvision_erase_per_image():
    """The oracle: torchvision's own erase(), one image at a time, on the boxes the same generator draws."""
    from torchvision.transforms.v2.functional import erase

    x = torch.randn(64, 1, 32, 32, generator=torch.Generator().manual_seed(4))
    erased = random_erasing(x, 0.5, torch.Generator().manual_seed(3))
    chosen, top, left, h, w = erasing_boxes(64, 28, 28, 0.5, torch.Generator().manual_seed(3))
    for i in range(64):
        expected = erase(x[i], int(top[i]) + 2, int(left[i]) + 2, int(h[i]), int(w[i]), 0.0) if chosen[i] else x[i]
        assert torch.equal(erased[i], expected), i
    assert 16 < chosen.sum() < 48  # about half
    assert torch.equal(erased[:, :, :2], x[:, :, :2]) and torch.equal(erased[:, :, -2:], x[:, :, -2:])  # border kept


def test_erasing_boxes_cover_the_documented_share_of_the_image():
    chosen, top, left, h, w = erasing_boxes(4000, 28, 28, 1.0, torch.Generator().manual_seed(0))
    share = (h * w).float() / (28 * 28)
    assert chosen.all() and (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 28).all() and (left + w <= 28).all()
    # rounding to whole pixels and clamping to the image move a few boxes just outside the range
    assert ((share > ERASE_SCALE[0] * 0.7) & (share < ERASE_SCALE[1] * 1.3)).float().mean() > 0.99
    assert abs(share.mean().item() - sum(ERASE_SCALE) / 2) < 0.02


def test_erasing_nothing_draws_nothing():
    """erase: 0 leaves the generator alone (only the shuffle draws), so the LeNet-5 results stay bit-identical."""
    from pipeline.engine import train_one_epoch

    def state_after_epoch(erase):
        generator = torch.Generator().manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 10))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        x, y = torch.randn(40, 1, 32, 32), torch.randint(0, 10, (40,))
        settings = tiny_params(**{"train.batch_size": 8, "train.hflip": False, "train.shift": 0, "train.erase": erase})
        train_one_epoch(model, optimizer, (x, y), settings.train, generator)
        return generator.get_state()

    shuffle_only = torch.Generator().manual_seed(1)
    torch.randperm(40, generator=shuffle_only)
    assert torch.equal(state_after_epoch(0.0), shuffle_only.get_state())
    assert not torch.equal(state_after_epoch(0.5), shuffle_only.get_state())


def tiny_params(**overrides):
    params = shrunk_params("unused", **{"tracking.enabled": False, **overrides})
    return validate(params)


def test_training_learns_and_keeps_the_best_val_loss_epoch_of_every_seed(split_dir, tmp_path):
    params = tiny_params(**{"train.epochs": 3, "train.hflip": True, "train.shift": 2})
    histories = {
        seed: train_one(params, "batchnorm", split_dir, seed, tmp_path / "models" / f"seed{seed}.pt")[1]
        for seed in (0, 1)
    }
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["seed0.pt", "seed1.pt"]
    scores = evaluate_variant(checkpoint_files(tmp_path / "models", [0, 1]), split_dir, params.evaluate, 0.95, "cpu")
    metrics, counts, hits, latency = scores.metrics, scores.counts, scores.hits, scores.latency
    confusion, per_class = scores.confusion, scores.per_class
    assert scores.history == wide_history(histories)
    with pytest.raises(PipelineError, match=r"no checkpoint .*seed2.pt: run `dvc repro train@models-2` first") as e:
        checkpoint_files(tmp_path / "models", [0, 1, 2])
    documented("no checkpoint", e.value)
    for seed in (0, 1):
        best = min(histories[seed], key=lambda h: h["val_loss"])
        assert metrics[f"best_epoch_seed{seed}"] == best["epoch"]
        assert metrics[f"val_loss_seed{seed}"] == pytest.approx(best["val_loss"], rel=1e-5)
    assert metrics["seeds"] == 2 and metrics["test_acc_mean"] > 0.3
    assert metrics["test_acc_ci_low"] < metrics["test_acc_mean"] < metrics["test_acc_ci_high"]
    assert sum(r["count"] for r in confusion) == 2 * 200 and int(counts.sum()) == 2 * 200 and len(per_class) == 10
    # the counts, by bincount, against the records (one per seed and non-empty cell) and each seed's hits
    assert int(counts.trace()) == sum(r["count"] for r in confusion if r["actual"] == r["predicted"])
    assert hits.shape == (2, 200) and int(hits.sum()) == int(counts.trace()) and latency > 0
    assert [hits[s].float().mean().item() for s in (0, 1)] == pytest.approx(
        [metrics[f"test_acc_seed{s}"] for s in (0, 1)]
    )


def test_a_checkpoint_file_is_the_plain_dict_of_its_fields_and_loads_back(split_dir, tmp_path):
    """The typed Checkpoint changes no byte of the file: the same dict, built by hand, saves to the same bytes."""
    from pipeline.checkpoint import load_checkpoint
    from pipeline.io import save_torch

    params = tiny_params(**{"train.epochs": 1})
    path = tmp_path / "mlp" / "seed0.pt"
    checkpoint, history = train_one(params, "mlp", split_dir, 0, path)
    config = params.run_config("mlp")
    by_hand = {
        "variant": "mlp",
        "seed": 0,
        "variant_params": config.architecture.model_dump(),
        "model_params": config.model.model_dump(),
        "state_dict": checkpoint.state_dict,
        "normalisation": list(checkpoint.normalisation),
        "best_epoch": 1,
        "epochs_run": 1,
        "parameters": 61530,
        "classes": [str(c) for c in range(10)],
        "history": history,
    }
    save_torch(tmp_path / "by-hand.pt", by_hand)
    assert path.read_bytes() == (tmp_path / "by-hand.pt").read_bytes()
    loaded, model = load_checkpoint(path, "cpu")
    assert loaded.variant_params == config.architecture and loaded.model_params == config.model
    assert loaded.normalisation == checkpoint.normalisation and loaded.history == history
    # raw images to probabilities, by hand: 2-pixel zero border, scaled to [0, 1], the training mean and std
    images = load_split(split_dir, "test")[0][:8]
    mean, std = checkpoint.normalisation
    x = (torch.nn.functional.pad(images.float() / 255, (2, 2, 2, 2)) - mean) / std
    with torch.no_grad():
        expected = torch.softmax(model(x.unsqueeze(1)), 1)
    assert torch.allclose(loaded.probabilities(model, images, "cpu"), expected, atol=1e-6)


def test_wide_history_has_the_mean_and_every_seed():
    histories = {
        0: [
            {
                "epoch": 1,
                "train_loss": 1.0,
                "train_acc": 0.5,
                "val_loss": 2.0,
                "val_acc": 0.4,
                "lr": 0.1,
            }
        ],
        3: [
            {
                "epoch": 1,
                "train_loss": 3.0,
                "train_acc": 0.7,
                "val_loss": 4.0,
                "val_acc": 0.6,
                "lr": 0.1,
            }
        ],
    }
    (row,) = wide_history(histories)
    assert row["val_acc"] == pytest.approx(0.5) and row["val_acc_seed3"] == 0.6 and row["lr_seed0"] == 0.1


def test_early_stopping_and_lr_on_plateau(split_dir):
    # an lr too small to move any float32 weight: the val loss never improves after epoch 1
    params = tiny_params(
        **{
            "train.epochs": 20,
            "train.lr": 1e-12,
            "train.early_stopping_patience": 3,
            "train.scheduler": "plateau",
            "train.scheduler_patience": 0,
        }
    )
    checkpoint, history = train_one(params, "vanilla", split_dir, 0)
    assert checkpoint.best_epoch == 1 and len(history) == 4
    # epoch 1 sets the best; each later epoch is a plateau that halves the next lr
    assert [h["lr"] for h in history] == [1e-12, 1e-12, 5e-13, 2.5e-13]


@pytest.mark.parametrize(
    "scheduler, lrs",
    [("step", [0.1, 0.1, 0.05, 0.05]), ("exponential", [0.1, 0.05, 0.025, 0.0125]), ("none", [0.1] * 4)],
)
def test_fixed_lr_schedules(split_dir, scheduler, lrs):
    params = tiny_params(
        **{
            "train.epochs": 4,
            "train.lr": 0.1,
            "train.scheduler": scheduler,
            "train.scheduler_step_size": 2,
            "train.early_stopping_patience": 10,
        }
    )
    _, history = train_one(params, "mlp", split_dir, 0)
    assert [h["lr"] for h in history] == pytest.approx(lrs)


@pytest.mark.parametrize("scheduler", ["onecycle", "cosine"])
def test_per_batch_schedules_follow_torch_and_end_near_zero(split_dir, scheduler):
    params = tiny_params(**{"train.epochs": 3, "train.lr": 0.1, "train.scheduler": scheduler})
    _, history = train_one(params, "mlp", split_dir, 0)
    # The oracle, by hand from PyTorch's documented formulas, at the first batch of each epoch (500 images
    # / 64 = 8 batches an epoch, 24 steps in all), not from pipeline.optim:
    steps, peak = 3 * 8, 0.1

    def cosine(start, end, pct):
        return end + (start - end) / 2 * (1 + math.cos(math.pi * pct))

    if scheduler == "cosine":  # CosineAnnealingLR(T_max=steps, eta_min=0)
        expected = [cosine(peak, 0, t / steps) for t in (0, 8, 16)]
        last = cosine(peak, 0, (steps - 1) / steps)
    else:  # OneCycleLR: from peak/25 up to peak until step pct_start*steps - 1, then down to peak/25/1e4
        start, low, rise = peak / 25, peak / 25 / 1e4, params.train.scheduler_warmup * steps - 1

        def one_cycle(t):
            return cosine(start, peak, t / rise) if t <= rise else cosine(peak, low, (t - rise) / (steps - 1 - rise))

        expected, last = [one_cycle(t) for t in (0, 8, 16)], one_cycle(steps - 1)
    assert [h["lr"] for h in history] == pytest.approx(expected)
    assert last < 0.01 * peak  # annealed to ~0 by the last batch


TORCH_OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop"}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimiser_gets_its_settings_and_learns(split_dir, name):
    lr = {"sgd": 0.05, "rmsprop": 0.001}.get(name, 0.003)  # a working step size for each on the tiny data
    params = tiny_params(**{"train.optimizer": name, "train.lr": lr, "train.momentum": 0.5, "train.epochs": 3})
    optimizer = make_optimizer(torch.nn.Linear(2, 2), params.train, 0.01)
    (group,) = optimizer.param_groups
    assert type(optimizer).__name__ == TORCH_OPTIMIZERS[name]
    assert group["lr"] == lr and group["weight_decay"] == 0.01
    assert group.get("momentum", 0.5) == 0.5  # sgd and rmsprop take it; adam's betas are their own
    _, history = train_one(params, "mlp", split_dir, 0)
    assert history[-1]["train_loss"] < history[0]["train_loss"] and max(h["val_acc"] for h in history) > 0.3


def test_diverging_loss_is_a_clear_error(split_dir):
    with pytest.raises(
        PipelineError, match=r"vanilla/seed0: the loss diverged .* lower train.lr \(now 1000000000000.0\)"
    ):
        train_one(tiny_params(**{"train.lr": 1.0e12}), "vanilla", split_dir, 0)


def test_a_run_that_explodes_or_stays_at_chance_is_diverged_not_a_result(split_dir):
    """Issue 32's `-S train.lr=1000`: one seed went NaN, another ended at chance with a train loss of 1e28 and
    was scored. Now each seed is named diverged (its loss) or as having learned nothing (its accuracy)."""
    params = tiny_params(**{"train.lr": 1000.0, "train.epochs": 3})
    said = []
    for seed in range(4):
        with pytest.raises(PipelineError) as failure:
            train_one(params, "vanilla", split_dir, seed)
        said.append(str(failure.value))
    kinds = r"the loss diverged \((not finite|train loss [0-9.e+]+)\) in epoch \d|the run learned nothing"
    assert all(re.match(rf"vanilla/seed\d: ({kinds}).*lower train.lr \(now 1000.0\)", line) for line in said), said
    # a rate that neither explodes nor learns: at 1.5 these two seeds stay at chance above a guess's loss
    for seed in (2, 3):
        with pytest.raises(PipelineError) as failure:
            train_one(tiny_params(**{"train.lr": 1.5, "train.epochs": 3}), "vanilla", split_dir, seed)
        said.append(str(failure.value))
    printed = "".join(f"error: {line}\n" for line in said)  # as the stages print them
    documented("the loss diverged (not finite)", printed)
    documented("the loss diverged (train loss", printed)
    documented("the run learned nothing", printed)
    # the same data and epochs at the default learning rate is a result
    _, history = train_one(tiny_params(**{"train.epochs": 3}), "vanilla", split_dir, 0)
    assert max(h["val_acc"] for h in history) > 0.3


def test_same_seed_gives_identical_weights_and_metrics(split_dir):
    params = tiny_params(**{"train.hflip": True, "train.shift": 1})
    runs = [train_one(params, "dropout", split_dir, 0) for _ in range(2)]
    (a, history_a), (b, history_b) = runs
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert history_a == history_b and "seconds" not in history_a[0]  # timings go to MLflow, never the history
    other, _ = train_one(params, "dropout", split_dir, 1)
    assert not torch.equal(other.state_dict["conv1.weight"], a.state_dict["conv1.weight"])


def test_how_many_train_stages_run_at_once_comes_from_the_machine(monkeypatch, tmp_path):
    from scripts.repro import workers

    def params(threads, **per_variant):
        written = shrunk_params("unused", **{"train.threads": threads})
        for name, t in per_variant.items():
            written["variants"][name] = {**written["variants"]["vanilla"], "train": {"threads": t}}
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(written))
        return tmp_path

    monkeypatch.delenv("PIPELINE_WORKERS", raising=False)
    cores = len(os.sched_getaffinity(0))
    assert workers(params(1)) == cores
    assert workers(params(1, big=cores)) == 1  # the variant with the most threads sets the share
    monkeypatch.setenv("PIPELINE_WORKERS", "5")
    assert workers(params(1)) == 5
    monkeypatch.setenv("PIPELINE_WORKERS", "two")
    with pytest.raises(SystemExit, match="PIPELINE_WORKERS must be a whole number >= 1, got 'two'"):
        workers(params(1))


def test_a_damaged_run_config_is_one_line_naming_the_way_back(tmp_path, monkeypatch):
    from pipeline.errors import PipelineError
    from pipeline.train import load_config

    monkeypatch.chdir(tmp_path)
    path = Path("data/config/vanilla.json")
    path.parent.mkdir(parents=True)
    path.write_text('{"variant": "vanilla"}')  # what an older check wrote, or an edit
    with pytest.raises(PipelineError) as error:
        load_config(path)
    documented("is not a run config", error.value)
