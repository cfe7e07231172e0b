"""Predict with a trained checkpoint: class names and probabilities for IDX files or image files.

    python -m pipeline.predict data/models/batchnorm/seed0.pt                  # the test split
    python -m pipeline.predict data/models/batchnorm/seed0.pt --images t10k-images-idx3-ubyte.gz \\
        --labels t10k-labels-idx1-ubyte.gz --out predictions.csv
    python -m pipeline.predict data/models/vanilla/seed1.pt --images my_photos/ shoe.png
    python -m pipeline.predict models:/lenet5-fashion-mnist@champion --images shoe.png   # MLflow

The model is a checkpoint file or an MLflow model URI (models:/<name>@<alias>,
runs:/<run id>/model, models:/m-<id>), loaded from the project's MLflow store
(MLFLOW_TRACKING_URI when set, else ./mlflow.db) as the logged pyfunc, which
takes the raw uint8 images and does the padding and normalisation itself.

Not a DVC stage: it changes no result. Prints each image's class and its
probability (the first 20; all of them in the CSV), and writes a CSV (one row
per image: where it came from, the predicted class, the probability of each
class, and the label when known); with labels it prints the accuracy and the
confusion matrix.

Image files are prepared as the dataset's images are: grayscale, a light
object on a dark background, square, 28x28. `--invert auto` (the default)
judges the polarity from the image's border, the background: a light border
(median above 127) means a dark object on a light background, a photo of a
shoe on a white table, and the image is inverted (the printed line says so);
`--invert yes` / `no` decide instead. Then, as Fashion-MNIST's images were
made, the image is trimmed to the object, its longest side resized to 28
(`--object-size`: MNIST's digits fill 20) and centred on the 28x28 canvas,
so neither a margin nor a wide image changes the object's size or shape.
IDX files are the datasets' own format and are taken as they are.
torch, pandas and the model load only after the arguments are parsed:
`--help` and a bad argument answer at once.
"""

import argparse
import functools
import gzip
import os
import re
import sys
from pathlib import Path

from pipeline.errors import PipelineError, first_line, run_stage

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
IDX_TYPES = {0x08: "uint8"}  # the IDX type codes the MNIST family uses
INVERT = ("auto", "yes", "no")
SHOWN = 20  # images printed one per line; the CSV has every one


def read_idx(path):
    """An IDX file (gzipped or not) as a numpy array: images [N, 28, 28] or labels [N]."""
    import numpy as np

    data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in IDX_TYPES:
        raise PipelineError(f"{path} is not an IDX file of unsigned bytes (its header is {data[:4].hex()})")
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise PipelineError(f"{path}: the header says {shape} but the file holds {body.size} values (truncated?)")
    return body.reshape(shape)


# A pixel this far from the background's level (of 255) is part of the object: JPEG noise and a
# photo's uneven backdrop stay below it.
TRIM_TOLERANCE = 8


def on_canvas(gray, side, background):
    """`gray` centred on a side x side canvas of the background level; an odd margin's extra pixel goes
    above and left, as in Fashion-MNIST's images (507 of its first 1,000 test images have one there, 16 below)."""
    import numpy as np

    canvas = np.full((side, side), background, dtype=np.uint8)
    top, left = (side - gray.shape[0] + 1) // 2, (side - gray.shape[1] + 1) // 2
    canvas[top : top + gray.shape[0], left : left + gray.shape[1]] = gray
    return canvas


def prepare_image(gray, invert="auto", object_size=28):
    """uint8 [H, W] -> (uint8 [28, 28], inverted?), made as Fashion-MNIST's images were (Xiao et al. 2017):
    a light object on a dark background, trimmed to the object, its longest side resized to `object_size`
    (28 there; MNIST's digits fill 20), centred on the 28x28 canvas. Without the trimming, a margin in a
    photo would shrink the object: a pullover with margins read as a T-shirt."""
    import numpy as np
    from PIL import Image

    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    inverted = invert == "yes" or (invert == "auto" and float(np.median(border)) > 127)
    if inverted:
        gray, border = 255 - gray, 255 - border
    background = int(np.median(border))
    mask = np.abs(gray.astype(np.int16) - background) > TRIM_TOLERANCE
    if mask.any():  # else a blank image: nothing to trim to
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        gray = gray[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    square = on_canvas(gray, max(gray.shape), background)  # padded with the background: the shape is kept
    if square.shape[0] != object_size:
        square = np.asarray(Image.fromarray(square).resize((object_size,) * 2, Image.Resampling.LANCZOS))
    return on_canvas(square.astype(np.uint8), 28, background), inverted


def read_image(path):
    """One image file as uint8 [H, W] grayscale; one line if unreadable."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            gray = np.asarray(image.convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise PipelineError(
            f"{path} cannot be read as an image ({type(e).__name__}); give PNG, JPEG or IDX files"
        ) from None
    except Image.DecompressionBombError:  # PIL refuses images this large: a decompression-bomb guard
        raise PipelineError(
            f"{path} is larger than PIL reads ({2 * Image.MAX_IMAGE_PIXELS:,} pixels at most, against "
            "decompression bombs); shrink it first (it becomes 28x28 anyway)"
        ) from None
    return gray


def gather_images(paths, invert="auto", object_size=28):
    """(images uint8 [N, 28, 28], source names, {source: inverted?} of the image files): IDX files, image
    files, and folders of image files."""
    import numpy as np
    import torch

    images, sources, inverted = [], [], {}
    for given in map(Path, paths):
        if not given.exists():
            raise PipelineError(f"{given}: no such file or folder")
        if given.is_dir():
            files = sorted(p for p in given.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise PipelineError(f"{given} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        else:
            files = [given]
        for path in files:
            if path.suffix.lower() in IMAGE_SUFFIXES:
                image, inverted[str(path)] = prepare_image(read_image(path), invert, object_size)
                images.append(image[None])
                sources.append(str(path))
            else:
                block = read_idx(path)
                if block.ndim != 3 or block.shape[1:] != (28, 28):
                    raise PipelineError(f"{path}: IDX images must be N x 28 x 28, got {block.shape}")
                images.append(block)
                sources += [f"{path}:{i}" for i in range(len(block))]
    return torch.from_numpy(np.concatenate(images)), sources, inverted


def in_batches(probabilities_of, images, classes, batch_size=1024):
    """Class probabilities [N, classes] for uint8 images [N, 28, 28]: probabilities_of(batch), with a progress bar."""
    import torch
    from tqdm import tqdm

    out = []
    with torch.no_grad():
        for start in tqdm(range(0, len(images), batch_size), desc="predict", unit="batch", disable=None):
            out.append(probabilities_of(images[start : start + batch_size]))
    return torch.cat(out) if out else torch.zeros(0, len(classes))


def is_model_uri(text):
    """models:/..., runs:/..., s3://...: a URI scheme, and not a file of that name."""
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:/", text) is not None and not Path(text).exists()


def load_logged_model(uri):
    """(pyfunc model, class names) of an MLflow model URI, from the project's store; one line if it fails."""
    import mlflow.pyfunc

    from pipeline import mlflow_store

    store_uri = mlflow_store.tracking_uri()
    store = mlflow_store.store_path(store_uri)
    if store is not None and not store.exists():  # MLflow would create an empty store there, then find nothing
        raise PipelineError(
            f"{uri}: there is no MLflow store at {store}; run the pipeline first (`make run`), or point "
            "MLFLOW_TRACKING_URI at the store that holds the model"
        )
    mlflow.set_tracking_uri(store_uri)
    mlflow_store.tidy_store(mlflow)
    # MLflow's download bar, like ours (tqdm's disable=None), only on a terminal
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", str(sys.stderr.isatty()).lower())
    try:
        model = mlflow.pyfunc.load_model(uri)
    except Exception as e:  # MlflowException, OSError, ...: say which URI and store, not a traceback
        if "error code 401" in str(e) or "Invalid Host header" in str(e):  # a login or a host name: say which
            raise PipelineError(f"{uri}: {mlflow_store.unusable_store(store_uri, e)}") from None
        raise PipelineError(f"{uri}: cannot load it from {store_uri} ({first_line(e)})") from None
    outputs = model.metadata.get_output_schema()
    columns = outputs.input_names() if outputs is not None else []
    classes = [c.removeprefix("p_") for c in columns if c.startswith("p_")]
    if not classes:
        raise PipelineError(f"{uri} is not a model this project logged (no p_<class> outputs in its signature)")
    return model, classes


def logged_model_probabilities(model, classes):
    """batch -> probabilities through the logged pyfunc, which takes the raw uint8 images."""
    import numpy as np
    import torch

    columns = [f"p_{c}" for c in classes]
    return lambda batch: torch.from_numpy(model.predict(batch.numpy())[columns].to_numpy(dtype=np.float32))


def predictions_table(probabilities, classes, sources, labels=None):
    import pandas as pd

    table = pd.DataFrame({"source": sources, "predicted": [classes[i] for i in probabilities.argmax(1).tolist()]})
    if labels is not None:
        table["label"] = [classes[i] for i in labels.tolist()]
    for i, name in enumerate(classes):
        table[f"p_{name}"] = probabilities[:, i].numpy().round(6)
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "checkpoint",
        help="a seed<k>.pt written by stage train (data/models/<variant>/), "
        "or an MLflow model URI: models:/<name>@<alias>, runs:/<run id>/model",
    )
    parser.add_argument(
        "--images", nargs="*", help="IDX files, image files or folders of them (default: the test split)"
    )
    parser.add_argument("--labels", help="an IDX label file for --images: prints accuracy and the confusion matrix")
    parser.add_argument("--split", default="data/split", help="the split folder: the test split and the class names")
    parser.add_argument("--out", default="predictions.csv", help="the CSV to write (default: predictions.csv)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    parser.add_argument(
        "--invert",
        choices=INVERT,
        default="auto",
        help="image files: invert them to a light object on dark, as the dataset (auto: when the border is light)",
    )
    parser.add_argument(
        "--object-size",
        type=int,
        default=28,
        choices=range(8, 29),
        metavar="{8..28}",
        help="image files: the object's longest side, in pixels of 28, once trimmed (Fashion-MNIST: 28; MNIST: 20)",
    )
    args = parser.parse_args()
    if Path(args.out).is_dir():
        raise PipelineError(
            f"--out {args.out} is a folder; give a file to write, e.g. {Path(args.out) / 'predictions.csv'}"
        )
    import numpy as np
    import pandas as pd
    import torch

    from pipeline.checkpoint import load_checkpoint
    from pipeline.data import load_split
    from pipeline.io import atomic_path
    from pipeline.runtime import setup_torch

    device = setup_torch(args.threads)
    from_mlflow = is_model_uri(args.checkpoint)
    if from_mlflow:
        logged, classes = load_logged_model(args.checkpoint)
        by = args.checkpoint
    else:
        checkpoint, model = load_checkpoint(args.checkpoint, device)
        classes = checkpoint.classes
        by = f"{checkpoint.variant} seed {checkpoint.seed}"
    if args.images:
        images, sources, inverted = gather_images(args.images, args.invert, args.object_size)
        labels = torch.from_numpy(read_idx(args.labels).astype(np.int64)) if args.labels else None
        if labels is not None and len(labels) != len(images):
            raise PipelineError(f"{args.labels} holds {len(labels)} labels for {len(images)} images")
    else:
        images, labels = load_split(args.split, "test")
        sources, inverted = [f"test:{i}" for i in range(len(images))], {}
    if from_mlflow:
        probabilities_of = logged_model_probabilities(logged, classes)
    else:
        probabilities_of = functools.partial(checkpoint.probabilities, model, device=device)
    probabilities = in_batches(probabilities_of, images, classes)
    table = predictions_table(probabilities, classes, sources, labels)
    with atomic_path(args.out) as tmp:
        table.to_csv(tmp, index=False)
    for row, p in zip(table.head(SHOWN).itertuples(), probabilities[:SHOWN].max(1).values.tolist()):
        note = ", inverted: a light background (--invert no keeps it)" if inverted.get(row.source) else ""
        print(f"{row.source}: {row.predicted} ({p:.2%}){note}")
    more = f" ({len(table) - SHOWN} more in the CSV)" if len(table) > SHOWN else ""
    print(f"{len(table)} predictions by {by} -> {args.out}{more}")
    if labels is not None:
        accuracy = (table["predicted"] == table["label"]).mean()
        print(f"accuracy {accuracy:.4f} on {len(table)} labelled images")
        in_order = {c: pd.Categorical(table[c], categories=classes) for c in ("label", "predicted")}
        confusion = pd.crosstab(in_order["label"], in_order["predicted"], rownames=["actual"], colnames=["predicted"])
        print(confusion.to_string())


if __name__ == "__main__":
    run_stage(main)
