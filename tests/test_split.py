"""The split: stratified, disjoint, complete, exactly val_size, fixed by the seed alone."""

import pytest
import torch
from documented import documented

from pipeline.errors import PipelineError
from pipeline.split import stratified_split


def labels_with_imbalance():
    counts = [600, 500, 700, 300, 650, 550, 400, 450, 620, 230]
    return torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])[
        torch.randperm(5000, generator=torch.Generator().manual_seed(0))
    ]


def test_split_is_disjoint_complete_and_sized():
    labels = labels_with_imbalance()
    train, val = stratified_split(labels, 1000, seed=0)
    assert len(val) == 1000 and len(train) == 4000
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(5000))


def test_split_is_stratified():
    labels = labels_with_imbalance()
    train, val = stratified_split(labels, 1000, seed=0)
    share_all = torch.bincount(labels) / len(labels)
    share_val = torch.bincount(labels[val], minlength=10) / len(val)
    assert torch.allclose(share_val, share_all, atol=0.001)  # within rounding of one image


def test_same_seed_same_split_other_seed_other_split():
    labels = labels_with_imbalance()
    torch.manual_seed(123)  # global RNG state must not matter
    a = stratified_split(labels, 1000, seed=7)
    torch.manual_seed(999)
    b = stratified_split(labels, 1000, seed=7)
    c = stratified_split(labels, 1000, seed=8)
    assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])
    assert not torch.equal(a[1], c[1])


def test_val_size_out_of_range_names_the_key():
    with pytest.raises(PipelineError, match="data.val_size must be between 1 and 4999"):
        stratified_split(labels_with_imbalance(), 5000, seed=0)


def test_a_split_that_leaves_a_class_without_validation_images_is_refused():
    with pytest.raises(
        PipelineError, match=r"data.val_size 5 leaves class \d \(\d+ of 5000 images\) without validation"
    ) as error:
        stratified_split(labels_with_imbalance(), 5, seed=0)
    documented("without validation images", error.value)
    with pytest.raises(PipelineError, match=r"data.val_size 4995 leaves class \d .* without training"):
        stratified_split(labels_with_imbalance(), 4995, seed=0)
