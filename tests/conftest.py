"""Shared fixtures: tiny random models only (the real model appears in tests marked slow)."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def tiny_model():
    from harness.models import load_model

    return load_model("tiny-llama")
