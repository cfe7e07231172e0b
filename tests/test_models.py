"""Models against oracles: the hand-counted LeNet-5 size, output shapes, the MLP's size."""
import pytest
import torch

from conftest import ROOT
from pipeline.models import ACTIVATIONS, build_lenet5, build_model, count_parameters
from pipeline.params import ACTIVATIONS as ACTIVATION_NAMES
from pipeline.params import load_params

PARAMS = load_params(ROOT / "params.yaml")

# conv1 6*(5*5*1)+6, conv2 16*(5*5*6)+16, fc 400*120+120, 120*84+84, 84*10+10
LENET5_HAND_COUNT = 156 + 2416 + 48120 + 10164 + 850


def test_lenet5_parameter_count_matches_hand_count():
    assert LENET5_HAND_COUNT == 61706
    assert count_parameters(build_lenet5("relu", batchnorm=False, dropout=0.0)) == LENET5_HAND_COUNT


def test_batchnorm_adds_two_parameters_per_channel():
    extra = 2 * (6 + 16 + 120 + 84)
    assert count_parameters(build_lenet5("relu", batchnorm=True, dropout=0.0)) == LENET5_HAND_COUNT + extra


def test_mlp_is_within_one_percent_of_lenet5():
    mlp = build_model(PARAMS["variants"]["mlp"], PARAMS["model"])
    assert abs(count_parameters(mlp) - LENET5_HAND_COUNT) / LENET5_HAND_COUNT < 0.01


@pytest.mark.parametrize("name", list(PARAMS["variants"]))
def test_every_variant_maps_a_batch_to_ten_logits(name):
    model = build_model(PARAMS["variants"][name], PARAMS["model"]).eval()
    assert model(torch.zeros(3, 1, 32, 32)).shape == (3, 10)


def test_every_activation_name_has_a_module():
    assert set(ACTIVATIONS) == set(ACTIVATION_NAMES)


def test_dropout_variant_has_dropout_layers_at_the_configured_rate():
    model = build_model(PARAMS["variants"]["dropout"], PARAMS["model"])
    rates = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert rates == [PARAMS["model"]["dropout"]] * 2
    vanilla = build_model(PARAMS["variants"]["vanilla"], PARAMS["model"])
    assert not [m for m in vanilla.modules() if isinstance(m, torch.nn.Dropout)]
