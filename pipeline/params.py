"""params.yaml as typed, frozen pydantic models, checked before any work is done.

params.yaml is the single source of truth: no setting here has a default, so a
missing key is an error, and so is an unknown one (extra="forbid"). The exceptions
are a variant's optional features (absent is off) and knobs added after results
were recorded (Knobs: their default is off and leaves every run config as it was). The valid
choices are pipeline/choices.py's names (a test keeps them equal to the keys of
the dicts that implement them), so the schema imports no model or kernel code
and a kernel edit re-runs training only. Strict mode: YAML's `true` is not an
integer, and text is not a number. The file is read as DVC reads it, with
ruamel.yaml's YAML 1.2 (`1e-3` is a number, `yes` is text). Every error becomes
one line (ParamsError) naming the key and what would be valid.
"""

import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer, model_validator

from pipeline.choices import ACTIVATIONS, ARCHITECTURES, DATASETS, OPTIMIZERS, SCHEDULERS
from pipeline.errors import PipelineError

# Variant names become DVC stage names and `-S variants.<name>.x=...` keys,
# where Hydra's override grammar allows no '-'.
VARIANT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ParamsError(PipelineError):
    """A params.yaml key is missing, unknown, ill-typed or out of range."""


def _choice(names):
    return Literal[tuple(names)]


Text = Annotated[str, Field(min_length=1)]
Count = Annotated[int, Field(ge=1)]
Fraction = Annotated[float, Field(gt=0, lt=1)]  # open at both ends
NonEmpty = Field(min_length=1)


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class Knobs(Section):
    """A section of knobs (model.*, train.*): the schema says which exist, params.yaml's comments what each does.

    A knob added after results were recorded has a default that turns it off (0), and is left out of every
    dump while it is at it: the run configs that results were trained from stay byte for byte, so a new
    capability re-runs nothing (docs/extending.md, "Add a knob")."""

    @model_serializer(mode="wrap")
    def _without_knobs_at_default(self, handler):
        data = handler(self)
        for name, field in type(self).model_fields.items():
            if not field.is_required() and name in data and getattr(self, name) == field.default:
                del data[name]
        return data


class Data(Section):
    dataset: _choice(DATASETS)
    split_seed: Annotated[int, Field(ge=0)]
    # per dataset: local folders, http(s) base URLs or `torchvision`, tried in order
    sources: dict[_choice(DATASETS), Annotated[list[Text], NonEmpty]]
    verify_checksums: bool
    val_size: Count

    @model_validator(mode="after")
    def _has_sources(self):
        if self.dataset not in self.sources:
            raise ValueError(
                f"data.sources has no entry for data.dataset {self.dataset!r}: add data.sources.{self.dataset}"
            )
        return self


Rate = Annotated[float, Field(ge=0, lt=1)]
Penalty = Annotated[float, Field(ge=0)]
Widths = Annotated[list[Count], NonEmpty]


class Model(Knobs):
    """model.*: every variant's values, unless it sets its own under variants.<name>.model."""

    activation: _choice(ACTIVATIONS)
    dropout: Rate  # 0 = off: no dropout layer at all
    weight_decay: Penalty  # 0 = off
    mlp_hidden: Widths

    def keys_read(self, arch):
        """The keys a variant of architecture `arch` with these values reads: a regulariser only when on."""
        keys = ["activation"]
        keys += [key for key in ("dropout", "weight_decay") if getattr(self, key) > 0]
        return keys + (["mlp_hidden"] if arch == "mlp" else [])


class ModelRead(Knobs):
    """The model keys one variant reads (Model.keys_read); the others are null, so that a value
    no variant of an architecture reads (mlp_hidden for LeNet-5, a rate that is 0) is not in its run config."""

    activation: _choice(ACTIVATIONS)
    dropout: Rate | None
    weight_decay: Penalty | None
    mlp_hidden: Widths | None


class TrainSettings(Knobs):
    """train.* without the seeds: what one seed's run reads (a run config holds it)."""

    threads: Count
    optimizer: _choice(OPTIMIZERS)
    lr: Annotated[float, Field(gt=0)]
    momentum: Annotated[float, Field(ge=0, lt=1)]
    batch_size: Count
    epochs: Count
    hflip: bool
    shift: Annotated[int, Field(ge=0, le=2)]  # at most the 2-pixel zero border: see engine.random_shift
    erase: Annotated[float, Field(ge=0, le=1)]  # the share of images with a random box erased
    scheduler: _choice(SCHEDULERS)
    scheduler_warmup: Annotated[float, Field(ge=0, lt=1)]
    scheduler_factor: Fraction
    scheduler_patience: Annotated[int, Field(ge=0)]
    scheduler_step_size: Count
    early_stopping_patience: Count
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0  # added later: 0 (off) changes no run config


class Train(TrainSettings):
    # a seed is an int64 wherever it is used (torch, numpy, the matrix's stage names): at most 2^63 - 1
    seeds: Annotated[list[Annotated[int, Field(ge=0, le=2**63 - 1)]], NonEmpty]

    @field_validator("seeds")
    @classmethod
    def _each_seed_once(cls, seeds):
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        if repeated:
            raise ValueError(
                f"must list each value once; {repeated[0]} appears {seeds.count(repeated[0])} times in {seeds}"
            )
        return seeds


class Evaluate(Section):
    batch_size: Count
    threads: Count
    latency_repeats: Count


class Report(Section):
    baseline: Text  # a variant name: checked in Params
    confidence: Fraction
    still_improving: Annotated[float, Field(ge=0, le=1)]
    margin: Annotated[float, Field(gt=0, lt=1)]  # equivalence margin, in accuracy (0.003 = 0.3 pt)
    power: Fraction  # the power at which the report counts the seeds that would decide a comparison
    # The seed counts at which `make decide` reads the verdicts: each look tests at
    # (1 - confidence) / len(looks) (Bonferroni over looks), so the whole sequence
    # keeps its error rate; within a look Holm corrects over the comparisons.
    looks: Annotated[list[Annotated[int, Field(ge=2)]], NonEmpty]

    @field_validator("looks")
    @classmethod
    def _increasing(cls, looks):
        if any(b <= a for a, b in zip(looks, looks[1:])):
            raise ValueError(f"must be seed counts in increasing order, got {looks}")
        return looks


class Tracking(Section):
    enabled: bool
    experiment: Text


class CnnShape(Section):
    """The shape of an `arch: cnn` variant (models.SmallCNN)."""

    layers: Annotated[int, Field(ge=1, le=4)]  # each halves the 28x28 image: 4 leave 1x1
    width: Count  # channels of the first conv; each later one doubles them
    kernel: Annotated[int, Field(ge=1, le=7)]
    residual: bool  # a residual block after the last conv

    @field_validator("kernel")
    @classmethod
    def _odd(cls, kernel):
        if kernel % 2 == 0:
            raise ValueError(f"must be odd (1, 3, 5 or 7) so that 'same' padding keeps the size; got {kernel}")
        return kernel


class Architecture(Section):
    """The run config's record of what a variant builds (models.build_model) and which regularisers are on.

    dropout and weight_decay here say whether the variant's rate is above 0 (Params.run_config derives
    them); the rates are the run config's model values. The booleans are kept so that every run config
    recorded before variants held rates stays byte for byte, and so does every result trained from one."""

    arch: _choice(ARCHITECTURES)
    batchnorm: bool
    dropout: bool
    weight_decay: bool
    # The shape of an `arch: cnn` variant: required there, refused elsewhere (Params checks).
    cnn: CnnShape | None = None


class Variant(Section):
    """One variant: a set of values. Absent features are off; model.* and train.* values it does not set
    are the shared ones (e.g. `dropout: {arch: lenet5, model: {dropout: 0.3}}`, `model: {dropout: 0}` off)."""

    arch: _choice(ARCHITECTURES)
    batchnorm: bool = False
    cnn: CnnShape | None = None  # the shape of an `arch: cnn` variant: required there, refused elsewhere
    # model.* and train.* values of this variant alone (not seeds: every variant trains on train.seeds)
    model: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _rates_not_switches(cls, data):
        """The switches `dropout: true` and `weight_decay: true` of params files before rates: one line on how."""
        for key in ("dropout", "weight_decay") if isinstance(data, dict) else ():
            if key in data:
                got = str(data[key]).lower() if isinstance(data[key], bool) else repr(data[key])
                raise ValueError(
                    f"sets {key}: {got}, but {key} is a value, not a switch: give the variant "
                    f"model: {{{key}: <value>}} (0 or absent = off)"
                )
        return data


class RunConfig(Section):
    """Everything one seed's training reads, but the seed: stage check writes one per variant
    (data/config/<variant>.json) and train@<variant>-<seed> depends on that file alone, so a
    change re-runs exactly the runs it affects, and adding a seed re-runs none of the others."""

    variant: Text
    architecture: Architecture
    model: ModelRead
    train: TrainSettings


class Params(Section):
    data: Data
    model: Model
    train: Train
    evaluate: Evaluate
    report: Report
    tracking: Tracking
    variants: Annotated[dict[str, Variant], NonEmpty]

    @model_validator(mode="after")
    def _variants_agree(self):
        for name, variant in self.variants.items():
            if not VARIANT_NAME.match(name):
                raise ValueError(f"variants.{name}: a name may hold only letters, digits and _ (no -)")
            if (variant.arch == "cnn") != (variant.cnn is not None):
                raise ValueError(
                    f"variants.{name}.cnn (layers, width, kernel, residual) is required for arch cnn "
                    f"and only there; arch is {variant.arch!r}"
                )
            self.train_for(name)  # the overrides are valid train keys and values
            self.model_for(name)  # and model keys this variant reads
        for name, variant in self.variants.items():
            if variant.batchnorm and self.train_for(name).batch_size < 2:
                raise ValueError(
                    f"train.batch_size must be >= 2 for variant {name}, which uses batch norm; got "
                    f"{self.train_for(name).batch_size}"
                )
        if self.report.baseline not in self.variants:
            raise ValueError(
                f"report.baseline must name a variant ({', '.join(self.variants)}); got {self.report.baseline!r}"
            )
        return self

    def variant(self, name):
        if name not in self.variants:
            raise ParamsError(f"unknown variant {name!r}; params.yaml defines {', '.join(self.variants)}")
        return self.variants[name]

    def run_config(self, name):
        """The RunConfig of variant `name`: its architecture, the model keys it reads, its train settings."""
        variant, values = self.variant(name), self.model_for(name)
        read = values.keys_read(variant.arch)
        return RunConfig(
            variant=name,
            architecture=Architecture(
                **variant.model_dump(include={"arch", "batchnorm", "cnn"}),
                dropout="dropout" in read,
                weight_decay="weight_decay" in read,
            ),
            model=ModelRead(**{key: getattr(values, key) if key in read else None for key in ModelRead.model_fields}),
            train=TrainSettings(**self.train_for(name).model_dump(exclude={"seeds"})),
        )

    def model_for(self, name):
        """The model section as variant `name` sees it: model.* with its own `model:` values, each a key its
        architecture reads (mlp_hidden on a LeNet-5 would be ignored: a mistake, not a no-op)."""
        variant = self.variant(name)
        for key in variant.model:
            if key not in Model.model_fields:
                raise ValueError(
                    f"unknown key variants.{name}.model.{key}; valid keys here: {', '.join(Model.model_fields)}"
                )
        try:
            values = Model.model_validate({**self.model.model_dump(), **variant.model})
        except ValidationError as e:
            error = e.errors()[0]
            raise ValueError(one_line({**error, "loc": ("variants", name, "model", *error["loc"])})) from None
        if "mlp_hidden" in variant.model and "mlp_hidden" not in values.keys_read(variant.arch):
            raise ValueError(
                f"variants.{name}.model.mlp_hidden: variant {name} (arch {variant.arch}) does not read "
                "model.mlp_hidden; only arch mlp does"
            )
        return values

    def train_for(self, name):
        """The train section as variant `name` sees it: train.* with its own `train:` overrides."""
        overrides = self.variant(name).train
        unknown = sorted(set(overrides) - set(TrainSettings.model_fields))
        if unknown:  # seeds too: dvc.yaml's matrix trains every variant on train.seeds
            raise ValueError(
                f"unknown key variants.{name}.train.{unknown[0]}; valid keys here: "
                f"{', '.join(TrainSettings.model_fields)}"
            )
        try:
            return Train.model_validate({**self.train.model_dump(), **overrides})
        except ValidationError as e:
            error = e.errors()[0]
            raise ValueError(one_line({**error, "loc": ("variants", name, "train", *error["loc"])})) from None


def _key(loc):
    """('train', 'seeds', 1) -> 'train.seeds[1]'."""
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else f".{part}" if key else str(part)
    return key


def _fields_at(loc):
    """The field names of the section at `loc`, for 'valid keys here'."""
    node = Params
    for part in loc:
        if isinstance(node, type) and issubclass(node, BaseModel):
            if part not in node.model_fields:
                return []
            node = node.model_fields[part].annotation
        else:  # a map or list: `part` is a key or an index into it
            node = get_args(node)[-1]
    return list(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else []


_BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def one_line(error):
    """One pydantic error dict -> the line a user reads."""
    key, kind, value, ctx = _key(error["loc"]), error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "missing":
        return f"missing key {key}"
    if kind == "extra_forbidden":
        valid = _fields_at(error["loc"][:-1])
        return f"unknown key {key}" + (f"; valid keys here: {', '.join(valid)}" if valid else "")
    if kind == "literal_error":
        choices = ctx["expected"].replace("'", "").replace(" or ", ", ")
        return f"{key} must be one of {choices}; got {value!r}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        # a whole-number bound in full (2^63 - 1 as 9.22337e+18 would not say where the limit is)
        bound = next(f"{_BOUNDS[k]} {v if isinstance(v, int) else f'{v:g}'}" for k, v in ctx.items() if k in _BOUNDS)
        return f"{key} must be {bound}, got {value!r}"
    if kind in ("too_short", "string_too_short"):
        return f"{key} must not be empty, got {value!r}"
    if kind in ("int_type", "int_from_float"):
        return f"{key} must be an integer, got {value!r}"
    if kind == "float_type":
        return f"{key} must be a number, got {value!r}"
    if kind == "bool_type":
        return f"{key} must be true or false, got {value!r}"
    if kind == "string_type":
        return f"{key} must be text, got {value!r}"
    if kind == "list_type":
        return f"{key} must be a list, got {value!r}"
    if kind in ("model_type", "dict_type"):
        return f"{key or 'params'} must be a mapping of keys to values, got {value!r}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{key} {message}" if key and not message.startswith(key) else message


def validate(raw):
    """Params from a parsed params.yaml; raise ParamsError (the first problem, one line) otherwise."""
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        raise ParamsError(one_line(e.errors()[0])) from None


# A second pipeline's params file (study/params.yaml, sweep/params.yaml) names the main params.yaml as
# its `base:` and sets only these keys, each replacing the base's: what its dvc.yaml interpolates
# (train.seeds, variants) and what names its results (report.baseline, tracking). A variant's own
# train.* and model.* values go under variants.<name>. Every other setting is the base's alone, so no
# setting is written twice, and each stage's DVC params deps can name the one file that holds each key.
OWN_KEYS = {"train": ("seeds",), "report": ("baseline",), "tracking": ("enabled", "experiment"), "variants": None}
VARIANT_OWN = ("train", "model")


def read_yaml(path):
    from ruamel.yaml import YAML, YAMLError

    try:
        return YAML(typ="safe", pure=True).load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"params file {path} not found") from None
    except YAMLError as e:
        raise ParamsError(f"{path} is not valid YAML: {' '.join(str(e).split())[:200]}") from None


def with_base(raw, path):
    """A file with `base:` merged over its base file, as one params.yaml; ParamsError on a key it may not set."""
    own = ", ".join(f"{s}.{k}" if k else s for s, keys in OWN_KEYS.items() for k in keys or [None])
    if not isinstance(raw["base"], str) or not raw["base"]:
        raise ParamsError(f"{path}: base must be the path of the main params file, got {raw['base']!r}")
    base_path = path.parent / raw["base"]
    merged = read_yaml(base_path)
    if not isinstance(merged, dict) or "base" in merged:
        raise ParamsError(f"{path}: base {raw['base']} must be a params file without a base of its own")
    for section, value in raw.items():
        if section == "base":
            continue
        hint = " (a variant's own values go under variants.<name>.train and .model)" if section in VARIANT_OWN else ""
        if section not in OWN_KEYS:
            raise ParamsError(f"{path}: {section} is read from its base {raw['base']}; this file sets only {own}{hint}")
        if OWN_KEYS[section] is None:
            merged[section] = value
            continue
        if not isinstance(value, dict):
            raise ParamsError(f"{path}: {section} must be a mapping of keys to values, got {value!r}")
        for key in value:
            if key not in OWN_KEYS[section]:
                raise ParamsError(
                    f"{path}: {section}.{key} is read from its base {raw['base']}; this file sets only {own}{hint}"
                )
        merged[section] = {**(merged.get(section) or {}), **value}
    return merged


def load_params(path="params.yaml"):
    """Params from a params file: params.yaml, or a second pipeline's file over its `base:`."""
    path = Path(path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):  # empty, or a list or a scalar: DVC's own message would not name the file
        got = "it is empty" if raw is None else f"got a {type(raw).__name__}"
        raise ParamsError(f"{path} must be a mapping of sections (data, train, variants, ...); {got}")
    if "base" in raw:
        raw = with_base(raw, path)
    return validate(raw)
