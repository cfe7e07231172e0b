"""The hyperparameter search of the tune pipeline (tune/params.yaml): its schema and its space.

A dimension names a key of a variant's run config (params.RunConfig), `train.*` or
`model.*`, and gives a range (low, high, optional log) or a list of choices. Each
variant searches the shared `space` plus its own `variants.<name>` dimensions, with
the same budget (`trials`) as every other. The shared setting (the run config that
`make run` trains) must lie inside every variant's space: it is every search's
first trial, so a tuned variant never scores below it on validation.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from ruamel.yaml import YAML

from pipeline.params import ParamsError, RunConfig

SECTIONS = ("train", "model")  # the parts of a run config a search may change
UNSEARCHABLE = {"train": {"threads"}, "model": set()}  # threads changes the numerics, not the method


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Dimension(Strict):
    """A range [low, high] (on a log scale with log: true) or a list of choices."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[bool | int | float | str] | None = None

    @model_validator(mode="after")
    def _range_or_choices(self):
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log:
                raise ValueError("give either choices or low/high (and log), not both")
            if not self.choices:
                raise ValueError("choices must list at least one value")
        elif self.low is None or self.high is None:
            raise ValueError("needs low and high, or choices")
        elif not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        elif self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        return self

    def holds(self, value):
        if self.choices is not None:
            return value in self.choices
        return self.low <= value <= self.high


Space = dict[Literal["train", "model"], dict[str, Dimension]]


class Pruner(Strict):
    """Optuna's PercentilePruner: after each epoch keep a trial only while its validation accuracy is
    in the top `keep_top` percent of the earlier trials' at that epoch (75: stop the bottom quarter);
    `none` runs every trial to the end."""

    kind: Literal["percentile", "none"]
    keep_top: Annotated[float, Field(gt=0, lt=100)]
    startup_trials: Annotated[int, Field(ge=0)]
    warmup_epochs: Annotated[int, Field(ge=0)]
    interval_epochs: Annotated[int, Field(ge=1)]  # judge at warmup_epochs and every this many after


class Rescore(Strict):
    """Before a search names its best setting, the shared setting and the `top` best other trials by their
    one-seed score train again on each of `seeds`; the best mean over all its seeds (tune.seed's included)
    wins. One seed's score flatters the lucky: the winner's curse (docs/tuning.md)."""

    top: Annotated[int, Field(ge=0)]
    seeds: list[Annotated[int, Field(ge=0, le=2**63 - 1)]]

    @model_validator(mode="after")
    def _each_seed_once(self):
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must list each seed once, got {self.seeds}")
        return self


class Search(Strict):
    trials: Annotated[int, Field(ge=1)]
    sampler: Literal["tpe", "random"]
    random_trials: Annotated[int, Field(ge=1)]  # TPE samples at random until this many trials finished
    seed: Annotated[int, Field(ge=0)]  # the sampler's and every trial's training seed
    pruner: Pruner
    rescore: Rescore
    experiment: Annotated[str, Field(min_length=1)]  # MLflow experiment of the tune pipeline's runs
    space: Space
    variants: dict[str, Space]

    @model_validator(mode="after")
    def _rescore_on_other_seeds(self):
        if self.seed in self.rescore.seeds:
            raise ValueError(f"rescore.seeds must not hold tune.seed ({self.seed}): every trial already trained on it")
        return self

    def epochs_budget(self, epochs):
        """The most trial-epochs one variant's search may train: every trial to the end, then the re-scoring."""
        return (self.trials + (1 + self.rescore.top) * len(self.rescore.seeds)) * epochs


def _where(loc):
    return ".".join(str(part) for part in loc)


def load_search(path, variants, final_seeds=()):
    """The `tune:` section of `path`, checked against `variants` (name -> RunConfig) and the final runs' seeds
    (params.yaml's train.seeds, which re-scoring must not choose on); one line if it is wrong."""
    try:
        with open(path) as f:
            raw = YAML(typ="safe", pure=True).load(f)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ParamsError(f"{path}: not valid YAML ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict) or set(raw) != {"tune"}:
        raise ParamsError(f"{path}: must hold one section, tune:, got {sorted(raw) if isinstance(raw, dict) else raw}")
    try:
        search = Search.model_validate(raw["tune"])
    except ValidationError as e:
        error = e.errors()[0]
        message = error["msg"].removeprefix("Value error, ")
        where = "".join(f".{part}" for part in error["loc"])
        raise ParamsError(f"{path}: tune{where}: {message}" if where else f"{path}: tune.{message}") from None
    missing = sorted(set(variants) - set(search.variants))
    extra = sorted(set(search.variants) - set(variants))
    if missing or extra:
        raise ParamsError(
            f"{path}: tune.variants must list every variant of params.yaml ({', '.join(variants)}), each with its "
            f"own dimensions or {{}}; "
            + (f"missing: {', '.join(missing)}" if missing else f"unknown: {', '.join(extra)}")
        )
    shared = sorted(set(search.rescore.seeds) & set(final_seeds))
    if shared:
        raise ParamsError(
            f"{path}: tune.rescore.seeds must not hold train.seeds {shared}: the final runs train on those, and a "
            "setting chosen on them would be judged on the seeds that chose it"
        )
    for name, config in variants.items():
        for key, dimension in space_of(search, name).items():
            where = f"tune.space.{key}" if key in flat(search.space) else f"tune.variants.{name}.{key}"
            check_dimension(f"{path}: {where}", name, config, key, dimension)
    return search


def flat(space):
    return {f"{section}.{key}": dimension for section, keys in space.items() for key, dimension in keys.items()}


def space_of(search, variant):
    """{"train.lr": Dimension, ...}: the shared dimensions, then the variant's own (which win)."""
    return {**flat(search.space), **flat(search.variants[variant])}


def check_dimension(where, variant, config, key, dimension):
    section, name = key.split(".", 1)
    settings = getattr(config, section)
    if name not in type(settings).model_fields or name in UNSEARCHABLE[section]:
        valid = sorted(set(type(settings).model_fields) - UNSEARCHABLE[section])
        raise ParamsError(f"{where}: {section} has no searchable key {name!r} (valid: {', '.join(valid)})")
    base = getattr(settings, name)
    if base is None:
        why = (
            "its rate is 0: off" if key in ("model.dropout", "model.weight_decay") else "its architecture leaves it out"
        )
        raise ParamsError(f"{where}: variant {variant} does not read {key} ({why})")
    if isinstance(base, bool) and dimension.choices is None:
        raise ParamsError(f"{where}: {key} is true/false: give choices: [false, true]")
    for value in dimension.choices if dimension.choices is not None else (dimension.low, dimension.high):
        try:
            apply(config, {key: value})
        except ParamsError as e:
            raise ParamsError(f"{where}: {value!r} is not a valid {key}: {str(e).split(': ', 1)[-1]}") from None
    if not dimension.holds(base):
        raise ParamsError(
            f"{where}: the shared setting {key}={base!r} ({variant}) lies outside "
            + (f"{dimension.choices}" if dimension.choices is not None else f"[{dimension.low}, {dimension.high}]")
            + ": every search starts from it, so widen the space to hold it"
        )


def apply(config, values):
    """`config` (a RunConfig) with {"train.lr": 0.05, ...} set; a value the run config refuses is one line."""
    data = config.model_dump()
    for key, value in values.items():
        section, name = key.split(".", 1)
        data[section][name] = value
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        error = e.errors()[0]
        raise ParamsError(f"{_where(error['loc'])}: {error['msg']}") from None


def base_values(config, space):
    """The shared setting's value of each dimension: the first trial of every search."""
    return {key: getattr(getattr(config, key.split(".")[0]), key.split(".", 1)[1]) for key in space}


def suggest(trial, key, dimension, base):
    """Optuna's suggestion for one dimension; whole-number keys (epochs, shift) get integers."""
    if dimension.choices is not None:
        return trial.suggest_categorical(key, dimension.choices)
    if isinstance(base, int):
        return trial.suggest_int(key, int(dimension.low), int(dimension.high), log=dimension.log)
    return trial.suggest_float(key, dimension.low, dimension.high, log=dimension.log)
