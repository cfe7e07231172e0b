"""LeNet-5, an MLP of about the same size and a family of small CNNs, built from a variant's features.

Variants are data: build_model() looks the architecture and activation up in
the dicts below; batch norm (on or off) and dropout (a rate) all three honour, and a
`cnn` variant's shape (conv layers, width, kernel, residual block) is a map of
its own in params.yaml.
"""

from torch import nn

from pipeline.norm import BatchNorm2d
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


def _norm(batchnorm, norm, channels):
    return norm(channels) if batchnorm else nn.Identity()


class LeNet5(nn.Module):
    """LeNet-5 on 32x32 input (LeCun et al. 1998), with max pooling.

    conv 6@5x5 -> pool -> conv 16@5x5 -> pool -> fc 120 -> fc 84 -> fc 10.
    Batch norm, when on, follows each conv and hidden fc layer; dropout
    follows the two hidden fc layers. fast=True runs a ReLU and the pool after
    it as pipeline.pool's kernel, and the conv layers' batch norm as
    pipeline.norm's (the same functions, faster on the CPU); since ReLU has
    no weights, both builds have the same state_dict keys, and a checkpoint
    loads into either. fast=False is the textbook model: the oracle in the
    tests and the typical model in benchmarks/epoch_speed.py.
    """

    def __init__(self, activation="relu", batchnorm=False, dropout=0.0, fast=True):
        super().__init__()
        fused = fast and activation == "relu"
        norm2d = BatchNorm2d if fast else nn.BatchNorm2d
        # Layers are made in the order of the forward pass: it fixes which
        # random numbers initialise which weights, so a seed means one model.
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.bn1 = _norm(batchnorm, norm2d, 6)
        self.act1 = nn.Identity() if fused else ACTIVATIONS[activation]()
        self.pool1 = MaxPool2x2(relu=fused) if fast else nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.bn2 = _norm(batchnorm, norm2d, 16)
        self.act2 = nn.Identity() if fused else ACTIVATIONS[activation]()
        self.pool2 = MaxPool2x2(relu=fused) if fast else nn.MaxPool2d(2)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.bn3 = _norm(batchnorm, nn.BatchNorm1d, 120)
        self.act3 = ACTIVATIONS[activation]()
        self.fc2 = nn.Linear(120, 84)
        self.bn4 = _norm(batchnorm, nn.BatchNorm1d, 84)
        self.act4 = ACTIVATIONS[activation]()
        self.fc3 = nn.Linear(84, 10)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x):
        x = self.pool1(self.act1(self.bn1(self.conv1(x))))
        x = self.pool2(self.act2(self.bn2(self.conv2(x))))
        x = x.flatten(1)
        x = self.dropout(self.act3(self.bn3(self.fc1(x))))
        x = self.dropout(self.act4(self.bn4(self.fc2(x))))
        return self.fc3(x)


class MLP(nn.Module):
    """Fully connected layers on the same 32x32 input; `hidden` sets their widths."""

    def __init__(self, activation="relu", batchnorm=False, dropout=0.0, hidden=(58, 30)):
        super().__init__()
        widths = [32 * 32, *hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.norms = nn.ModuleList(_norm(batchnorm, nn.BatchNorm1d, b) for b in hidden)
        self.acts = nn.ModuleList(ACTIVATIONS[activation]() for _ in hidden)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.out = nn.Linear(widths[-1], 10)

    def forward(self, x):
        x = x.flatten(1)
        for linear, norm, act in zip(self.hidden, self.norms, self.acts):
            x = self.dropout(act(norm(linear(x))))
        return self.out(x)


class ResidualBlock(nn.Module):
    """Two same-width convs with an identity shortcut (He et al. 2016, fig. 2): relu(x + F(x))."""

    def __init__(self, channels, kernel, activation, batchnorm, norm2d):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel, padding=kernel // 2)
        self.bn1 = _norm(batchnorm, norm2d, channels)
        self.act1 = ACTIVATIONS[activation]()
        self.conv2 = nn.Conv2d(channels, channels, kernel, padding=kernel // 2)
        self.bn2 = _norm(batchnorm, norm2d, channels)
        self.act2 = ACTIVATIONS[activation]()

    def forward(self, x):
        return self.act2(x + self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))))


class SmallCNN(nn.Module):
    """The small CNNs of the Fashion-MNIST study in issue 12, on the 28x28 image.

    `layers` blocks of conv k x k ("same" padding; width, then doubling per
    block) -> batch norm -> activation -> 2x2 max pool; then, optionally, a
    residual block at the last width; dropout; one linear classifier. With
    layers=2, width=32, kernel=3 that is 50,378 parameters, the study's "50K".
    The input is LeNet's padded 32x32 tensor: the forward crops the 2-pixel
    border back off, so a shift augmentation becomes a translation with zeros
    coming in, and the model sees what the study's did.
    """

    def __init__(self, activation, batchnorm, dropout, layers, width, kernel, residual, fast=True):
        super().__init__()
        fused = fast and activation == "relu"
        norm2d = BatchNorm2d if fast else nn.BatchNorm2d
        blocks, channels, size = [], 1, 28
        for i in range(layers):
            out = width * 2**i
            blocks += [
                nn.Conv2d(channels, out, kernel, padding=kernel // 2),
                _norm(batchnorm, norm2d, out),
                nn.Identity() if fused else ACTIVATIONS[activation](),
                MaxPool2x2(relu=fused) if fast else nn.MaxPool2d(2),
            ]
            channels, size = out, size // 2
        self.features = nn.Sequential(*blocks)
        self.residual = ResidualBlock(channels, kernel, activation, batchnorm, norm2d) if residual else nn.Identity()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(channels * size * size, 10)

    def forward(self, x):
        x = x[:, :, 2:-2, 2:-2]  # the 28x28 image inside the 32x32 input (data.to_model_input)
        x = self.residual(self.features(x))
        return self.classifier(self.dropout(x.flatten(1)))


ARCHITECTURES = {
    "lenet5": lambda activation, batchnorm, dropout, hidden, cnn: LeNet5(activation, batchnorm, dropout),
    "mlp": lambda activation, batchnorm, dropout, hidden, cnn: MLP(activation, batchnorm, dropout, hidden),
    "cnn": lambda activation, batchnorm, dropout, hidden, cnn: SmallCNN(
        activation, batchnorm, dropout, cnn.layers, cnn.width, cnn.kernel, cnn.residual
    ),
}


def build_model(architecture, model_params):
    """The network a run config describes: its architecture (params.Architecture) and model values (ModelRead)."""
    return ARCHITECTURES[architecture.arch](
        activation=model_params.activation,
        batchnorm=architecture.batchnorm,
        dropout=model_params.dropout if architecture.dropout else 0.0,
        hidden=model_params.mlp_hidden,
        cnn=architecture.cnn,
    )


def count_parameters(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
