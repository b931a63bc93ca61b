"""Checkpoints: safetensors + JSON, sha256-verified, resolved path → shipped → cache."""

from __future__ import annotations

import json

import pytest
import torch

from restorekit import checkpoints
from restorekit.checkpoints import CheckpointError


def make(tmp_path, name="tiny"):
    tensors = {"w": torch.randn(3, 4), "b": torch.zeros(4)}
    path = checkpoints.save(tmp_path / name, tensors, {"architecture": "test", "hparams": {"n": 4}})
    return path, tensors


def test_roundtrip_and_verification(tmp_path):
    path, tensors = make(tmp_path)
    assert path.suffix == ".safetensors" and path.with_suffix(".json").is_file()
    ckpt = checkpoints.load(path)
    assert ckpt.architecture == "test" and ckpt.hparams == {"n": 4}
    assert torch.equal(ckpt.tensors["w"], tensors["w"])


def test_corrupt_weights_are_refused(tmp_path):
    path, _ = make(tmp_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        checkpoints.load(path)


def test_missing_config_and_missing_checkpoint(tmp_path):
    path, _ = make(tmp_path)
    path.with_suffix(".json").unlink()
    with pytest.raises(CheckpointError, match="config"):
        checkpoints.load(path)
    with pytest.raises(CheckpointError, match="not found; looked in"):
        checkpoints.load("no_such_model", [tmp_path])


def test_config_without_hash_is_refused(tmp_path):
    path, _ = make(tmp_path)
    cfg = path.with_suffix(".json")
    data = json.loads(cfg.read_text())
    del data["sha256"]
    cfg.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="sha256"):
        checkpoints.load(path)


def test_resolution_order(tmp_path, monkeypatch):
    shipped, cache = tmp_path / "shipped", tmp_path / "cache"
    monkeypatch.setenv("RESTOREKIT_CACHE", str(cache))
    make(cache, "model")
    assert checkpoints.resolve("model", [shipped]).parent == cache
    make(shipped, "model")
    assert checkpoints.resolve("model", [shipped]).parent == shipped
    explicit, _ = make(tmp_path / "mine", "model")
    assert checkpoints.resolve(explicit, [shipped]) == explicit
