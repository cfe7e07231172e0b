"""The names params.yaml accepts where it picks an implementation: one tuple per choice.

Here, not derived from the dicts that implement them (models.ACTIVATIONS,
optim.OPTIMIZERS, ...), so that the params schema imports no model, kernel or
optimiser code: every stage imports the schema, and a change to a kernel must
re-run training, not `download` and `split`. tests/test_params.py checks that
each tuple names exactly the keys of the dict that implements it.
"""

DATASETS = ("FashionMNIST", "MNIST", "KMNIST", "QMNIST")  # torchvision.datasets classes: stage download
ACTIVATIONS = ("relu", "tanh", "sigmoid", "selu", "leaky_relu", "elu", "prelu")  # models.ACTIVATIONS
ARCHITECTURES = ("lenet5", "mlp", "cnn")  # models.ARCHITECTURES
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")  # optim.OPTIMIZERS
SCHEDULERS = ("onecycle", "cosine", "plateau", "step", "exponential", "none")  # optim.SCHEDULERS
