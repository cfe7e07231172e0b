"""Stage `split`: a seeded, stratified train/validation split; the test set untouched.

Reads params: data.split_seed, data.dataset, data.val_size.
Reads:        <raw>/<Dataset>/raw/ (stage download), parsed by torchvision.
Writes:       <out>/{train,val,test}.pt ({images: uint8 [N,28,28], labels:
              int64 [N], indices: positions in the original file}) and
              <out>/meta.json (dataset, class names, sizes, seed).
Train and evaluate both read these files, so the model is chosen on the
validation split and the test split is only ever scored.
"""

import argparse
from pathlib import Path

import torch

from pipeline.data import split_file
from pipeline.errors import PipelineError, declare_outputs, run_stage, way_back
from pipeline.io import atomic_folder, save_torch, write_json
from pipeline.params import load_params


def load_raw(root, dataset):
    """(train images, train labels, test images, test labels, class names) via torchvision."""
    from torchvision import datasets

    cls = getattr(datasets, dataset)
    try:
        if dataset == "QMNIST":  # its test file holds 60k; the first 10k are MNIST's test set
            train, test = cls(root, what="train"), cls(root, what="test10k")
        else:
            train, test = cls(root, train=True), cls(root, train=False)
    except RuntimeError as e:
        raise PipelineError(f"cannot load {dataset} from {root}: {e} (run stage download)") from None
    except (ValueError, AssertionError, EOFError, IndexError) as e:  # torchvision's IDX reader on a damaged file
        raise PipelineError(f"{dataset} in {root} is damaged ({type(e).__name__}: {e}){raw_way_back(root)}") from None

    def labels(ds):  # QMNIST's targets carry extra columns; the class is the first
        return ds.targets[:, 0] if ds.targets.ndim == 2 else ds.targets

    classes = list(train.classes)
    for split, ds in (("train", train), ("test", test)):
        check_labels(labels(ds), len(ds.data), len(classes), f"{dataset}'s {split} labels in {root}", root)
    return train.data, labels(train), test.data, labels(test), classes


def raw_way_back(root):
    """'; <how to repair the raw files at root>', or '' when no dvc.lock records them: `dvc checkout` if the
    workspace is not what stage download recorded; if it is, the source gave them damaged, and neither a checkout
    nor a fetch from the same source would help."""
    advice = way_back(
        root,
        damaged_at_source="they are what stage download fetched, so the source gave them damaged (a checkout or a "
        "fetch from the same source brings back the same files): with data.verify_checksums: true download refuses "
        "files that fail their pinned checksums and tries the next of data.sources; or fix data.sources; then "
        "`dvc repro --force download`",
    )
    return f"; {advice.replace('restore it ', 'restore them ')}" if advice else ""


def check_labels(labels, images, classes, what, root):
    """A label file that cannot be the dataset's: the wrong count, a value outside 0..classes-1, a class missing."""
    if len(labels) != images:
        problem = f"{len(labels)} labels for {images} images"
    elif len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        problem = f"label values {int(labels.min())}..{int(labels.max())}, not 0..{classes - 1}"
    elif len(labels) and len(labels.unique()) < classes:
        problem = f"only {len(labels.unique())} of the {classes} classes present"
    else:
        return
    raise PipelineError(f"{what} are damaged ({problem}){raw_way_back(root)}")


def stratified_split(labels, val_size, seed):
    """(train indices, val indices), sorted; each class in the same proportion in both.

    Per-class validation counts are the proportional share rounded by largest
    remainder, so they add up to exactly val_size. The shuffle uses its own
    generator: the split depends on `seed` alone, not on global RNG state.
    """
    n = len(labels)
    if not 0 < val_size < n:
        raise PipelineError(f"data.val_size must be between 1 and {n - 1} for this data, got {val_size}")
    counts = torch.bincount(labels)
    share = counts.double() * val_size / n
    quota = share.floor().long()
    remainder = val_size - int(quota.sum())
    quota[torch.argsort(share - quota, descending=True, stable=True)[:remainder]] += 1
    for what, empty in (("validation", quota == 0), ("training", quota == counts)):
        if empty.any():
            cls = int(torch.nonzero(empty)[0])
            raise PipelineError(
                f"data.val_size {val_size} leaves class {cls} ({int(counts[cls])} of {n} images) without {what} "
                f"images; every class needs both: choose a val_size nearer the middle of 1..{n - 1}"
            )
    generator = torch.Generator().manual_seed(seed)
    train_idx, val_idx = [], []
    for cls, take in enumerate(quota.tolist()):
        members = torch.nonzero(labels == cls).squeeze(1)
        members = members[torch.randperm(len(members), generator=generator)]
        val_idx.append(members[:take])
        train_idx.append(members[take:])
    return torch.cat(train_idx).sort().values, torch.cat(val_idx).sort().values


def write_split(out, train_images, train_labels, test_images, test_labels, classes, dataset, val_size, seed):
    train_idx, val_idx = stratified_split(train_labels, val_size, seed)
    parts = {
        "train": (train_images[train_idx], train_labels[train_idx], train_idx),
        "val": (train_images[val_idx], train_labels[val_idx], val_idx),
        "test": (test_images, test_labels, torch.arange(len(test_labels))),
    }
    for name, (images, labels, indices) in parts.items():
        save_torch(
            split_file(out, name), {"images": images.clone(), "labels": labels.clone(), "indices": indices.clone()}
        )
    write_json(
        Path(out) / "meta.json",
        {
            "dataset": dataset,
            "classes": classes,
            "seed": seed,
            "sizes": {name: len(part[1]) for name, part in parts.items()},
        },
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--raw", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    declare_outputs(args.out)
    params = load_params(args.params)
    dataset = params.data.dataset
    with atomic_folder(args.out) as tmp:  # the folder appears whole or not at all
        write_split(
            tmp,
            *load_raw(args.raw, dataset),
            dataset=dataset,
            val_size=params.data.val_size,
            seed=params.data.split_seed,
        )
    print(f"split: {dataset} -> {args.out}")


if __name__ == "__main__":
    run_stage(main)
