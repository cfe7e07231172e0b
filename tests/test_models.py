"""Models against oracles: the hand-counted LeNet-5 size, output shapes, the MLP's size."""

import typing

import pytest
import torch
from helpers import ROOT, build

from pipeline.models import ACTIVATIONS, LeNet5, SmallCNN, count_parameters
from pipeline.params import Model, load_params

PARAMS = load_params(ROOT / "params.yaml")

# conv1 6*(5*5*1)+6, conv2 16*(5*5*6)+16, fc 400*120+120, 120*84+84, 84*10+10
LENET5_HAND_COUNT = 156 + 2416 + 48120 + 10164 + 850


def test_lenet5_parameter_count_matches_hand_count():
    assert LENET5_HAND_COUNT == 61706
    assert count_parameters(LeNet5("relu", batchnorm=False, dropout=0.0)) == LENET5_HAND_COUNT


def test_batchnorm_adds_two_parameters_per_channel():
    extra = 2 * (6 + 16 + 120 + 84)
    assert count_parameters(LeNet5("relu", batchnorm=True, dropout=0.0)) == LENET5_HAND_COUNT + extra


# conv 3x3 (weights + bias) and batch norm (2 per channel) per block, then the classifier on the pooled map
CNN2_HAND_COUNT = (9 * 1 * 32 + 32) + 64 + (9 * 32 * 64 + 64) + 128 + (64 * 7 * 7 * 10 + 10)
# 4 blocks: 28 -> 14 -> 7 -> 3 -> 1; a residual block adds two 256->256 3x3 convs and their batch norms
CNN4_HAND_COUNT = 320 + 64 + 18496 + 128 + (9 * 64 * 128 + 128) + 256 + (9 * 128 * 256 + 256) + 512 + (256 * 10 + 10)
RESIDUAL_256 = 2 * (9 * 256 * 256 + 256 + 512)


def test_small_cnn_parameter_counts_match_hand_counts():
    assert CNN2_HAND_COUNT == 50378  # the study's "50K" 2-conv model
    assert count_parameters(SmallCNN("relu", True, 0.2, layers=2, width=32, kernel=3, residual=False)) == 50378
    assert count_parameters(SmallCNN("relu", True, 0.2, 4, 32, 3, False)) == CNN4_HAND_COUNT == 391370
    assert count_parameters(SmallCNN("relu", True, 0.2, 4, 32, 3, True)) == CNN4_HAND_COUNT + RESIDUAL_256
    # no batch norm: 2 per channel less; kernel 5: 25 weights per channel pair instead of 9
    assert count_parameters(SmallCNN("relu", False, 0.0, 2, 32, 5, False)) == (
        (25 * 32 + 32) + (25 * 32 * 64 + 64) + (64 * 7 * 7 * 10 + 10)
    )


def test_small_cnn_sees_the_28x28_image_and_matches_the_textbook_build():
    """The forward crops the 2-pixel border: the border cannot change the output. The fused
    ReLU + pool kernel gives the textbook nn.ReLU + nn.MaxPool2d model's output, bit for bit."""
    torch.manual_seed(0)
    fast = SmallCNN("relu", True, 0.0, 3, 8, 3, True).eval()
    textbook = SmallCNN("relu", True, 0.0, 3, 8, 3, True, fast=False).eval()
    textbook.load_state_dict(fast.state_dict())
    x = torch.randn(4, 1, 32, 32)
    bordered = x.clone()
    bordered[:, :, :2] = 7.0
    assert torch.equal(fast(x), fast(bordered))
    assert torch.equal(fast(x), textbook(x))


def test_mlp_is_within_one_percent_of_lenet5():
    mlp = build(PARAMS, "mlp")
    assert abs(count_parameters(mlp) - LENET5_HAND_COUNT) / LENET5_HAND_COUNT < 0.01


@pytest.mark.parametrize("name", list(PARAMS.variants))
def test_every_variant_maps_a_batch_to_ten_logits(name):
    model = build(PARAMS, name).eval()
    assert model(torch.zeros(3, 1, 32, 32)).shape == (3, 10)


def test_params_accepts_exactly_the_activations_models_implements():
    accepted = set(typing.get_args(Model.model_fields["activation"].annotation))
    assert accepted == set(ACTIVATIONS)
    for name in accepted:
        assert LeNet5(name, batchnorm=False, dropout=0.0)(torch.zeros(1, 1, 32, 32)).shape == (1, 10)


def test_dropout_variant_has_dropout_layers_at_the_configured_rate():
    model = build(PARAMS, "dropout")
    rates = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert rates == [PARAMS.model_for("dropout").dropout]  # one module, applied after fc1 and fc2
    vanilla = build(PARAMS, "vanilla")
    assert not [m for m in vanilla.modules() if isinstance(m, torch.nn.Dropout)]


@pytest.mark.parametrize("batchnorm, dropout", [(False, 0.0), (True, 0.0), (False, 0.3)])
def test_lenet5_is_the_textbook_layer_stack(batchnorm, dropout):
    """The oracle: LeNet-5 written as a plain nn.Sequential; same seed, same weights, same logits."""
    nn = torch.nn
    bn2, bn1 = (nn.BatchNorm2d, nn.BatchNorm1d) if batchnorm else (lambda c: nn.Identity(),) * 2
    torch.manual_seed(0)
    stack = nn.Sequential(
        nn.Conv2d(1, 6, 5),
        bn2(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        bn2(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120),
        bn1(120),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(120, 84),
        bn1(84),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(84, 10),
    ).eval()
    torch.manual_seed(0)
    model = LeNet5("relu", batchnorm, dropout, fast=False).eval()
    assert all(torch.equal(a, b) for a, b in zip(stack.parameters(), model.parameters(), strict=True))
    x = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    assert torch.equal(stack(x), model(x))
    assert [k for k in model.state_dict() if k.endswith("weight")][:2] == [
        "conv1.weight",
        "bn1.weight" if batchnorm else "conv2.weight",
    ]
