"""Atomic, reproducible writes."""

import pytest
import torch

from pipeline.io import atomic_path, save_torch


def test_save_torch_is_byte_for_byte_reproducible(tmp_path):
    blob = {"images": torch.arange(600, dtype=torch.uint8).view(6, 10, 10), "labels": torch.arange(6)}
    save_torch(tmp_path / "a.pt", blob)
    save_torch(tmp_path / "b.pt", blob)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert torch.equal(torch.load(tmp_path / "a.pt", weights_only=True)["images"], blob["images"])


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("stage crashed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_per_seed_keys_are_written_and_read_in_one_place():
    from pipeline.io import per_seed, seed_key, split_seed_key

    record = {seed_key("test_acc", s): s / 100 for s in (10, 2, 0)}
    record.update(test_acc_mean=0.5, val_acc_seed3=0.9, best_epoch_seed2=7)
    assert seed_key("test_acc", 10) == "test_acc_seed10"
    assert split_seed_key("best_epoch_seed2") == ("best_epoch", 2)
    assert split_seed_key("test_acc_mean") is None and split_seed_key("seed2") is None
    assert list(per_seed(record, "test_acc").items()) == [(0, 0.0), (2, 0.02), (10, 0.1)]  # by seed, not by text
    assert per_seed(record, "val_acc") == {3: 0.9} and per_seed(record, "loss") == {}
