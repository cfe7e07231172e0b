"""LeNet-5 and an MLP of about the same size, built from a variant's features.

Variants are data: build_model() looks the architecture and activation up in
the dicts below; batch norm and dropout are switches every builder honours.
"""
from torch import nn

from pipeline.pool import MaxPool2x2

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "selu": nn.SELU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "prelu": nn.PReLU,
}


def _block(layer, norm, activation, dropout):
    """layer -> [batch norm] -> activation -> [dropout]."""
    parts = [layer]
    if norm is not None:
        parts.append(norm)
    parts.append(ACTIVATIONS[activation]())
    if dropout > 0:
        parts.append(nn.Dropout(dropout))
    return parts


def _conv_block(in_channels, out_channels, batchnorm, activation, fast_pool):
    """conv 5x5 -> [batch norm] -> activation -> 2x2 max pool.

    fast_pool: the pool (and a ReLU before it) as pipeline.pool's kernel, the
    same function as the textbook layers, computed ~3x faster on the CPU.
    """
    parts = [nn.Conv2d(in_channels, out_channels, 5)]
    if batchnorm:
        parts.append(nn.BatchNorm2d(out_channels))
    if fast_pool and activation == "relu":
        return parts + [MaxPool2x2(relu=True)]
    parts.append(ACTIVATIONS[activation]())
    return parts + [MaxPool2x2(relu=False) if fast_pool else nn.MaxPool2d(2)]


def build_lenet5(activation, batchnorm, dropout, hidden=None, fast_pool=True):
    """LeNet-5 on 32x32 input (LeCun et al. 1998), with max pooling.

    conv 6@5x5 -> pool -> conv 16@5x5 -> pool -> fc 120 -> fc 84 -> fc 10.
    Dropout, when on, follows the two hidden fully connected layers.
    fast_pool=False builds it from PyTorch's textbook layers only: the oracle
    in the tests and the typical model in benchmarks/epoch_speed.py.
    """
    bn1d = (lambda c: nn.BatchNorm1d(c)) if batchnorm else (lambda c: None)
    return nn.Sequential(
        *_conv_block(1, 6, batchnorm, activation, fast_pool),
        *_conv_block(6, 16, batchnorm, activation, fast_pool),
        nn.Flatten(),
        *_block(nn.Linear(16 * 5 * 5, 120), bn1d(120), activation, dropout),
        *_block(nn.Linear(120, 84), bn1d(84), activation, dropout),
        nn.Linear(84, 10),
    )


def build_mlp(activation, batchnorm, dropout, hidden):
    """A fully connected net on the same 32x32 input; `hidden` sets its size."""
    layers, width = [nn.Flatten()], 32 * 32
    for size in hidden:
        norm = nn.BatchNorm1d(size) if batchnorm else None
        layers += _block(nn.Linear(width, size), norm, activation, dropout)
        width = size
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


ARCHITECTURES = {"lenet5": build_lenet5, "mlp": build_mlp}


def build_model(variant, model_params):
    """The network for one variant of params.yaml (already validated)."""
    return ARCHITECTURES[variant["arch"]](
        activation=model_params["activation"],
        batchnorm=variant["batchnorm"],
        dropout=model_params["dropout"] if variant["dropout"] else 0.0,
        hidden=model_params["mlp_hidden"],
    )


def count_parameters(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
