"""params.yaml validation: the real file passes; each kind of mistake names its key."""

import copy

import pytest
import yaml
from documented import documented
from helpers import ROOT, train_cmd

from pipeline.params import ParamsError, load_params, validate

REAL = yaml.safe_load((ROOT / "params.yaml").read_text())


def test_real_params_file_is_valid():
    params = load_params(ROOT / "params.yaml")
    assert set(params.variants) >= {"vanilla", "batchnorm", "dropout", "weight_decay", "mlp"}


def broken(path, value):
    params = copy.deepcopy(REAL)
    *parents, last = path
    node = params
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return params


DELETE = object()
CNN = {"layers": 2, "width": 32, "kernel": 3, "residual": False}
REAL["variants"]["cnn"] = {**REAL["variants"]["vanilla"], "arch": "cnn", "cnn": CNN}


@pytest.mark.parametrize(
    "path, value, message",
    [
        (("train", "lr"), DELETE, "missing key train.lr"),
        (("train", "lrr"), 0.1, "unknown key train.lrr"),
        (("train", "lr"), 0.0, "train.lr must be > 0, got 0.0"),
        (("train", "lr"), -1, "train.lr must be > 0, got -1"),
        (("train", "lr"), "5e-4", "train.lr must be a number, got '5e-4'"),
        (("train", "epochs"), 2.5, "train.epochs must be an integer"),
        (("train", "epochs"), True, "train.epochs must be an integer"),
        (("model", "dropout"), 1.0, "model.dropout must be < 1, got 1.0"),
        (("model", "activation"), "banana", "model.activation must be one of relu, tanh"),
        (("train", "optimizer"), "lbfgs", "train.optimizer must be one of sgd, adam, adamw, rmsprop"),
        (("train", "scheduler"), "cyclic", "train.scheduler must be one of onecycle, cosine, plateau"),
        (("train", "seeds"), [], "train.seeds must not be empty, got []"),
        (("train", "seeds"), [0, 1, 1], "train.seeds must list each value once; 1 appears 2 times in [0, 1, 1]"),
        (("train", "seeds"), [0, -1], "train.seeds[1] must be >= 0, got -1"),
        (
            ("train", "seeds"),
            [99999999999999999999],
            "train.seeds[0] must be <= 9223372036854775807, got 99999999999999999999",
        ),
        (("train", "seeds"), 3, "train.seeds must be a list, got 3"),
        (("report", "baseline"), "lenet", "report.baseline must name a variant (vanilla, batchnorm"),
        (("report", "confidence"), 1.0, "report.confidence must be < 1, got 1.0"),
        (("data", "split_seed"), DELETE, "missing key data.split_seed"),
        (("data", "dataset"), "CIFAR10", "data.dataset must be one of FashionMNIST"),
        (("variants", "vanilla", "arch"), "resnet", "variants.vanilla.arch must be one of lenet5, mlp, cnn"),
        (("variants", "vanilla", "colour"), "red", "unknown key variants.vanilla.colour"),
        (("variants", "my-variant"), dict(REAL["variants"]["vanilla"]), "variants.my-variant: a name"),
        (("variants", "vanilla", "train"), {"seeds": [5]}, "unknown key variants.vanilla.train.seeds; valid keys"),
        (("report", "looks"), [5, 3], "report.looks must be seed counts in increasing order, got [5, 3]"),
        (("report", "looks"), [1, 3], "report.looks[0] must be >= 2, got 1"),
        (("surprise",), 1, "unknown key surprise"),
        (("train", "erase"), 1.5, "train.erase must be <= 1, got 1.5"),
        (("variants", "vanilla", "train"), {"hflp": True}, "unknown key variants.vanilla.train.hflp; valid keys"),
        (("variants", "vanilla", "train"), {"lr": 0}, "variants.vanilla.train.lr must be > 0, got 0"),
        (("variants", "vanilla", "train"), {"hflip": "yes"}, "variants.vanilla.train.hflip must be true or false"),
        (("variants", "batchnorm", "train"), {"batch_size": 1}, "train.batch_size must be >= 2 for variant batchnorm"),
        (("variants", "vanilla", "arch"), "cnn", "variants.vanilla.cnn (layers, width, kernel, residual) is required"),
        (("variants", "vanilla", "cnn"), CNN, "is required for arch cnn and only there; arch is 'lenet5'"),
        (("variants", "cnn", "cnn"), {**CNN, "kernel": 4}, "variants.cnn.cnn.kernel must be odd (1, 3, 5 or 7)"),
        (("variants", "cnn", "cnn"), {**CNN, "layers": 5}, "variants.cnn.cnn.layers must be <= 4, got 5"),
        (("variants", "cnn", "cnn"), {**CNN, "width": 0}, "variants.cnn.cnn.width must be >= 1, got 0"),
        (
            ("variants", "cnn", "cnn"),
            {k: v for k, v in CNN.items() if k != "residual"},
            "missing key variants.cnn.cnn.residual",
        ),
        (("variants", "vanilla", "model"), {"actvation": "tanh"}, "unknown key variants.vanilla.model.actvation"),
        (("variants", "vanilla", "model"), {"activation": "banana"}, "variants.vanilla.model.activation must be one"),
        (("variants", "dropout", "model"), {"dropout": 1.5}, "variants.dropout.model.dropout must be < 1, got 1.5"),
        (
            ("variants", "vanilla", "model"),
            {"mlp_hidden": [10]},
            "variants.vanilla.model.mlp_hidden: variant vanilla (arch lenet5) does not read model.mlp_hidden; only",
        ),
        # the switches of params files from before rates: the line says what to write instead
        (
            ("variants", "vanilla", "dropout"),
            True,
            "variants.vanilla sets dropout: true, but dropout is a value, not a switch: give the variant "
            "model: {dropout: <value>} (0 or absent = off)",
        ),
        (("variants", "vanilla", "weight_decay"), False, "variants.vanilla sets weight_decay: false, but weight_decay"),
    ],
)
def test_bad_params_name_the_key(path, value, message):
    with pytest.raises(ParamsError) as error:
        validate(broken(path, value))
    assert message in str(error.value)
    assert "\n" not in str(error.value)
    if path == ("train", "lrr"):
        documented("unknown key train.lrr", error.value)


def test_a_variants_train_overrides_apply_to_it_alone():
    params = validate(broken(("variants", "dropout", "train"), {"hflip": True, "epochs": 3}))
    assert params.train_for("dropout").hflip and params.train_for("dropout").epochs == 3
    assert not params.train_for("vanilla").hflip and params.train_for("vanilla").epochs == REAL["train"]["epochs"]


def test_a_variants_model_overrides_change_its_run_config_alone():
    params = validate(broken(("variants", "dropout", "model"), {"activation": "tanh", "dropout": 0.1}))
    real = validate(REAL)
    assert params.run_config("dropout").model.activation == "tanh" and params.run_config("dropout").model.dropout == 0.1
    assert params.model_for("dropout").dropout == 0.1 and params.model.dropout == REAL["model"]["dropout"]
    assert all(params.run_config(v) == real.run_config(v) for v in REAL["variants"] if v != "dropout")
    assert "model" not in params.run_config("dropout").architecture.model_dump()


def test_the_choices_are_the_keys_of_the_code_that_implements_them():
    """choices.py spells the names out so that the schema imports no model code; this keeps them equal."""
    import torchvision.datasets

    from pipeline import choices, models, optim

    assert choices.ACTIVATIONS == tuple(models.ACTIVATIONS) and choices.ARCHITECTURES == tuple(models.ARCHITECTURES)
    assert choices.OPTIMIZERS == tuple(optim.OPTIMIZERS) and choices.SCHEDULERS == tuple(optim.SCHEDULERS)
    assert all(hasattr(torchvision.datasets, name) for name in choices.DATASETS)


def test_the_params_schema_imports_no_model_kernel_or_optimiser_code():
    """What every stage imports: a kernel edit must not change download's or split's dependencies."""
    from test_dependencies import closure

    assert closure("pipeline.params") == {"pipeline.params", "pipeline.choices", "pipeline.errors"}


def write_sub(tmp_path, text):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/params.yaml").write_text(text)
    return tmp_path / "sub/params.yaml"


def test_a_second_pipelines_file_sets_its_own_keys_over_its_base(tmp_path):
    sub = write_sub(
        tmp_path,
        "base: ../params.yaml\ntrain: {seeds: [4]}\nreport: {baseline: tanh}\ntracking: {experiment: x}\n"
        "variants:\n  tanh: {arch: lenet5, model: {activation: tanh}}\n",
    )
    params, base = load_params(sub), validate(REAL)
    assert params.train.seeds == [4] and params.train.lr == base.train.lr and params.data == base.data
    assert list(params.variants) == ["tanh"] and params.report.baseline == "tanh"
    assert params.report.margin == base.report.margin and params.tracking.experiment == "x"
    assert params.tracking.enabled == base.tracking.enabled
    assert params.run_config("tanh").model.activation == "tanh"


@pytest.mark.parametrize(
    "text, message",
    [
        ("base: ../params.yaml\nmodel: {dropout: 0.2}\n", "model is read from its base ../params.yaml; this file"),
        ("base: ../params.yaml\nmodel: {dropout: 0.2}\n", "variants.<name>.train and .model"),
        ("base: ../params.yaml\ntrain: {lr: 0.2}\n", "train.lr is read from its base ../params.yaml"),
        ("base: ../params.yaml\ntrain: {lr: 0.2}\n", "sets only train.seeds, report.baseline, tracking.enabled"),
        ("base: ../params.yaml\ntrain: [1]\n", "train must be a mapping of keys to values, got [1]"),
        ("base: ../nowhere.yaml\n", "params file"),
        ("base: ../nowhere.yaml\n", "nowhere.yaml not found"),
        ("base: 3\n", "base must be the path of the main params file, got 3"),
        ("base: params.yaml\n", "base params.yaml must be a params file without a base of its own"),
        ("base: ../params.yaml\nreport: {baseline: nobody}\n", "report.baseline must name a variant (vanilla"),
    ],
)
def test_a_second_pipelines_file_names_what_it_may_not_set(tmp_path, text, message):
    with pytest.raises(ParamsError) as error:
        load_params(write_sub(tmp_path, text))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_sweep_is_activation_by_batchnorm_by_dropout():
    """docs/sweep.md's grid: 2 x 2 x 3 cells, each LeNet-5 built as its name says, on 3 seeds."""
    from pipeline.models import build_model

    sweep = load_params(ROOT / "sweep/params.yaml")
    cells = set()
    for name in sweep.variants:
        config = sweep.run_config(name)
        model = build_model(config.architecture, config.model)
        activation = type(model.act3).__name__.lower()
        rate = next((m.p for m in model.modules() if type(m).__name__ == "Dropout" and m.p > 0), 0)
        batchnorm = any("BatchNorm" in type(m).__name__ for m in model.modules())
        cells.add((activation, batchnorm, rate))
        assert name == activation + ("_bn" if batchnorm else "") + {0: "", 0.1: "_d01", 0.5: "_d05"}[rate]
    assert cells == {(a, b, r) for a in ("relu", "tanh") for b in (False, True) for r in (0, 0.1, 0.5)}
    assert sweep.train.seeds == [0, 1, 2] and sweep.report.baseline == "relu"


def test_exponents_without_a_dot_are_numbers_as_dvc_reads_them(tmp_path):
    text = (ROOT / "params.yaml").read_text().replace("weight_decay: 5.0e-4", "weight_decay: 5e-4")
    assert "weight_decay: 5e-4" in text
    (tmp_path / "params.yaml").write_text(text)
    assert load_params(tmp_path / "params.yaml").model_for("weight_decay").weight_decay == 5e-4
    plain = yaml.safe_load(text)["variants"]["weight_decay"]["model"]["weight_decay"]
    assert plain == "5e-4"  # what plain PyYAML would have read


def test_a_run_config_holds_what_its_variant_reads_and_no_seeds():
    """The unit a train stage depends on: a change re-runs exactly the variants that read it."""
    params = validate(yaml.safe_load((ROOT / "params.yaml").read_text()))
    vanilla, dropout = params.run_config("vanilla"), params.run_config("dropout")
    assert "seeds" not in vanilla.train.model_dump() and vanilla.train.lr == params.train.lr
    assert vanilla.model.dropout is None and dropout.model.dropout == params.model_for("dropout").dropout > 0
    assert not vanilla.architecture.dropout and dropout.architecture.dropout  # the record of a rate above 0
    assert params.run_config("mlp").model.mlp_hidden == params.model.mlp_hidden and vanilla.model.mlp_hidden is None
    changed = yaml.safe_load((ROOT / "params.yaml").read_text())
    changed["variants"]["dropout"]["model"] = {"dropout": 0.5}
    changed["train"] = {**changed["train"], "seeds": [0, 1, 2, 3]}
    other = validate(changed)
    assert other.run_config("vanilla") == vanilla and other.run_config("dropout") != dropout


def test_a_shared_rate_applies_to_every_variant_without_its_own():
    """model.* is every variant's value unless it sets its own: a shared dropout rate turns dropout on for the
    variants without one (their run configs record it, as the dropout variant's does), and 0 turns it off."""
    params = validate(yaml.safe_load((ROOT / "params.yaml").read_text()))
    changed = yaml.safe_load((ROOT / "params.yaml").read_text())
    changed["model"]["dropout"] = 0.5
    changed["variants"]["batchnorm"]["model"] = {"dropout": 0}
    other = validate(changed)
    for name in ("vanilla", "weight_decay", "mlp"):
        config = other.run_config(name)
        assert config.architecture.dropout and config.model.dropout == 0.5, name
    assert other.run_config("dropout") == params.run_config("dropout")  # its own 0.3
    assert other.run_config("batchnorm") == params.run_config("batchnorm")  # its own 0: off, as before


def test_stage_exits_2_with_one_line(tmp_path):
    import subprocess

    bad = broken(("model", "activation"), "banana")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(bad))
    result = subprocess.run(
        train_cmd(str(tmp_path / "params.yaml"), "x", tmp_path, "vanilla"),
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: model.activation must be one of relu, tanh, sigmoid, selu, leaky_relu, elu, prelu; got 'banana'"
    ]
    assert not (tmp_path / "models").exists()


def test_missing_input_file_is_one_line_naming_it(tmp_path):
    import subprocess

    result = subprocess.run(
        train_cmd(str(ROOT / "params.yaml"), str(tmp_path / "nowhere"), tmp_path, "vanilla"),
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nowhere' / 'train.pt'}: no such file; the earlier stages make it (dvc repro)"
    ]
    assert not (tmp_path / "models").exists()
