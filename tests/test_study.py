"""The small-CNN study: its params profile and its rows, each built, trained and scored. Its own pipeline
(study/dvc.yaml), run by the real dvc beside the default one, is read from docs/study.md in
tests/test_docs_pipelines.py (test_study_page)."""

import json
import re

import pytest
import torch
import yaml
from helpers import ROOT, build, markdown_table, synthetic_images

from pipeline.fitting import fit_seed
from pipeline.models import count_parameters
from pipeline.params import load_params

STUDY = load_params(ROOT / "study/params.yaml")


# Hand counts (conv k x k: in*out*k*k + out; batch norm: 2 per channel; the classifier: features*10 + 10)
CNN4_HAND_COUNT = 391370  # tests/test_models.py
CNN4_K1_HAND_COUNT = (  # 4 conv blocks of 1x1 from 32 channels: 28 -> 14 -> 7 -> 3 -> 1
    (1 * 32 + 32 + 64) + (32 * 64 + 64 + 128) + (64 * 128 + 128 + 256) + (128 * 256 + 256 + 512) + (256 * 10 + 10)
)
RESIDUAL_256 = 2 * (256 * 256 * 9 + 256 + 2 * 256)  # two 3x3 convs at 256 channels, each with batch norm
CNN4_NOBN_HAND_COUNT = CNN4_HAND_COUNT - 2 * (32 + 64 + 128 + 256)

# What each row changes against cnn4 (the study's reference row): one thing, or the seeds' recipe.
ROWS = {
    "cnn4_res": {"cnn.residual": True},
    "cnn4_k1": {"cnn.kernel": 1},
    "cnn4_k5": {"cnn.kernel": 5},
    "cnn4_nobn": {"batchnorm": False},
    "cnn4_drop0": {"dropout": False},
    "cnn4_drop05": {"model.dropout": 0.5},
    "cnn4_lr05": {"train.lr": 0.05},
    "cnn4_lr01": {"train.lr": 0.01},
    "cnn4_lr005": {"train.lr": 0.005},
    "cnn4_adam_step": {"weight_decay": False, "train.optimizer": "adam", "train.lr": 0.001, "train.scheduler": "step"},
    "cnn4_adam_exp": {
        "weight_decay": False,
        "train.optimizer": "adam",
        "train.lr": 0.001,
        "train.scheduler": "exponential",
        "train.scheduler_factor": 0.9,
    },
    "cnn4_noaug": {"train.shift": 0},
    "cnn4_flip": {"train.hflip": True},
    "cnn4_erase": {"train.erase": 0.5},
    "cnn4_flip_only": {"train.shift": 0, "train.hflip": True},
    "cnn4_erase_only": {"train.shift": 0, "train.erase": 0.5},
    "cnn4_flip_erase": {"train.shift": 0, "train.hflip": True, "train.erase": 0.5},
    "cnn4_all": {"train.hflip": True, "train.erase": 0.5},
}


def flat_config(name):
    """A row's run config as {key: value}, the keys as in ROWS."""
    config = STUDY.run_config(name)
    flat = {k: v for k, v in config.architecture.model_dump().items() if k != "cnn"}
    shape = config.architecture.cnn.model_dump() if config.architecture.cnn else {}
    flat |= {f"cnn.{k}": v for k, v in shape.items()}
    flat |= {f"model.{k}": v for k, v in config.model.model_dump().items()}
    return flat | {f"train.{k}": v for k, v in config.train.model_dump().items()}


def test_the_study_profile_holds_the_studys_rows():
    """2 and 4 conv blocks of 3x3 from 32 channels, batch norm and dropout 0.2; every other row is cnn4 with
    the one change it names (or the seeds' Adam recipe), and the eight augmentation settings are all there."""
    base = flat_config("cnn4")
    for name, change in ROWS.items():
        differs = {k: v for k, v in flat_config(name).items() if base[k] != v}
        for switch in ("dropout", "weight_decay"):  # a rate of 0: recorded off, its value not read
            if change.get(switch) is False:
                change = {**change, f"model.{switch}": None}
        assert differs == change, name
    assert set(STUDY.variants) == {"cnn4", "cnn2", "cnn2_res", *ROWS}
    four = [STUDY.train_for(n) for n in STUDY.variants if n.startswith("cnn4")]
    augmentations = {(t.hflip, t.erase > 0, t.shift > 0) for t in four}
    assert len(augmentations) == 8
    two = {k: v for k, v in flat_config("cnn2_res").items() if flat_config("cnn2")[k] != v}
    assert two == {"cnn.residual": True}  # against cnn2, with its 60 epochs
    sizes = {name: count_parameters(build(STUDY, name)) for name in STUDY.variants}
    assert sizes["cnn2"] == 50378 and sizes["cnn4"] == sizes["cnn4_flip"] == sizes["cnn4_adam_step"] == CNN4_HAND_COUNT
    assert sizes["cnn4_k1"] == CNN4_K1_HAND_COUNT == 47050
    assert sizes["cnn4_res"] == CNN4_HAND_COUNT + RESIDUAL_256 and sizes["cnn4_nobn"] == CNN4_NOBN_HAND_COUNT
    assert STUDY.report.baseline == "cnn4"


WIDE = load_params(ROOT / "study/wide/params.yaml")


def test_the_wide_rows_are_cnn4_wider():
    """study/wide/: cnn4 and the 64-, 128- and 512-channel rows, each cnn4 with its width changed."""
    assert WIDE.run_config("cnn4") == STUDY.run_config("cnn4")
    assert WIDE.report.baseline == "cnn4" and WIDE.train.seeds == STUDY.train.seeds
    for width in (64, 128, 512):
        name = f"cnn4_w{width}"
        assert WIDE.run_config(name).architecture.cnn.width == width
        assert WIDE.run_config(name).model_dump(exclude={"variant", "architecture"}) == STUDY.run_config(
            "cnn4"
        ).model_dump(exclude={"variant", "architecture"})
    # 4 blocks from 64 channels: 64-128-256-512, 1.5M parameters
    w64 = (9 * 64 + 64 + 128) + (64 * 128 * 9 + 128 + 256) + (128 * 256 * 9 + 256 + 512) + (256 * 512 * 9 + 512 + 1024)
    assert count_parameters(build(WIDE, "cnn4_w64")) == w64 + 5130


@pytest.mark.parametrize("row", ["cnn2_res", "cnn4_k1", "cnn4_adam_step", "cnn4_flip_erase"])
def test_a_study_row_builds_trains_and_scores(row):
    """A residual row, a kernel-1 row, the seeds' Adam-with-step row and an augmentation pair, each with its
    real shape, three epochs on tiny synthetic data (each class lights one block): each learns."""
    config = STUDY.run_config(row)
    config = config.model_copy(update={"train": config.train.model_copy(update={"epochs": 3, "batch_size": 32})})
    images, labels = map(torch.from_numpy, synthetic_images(800, seed=0))
    splits = {"train": (images[:600], labels[:600]), "val": (images[600:], labels[600:])}
    fitted = fit_seed(config, splits, seed=0, name=row)
    assert fitted.parameters == {"cnn2_res": 124490, "cnn4_k1": CNN4_K1_HAND_COUNT}.get(row, CNN4_HAND_COUNT)
    assert [r["epoch"] for r in fitted.history] == [1, 2, 3]
    # it learns: the training loss halves, and validation beats chance (0.1; the kernel-1 row sees no shapes,
    # only what 1x1 convs and max pooling keep of where the bright block is, and stays near 0.3 here)
    assert fitted.history[-1]["train_loss"] < fitted.history[0]["train_loss"] / 2
    assert max(r["val_acc"] for r in fitted.history) > 0.15


def test_the_study_reads_the_shared_settings_from_the_main_params_file():
    """study/params.yaml holds its seeds, rows and names; the rest is ../params.yaml's, written once."""
    main = load_params(ROOT / "params.yaml")
    assert STUDY.data == main.data and STUDY.evaluate == main.evaluate and STUDY.model == main.model
    assert STUDY.train.model_dump(exclude={"seeds"}) == main.train.model_dump(exclude={"seeds"})
    assert STUDY.report.model_dump(exclude={"baseline"}) == main.report.model_dump(exclude={"baseline"})
    assert set(yaml.safe_load((ROOT / "study/params.yaml").read_text())) == {
        "base",
        "train",
        "report",
        "tracking",
        "variants",
    }


def test_a_variants_train_overrides_change_that_variant_only():
    """The train stage depends on variants.<name>, so an override re-runs that variant alone (see below)."""
    assert STUDY.train_for("cnn4_flip").model_dump(exclude={"hflip"}) == STUDY.train.model_dump(exclude={"hflip"})


def points(text):
    """'−0.67' (the docs' minus sign) or '+0.31' as a float."""
    return float(text.replace("−", "-"))


STUDY_TABLE = "| row | params | test acc: mean ± std [95% CI], 3 seeds |"  # the header both pages' tables share


@pytest.mark.parametrize(("page", "every_row"), [("docs/study.md", True), ("docs/results.md", False)])
def test_the_study_tables_are_the_committed_metrics_and_verdicts(page, every_row):
    """Each row of the docs' study tables: its parameters, test and validation accuracy as study/metrics/ holds
    them, and its difference from cnn4, interval and verdict as study/comparison.json (study/report.md) holds
    them; docs/study.md's table has every row of study/params.yaml, in its order."""
    comparison = json.loads((ROOT / "study/comparison.json").read_text())
    rows = markdown_table((ROOT / page).read_text(), STUDY_TABLE)
    names = [re.match(r"`?(\w+)", row[0])[1] for row in rows]
    if every_row:
        assert names == list(STUDY.variants)
    assert names and set(names) <= set(STUDY.variants) and set(comparison) == set(STUDY.variants) - {"cnn4"}
    for name, row in zip(names, rows):
        metrics = json.loads((ROOT / f"study/metrics/{name}.json").read_text())
        assert metrics["seeds"] == 3 and row[1] == f"{metrics['parameters']:,}", (name, row[1])
        shown = re.fullmatch(r"\*\*([\d.]+)%\*\* ± ([\d.]+) \[([\d.]+), ([\d.]+)\]", row[2])
        keys = ("test_acc_mean", "test_acc_std", "test_acc_ci_low", "test_acc_ci_high")
        assert shown and [float(x) for x in shown.groups()] == [round(metrics[k] * 100, 2) for k in keys], row[2]
        assert row[3] == f"{metrics['val_acc_mean'] * 100:.2f}%", (name, row[3])
        if name == "cnn4":
            assert row[4] == "baseline"
            continue
        verdict = re.match(r"([+−]\d+\.\d\d) pt \[([+−]\d+\.\d\d), ([+−]\d+\.\d\d)\], \*\*(\w+)\*\*", row[4])
        assert verdict, (name, row[4])
        compared = comparison[name]
        expected = [round(compared[k] * 100, 2) for k in ("diff", "ci_low", "ci_high")]
        assert [points(x) for x in verdict.groups()[:3]] == expected, (name, row[4])
        assert verdict[4] == compared["verdict"], (name, row[4])
        if compared["seeds_needed"]:
            assert f"~{compared['seeds_needed']} seeds" in row[4], (name, row[4])
