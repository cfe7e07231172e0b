"""Load params.yaml and check every key before any work is done.

params.yaml is the single source of truth: this module holds no default values,
only the schema (type and valid range of each key). A missing, unknown or
ill-typed key, or a value out of range, raises ParamsError with one line that
names the key and says what would be valid.
"""

import re
from pathlib import Path

import yaml

from pipeline.errors import PipelineError

DATASETS = ("FashionMNIST", "MNIST", "KMNIST", "QMNIST")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "selu", "leaky_relu", "elu", "prelu")
ARCHITECTURES = ("lenet5", "mlp")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
# onecycle and cosine step per batch and end at ~0 lr: a run ends trained, not cut off.
SCHEDULERS = ("onecycle", "cosine", "plateau", "step", "exponential", "none")
# Variant names become DVC stage names and `-S variants.<name>.x=...` keys,
# where Hydra's override grammar allows no '-'.
VARIANT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ParamsError(PipelineError):
    """A params.yaml key is missing, unknown, ill-typed or out of range."""


def _number(key, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        hint = " (YAML reads 5e-4 as text: write 5.0e-4)" if isinstance(value, str) else ""
        raise ParamsError(f"{key} must be a number, got {value!r}{hint}")
    return float(value)


def Float(low=None, high=None, low_open=False, high_open=False):
    def check(key, value):
        x = _number(key, value)
        too_low = low is not None and (x <= low if low_open else x < low)
        too_high = high is not None and (x >= high if high_open else x > high)
        if too_low or too_high:
            lo = "" if low is None else f"{'(' if low_open else '['}{low}"
            hi = "" if high is None else f"{high}{')' if high_open else ']'}"
            raise ParamsError(f"{key} must be in {lo or '(-inf'}, {hi or 'inf)'}, got {value!r}")
        return x

    return check


def Int(low, high=None):
    def check(key, value):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{key} must be an integer, got {value!r}")
        if value < low or (high is not None and value > high):
            valid = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise ParamsError(f"{key} must be {valid}, got {value!r}")
        return value

    return check


def Bool(key, value):
    if not isinstance(value, bool):
        raise ParamsError(f"{key} must be true or false, got {value!r}")
    return value


def Str(key, value):
    if not isinstance(value, str) or not value:
        raise ParamsError(f"{key} must be a non-empty string, got {value!r}")
    return value


def Choice(*options):
    def check(key, value):
        if value not in options:
            raise ParamsError(f"{key} must be one of {', '.join(options)}; got {value!r}")
        return value

    return check


def ListOf(item, unique=False):
    def check(key, value):
        if not isinstance(value, list) or not value:
            raise ParamsError(f"{key} must be a non-empty list, got {value!r}")
        items = [item(f"{key}[{i}]", v) for i, v in enumerate(value)]
        repeated = sorted({v for v in items if items.count(v) > 1})
        if unique and repeated:
            raise ParamsError(
                f"{key} must list each value once; {repeated[0]!r} appears "
                f"{items.count(repeated[0])} times in {value!r}"
            )
        return items

    return check


VARIANT = {
    "arch": Choice(*ARCHITECTURES),
    "batchnorm": Bool,
    "dropout": Bool,
    "weight_decay": Bool,
    # The one params key (or section) beyond the shared ones that this
    # variant's train stage depends on; see dvc.yaml and keys_read_by().
    "uses": Str,
}

SCHEMA = {
    "data": {
        "dataset": Choice(*DATASETS),
        "split_seed": Int(0),
        # per dataset: local folders, http(s) base URLs or `torchvision`
        "sources": {name: ListOf(Str) for name in DATASETS},
        "verify_checksums": Bool,
        "val_size": Int(1),
    },
    "model": {
        "activation": Choice(*ACTIVATIONS),
        "dropout": Float(0, 1, high_open=True),
        "weight_decay": Float(0),
        "mlp_hidden": ListOf(Int(1)),
    },
    "train": {
        "seeds": ListOf(Int(0), unique=True),
        "workers": Int(1),
        "threads": Int(1),
        "optimizer": Choice(*OPTIMIZERS),
        "lr": Float(0, low_open=True),
        "momentum": Float(0, 1, high_open=True),
        "batch_size": Int(1),
        "epochs": Int(1),
        "hflip": Bool,
        "shift": Int(0, 2),  # at most the 2-pixel zero border: see engine.random_shift
        "scheduler": Choice(*SCHEDULERS),
        "scheduler_warmup": Float(0, 1, high_open=True),
        "scheduler_factor": Float(0, 1, low_open=True, high_open=True),
        "scheduler_patience": Int(0),
        "scheduler_step_size": Int(1),
        "early_stopping_patience": Int(1),
    },
    "evaluate": {
        "batch_size": Int(1),
        "threads": Int(1),
        "latency_repeats": Int(1),
    },
    "report": {
        "baseline": Str,  # a variant name: checked in validate()
        "confidence": Float(0, 1, low_open=True, high_open=True),
        "still_improving": Float(0, 1),
    },
    "tracking": {
        "enabled": Bool,
        "experiment": Str,
    },
    "variants": "variants",  # a map of name -> VARIANT, checked below
}


def _check_section(prefix, schema, values):
    if not isinstance(values, dict):
        raise ParamsError(f"{prefix or 'params'} must be a mapping, got {values!r}")
    unknown = sorted(set(values) - set(schema))
    if unknown:
        raise ParamsError(f"unknown key {prefix}{unknown[0]}; valid keys here: {', '.join(schema)}")
    checked = {}
    for name, rule in schema.items():
        key = f"{prefix}{name}"
        if name not in values:
            raise ParamsError(f"missing key {key}")
        if isinstance(rule, dict):
            checked[name] = _check_section(f"{key}.", rule, values[name])
        elif rule == "variants":
            checked[name] = _check_variants(values[name])
        else:
            checked[name] = rule(key, values[name])
    return checked


def keys_read_by(variant):
    """The model params keys a variant's training reads (besides train.*)."""
    keys = ["model.activation"]
    if variant["dropout"]:
        keys.append("model.dropout")
    if variant["weight_decay"]:
        keys.append("model.weight_decay")
    if variant["arch"] == "mlp":
        keys.append("model.mlp_hidden")
    return keys


def _check_variants(variants):
    if not isinstance(variants, dict) or not variants:
        raise ParamsError(f"variants must be a non-empty mapping of name -> variant, got {variants!r}")
    checked = {}
    for name, variant in variants.items():
        if not VARIANT_NAME.match(str(name)):
            raise ParamsError(f"variants.{name}: a name may hold only letters, digits and _ (no -)")
        checked[name] = _check_section(f"variants.{name}.", VARIANT, variant)
        uses = checked[name]["uses"]
        for key in keys_read_by(checked[name]):
            covered = key == uses or key.startswith(uses + ".") or key == "model.activation"
            if not covered:
                raise ParamsError(
                    f"variants.{name}.uses is {uses!r} but the variant reads {key}: "
                    f"set uses to {key} (or to 'model' when it reads several model keys)"
                )
    return checked


def validate(params):
    """Return params checked against SCHEMA; raise ParamsError otherwise."""
    checked = _check_section("", SCHEMA, params)
    baseline = checked["report"]["baseline"]
    if baseline not in checked["variants"]:
        raise ParamsError(f"report.baseline must name a variant ({', '.join(checked['variants'])}); got {baseline!r}")
    return checked


def load_params(path="params.yaml"):
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"params file {path} not found") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    return validate(raw)


def variant_params(params, name):
    if name not in params["variants"]:
        raise ParamsError(f"unknown variant {name!r}; params.yaml defines {', '.join(params['variants'])}")
    return params["variants"][name]
