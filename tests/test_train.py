"""Training on tiny synthetic data: augmentation against torch's own ops, learning, determinism."""
import pytest
import torch

from conftest import shrunk_params, synthetic_images
from pipeline.engine import random_shift
from pipeline.errors import PipelineError
from pipeline.evaluate import evaluate_variant
from pipeline.models import build_model
from pipeline.params import validate
from pipeline.train import train_variant


def test_random_shift_equals_torch_roll_per_image():
    x = torch.zeros(16, 1, 32, 32)
    x[:, :, 2:30, 2:30] = torch.rand(16, 1, 28, 28)
    shifted = random_shift(x, 2, torch.Generator().manual_seed(3))
    dy, dx = torch.randint(-2, 3, (2, 16), generator=torch.Generator().manual_seed(3))
    for i in range(16):
        assert torch.equal(shifted[i], torch.roll(x[i], (int(dy[i]), int(dx[i])), dims=(1, 2)))
    assert (dy != 0).any() and (dx != 0).any()


def tiny_params(**overrides):
    params = shrunk_params("unused", **{"tracking.enabled": False, **overrides})
    return validate(params)


def test_training_learns_and_keeps_the_best_val_loss_epoch(split_dir):
    params = tiny_params(**{"train.epochs": 3, "train.hflip": True, "train.shift": 2})
    checkpoint, history = train_variant(params, "batchnorm", split_dir)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    best = min(history, key=lambda h: h["val_loss"])
    assert checkpoint["best_epoch"] == best["epoch"]
    model = build_model(checkpoint["variant_params"], checkpoint["model_params"])
    model.load_state_dict(checkpoint["state_dict"])
    metrics, confusion, per_class = evaluate_variant(checkpoint, model, split_dir, history, 64, 2, "cpu")
    assert metrics["val_loss"] == pytest.approx(best["val_loss"], rel=1e-5)
    assert metrics["test_acc"] > 0.3 and len(confusion) == 200 and len(per_class) == 10


def test_early_stopping_and_lr_on_plateau(split_dir):
    # an lr too small to move any float32 weight: the val loss never improves after epoch 1
    params = tiny_params(**{"train.epochs": 20, "train.lr": 1e-12, "train.early_stopping_patience": 3,
                            "train.scheduler_patience": 0})
    checkpoint, history = train_variant(params, "vanilla", split_dir)
    assert checkpoint["best_epoch"] == 1 and len(history) == 4
    # epoch 1 sets the best; each later epoch is a plateau that halves the next lr
    assert [h["lr"] for h in history] == [1e-12, 1e-12, 5e-13, 2.5e-13]


@pytest.mark.parametrize("scheduler, lrs", [("step", [0.1, 0.1, 0.05, 0.05]),
                                            ("exponential", [0.1, 0.05, 0.025, 0.0125]),
                                            ("none", [0.1] * 4)])
def test_fixed_lr_schedules(split_dir, scheduler, lrs):
    params = tiny_params(**{"train.epochs": 4, "train.lr": 0.1, "train.scheduler": scheduler,
                            "train.scheduler_step_size": 2, "train.early_stopping_patience": 10})
    _, history = train_variant(params, "mlp", split_dir)
    assert [h["lr"] for h in history] == pytest.approx(lrs)


def test_diverging_loss_is_a_clear_error(split_dir):
    with pytest.raises(PipelineError, match=r"vanilla: the loss diverged .* lower train.lr \(now 1000000000000.0\)"):
        train_variant(tiny_params(**{"train.lr": 1.0e+12}), "vanilla", split_dir)


def test_same_seed_gives_identical_weights_and_metrics(split_dir):
    params = tiny_params(**{"train.hflip": True, "train.shift": 1})
    runs = [train_variant(params, "dropout", split_dir) for _ in range(2)]
    (a, history_a), (b, history_b) = runs
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    drop_time = [{k: v for k, v in h.items() if k != "seconds"} for h in history_a], \
                [{k: v for k, v in h.items() if k != "seconds"} for h in history_b]
    assert drop_time[0] == drop_time[1]
    other, _ = train_variant(validate({**params, "seed": 1}), "dropout", split_dir)
    assert not torch.equal(other["state_dict"]["0.weight"], a["state_dict"]["0.weight"])
