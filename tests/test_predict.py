"""pipeline.predict against an oracle: the same checkpoint scored by the engine, on IDX files and PNG files."""

import gzip
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import ROOT, shrunk_params, train_one, write_idx_folder
from PIL import Image
from torchvision.datasets.mnist import read_image_file

from pipeline.checkpoint import load_checkpoint
from pipeline.data import load_split, to_model_input
from pipeline.engine import predict
from pipeline.params import validate
from pipeline.predict import prepare_image, read_idx


@pytest.fixture
def checkpoint(split_dir, tmp_path):
    params = validate(shrunk_params("unused", **{"tracking.enabled": False, "train.epochs": 3}))
    path = tmp_path / "models" / "vanilla" / "seed0.pt"
    train_one(params, "vanilla", split_dir, 0, path)
    return path


def predict_cli(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "pipeline.predict", *map(str, args)], cwd=cwd, capture_output=True, text=True
    )


def oracle_predictions(checkpoint, images):
    info, model = load_checkpoint(checkpoint, "cpu")
    return predict(model, to_model_input(images, *info.normalisation, "cpu"), 64).argmax(1)


def test_the_test_split_by_default_matches_the_engine(checkpoint, split_dir, tmp_path):
    out = tmp_path / "p.csv"
    result = predict_cli(checkpoint, "--split", split_dir, "--out", out, "--threads", 1)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out)
    images, labels = load_split(split_dir, "test")
    expected = oracle_predictions(checkpoint, images)
    classes = [str(c) for c in range(10)]
    assert table["predicted"].astype(str).tolist() == [classes[i] for i in expected.tolist()]
    probabilities = table[[f"p_{c}" for c in classes]].to_numpy()
    assert np.allclose(probabilities.sum(1), 1, atol=1e-4)
    accuracy = (expected == labels).float().mean().item()
    assert f"accuracy {accuracy:.4f} on {len(labels)} labelled images" in result.stdout
    assert "actual" in result.stdout and "predicted" in result.stdout  # the confusion matrix


def test_idx_files_and_image_files_give_the_same_classes(checkpoint, split_dir, tmp_path):
    write_idx_folder(tmp_path / "idx")  # gzipped IDX files, as the datasets ship
    images = torch.from_numpy(read_idx(tmp_path / "idx" / "t10k-images-idx3-ubyte.gz").copy())  # a writable copy
    labels = read_idx(tmp_path / "idx" / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (200, 28, 28) and labels.shape == (200,)
    (tmp_path / "raw").write_bytes(gzip.decompress((tmp_path / "idx" / "t10k-images-idx3-ubyte.gz").read_bytes()))
    assert torch.equal(images, read_image_file(str(tmp_path / "raw")))  # torchvision's own IDX reader
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    for i in range(5):
        Image.fromarray(images[i].numpy()).save(pngs / f"{i}.png")
    Image.fromarray(images[0].numpy()).convert("RGB").save(tmp_path / "rgb.png")  # converted to grayscale
    out = tmp_path / "p.csv"
    result = predict_cli(
        checkpoint,
        "--split",
        split_dir,
        "--images",
        tmp_path / "idx" / "t10k-images-idx3-ubyte.gz",
        pngs,
        tmp_path / "rgb.png",
        "--out",
        out,
        "--threads",
        1,
    )
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out)
    assert len(table) == 200 + 5 + 1
    from_idx = table["predicted"].tolist()[:5]
    assert table["predicted"].tolist()[200:205] == from_idx and table["predicted"].tolist()[205] == from_idx[0]
    expected = oracle_predictions(checkpoint, images)
    assert table["predicted"].astype(str).tolist()[:200] == [str(i) for i in expected.tolist()]
    assert table["source"].tolist()[200] == str(pngs / "0.png")


def test_labels_with_images_print_the_accuracy(checkpoint, split_dir, tmp_path):
    write_idx_folder(tmp_path / "idx", gz=False)
    result = predict_cli(
        checkpoint,
        "--split",
        split_dir,
        "--images",
        tmp_path / "idx" / "t10k-images-idx3-ubyte",
        "--labels",
        tmp_path / "idx" / "t10k-labels-idx1-ubyte",
        "--out",
        tmp_path / "p.csv",
        "--threads",
        1,
    )
    assert result.returncode == 0, result.stderr
    images = torch.from_numpy(read_idx(tmp_path / "idx" / "t10k-images-idx3-ubyte").copy())
    labels = torch.from_numpy(read_idx(tmp_path / "idx" / "t10k-labels-idx1-ubyte").astype(np.int64))
    accuracy = (oracle_predictions(checkpoint, images) == labels).float().mean().item()
    assert f"accuracy {accuracy:.4f} on 200 labelled images" in result.stdout


def test_a_file_that_is_not_an_image_is_one_line_naming_it(checkpoint, split_dir, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png at all")
    truncated = tmp_path / "short-idx3-ubyte.gz"
    truncated.write_bytes(gzip.compress(b"\0\0\x08\x03" + (5).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2))
    for given, message in [
        (bad, f"error: {bad} cannot be read as an image (UnidentifiedImageError); give PNG, JPEG or IDX files"),
        (truncated, f"error: {truncated}: the header says (5, 28, 28) but the file holds 0 values (truncated?)"),
        (tmp_path / "nowhere.png", f"error: {tmp_path / 'nowhere.png'}: no such file or folder"),
    ]:
        result = predict_cli(checkpoint, "--split", split_dir, "--images", given, "--out", tmp_path / "p.csv")
        assert result.returncode == 2 and result.stderr.strip().splitlines() == [message]
    assert not (tmp_path / "p.csv").exists()


def test_inputs_that_do_not_fit_are_one_line_each_and_write_nothing(checkpoint, split_dir, tmp_path):
    write_idx_folder(tmp_path / "idx")
    images, labels = tmp_path / "idx/t10k-images-idx3-ubyte.gz", tmp_path / "idx/t10k-labels-idx1-ubyte.gz"
    (tmp_path / "empty").mkdir()
    (tmp_path / "floats").write_bytes(b"\0\0\x0d\x01" + (1).to_bytes(4, "big") + b"\0\0\0\0")  # IDX of float32
    broken = tmp_path / "models/vanilla/seed1.pt"
    broken.write_bytes(checkpoint.read_bytes()[:1000])  # a truncated checkpoint
    train_labels = tmp_path / "idx/train-labels-idx1-ubyte.gz"  # 600 labels
    for args, message in [
        (["--images", labels], f"{labels}: IDX images must be N x 28 x 28, got (200,)"),
        (["--images", images, "--labels", train_labels], f"{train_labels} holds 600 labels for 200 images"),
        (["--images", tmp_path / "empty"], f"{tmp_path / 'empty'} holds no image files (.png, .jpg, .jpeg"),
        (["--images", tmp_path / "floats"], f"{tmp_path / 'floats'} is not an IDX file of unsigned bytes (its header "),
    ]:
        result = predict_cli(checkpoint, "--split", split_dir, *args, "--out", tmp_path / "p.csv")
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith(f"error: {message}"), result.stderr
    for given, message in [
        (tmp_path / "none.pt", f"model checkpoint {tmp_path / 'none.pt'} not found (run stage train first)"),
        (broken, f"{broken} cannot be read ("),
    ]:
        result = predict_cli(given, "--split", split_dir, "--out", tmp_path / "p.csv")
        assert result.returncode == 2 and result.stderr.startswith(f"error: {message}"), result.stderr
    assert "dvc " not in result.stderr  # a file no dvc.lock records: no way back is promised (tests/test_faults.py)
    assert not (tmp_path / "p.csv").exists()


def test_a_model_uri_the_store_lacks_is_one_line_naming_the_store(tmp_path):
    def predict_uri(store):
        return subprocess.run(
            [sys.executable, "-m", "pipeline.predict", "models:/nobody@champion", "--out", str(tmp_path / "p.csv")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "MLFLOW_TRACKING_URI": store},
        )

    db = tmp_path / "mlflow.db"
    result = predict_uri(f"sqlite:///{db}")  # no store there: said, and none created
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: models:/nobody@champion: there is no MLflow store at {db}; run the pipeline first (`make run`), "
        "or point MLFLOW_TRACKING_URI at the store that holds the model"
    ]
    assert not db.exists()
    subprocess.run(
        [sys.executable, "-m", "mlflow", "db", "upgrade", f"sqlite:///{db}"], check=True, capture_output=True
    )
    result = predict_uri(f"sqlite:///{db}")  # a store without that model
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith(
        f"error: models:/nobody@champion: cannot load it from sqlite:///{db} ("
    )
    assert "nobody" in result.stderr.strip().splitlines()[-1] and not (tmp_path / "p.csv").exists()


def test_an_oversized_image_and_a_folder_as_output_are_one_line_each(checkpoint, split_dir, tmp_path):
    from PIL import Image

    huge = tmp_path / "huge.png"
    Image.new("L", (14000, 14000)).save(huge)  # 196M pixels: PIL refuses it as a decompression bomb
    result = predict_cli(checkpoint, "--split", split_dir, "--images", huge, "--out", tmp_path / "p.csv")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: {huge} is larger than PIL reads ({2 * Image.MAX_IMAGE_PIXELS:,} pixels at most, against "
        "decompression bombs); shrink it first (it becomes 28x28 anyway)"
    ]
    folder = tmp_path / "out"
    folder.mkdir()
    result = predict_cli(checkpoint, "--split", split_dir, "--out", folder)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: --out {folder} is a folder; give a file to write, e.g. {folder / 'predictions.csv'}"
    ]
    assert list(folder.iterdir()) == [] and not (tmp_path / "p.csv").exists()


def test_a_dark_object_on_a_light_background_is_inverted_and_trimmed_to_the_object_not_squashed():
    # a 10 x 20 photo: white background, a black 10 x 4 bar in the middle (a dark shoe on a white table)
    photo = np.full((10, 20), 255, dtype=np.uint8)
    photo[:, 8:12] = 0
    image, inverted = prepare_image(photo, "auto")
    assert inverted and image.shape == (28, 28)
    # the oracle, by hand: inverted (object 255 on 0), trimmed to the 10 x 4 bar, its longest side 10 -> 28,
    # so 28 x 11.2: 28 rows, about 11 columns, centred (the odd margin's pixel to the left)
    bright = np.argwhere(image > 127)
    rows, cols = bright[:, 0], bright[:, 1]
    assert (rows.min(), rows.max()) == (0, 27) and 10 <= cols.max() - cols.min() + 1 <= 12
    assert abs((cols.min() + cols.max()) / 2 - 13.5) <= 1
    assert image[:, :6].max() < 30 and image[:, 22:].max() < 30  # the canvas is the (inverted) background
    digit = prepare_image(photo, "auto", object_size=20)[0]  # MNIST's digits fill 20 x 20
    assert (np.argwhere(digit > 127)[:, 0].min(), np.argwhere(digit > 127)[:, 0].max()) == (4, 23)
    kept, inverted = prepare_image(photo, "no")
    assert not inverted and kept[14, 14] < 30 and kept[0, 0] > 200
    assert prepare_image(255 - photo, "auto")[1] is False  # already light on dark


def test_a_test_image_with_margins_is_prepared_back_into_the_test_image():
    """Fashion-MNIST's own test images (the real IDX file `make data` installs), given margins of 4-15 pixels
    on each side as a photo would have: trimmed, resized and centred, most come back pixel for pixel."""
    source = Path(yaml.safe_load((ROOT / "params.yaml").read_text())["data"]["sources"]["FashionMNIST"][0])
    assert (source / "t10k-images-idx3-ubyte.gz").is_file(), f"{source}: run `make data` (the real test images)"
    images = read_idx(source / "t10k-images-idx3-ubyte.gz")[:1000]
    rng = np.random.default_rng(0)
    exact, differences = 0, []
    for image in images:
        top, bottom, left, right = rng.integers(4, 16, 4)
        photo = np.zeros((28 + top + bottom, 28 + left + right), dtype=np.uint8)
        photo[top : top + 28, left : left + 28] = image
        prepared, _ = prepare_image(photo)
        exact += bool((prepared == image).all())
        differences.append(np.abs(prepared.astype(int) - image.astype(int)).mean())
    # measured: 893 of 1,000 exact, a mean absolute difference of 1.9 levels (of 255); the old padding to a
    # square shrank every object (and the vanilla model read 35.5% of such images right, against 91.5%)
    assert exact >= 850 and np.mean(differences) < 3


def test_predict_prints_each_images_class_and_inverts_a_dark_on_light_photo(checkpoint, split_dir, tmp_path):
    write_idx_folder(tmp_path / "idx")
    images = read_idx(tmp_path / "idx" / "t10k-images-idx3-ubyte.gz")
    Image.fromarray(images[0]).save(tmp_path / "as_in_the_dataset.png")
    Image.fromarray(255 - images[0]).save(tmp_path / "dark_on_light.png")  # the same garment, as a photo
    args = ["--split", split_dir, "--out", tmp_path / "p.csv", "--threads", 1, "--images"]
    result = predict_cli(checkpoint, *args, tmp_path / "as_in_the_dataset.png", tmp_path / "dark_on_light.png")
    assert result.returncode == 0, result.stderr
    first, second, summary = result.stdout.splitlines()[-3:]
    expected = str(oracle_predictions(checkpoint, torch.from_numpy(images[:1].copy())).item())
    assert re.fullmatch(rf"{re.escape(str(tmp_path))}/as_in_the_dataset.png: {expected} \(\d+\.\d\d%\)", first)
    assert re.fullmatch(
        rf"{re.escape(str(tmp_path))}/dark_on_light.png: {expected} \(\d+\.\d\d%\), inverted: a light background "
        r"\(--invert no keeps it\)",
        second,
    )
    assert summary.startswith("2 predictions by vanilla seed 0 -> ")
    kept = predict_cli(checkpoint, *args, tmp_path / "dark_on_light.png", "--invert", "no")
    assert kept.returncode == 0 and "inverted" not in kept.stdout


def test_help_answers_without_loading_torch():
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pipeline.predict", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "--invert {auto,yes,no}" in result.stdout
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert not {"torch", "pandas", "numpy", "mlflow"} & imported
