"""Shared fixtures: a tiny VOC-layout dataset and the tiny toy dataset (helpers: tests/tiny.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from data.toy_dataset import ToyConfig, build_toy_dataset
from net.resnet50 import ResNet50
from tests.tiny import write_fake_voc

torch.set_num_threads(2)


@pytest.fixture
def fake_voc(tmp_path: Path) -> Path:
    root = tmp_path / "voc"
    write_fake_voc(root, [(48, 64), (48, 64), (40, 56), (64, 48)])
    return root


@pytest.fixture(scope="session")
def r50(tmp_path_factory) -> Path:
    """Random ResNet-50 weights in torchvision's format (the backbone file of the tiny runs)."""
    path = tmp_path_factory.mktemp("weights") / "r50.pth"
    torch.manual_seed(0)
    torch.save(ResNet50().state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_toy(tmp_path_factory):
    return build_toy_dataset(tmp_path_factory.mktemp("toy") / "toy", ToyConfig.tiny())
