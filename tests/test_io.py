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
